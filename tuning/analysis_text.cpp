// The analysis as plain text (for `playbook study status`) and as JSON (analysis.h).
#include <fmt/format.h>

#include <cmath>

#include "tuning/analysis.h"

namespace pb::tuning::insight {

namespace {

nlohmann::json num(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
}
nlohmann::json num(const std::optional<double>& v) {
  return v && std::isfinite(*v) ? nlohmann::json(*v) : nlohmann::json();
}

nlohmann::json axis_json(const AxisSpec& a) {
  nlohmann::json j{{"name", a.name}, {"scale", to_string(a.scale)}, {"role", to_string(a.role)}};
  if (a.scale == AxisScale::Categorical) {
    auto& v = j["values"] = nlohmann::json::array();
    for (const auto& x : a.values) v.push_back(to_string(x));
  } else {
    j["min"] = a.min;
    j["max"] = a.max;
  }
  return j;
}

nlohmann::json edge_json(const EdgeCheck& e) {
  return {{"flagged", e.flagged},
          {"best_in_edge", e.best_in_edge},
          {"top_in_edge", e.top_in_edge},
          {"stability_limit", e.stability_limit},
          {"suggestion", e.suggestion}};
}

}  // namespace

std::string analysis_text(const StudyData& study, const StudyAnalysis& a) {
  std::string s = fmt::format(
      "Study {} ({} {}): {} trials, {} completed, {} infeasible, {} "
      "failed, {} running, {} pending\n",
      study.name.empty() ? study.study_dir : study.name, study.minimize ? "minimize" : "maximize",
      study.objective, a.counts.total, a.counts.completed, a.counts.infeasible, a.counts.failed,
      a.counts.running, a.counts.pending);
  for (const auto& w : study.warnings) s += "warning: " + w + "\n";
  s += "\nVerdicts:\n";
  for (const auto& v : a.verdicts) s += "  - " + v + "\n";
  s += "\nSearch space boundaries:\n";
  for (const auto& b : a.boundaries) s += "  - " + b.verdict + "\n";
  if (!a.curves.empty()) {
    s += "\nTraining curves of the best trials:\n";
    for (const auto& d : a.curves) {
      s += fmt::format("  trial {} (last step {}):\n", d.trial, d.last_step);
      for (const auto& f : d.findings)
        s += fmt::format("    {} {}: {}\n", f.fired ? "[!]" : (f.evaluated ? "[ok]" : "[--]"),
                         to_string(f.issue), f.detail);
    }
  }
  s += "\nSampled enough? " + a.sampling.verdict + "\n";
  if (a.variance) s += "Trial variance: " + a.variance->verdict + "\n";
  return s;
}

nlohmann::json analysis_json(const StudyData& study, const StudyAnalysis& a) {
  using nlohmann::json;
  json j;
  j["study"] = {{"name", study.name},           {"dir", study.study_dir},
                {"objective", study.objective}, {"minimize", study.minimize},
                {"budget", study.budget},       {"warnings", study.warnings}};
  j["counts"] = {{"total", a.counts.total},           {"pending", a.counts.pending},
                 {"running", a.counts.running},       {"completed", a.counts.completed},
                 {"infeasible", a.counts.infeasible}, {"failed", a.counts.failed}};
  j["best_trial"] = a.best_trial ? json(*a.best_trial) : json();
  j["best_objective"] = num(a.best_objective);
  j["ranked"] = a.ranked;
  j["verdicts"] = a.verdicts;
  auto& bs = j["boundaries"] = json::array();
  for (const auto& b : a.boundaries)
    bs.push_back({{"axis", axis_json(b.axis)},
                  {"applicable", b.applicable},
                  {"note", b.note},
                  {"top_k", b.top_k},
                  {"best_position", num(b.best_position)},
                  {"low", edge_json(b.low)},
                  {"high", edge_json(b.high)},
                  {"verdict", b.verdict}});
  auto& is = j["isolation"] = json::array();
  for (const auto& p : a.isolation_plots) {
    json buckets = json::array();
    for (const auto& b : p.buckets)
      buckets.push_back({{"label", b.label},
                         {"lo", num(b.lo)},
                         {"hi", num(b.hi)},
                         {"trials", b.trials},
                         {"completed", b.completed},
                         {"best_trial", b.best_trial ? json(*b.best_trial) : json()},
                         {"best_objective", num(b.best_objective)}});
    is.push_back({{"axis", axis_json(p.axis)},
                  {"buckets", buckets},
                  {"best_bucket", p.best_bucket ? json(*p.best_bucket) : json()},
                  {"verdict", p.verdict}});
  }
  auto& cs = j["curves"] = json::array();
  for (const auto& d : a.curves) {
    json f = json::object();
    for (const auto& x : d.findings)
      f[std::string(to_string(x.issue))] = {
          {"fired", x.fired}, {"evaluated", x.evaluated}, {"detail", x.detail}};
    cs.push_back({{"trial", d.trial}, {"last_step", d.last_step}, {"findings", f}});
  }
  json curve = json::array();
  for (const auto& p : a.sampling.curve)
    curve.push_back(
        {{"n", p.n}, {"median", num(p.median)}, {"p10", num(p.p10)}, {"p90", num(p.p90)}});
  j["sampling"] = {
      {"applicable", a.sampling.applicable},    {"finished", a.sampling.finished},
      {"gain", num(a.sampling.gain)},           {"band", num(a.sampling.band)},
      {"tolerance", num(a.sampling.tolerance)}, {"more_trials_help", a.sampling.more_trials_help},
      {"verdict", a.sampling.verdict},          {"curve", curve}};
  if (a.variance) {
    json groups = json::array();
    for (const auto& g : a.variance->groups)
      groups.push_back({{"label", g.label},
                        {"n", g.n},
                        {"mean", g.mean},
                        {"std", g.std},
                        {"min", g.min},
                        {"max", g.max}});
    j["trial_variance"] = {{"groups", groups},
                           {"pooled_std", num(a.variance->pooled_std)},
                           {"top_gap", num(a.variance->top_gap)},
                           {"gap_stderr", num(a.variance->gap_stderr)},
                           {"gap_exceeds_noise", a.variance->gap_exceeds_noise},
                           {"ranges_overlap", a.variance->ranges_overlap},
                           {"verdict", a.variance->verdict}};
  }
  return j;
}

}  // namespace pb::tuning::insight
