// Study directory -> StudyData (report_input.h), over the study engine's read API (study.h).
#include "tuning/report_input.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "tuning/study.h"

namespace pb::tuning::insight {

namespace fs = std::filesystem;
using nlohmann::json;

TrainingCurve read_metrics(const fs::path& file, int* bad_lines) {
  TrainingCurve c;
  if (bad_lines) *bad_lines = 0;
  std::ifstream in(file);
  if (!in) return c;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const json j = json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) {
      if (bad_lines) ++*bad_lines;
      continue;
    }
    const auto step = j["step"].get<int64_t>();
    auto take = [&](const char* key, std::vector<MetricPoint>& out) {
      auto it = j.find(key);
      if (it != j.end() && it->is_number()) out.push_back({step, it->get<double>()});
    };
    take("train_loss", c.train_loss);
    take("val_error", c.val_error);
    take("val_loss", c.val_loss);
  }
  return c;
}

namespace {

AxisSpec axis_of(const SearchParam& p) {
  AxisSpec a;
  a.name = p.key;
  a.role = p.role == Role::Scientific ? ParamRole::Scientific
           : p.role == Role::Fixed    ? ParamRole::Fixed
                                      : ParamRole::Nuisance;
  if (p.is_list() || p.type == ParamType::Categorical || p.type == ParamType::Bool) {
    a.scale = AxisScale::Categorical;
    a.values = p.values;
    if (a.values.empty() && p.type == ParamType::Bool) a.values = {false, true};
    return a;
  }
  a.min = p.min;
  a.max = p.max;
  switch (p.scale) {
    case Dimension::Scale::Linear:
      a.scale = AxisScale::Linear;
      break;
    case Dimension::Scale::Log:
      a.scale = AxisScale::Log;
      break;
    case Dimension::Scale::ReverseLog:
      a.scale = AxisScale::ReverseLog;
      break;
  }
  return a;
}

Params params_from_json(const std::string& text) {
  Params out;
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const json& v = it.value();
    if (v.is_boolean())
      out.push_back({it.key(), v.get<bool>()});
    else if (v.is_number_integer())
      out.push_back({it.key(), v.get<std::int64_t>()});
    else if (v.is_number())
      out.push_back({it.key(), v.get<double>()});
    else if (v.is_string())
      out.push_back({it.key(), v.get<std::string>()});
  }
  return out;
}

std::string opt_text(const std::optional<double>& v) {
  return v ? fmt::format("{:.6g}", *v) : std::string("-");
}

}  // namespace

StudyData load_study_data(const fs::path& study_dir) {
  std::error_code ec;
  if (!fs::is_directory(study_dir, ec))
    throw ReportError(fmt::format("{}: no such study directory", study_dir.string()));
  if (!fs::is_regular_file(study_dir / "study.db", ec))
    throw ReportError(
        fmt::format("{}: not a study directory (no study.db); create one with `playbook study run`",
                    study_dir.string()));
  Study study;
  try {
    study = load_study(study_dir);
  } catch (const std::exception& e) {
    throw ReportError(fmt::format("{}: cannot read the study: {}", study_dir.string(), e.what()));
  }

  StudyData d;
  d.study_dir = study_dir.string();
  d.name = study.record.name;
  d.objective = study.spec.objective.metric;
  d.minimize = study.spec.objective.goal == Goal::Minimize;
  d.budget = study.record.total_trials;
  d.study_file = study.record.spec_text;
  for (const auto& p : study.spec.search) d.axes.push_back(axis_of(p));

  int missing = 0;
  for (const auto& t : study.trials) {
    TrialResult r;
    r.index = t.index;
    r.status = t.status;
    r.reason = t.reason;
    r.params = params_from_json(t.params_json);
    r.objective = t.objective;
    r.best_step = t.best_step.value_or(-1);
    r.run_dir = (study_dir / t.run_dir).string();
    if (r.status == TrialStatus::Completed || r.status == TrialStatus::Infeasible) {
      // kind = train: trials/NNNN/run/metrics.jsonl; a command trial may write it beside.
      fs::path m = study_dir / t.run_dir / "run" / "metrics.jsonl";
      if (!fs::exists(m, ec)) m = study_dir / t.run_dir / "metrics.jsonl";
      int bad = 0;
      r.curve = read_metrics(m, &bad);
      if (bad > 0)
        d.warnings.push_back(
            fmt::format("trial {}: {} unreadable line(s) in {} skipped", t.index, bad, m.string()));
      if (r.status == TrialStatus::Completed && r.curve.empty()) ++missing;
    }
    d.trials.push_back(std::move(r));
  }
  if (missing > 0)
    d.warnings.push_back(fmt::format(
        "{} completed trial(s) have no metrics.jsonl: their objectives are used, their training "
        "curves cannot be examined",
        missing));

  // Reruns of the best trials (`playbook study rerun`): one child study per trial.
  const fs::path reruns = study_dir / "reruns";
  if (fs::is_directory(reruns, ec)) {
    std::vector<fs::path> children;
    for (const auto& e : fs::directory_iterator(reruns, ec))
      if (fs::is_regular_file(e.path() / "study.db", ec)) children.push_back(e.path());
    std::sort(children.begin(), children.end());
    for (const auto& child : children) {
      try {
        const Study rerun = load_study(child);
        RerunGroup g;
        const std::string stem = child.filename().string();  // trial_0007
        const auto digits = stem.find_first_of("0123456789");
        g.label = digits == std::string::npos
                      ? stem
                      : "trial " + std::to_string(std::stoll(stem.substr(digits)));
        for (const auto& t : rerun.trials)
          if (t.status == tuning::TrialStatus::Completed && t.objective)
            g.objectives.push_back(*t.objective);
        if (digits != std::string::npos) {
          const int64_t index = std::stoll(stem.substr(digits));
          for (const auto& t : study.trials)
            if (t.index == index && t.status == tuning::TrialStatus::Completed)
              g.original = t.objective;
        }
        if (!g.objectives.empty()) d.reruns.push_back(std::move(g));
      } catch (const std::exception& e) {
        d.warnings.push_back(fmt::format("reruns in {} skipped: {}", child.string(), e.what()));
      }
    }
  }

  const TrackingRow row = tracking_row(study);
  d.tracking = {
      {"study", row.name},
      {"base", row.base},
      {"objective", row.objective},
      {"trials",
       fmt::format("{} / {} done", row.counts.completed + row.counts.infeasible + row.counts.failed,
                   row.counts.total)},
      {"best", opt_text(row.best_objective)},
      {"best trial", row.best_index >= 0 ? std::to_string(row.best_index) : "-"},
      {"best params", row.best_params.empty() ? "-" : row.best_params},
      {"reproduce", row.reproduce.empty() ? "-" : row.reproduce}};
  if (!row.notes.empty()) d.tracking.push_back({"notes", row.notes});
  return d;
}

std::string study_insight_text(const fs::path& study_dir) {
  const StudyData d = load_study_data(study_dir);
  return analysis_text(d, analyze_study(d));
}

}  // namespace pb::tuning::insight
