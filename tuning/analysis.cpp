// Axis plots, isolation plots, the boundary check and the study-level summary (analysis.h).
#include "tuning/analysis.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace pb::tuning::insight {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool better(double a, double b, bool minimize) {
  return minimize ? a < b : a > b;
}

std::string fmt_num(double v) {
  return fmt::format("{:.4g}", v);
}

// Completed trials with a finite objective, best first (ties by trial index).
std::vector<const TrialResult*> ranked_trials(const StudyData& study) {
  std::vector<const TrialResult*> out;
  for (const auto& t : study.trials)
    if (t.status == TrialStatus::Completed && t.objective && std::isfinite(*t.objective))
      out.push_back(&t);
  std::stable_sort(out.begin(), out.end(), [&](const TrialResult* a, const TrialResult* b) {
    if (*a->objective != *b->objective) return better(*a->objective, *b->objective, study.minimize);
    return a->index < b->index;
  });
  return out;
}

bool finished(TrialStatus s) {
  return s == TrialStatus::Completed || s == TrialStatus::Infeasible;
}

}  // namespace

std::string_view to_string(AxisScale scale) {
  switch (scale) {
    case AxisScale::Linear:
      return "linear";
    case AxisScale::Log:
      return "log";
    case AxisScale::ReverseLog:
      return "reverse_log";
    case AxisScale::Categorical:
      return "categorical";
  }
  return "?";
}

std::string_view to_string(ParamRole role) {
  switch (role) {
    case ParamRole::Scientific:
      return "scientific";
    case ParamRole::Nuisance:
      return "nuisance";
    case ParamRole::Fixed:
      return "fixed";
  }
  return "?";
}

std::optional<AxisValue> axis_value(const TrialResult& trial, const AxisSpec& axis) {
  for (const auto& a : trial.params) {
    if (a.name != axis.name) continue;
    AxisValue v;
    v.label = to_string(a.value);
    if (const auto* d = std::get_if<double>(&a.value)) {
      v.numeric = true;
      v.x = *d;
    } else if (const auto* i = std::get_if<std::int64_t>(&a.value)) {
      v.numeric = true;
      v.x = static_cast<double>(*i);
    }
    return v;
  }
  return std::nullopt;
}

double unit_position(const AxisSpec& axis, double x) {
  switch (axis.scale) {
    case AxisScale::Linear:
      return (x - axis.min) / (axis.max - axis.min);
    case AxisScale::Log:
      if (x <= 0 || axis.min <= 0) return kNaN;
      return std::log(x / axis.min) / std::log(axis.max / axis.min);
    case AxisScale::ReverseLog:
      if (x >= 1 || axis.max >= 1) return kNaN;
      return std::log((1 - axis.min) / (1 - x)) / std::log((1 - axis.min) / (1 - axis.max));
    case AxisScale::Categorical:
      return kNaN;
  }
  return kNaN;
}

// ---- axis plots --------------------------------------------------------------------------------

AxisPlot axis_plot(const StudyData& study, const AxisSpec& axis) {
  AxisPlot plot{axis, {}};
  for (const auto& t : study.trials) {
    if (t.status == TrialStatus::Pending || t.status == TrialStatus::Running) continue;
    auto v = axis_value(t, axis);
    if (!v) continue;
    AxisPoint p{t.index, *v, t.status, std::nullopt};
    if (t.status == TrialStatus::Completed && t.objective && std::isfinite(*t.objective))
      p.objective = t.objective;
    plot.points.push_back(std::move(p));
  }
  return plot;
}

// ---- isolation plots ---------------------------------------------------------------------------

namespace {

// The natural-scale value at unit position u (inverse of unit_position).
double from_unit(const AxisSpec& axis, double u) {
  switch (axis.scale) {
    case AxisScale::Linear:
      return axis.min + u * (axis.max - axis.min);
    case AxisScale::Log:
      return axis.min * std::pow(axis.max / axis.min, u);
    case AxisScale::ReverseLog:
      return 1 - (1 - axis.min) * std::pow((1 - axis.max) / (1 - axis.min), u);
    case AxisScale::Categorical:
      return kNaN;
  }
  return kNaN;
}

void add_to_bucket(IsolationBucket& b, const TrialResult& t, bool minimize) {
  if (!finished(t.status)) return;
  ++b.trials;
  if (t.status != TrialStatus::Completed || !t.objective || !std::isfinite(*t.objective)) return;
  ++b.completed;
  if (!b.best_objective || better(*t.objective, *b.best_objective, minimize)) {
    b.best_objective = t.objective;
    b.best_trial = t.index;
  }
}

}  // namespace

IsolationPlot isolation_plot(const StudyData& study, const AxisSpec& axis,
                             const AnalysisOptions& options) {
  if (std::none_of(study.axes.begin(), study.axes.end(),
                   [&](const AxisSpec& a) { return a.name == axis.name; }))
    throw std::invalid_argument("isolation_plot: '" + axis.name + "' is not a study axis");
  IsolationPlot plot;
  plot.axis = axis;
  const auto ranked = ranked_trials(study);

  if (axis.scale == AxisScale::Categorical) {
    for (const auto& v : axis.values)
      plot.buckets.push_back(IsolationBucket{to_string(v), kNaN, kNaN, 0, 0, {}, {}});
    for (const auto& t : study.trials) {
      auto v = axis_value(t, axis);
      if (!v) continue;
      auto it = std::find_if(plot.buckets.begin(), plot.buckets.end(),
                             [&](const IsolationBucket& b) { return b.label == v->label; });
      if (it == plot.buckets.end()) {
        plot.buckets.push_back(IsolationBucket{v->label, kNaN, kNaN, 0, 0, {}, {}});
        it = plot.buckets.end() - 1;
      }
      add_to_bucket(*it, t, study.minimize);
    }
  } else {
    int n = options.isolation_buckets;
    if (n <= 0) n = std::clamp(static_cast<int>(ranked.size()) / 4, 3, 10);
    for (int i = 0; i < n; ++i) {
      const double lo = from_unit(axis, double(i) / n), hi = from_unit(axis, double(i + 1) / n);
      IsolationBucket bucket;
      bucket.label = fmt::format("[{}, {})", fmt_num(lo), fmt_num(hi));
      bucket.lo = lo;
      bucket.hi = hi;
      plot.buckets.push_back(std::move(bucket));
    }
    for (const auto& t : study.trials) {
      auto v = axis_value(t, axis);
      if (!v || !v->numeric) continue;
      const double u = unit_position(axis, v->x);
      if (!std::isfinite(u)) continue;
      const int b = std::clamp(static_cast<int>(std::floor(u * n)), 0, n - 1);
      add_to_bucket(plot.buckets[size_t(b)], t, study.minimize);
    }
  }

  // The verdict: the winning value, and how far ahead of the runner-up it is.
  std::vector<size_t> order;
  for (size_t i = 0; i < plot.buckets.size(); ++i)
    if (plot.buckets[i].best_objective) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return better(*plot.buckets[a].best_objective, *plot.buckets[b].best_objective, study.minimize);
  });
  if (order.empty()) {
    plot.verdict = fmt::format("{}: no completed trial yet, nothing to compare.", axis.name);
    return plot;
  }
  plot.best_bucket = order.front();
  const auto& top = plot.buckets[order.front()];
  if (order.size() == 1) {
    plot.verdict =
        fmt::format("{}: only {} has a completed trial (best {} {} in trial {}).", axis.name,
                    top.label, study.objective, fmt_num(*top.best_objective), *top.best_trial);
    return plot;
  }
  const auto& second = plot.buckets[order[1]];
  int empty = 0;
  for (const auto& b : plot.buckets) empty += b.completed == 0;
  plot.verdict = fmt::format(
      "{}: {} is best ({} {} in trial {}, from {} completed trials), ahead of {} ({}) by {}",
      axis.name, top.label, study.objective, fmt_num(*top.best_objective), *top.best_trial,
      top.completed, second.label, fmt_num(*second.best_objective),
      fmt_num(std::abs(*top.best_objective - *second.best_objective)));
  if (empty > 0) plot.verdict += fmt::format("; {} value(s) have no completed trial", empty);
  plot.gap = std::abs(*top.best_objective - *second.best_objective);
  plot.verdict += ". Compare the gap with the trial variance before adopting a value.";
  return plot;
}

// ---- boundary check ----------------------------------------------------------------------------

namespace {

std::string widen_suggestion(const AxisSpec& a, bool low) {
  switch (a.scale) {
    case AxisScale::Log:
      return low ? fmt::format("lower min by one decade: {} -> {}", fmt_num(a.min),
                               fmt_num(a.min / 10))
                 : fmt::format("raise max by one decade: {} -> {}", fmt_num(a.max),
                               fmt_num(a.max * 10));
    case AxisScale::ReverseLog:
      if (low) {
        const double m = std::max(0.0, 1 - (1 - a.min) * 10);
        if (m >= a.min)
          return fmt::format("min {} cannot be lowered on a reverse-log scale", fmt_num(a.min));
        if (m == 0)  // 1 - x cannot exceed 1: the decade is cut at x = 0
          return fmt::format(
              "lower min to 0 (one decade of 1-x would pass 0): {} -> 0 (or move "
              "to a linear scale over [0, {}])",
              fmt_num(a.min), fmt_num(a.max));
        return fmt::format("lower min by one decade of 1-x: {} -> {}", fmt_num(a.min), fmt_num(m));
      }
      return fmt::format("raise max by one decade of 1-x: {} -> {}", fmt_num(a.max),
                         fmt_num(1 - (1 - a.max) / 10));
    case AxisScale::Linear: {
      const double half = (a.max - a.min) / 2;
      if (low) {
        double m = a.min - half;
        if (a.min >= 0 && m < 0) m = 0;
        if (m >= a.min)
          return fmt::format(
              "min is already {}: the range cannot widen below it "
              "for a non-negative value",
              fmt_num(a.min));
        return fmt::format("lower min by half the range: {} -> {}", fmt_num(a.min), fmt_num(m));
      }
      return fmt::format("raise max by half the range: {} -> {}", fmt_num(a.max),
                         fmt_num(a.max + half));
    }
    case AxisScale::Categorical:
      break;
  }
  return {};
}

}  // namespace

BoundaryCheck boundary_check(const StudyData& study, const AxisSpec& axis,
                             const AnalysisOptions& options) {
  BoundaryCheck check;
  check.axis = axis;
  if (axis.scale == AxisScale::Categorical) {
    check.note = "a list of values has no range to widen";
    check.verdict = fmt::format("{}: not checked ({}).", axis.name, check.note);
    return check;
  }
  const auto ranked = ranked_trials(study);
  std::vector<std::pair<const TrialResult*, double>> top;  // (trial, unit position)
  for (const auto* t : ranked) {
    auto v = axis_value(*t, axis);
    if (v && v->numeric && std::isfinite(unit_position(axis, v->x)))
      top.emplace_back(t, unit_position(axis, v->x));
  }
  if (top.empty()) {
    check.note = "no completed trial";
    check.verdict = fmt::format("{}: not checked (no completed trial).", axis.name);
    return check;
  }
  check.applicable = true;
  const int completed = static_cast<int>(top.size());
  int k = options.boundary_top_k;
  if (k <= 0)
    k = std::max(3, static_cast<int>(std::ceil(options.boundary_top_fraction * completed)));
  k = std::min(k, completed);
  check.top_k = k;
  check.best_position = top.front().second;
  const double e = options.edge_fraction;
  for (int i = 0; i < k; ++i) {
    check.low.top_in_edge += top[size_t(i)].second < e;
    check.high.top_in_edge += top[size_t(i)].second > 1 - e;
  }
  check.low.best_in_edge = check.best_position < e;
  check.high.best_in_edge = check.best_position > 1 - e;
  for (EdgeCheck* edge : {&check.low, &check.high})
    edge->flagged = edge->best_in_edge || 2 * edge->top_in_edge >= k;

  // Stability limit: every finished trial beyond the best on a side is infeasible (>= 2 of them).
  const double best_u = check.best_position;
  int beyond_low = 0, beyond_low_bad = 0, beyond_high = 0, beyond_high_bad = 0;
  for (const auto& t : study.trials) {
    if (!finished(t.status)) continue;
    auto v = axis_value(t, axis);
    if (!v || !v->numeric) continue;
    const double u = unit_position(axis, v->x);
    if (!std::isfinite(u)) continue;
    const bool bad = t.status == TrialStatus::Infeasible;
    if (u < best_u) beyond_low++, beyond_low_bad += bad;
    if (u > best_u) beyond_high++, beyond_high_bad += bad;
  }
  check.low.stability_limit = beyond_low >= 2 && beyond_low == beyond_low_bad;
  check.high.stability_limit = beyond_high >= 2 && beyond_high == beyond_high_bad;

  std::vector<std::string> parts;
  for (bool low : {true, false}) {
    EdgeCheck& edge = low ? check.low : check.high;
    const char* side = low ? "low" : "high";
    if (edge.stability_limit)
      edge.suggestion = fmt::format(
          "every trial beyond the best on the {} side is infeasible: the best point sits at the "
          "edge of the feasible region, so the model may be unstable there (see optimization "
          "failures) rather than the range too narrow",
          side);
    else if (edge.flagged)
      edge.suggestion = widen_suggestion(axis, low);
    if (edge.flagged)
      parts.push_back(
          fmt::format("near the {} edge ({}best trial at {:.0f}% of the range, {} of "
                      "the top {} in the outer {:.0f}%): {}",
                      side, edge.best_in_edge ? "" : "not the ", 100 * best_u, edge.top_in_edge, k,
                      100 * e, edge.suggestion));
  }
  if (parts.empty()) {
    check.verdict = fmt::format(
        "{}: inside the range (best trial at {:.0f}% of the {} range, {} of the top {} in the "
        "outer {:.0f}% at either end).",
        axis.name, 100 * best_u, to_string(axis.scale),
        check.low.top_in_edge + check.high.top_in_edge, k, 100 * e);
    for (const EdgeCheck* edge : {&check.low, &check.high})
      if (edge->stability_limit) check.verdict += " But " + edge->suggestion + ".";
  } else {
    check.verdict = axis.name + ": best trials " + parts.front();
    for (size_t i = 1; i < parts.size(); ++i) check.verdict += "; and " + parts[i];
    check.verdict += ".";
  }
  return check;
}

// ---- the study
// -----------------------------------------------------------------------------------

StudyAnalysis analyze_study(const StudyData& study, const AnalysisOptions& options) {
  StudyAnalysis out;
  for (const auto& t : study.trials) {
    ++out.counts.total;
    switch (t.status) {
      case TrialStatus::Pending:
        ++out.counts.pending;
        break;
      case TrialStatus::Running:
        ++out.counts.running;
        break;
      case TrialStatus::Completed:
        ++out.counts.completed;
        break;
      case TrialStatus::Infeasible:
        ++out.counts.infeasible;
        break;
      case TrialStatus::Failed:
        ++out.counts.failed;
        break;
    }
  }
  const auto ranked = ranked_trials(study);
  for (const auto* t : ranked) out.ranked.push_back(t->index);
  if (!ranked.empty()) {
    out.best_trial = ranked.front()->index;
    out.best_objective = ranked.front()->objective;
  }

  for (const auto& axis : study.axes) {
    if (axis.role == ParamRole::Fixed) continue;
    out.axis_plots.push_back(axis_plot(study, axis));
    out.boundaries.push_back(boundary_check(study, axis, options));
    if (axis.role == ParamRole::Scientific)
      out.isolation_plots.push_back(isolation_plot(study, axis, options));
  }
  for (size_t i = 0; i < ranked.size() && int(i) < options.curve_trials; ++i) {
    auto d = diagnose_curve(ranked[i]->curve, options.curves);
    d.trial = ranked[i]->index;
    out.curves.push_back(std::move(d));
  }
  std::vector<std::optional<double>> objectives;
  for (const auto& t : study.trials) {
    if (t.status == TrialStatus::Completed && t.objective && std::isfinite(*t.objective))
      objectives.push_back(t.objective);
    else if (t.status == TrialStatus::Infeasible)
      objectives.push_back(std::nullopt);
  }
  AnalysisOptions sampling_options = options;
  if (!study.reruns.empty()) {
    out.variance = trial_variance(study.reruns, study.minimize);
    // A measured trial std is the meaningful difference for "do more trials help".
    if (!options.trial_std && std::isfinite(out.variance->pooled_std))
      sampling_options.trial_std = out.variance->pooled_std;
  }
  out.sampling = sampling_check(objectives, study.minimize, sampling_options);

  // Verdicts, most important first.
  auto& v = out.verdicts;
  const auto& c = out.counts;
  if (c.completed == 0)
    v.push_back(
        fmt::format("No completed trial yet ({} trials: {} pending, {} running, {} "
                    "infeasible, {} failed): nothing to analyse.",
                    c.total, c.pending, c.running, c.infeasible, c.failed));
  else
    v.push_back(fmt::format("Best trial {}: {} = {} ({} of {} trials completed).", *out.best_trial,
                            study.objective, fmt_num(*out.best_objective), c.completed, c.total));
  const int done = c.completed + c.infeasible + c.failed;
  if (done > 0 && 2 * (c.infeasible + c.failed) > done)
    v.push_back(fmt::format(
        "{} of {} finished trials are infeasible or failed: adjust (or reparameterize) the "
        "search space to avoid them, and check the training code for a bug.",
        c.infeasible + c.failed, done));
  for (const auto& b : out.boundaries)
    if (b.low.flagged || b.high.flagged || b.low.stability_limit || b.high.stability_limit)
      v.push_back("Search space boundary: " + b.verdict);
  if (out.sampling.applicable) v.push_back("Sampling: " + out.sampling.verdict);
  for (const auto& d : out.curves)
    for (const auto& f : d.findings)
      if (f.fired) v.push_back(fmt::format("Trial {} curve: {}", d.trial, f.detail));
  if (out.variance) v.push_back("Trial variance: " + out.variance->verdict);
  // With a measured trial std, say whether each isolation gap is more than noise: two single
  // runs differ by sqrt(2) std on average, so a gap under 2 sqrt(2) std is not a difference.
  if (out.variance && std::isfinite(out.variance->pooled_std))
    for (auto& p : out.isolation_plots) {
      if (!std::isfinite(p.gap)) continue;
      const double noise = 2 * std::sqrt(2.0) * out.variance->pooled_std;
      const std::string tail = "Compare the gap with the trial variance before adopting a value.";
      if (auto at = p.verdict.rfind(tail); at != std::string::npos) p.verdict.erase(at);
      p.verdict +=
          fmt::format("The gap {} 2 sqrt(2) x the trial std ({}): {}.",
                      p.gap > noise ? "exceeds" : "is within", fmt_num(noise),
                      p.gap > noise ? "a real difference" : "not distinguishable from seed noise");
    }
  for (const auto& p : out.isolation_plots) v.push_back("Isolation: " + p.verdict);
  return out;
}

}  // namespace pb::tuning::insight
