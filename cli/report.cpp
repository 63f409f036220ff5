// `playbook report` (report.h).
#include "cli/report.h"

#include <fmt/format.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "train/config.h"
#include "tuning/analysis.h"
#include "tuning/process.h"
#include "tuning/report.h"
#include "tuning/report_input.h"
#include "tuning/study.h"
#include "tuning/worker.h"

namespace pb::cli {

namespace fs = std::filesystem;
namespace insight = pb::tuning::insight;

ReportCommands::ReportCommands(CLI::App& app) {
  report_ =
      app.add_subcommand("report",
                         "Write a study's HTML report: axis and isolation plots, boundary check, "
                         "training-curve diagnostics, sampling bootstrap, trial variance");
  report_->add_option("study_dir", study_dir_, "The study directory (holds study.db)")->required();
  report_->add_option("-o,--out", out_, "The HTML file (default: STUDY_DIR/report.html)");
  report_->add_option("--json", json_out_, "Also write the analysis and verdicts as JSON here");
  report_->add_flag("--text", text_, "Also print the verdicts as plain text");

  CLI::App* study = nullptr;
  for (CLI::App* sub : app.get_subcommands([](CLI::App* a) { return a->get_name() == "study"; }))
    study = sub;
  if (study) {
    rerun_ = study->add_subcommand(
        "rerun", "Rerun the best trials with new seeds and report the trial variance");
    rerun_->add_option("study_dir", study_dir_, "The study directory")->required();
    rerun_->add_option("--best", best_, "How many of the best completed trials")
        ->check(CLI::Range(1, 100))
        ->capture_default_str();
    rerun_->add_option("--seeds", seeds_, "Reruns of each, with new model and data seeds")
        ->check(CLI::Range(2, 1000))
        ->capture_default_str();
    rerun_->add_option("--workers", workers_, "Worker processes (default: one per device, or 1)")
        ->check(CLI::Range(1, 1024));
    rerun_->add_option("--devices", devices_,
                       "Comma-separated devices for the workers: cuda:0,cuda:1 or cpu");
  }
}

namespace {

void write_file(const fs::path& file, const std::string& text) {
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out) throw insight::ReportError(fmt::format("cannot write {}", tmp.string()));
  }
  fs::rename(tmp, file);
}

}  // namespace

namespace {

std::atomic<int> g_stop_requests{0};
extern "C" void on_rerun_stop(int) {
  g_stop_requests.fetch_add(1);
}

// A TOML basic string.
std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

bool is_seed_key(const std::string& kv) {
  return kv.rfind("train.model_seed=", 0) == 0 || kv.rfind("train.data_seed=", 0) == 0;
}

// The child study file that reruns `trial` of `parent` with `seeds` new seed pairs.
std::string rerun_study_text(const tuning::Study& parent, const tuning::TrialRecord& trial,
                             int seeds) {
  const tuning::StudySpec& spec = parent.spec;
  std::vector<std::string> fixed;
  for (const auto& kv : spec.fixed)
    if (!is_seed_key(kv)) fixed.push_back(kv);
  const nlohmann::json params = nlohmann::json::parse(trial.params_json, nullptr, false);
  if (params.is_object())
    for (auto it = params.begin(); it != params.end(); ++it) {
      if (it.key() == "train.model_seed" || it.key() == "train.data_seed") continue;
      fixed.push_back(it.key() + "=" +
                      (it.value().is_string() ? toml_string(it.value().get<std::string>())
                                              : it.value().dump()));
    }
  std::string t;
  t += fmt::format("name = {}\n",
                   toml_string(fmt::format("{}_rerun_trial_{}", spec.name, trial.index)));
  t += fmt::format("notes = {}\n", toml_string(fmt::format("trial {} of {} rerun with {} new seeds",
                                                           trial.index, spec.name, seeds)));
  t += fmt::format("base = {}\nkind = \"train\"\ntrials = {}\nseed = {}\nretries = {}\n",
                   toml_string(spec.base), seeds, trial.index, spec.retries);
  t += "overrides = [\n";
  for (const auto& kv : fixed) t += "  " + toml_string(kv) + ",\n";
  t += "]\n[objective]\n";
  t += fmt::format("metric = {}\ngoal = \"{}\"\nreduce = \"{}\"\n",
                   toml_string(spec.objective.metric),
                   spec.objective.goal == tuning::Goal::Minimize ? "minimize" : "maximize",
                   spec.objective.reduce == tuning::Reduce::Best ? "best" : "last");
  // Both seeds as int dimensions: every rerun gets its own (model, data) seed pair.
  for (const char* key : {"train.model_seed", "train.data_seed"})
    t += fmt::format("[search.{}]\ntype = \"int\"\nscale = \"linear\"\nmin = 1\nmax = 1000000\n",
                     key);
  return t;
}

std::vector<std::string> split_devices(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int run_rerun(const fs::path& dir, int best, int seeds, int workers, const std::string& devices) {
  const tuning::Study parent = tuning::load_study(dir);
  if (parent.spec.kind != tuning::TrialKind::Train)
    throw insight::ReportError(fmt::format(
        "{}: study rerun needs a train study (kind = \"train\"): it sets train.model_seed and "
        "train.data_seed",
        dir.string()));
  std::vector<const tuning::TrialRecord*> done;
  for (const auto& t : parent.trials)
    if (t.status == tuning::TrialStatus::Completed && t.objective) done.push_back(&t);
  std::stable_sort(done.begin(), done.end(), [&](auto* a, auto* b) {
    return parent.spec.objective.better(*a->objective, *b->objective);
  });
  if (done.empty())
    throw insight::ReportError(fmt::format("{}: no completed trial to rerun", dir.string()));
  if (static_cast<int>(done.size()) > best) done.resize(static_cast<size_t>(best));

  tuning::TrainRules rules;
  rules.schema = &pb::train::schema();
  rules.resolve = [](const fs::path& base, const std::vector<std::string>& overrides) {
    pb::train::resolve(base, overrides);
  };
  struct sigaction sa = {};
  sa.sa_handler = on_rerun_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<insight::RerunGroup> groups;
  int rc = 0;
  for (const auto* t : done) {
    const fs::path child = dir / "reruns" / fmt::format("trial_{:04}", t->index);
    fs::create_directories(child);
    const std::string text = rerun_study_text(parent, *t, seeds);
    const tuning::StudySpec spec =
        tuning::parse_study(text, child / "study.toml", fs::path(parent.record.origin_dir), &rules);
    tuning::init_study(child, spec);
    fmt::print("rerun trial {} ({} = {:.6g}) with {} new seeds in {}\n", t->index,
               parent.spec.objective.metric, *t->objective, seeds, child.string());
    tuning::RunnerOptions opt;
    opt.study_dir = child;
    opt.devices = split_devices(devices);
    opt.workers = workers;
    opt.playbook = tuning::self_executable();
    opt.stop_requests = &g_stop_requests;
    opt.out = &std::cout;
    rc = tuning::run_study_workers(spec, opt);
    if (rc != 0) break;
  }
  // Read back every group, including reruns of earlier invocations.
  const insight::StudyData data = insight::load_study_data(dir);
  const insight::TrialVariance tv = insight::trial_variance(data.reruns, data.minimize);
  fmt::print("trial variance: {}\n", tv.verdict);
  return rc;
}

}  // namespace

std::optional<int> ReportCommands::run() {
  if (rerun_ && rerun_->parsed()) {
    try {
      return run_rerun(study_dir_, best_, seeds_, workers_, devices_);
    } catch (const tuning::StudyError& e) {
      fmt::print(stderr, "playbook study rerun: {}\n", e.what());
      return 2;
    } catch (const std::exception& e) {
      fmt::print(stderr, "playbook study rerun: {}\n", e.what());
      return 1;
    }
  }
  if (!report_->parsed()) return std::nullopt;
  try {
    // Assets first: a missing install is reported before any work.
    const insight::ReportAssets assets = insight::load_report_assets(insight::default_assets_dir());
    const insight::StudyData study = insight::load_study_data(study_dir_);
    const insight::StudyAnalysis analysis = insight::analyze_study(study);
    const fs::path out = out_.empty() ? fs::path(study_dir_) / "report.html" : fs::path(out_);
    write_file(out, insight::render_report(study, analysis, assets));
    if (!json_out_.empty())
      write_file(json_out_, insight::analysis_json(study, analysis).dump(2) + "\n");
    if (text_) std::cout << insight::analysis_text(study, analysis);
    fmt::print(stderr, "report: wrote {} ({} trials, {} completed)\n", out.string(),
               analysis.counts.total, analysis.counts.completed);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "playbook report: {}\n", e.what());
    return 1;
  }
}

}  // namespace pb::cli
