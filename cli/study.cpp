// The study subcommands; see study.h.
#include "cli/study.h"

#include <fmt/format.h>
#include <signal.h>

#include <atomic>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>

#include "train/config.h"
#include "tuning/process.h"
#include "tuning/sqlite_store.h"
#include "tuning/study.h"
#include "tuning/worker.h"

namespace pb::cli {
namespace fs = std::filesystem;
namespace {

std::atomic<int> g_stop_requests{0};

extern "C" void on_stop_signal(int) {
  g_stop_requests.fetch_add(1);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

const std::atomic<int>* stop_requests() {
  return &g_stop_requests;
}

// A train study is validated against the training config's key specs and resolver.
tuning::TrainRules train_rules() {
  tuning::TrainRules rules;
  rules.schema = &pb::train::schema();
  rules.resolve = [](const fs::path& base, const std::vector<std::string>& overrides) {
    pb::train::resolve(base, overrides);
  };
  return rules;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

namespace {

int run_study(const std::string& file, std::string dir, int workers, const std::string& devices,
              const std::string& store = {}) {
  const tuning::TrainRules rules = train_rules();
  const tuning::StudySpec spec = tuning::load_study_file(file, &rules);
  if (dir.empty()) dir = (fs::path("studies") / spec.name).string();
  tuning::bind_study_store(dir, store.empty() ? spec.store : store);  // --store wins over `store`
  tuning::init_study(dir, spec);
  install_stop_handlers();
  tuning::RunnerOptions opt;
  opt.study_dir = dir;
  opt.devices = split_list(devices);
  opt.workers = workers;
  opt.playbook = tuning::self_executable();
  opt.stop_requests = &g_stop_requests;
  opt.out = &std::cout;
  const int rc = tuning::run_study_workers(spec, opt);
  const tuning::Study study = tuning::load_study(dir);
  const tuning::StudyCounts c = tuning::count_trials(study.trials);
  fmt::print("study {}: {} completed, {} infeasible, {} failed of {} trials\n", study.record.name,
             c.completed, c.infeasible, c.failed, c.total);
  if (const tuning::TrialRecord* best = tuning::best_trial(study)) {
    fmt::print("best {} = {:.6g} (trial {}); reproduce with:\n  {}\n", spec.objective.metric,
               *best->objective, best->index, tuning::reproduce_command(study, *best));
  }
  return rc;
}

int run_plan(const std::string& file) {
  const tuning::TrainRules rules = train_rules();
  const tuning::StudySpec spec = tuning::load_study_file(file, &rules);
  fmt::print("study {}: {} trials ({} per scientific combination x {} combinations), seed {}\n",
             spec.name, spec.total_trials(), spec.trials, spec.scientific_combinations(),
             spec.seed);
  for (const tuning::SearchParam& p : spec.search) {
    fmt::print("  {:<11} {:<28} {}\n", tuning::to_string(p.role), p.key,
               p.values.empty()
                   ? fmt::format("{} {} [{}, {}]", tuning::to_string(p.type),
                                 tuning::to_string(p.scale), p.min, p.max)
                   : fmt::format("{} of {} values", tuning::to_string(p.type), p.values.size()));
  }
  for (const std::string& o : spec.fixed) fmt::print("  {:<11} {}\n", "fixed", o);
  for (int64_t i = 0; i < spec.total_trials(); ++i) {
    std::vector<std::string> parts;
    for (const tuning::Assignment& a : tuning::trial_params(spec, static_cast<uint64_t>(i))) {
      parts.push_back(a.name + "=" + tuning::to_string(a.value));
    }
    fmt::print("trial {:>4}: {}\n", i, fmt::join(parts, " "));
  }
  return 0;
}

// `study init`: creates (or checks) the study in its store without running a trial, for
// workers that a scheduler starts (scripts/slurm/study-array.sbatch).
int run_init(const std::string& file, std::string dir, const std::string& store) {
  const tuning::TrainRules rules = train_rules();
  const tuning::StudySpec spec = tuning::load_study_file(file, &rules);
  if (dir.empty()) dir = (fs::path("studies") / spec.name).string();
  const std::string location = store.empty() ? spec.store : store;  // --store wins over `store`
  tuning::bind_study_store(dir, location);
  tuning::init_study(dir, spec);
  fmt::print("study {}: {} trials in {}; start workers with: playbook study work {}{}\n", spec.name,
             spec.total_trials(), tuning::redact_location(tuning::study_store_location(dir)), dir,
             location.empty() ? "" : " --store URL");
  return 0;
}

// `study migrate SRC DST`: every record of SRC's study into the empty store DST.
int run_migrate(const std::string& src, const std::string& dst) {
  auto from = tuning::open_store(src);
  const auto record = from->study();
  if (!record) {
    throw tuning::StoreError(fmt::format("{}: holds no study", tuning::redact_location(src)));
  }
  const std::vector<tuning::TrialRecord> trials = from->trials();
  tuning::open_store(dst)->import_study(*record, trials);
  fmt::print("study {}: {} trials copied from {} to {}\n", record->name, trials.size(),
             tuning::redact_location(src), tuning::redact_location(dst));
  return 0;
}

int run_work(const std::string& dir, const std::string& device, int threads,
             const std::string& store = {}) {
  // A worker on another machine needs only the store: the directory holds its trials.
  tuning::bind_study_store(dir, store);
  install_stop_handlers();
  tuning::WorkerOptions opt;
  opt.study_dir = dir;
  opt.device = device;
  opt.threads = threads;
  opt.playbook = tuning::self_executable();
  opt.stop_requests = &g_stop_requests;
  opt.log = &std::cout;
  const int ended = tuning::run_worker(opt);
  fmt::print("worker done: {} trial(s) ended here\n", ended);
  return 0;
}

int run_status(const std::string& dir) {
  const tuning::Study study = tuning::load_study(dir);
  const tuning::StudyCounts c = tuning::count_trials(study.trials);
  fmt::print(
      "study {} ({}): {} trials: {} completed, {} infeasible, {} failed, {} running, {} "
      "pending\n",
      study.record.name, dir, c.total, c.completed, c.infeasible, c.failed, c.running, c.pending);
  fmt::print("objective: {} ({})\n", study.spec.objective.metric,
             study.spec.objective.goal == tuning::Goal::Minimize ? "minimize" : "maximize");
  fmt::print("{:>5}  {:<10}  {:>12}  {:>9}  {:>8}  {}\n", "trial", "status", "objective",
             "best step", "attempts", "parameters / reason");
  for (const tuning::TrialRecord& t : study.trials) {
    std::vector<std::string> parts;
    for (const auto& [k, v] : tuning::params_of(t)) parts.push_back(k + "=" + v);
    fmt::print("{:>5}  {:<10}  {:>12}  {:>9}  {:>8}  {}{}\n", t.index, tuning::to_string(t.status),
               t.objective ? fmt::format("{:.6g}", *t.objective) : "",
               t.best_step ? std::to_string(*t.best_step) : "", t.attempts, fmt::join(parts, " "),
               t.reason.empty() ? "" : "  [" + t.reason + "]");
  }
  return 0;
}

int run_best(const std::string& dir) {
  const tuning::Study study = tuning::load_study(dir);
  const tuning::TrialRecord* best = tuning::best_trial(study);
  if (!best) {
    fmt::print("study {}: no completed trial yet\n", study.record.name);
    return 1;
  }
  fmt::print("best trial {}: {} = {:.6g}{}\n", best->index, study.spec.objective.metric,
             *best->objective, best->best_step ? fmt::format(" at step {}", *best->best_step) : "");
  for (const auto& [k, v] : tuning::params_of(*best)) fmt::print("  {} = {}\n", k, v);
  fmt::print("run directory: {}\n", (fs::path(dir) / tuning::run_dir_of(study, *best)).string());
  fmt::print("reproduce: {}\n", tuning::reproduce_command(study, *best));
  return 0;
}

int run_export(const std::string& dir, const std::string& out) {
  const tuning::Study study = tuning::load_study(dir);
  const std::string csv = tuning::export_csv(study);
  if (out.empty() || out == "-") {
    fmt::print("{}", csv);
    return 0;
  }
  std::ofstream f(out, std::ios::binary);
  f << csv;
  if (!f) throw pb::Error(fmt::format("{}: cannot write", out));
  fmt::print("wrote {} ({} trials)\n", out, study.trials.size());
  return 0;
}

int run_note(const std::string& dir, const std::string& text, bool append) {
  const tuning::Study study = tuning::load_study(dir);
  std::string notes = text;
  if (append && !study.record.notes.empty()) notes = study.record.notes + "; " + text;
  tuning::open_study_store(dir)->set_notes(notes);
  fmt::print("notes of {}: {}\n", study.record.name, notes);
  return 0;
}

int run_studies(const std::string& root, const std::string& format) {
  tuning::TableFormat f = tuning::TableFormat::Text;
  if (format == "csv") {
    f = tuning::TableFormat::Csv;
  } else if (format == "md") {
    f = tuning::TableFormat::Markdown;
  }
  std::vector<std::string> errors;
  const auto rows = tuning::tracking_table(root, &errors);
  fmt::print("{}", tuning::format_tracking_table(rows, f));
  for (const std::string& e : errors) fmt::print(stderr, "playbook: warning: {}\n", e);
  return 0;
}

}  // namespace

StudyCommands::StudyCommands(CLI::App& app) {
  study_ = app.add_subcommand("study", "Quasi-random tuning studies (see README: Studies)");
  study_->require_subcommand(1);
  run_ = study_->add_subcommand(
      "run", "Validate a study file, create or resume its study directory and run its trials");
  run_->add_option("study", study_file_, "The study file (TOML)")
      ->required()
      ->check(CLI::ExistingFile);
  run_->add_option("--dir", dir_, "Study directory (default: studies/<study name>)");
  run_->add_option("--workers", workers_, "Worker processes (default: one per device, or 1)")
      ->check(CLI::Range(1, 1024));
  run_->add_option("--devices", devices_,
                   "Comma-separated devices for the workers: cuda:0,cuda:1 or cpu");

  run_->add_option("--store", store_,
                   "Keep the study in this store instead of STUDY_DIR/study.db: "
                   "postgresql://user@host/db (remembered in STUDY_DIR/store; wins over the "
                   "study file's `store`)");

  init_ = study_->add_subcommand(
      "init", "Create (or check) a study in its store without running it, for scheduled workers");
  init_->add_option("study", study_file_, "The study file (TOML)")
      ->required()
      ->check(CLI::ExistingFile);
  init_->add_option("--dir", dir_, "Study directory (default: studies/<study name>)");
  init_->add_option("--store", store_,
                    "The study's store: postgresql://user@host/db (wins over the study file's "
                    "`store`)");

  migrate_ = study_->add_subcommand(
      "migrate", "Copy a study between stores (a study directory, a SQLite file or a URL)");
  migrate_->add_option("src", migrate_src_, "Source: STUDY_DIR, FILE.db or postgresql://...")
      ->required();
  migrate_->add_option("dst", migrate_dst_, "Destination (empty): FILE.db or postgresql://...")
      ->required();

  plan_ = study_->add_subcommand(
      "plan", "Validate a study file and print its trials' parameters without running them");
  plan_->add_option("study", study_file_, "The study file (TOML)")
      ->required()
      ->check(CLI::ExistingFile);

  work_ = study_->add_subcommand(
      "work", "One worker: claim and run trials of a study directory until none remain");
  work_->add_option("study_dir", dir_, "The study directory")->required();
  work_->add_option("--device", device_, "Device of this worker's trials (cpu, cuda:N)");
  work_->add_option("--store", store_,
                    "The study's store when not STUDY_DIR/study.db: postgresql://user@host/db "
                    "(shared by workers on many machines; remembered in STUDY_DIR/store)");
  work_->add_option("--threads", threads_, "CPU threads of each trial (OMP/OpenBLAS)")
      ->check(CLI::Range(0, 4096));

  status_ = study_->add_subcommand("status", "Every trial of a study: status, objective, params");
  status_->add_option("study_dir", dir_, "The study directory")->required();
  best_ = study_->add_subcommand("best", "The best trial and the command that reproduces it");
  best_->add_option("study_dir", dir_, "The study directory")->required();
  export_ = study_->add_subcommand("export", "Every trial as CSV (one row per trial)");
  export_->add_option("study_dir", dir_, "The study directory")->required();
  export_->add_option("--out", out_, "Output file (default: standard output)");

  note_ = study_->add_subcommand(
      "note", "Set the study's notes, shown in the tracking table (--append to add to them)");
  note_->add_option("study_dir", dir_, "The study directory")->required();
  note_->add_option("text", note_text_, "The notes")->required();
  note_->add_flag("--append", append_, "Append to the notes instead of replacing them");

  studies_ = app.add_subcommand("studies", "The tracking table of every study under a folder");
  studies_->add_option("root", root_, "Folder holding study directories")->capture_default_str();
  studies_->add_option("--format", format_, "text, csv or md")
      ->check(CLI::IsMember({"text", "csv", "md"}))
      ->capture_default_str();
}

std::optional<int> StudyCommands::run() {
  if (!study_->parsed() && !studies_->parsed()) return std::nullopt;
  try {
    if (studies_->parsed()) return run_studies(root_, format_);
    if (run_->parsed()) return run_study(study_file_, dir_, workers_, devices_, store_);
    if (init_->parsed()) return run_init(study_file_, dir_, store_);
    if (migrate_->parsed()) return run_migrate(migrate_src_, migrate_dst_);
    if (plan_->parsed()) return run_plan(study_file_);
    if (work_->parsed()) return run_work(dir_, device_, threads_, store_);
    if (status_->parsed()) return run_status(dir_);
    if (best_->parsed()) return run_best(dir_);
    if (export_->parsed()) return run_export(dir_, out_);
    if (note_->parsed()) return run_note(dir_, note_text_, append_);
  } catch (const tuning::StudyError& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 2;  // a bad study file: nothing was created
  } catch (const std::exception& e) {
    fmt::print(stderr, "playbook: error: {}\n", e.what());
    return 1;
  }
  return 1;
}

}  // namespace pb::cli
