// One trial attempt as a child process; see trial_runner.h.
#include "tuning/trial_runner.h"

#include <fmt/format.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace pb::tuning {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string read_from(const fs::path& p, std::uintmax_t offset) {
  std::ifstream in(p, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void append(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::app);
  out << text;
}

void write_atomic(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
  }
  fs::rename(tmp, p);
}

std::optional<json> read_json(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return std::nullopt;
  json j = json::parse(read_text(p), nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

TrialOutcome infeasible(std::string reason) {
  TrialOutcome o;
  o.status = TrialStatus::Infeasible;
  o.reason = std::move(reason);
  return o;
}

TrialOutcome failed(std::string reason) {
  TrialOutcome o;
  o.status = TrialStatus::Failed;
  o.reason = std::move(reason);
  return o;
}

std::string last_line(const std::string& text) {
  std::istringstream in(text);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

const char* kSummaryKeys[] = {
    "best_val_error",   "final_val_error", "test_error", "best_test_error",
    "examples_per_sec", "wall_seconds",    "steps"};

}  // namespace

TrialOutcome run_dir_outcome(const Objective& objective, const fs::path& run_dir) {
  const auto summary = read_json(run_dir / "summary.json");
  if (!summary || !summary->is_object()) return failed("run/summary.json is missing or unreadable");
  TrialOutcome o;
  o.status = TrialStatus::Completed;
  json metrics = json::object();
  for (const char* k : kSummaryKeys) {
    if (summary->contains(k) && (*summary)[k].is_number()) metrics[k] = (*summary)[k];
  }
  o.metrics_json = metrics.dump();
  const std::string& m = objective.metric;
  if (summary->contains(m)) {
    const json& v = (*summary)[m];
    if (!v.is_number()) {
      return infeasible(fmt::format("no {} in summary.json (no evaluation ran?)", m));
    }
    o.objective = v.get<double>();
    if (m.rfind("best_", 0) == 0 && summary->contains("best_step") &&
        (*summary)["best_step"].is_number_integer()) {
      o.best_step = (*summary)["best_step"].get<int64_t>();
    } else if (summary->contains("steps") && (*summary)["steps"].is_number_integer()) {
      o.best_step = (*summary)["steps"].get<int64_t>();
    }
  } else {
    // A metrics.jsonl field: its best (or last) value over the run.
    std::ifstream in(run_dir / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const json j = json::parse(line, nullptr, false);
      if (!j.is_object() || !j.contains(m) || !j[m].is_number()) continue;
      const double v = j[m].get<double>();
      const int64_t step = j.value("step", int64_t{-1});
      if (objective.reduce == Reduce::Last || !o.objective || objective.better(v, *o.objective)) {
        o.objective = v;
        o.best_step = step;
      }
    }
    if (!o.objective) return infeasible(fmt::format("{} was never logged in metrics.jsonl", m));
  }
  if (!std::isfinite(*o.objective)) {
    return infeasible(fmt::format("{} is {}", m, *o.objective));
  }
  return o;
}

TrialOutcome train_outcome(const StudySpec& spec, const ExitStatus& exit,
                           const std::string& attempt_log, const fs::path& run_dir) {
  if (exit.signal == 0 && exit.code == 0) return run_dir_outcome(spec.objective, run_dir);
  if (exit.signal == 0 && exit.code == 2) {
    // A configuration error: this combination of hyperparameters is invalid.
    const std::string tag = "playbook: error: ";
    std::istringstream in(attempt_log);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(tag, 0) == 0) return infeasible(line.substr(tag.size()));
    }
    return infeasible("invalid configuration");
  }
  if (exit.signal == 0 && exit.code == 3) {
    const auto summary = read_json(run_dir / "summary.json");
    if (summary && summary->contains("steps") && (*summary)["steps"].is_number_integer()) {
      return infeasible(fmt::format("diverged at step {}", (*summary)["steps"].get<int64_t>()));
    }
    return infeasible("diverged");
  }
  if (exit.signal == 0 && exit.code == 4) return infeasible("out of memory");
  const std::string last = last_line(attempt_log);
  return failed(last.empty() ? exit.str() : fmt::format("{}: {}", exit.str(), last));
}

std::optional<TrialOutcome> run_trial(const TrialContext& ctx, const TrialRecord& trial,
                                      const std::atomic<bool>& abort) {
  const StudySpec& spec = *ctx.spec;
  const fs::path trial_dir = fs::absolute(ctx.study_dir / trial.run_dir);
  fs::create_directories(trial_dir);
  const fs::path log = trial_dir / "trial.log";
  const fs::path params = trial_dir / "params.json";
  write_atomic(params, trial.params_json + "\n");
  const json params_json = json::parse(trial.params_json, nullptr, false);

  SpawnOptions opt;
  opt.output = log;
  if (ctx.threads > 0) {
    opt.env.push_back("OMP_NUM_THREADS=" + std::to_string(ctx.threads));
    opt.env.push_back("OPENBLAS_NUM_THREADS=" + std::to_string(ctx.threads));
  }
  const fs::path run_dir = trial_dir / "run";
  const fs::path result = trial_dir / "result.json";
  if (spec.kind == TrialKind::Train) {
    // A run that ended but whose worker died before recording it needs no rerun.
    if (const auto summary = read_json(run_dir / "summary.json")) {
      const std::string status = summary->value("status", "");
      if (status == "completed") return run_dir_outcome(spec.objective, run_dir);
      if (status == "diverged") {
        return infeasible(fmt::format("diverged at step {}", summary->value("steps", int64_t{0})));
      }
    }
    std::error_code ec;
    const bool resume = fs::is_regular_file(run_dir / "config.toml", ec);
    if (!resume) fs::remove_all(run_dir, ec);  // killed before the run existed: start afresh
    opt.argv = {ctx.playbook.string(), "train", fs::absolute(spec.base_path()).string()};
    for (const std::string& o : spec.fixed) opt.argv.insert(opt.argv.end(), {"--set", o});
    if (params_json.is_object()) {
      for (const auto& [k, v] : params_json.items()) {
        opt.argv.push_back("--set");
        if (v.is_string()) {
          opt.argv.push_back(k + "=" + override_text(ParamValue(v.get<std::string>())));
        } else if (v.is_number_float()) {
          opt.argv.push_back(k + "=" + override_text(ParamValue(v.get<double>())));
        } else {
          opt.argv.push_back(k + "=" + v.dump());
        }
      }
    }
    opt.argv.insert(opt.argv.end(), {"--out", run_dir.string()});
    if (resume) opt.argv.push_back("--resume");
    if (!ctx.device.empty()) opt.argv.insert(opt.argv.end(), {"--device", ctx.device});
    if (ctx.threads > 0)
      opt.argv.insert(opt.argv.end(), {"--threads", std::to_string(ctx.threads)});
  } else {
    std::error_code ec;
    fs::remove(result, ec);
    const std::map<std::string, std::string> vars = {{"{params}", params.string()},
                                                     {"{result}", result.string()},
                                                     {"{trial_dir}", trial_dir.string()},
                                                     {"{index}", std::to_string(trial.index)}};
    for (std::string a : spec.command) {
      for (const auto& [from, to] : vars) a = replace_all(a, from, to);
      opt.argv.push_back(a);
    }
    opt.cwd = spec.origin_dir;
    opt.env.push_back("PLAYBOOK_TRIAL_PARAMS=" + params.string());
    opt.env.push_back("PLAYBOOK_TRIAL_RESULT=" + result.string());
    opt.env.push_back("PLAYBOOK_TRIAL_DIR=" + trial_dir.string());
    opt.env.push_back("PLAYBOOK_TRIAL_INDEX=" + std::to_string(trial.index));
    opt.env.push_back("PLAYBOOK_DEVICE=" + ctx.device);
  }

  // The exact command, with the environment it adds (thread counts change CPU sums).
  std::string header = fmt::format("=== trial {} attempt {}:", trial.index, trial.attempts);
  for (const std::string& e : opt.env) {
    if (e.rfind("PLAYBOOK_", 0) != 0) header += " " + e;
  }
  for (const std::string& a : opt.argv) header += " " + a;
  append(log, header + "\n");
  std::error_code ec;
  const std::uintmax_t offset = fs::file_size(log, ec);

  const pid_t pid = spawn(opt);
  std::optional<ExitStatus> exit;
  while (!(exit = try_wait(pid))) {
    if (abort.load()) {
      kill(-pid, SIGKILL);  // its process group: the trial and anything it started
      kill(pid, SIGKILL);
      wait_for(pid);
      append(log, "=== stopped by the worker\n");
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string attempt_log = read_from(log, ec ? 0 : offset);
  TrialOutcome outcome;
  if (spec.kind == TrialKind::Train) {
    outcome = train_outcome(spec, *exit, attempt_log, run_dir);
  } else {
    const auto r = read_json(result);
    if (r && r->is_object() && r->value("status", "") == "infeasible") {
      outcome = infeasible(r->value("reason", std::string("infeasible")));
    } else if (exit->signal != 0 || exit->code != 0) {
      const std::string last = last_line(attempt_log);
      outcome = failed(last.empty() ? exit->str() : fmt::format("{}: {}", exit->str(), last));
    } else if (!r || !r->is_object()) {
      outcome = failed("the command wrote no result JSON to $PLAYBOOK_TRIAL_RESULT");
    } else {
      json value;
      if (r->contains("objective")) {
        value = (*r)["objective"];
      } else if (r->contains("metrics") && (*r)["metrics"].is_object() &&
                 (*r)["metrics"].contains(spec.objective.metric)) {
        value = (*r)["metrics"][spec.objective.metric];
      }
      if (!value.is_number()) {
        outcome = failed(fmt::format("result JSON has no numeric objective (nor metrics.{})",
                                     spec.objective.metric));
      } else if (!std::isfinite(value.get<double>())) {
        outcome = infeasible("objective is not finite");
      } else {
        outcome.status = TrialStatus::Completed;
        outcome.objective = value.get<double>();
        if (r->contains("best_step") && (*r)["best_step"].is_number_integer()) {
          outcome.best_step = (*r)["best_step"].get<int64_t>();
        }
        if (r->contains("metrics") && (*r)["metrics"].is_object()) {
          outcome.metrics_json = (*r)["metrics"].dump();
        }
      }
    }
  }
  append(log, fmt::format("=== {}: {}{}\n", exit->str(), to_string(outcome.status),
                          outcome.reason.empty() ? "" : " (" + outcome.reason + ")"));
  return outcome;
}

}  // namespace pb::tuning
