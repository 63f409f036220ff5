// Training-curve diagnostics (analysis.h, CurveThresholds): least-squares fits and moving
// averages over the late part of the run, so one lucky or unlucky eval point decides nothing.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tuning/analysis.h"

namespace pb::tuning::insight {

namespace {

struct LineFit {
  double slope = 0, intercept = 0;
  double resid_std = 0;     // sqrt(SSR / (n - 2)), 0 for n <= 2
  double slope_stderr = 0;  // resid_std / sqrt(Sxx)
  double mean = 0;          // mean of y
  size_t n = 0;
};

LineFit fit_line(const std::vector<MetricPoint>& pts) {
  LineFit f;
  f.n = pts.size();
  if (pts.empty()) return f;
  double mx = 0, my = 0;
  for (const auto& p : pts) mx += double(p.step), my += p.value;
  mx /= double(f.n), my /= double(f.n);
  f.mean = my;
  double sxx = 0, sxy = 0;
  for (const auto& p : pts) {
    sxx += (double(p.step) - mx) * (double(p.step) - mx);
    sxy += (double(p.step) - mx) * (p.value - my);
  }
  f.slope = sxx > 0 ? sxy / sxx : 0;
  f.intercept = my - f.slope * mx;
  if (f.n > 2) {
    double ssr = 0;
    for (const auto& p : pts) {
      const double r = p.value - (f.intercept + f.slope * double(p.step));
      ssr += r * r;
    }
    f.resid_std = std::sqrt(ssr / double(f.n - 2));
    f.slope_stderr = sxx > 0 ? f.resid_std / std::sqrt(sxx) : 0;
  }
  return f;
}

// Finite points only, in step order.
std::vector<MetricPoint> clean(std::vector<MetricPoint> pts) {
  pts.erase(std::remove_if(pts.begin(), pts.end(),
                           [](const MetricPoint& p) { return !std::isfinite(p.value); }),
            pts.end());
  std::stable_sort(pts.begin(), pts.end(),
                   [](const MetricPoint& a, const MetricPoint& b) { return a.step < b.step; });
  return pts;
}

// Centred moving average over `window` points (shrinking at the ends).
std::vector<MetricPoint> smooth(const std::vector<MetricPoint>& pts, int window) {
  std::vector<MetricPoint> out(pts.size());
  const int h = std::max(0, window / 2);
  for (size_t i = 0; i < pts.size(); ++i) {
    const size_t lo = i >= size_t(h) ? i - size_t(h) : 0;
    const size_t hi = std::min(pts.size() - 1, i + size_t(h));
    double s = 0;
    for (size_t j = lo; j <= hi; ++j) s += pts[j].value;
    out[i] = {pts[i].step, s / double(hi - lo + 1)};
  }
  return out;
}

std::vector<MetricPoint> from_step(const std::vector<MetricPoint>& pts, double step) {
  std::vector<MetricPoint> out;
  for (const auto& p : pts)
    if (double(p.step) >= step) out.push_back(p);
  return out;
}

std::string g(double v) {
  return fmt::format("{:.4g}", v);
}

}  // namespace

std::string_view to_string(CurveIssue issue) {
  switch (issue) {
    case CurveIssue::Overfitting:
      return "overfitting";
    case CurveIssue::HighLateVariance:
      return "high_late_variance";
    case CurveIssue::StillImproving:
      return "still_improving";
    case CurveIssue::SaturatedEarly:
      return "saturated_early";
  }
  return "?";
}

bool CurveDiagnosis::fired(CurveIssue issue) const {
  for (const auto& f : findings)
    if (f.issue == issue) return f.fired;
  return false;
}

CurveDiagnosis diagnose_curve(const TrainingCurve& curve, const CurveThresholds& th) {
  CurveDiagnosis d;
  const auto train = clean(curve.train_loss);
  const bool have_err = !clean(curve.val_error).empty();
  const auto val = clean(have_err ? curve.val_error : curve.val_loss);
  const char* val_name = have_err ? "val_error" : "val_loss";

  int64_t first = std::numeric_limits<int64_t>::max(), last = std::numeric_limits<int64_t>::min();
  for (const auto* s : {&train, &val})
    for (const auto& p : *s) first = std::min(first, p.step), last = std::max(last, p.step);
  if (train.empty() && val.empty()) first = last = 0;  // no points: an empty span, not INT64 wrap
  d.last_step = last;
  const double span = double(last - first);
  const double late_start = double(first) + (1 - th.late_fraction) * span;
  const auto val_late = from_step(val, late_start);
  const auto train_late = from_step(train, late_start);
  const auto val_sm = smooth(val, th.smooth_window);
  const auto val_sm_late = from_step(val_sm, late_start);

  // Problematic overfitting.
  {
    CurveFinding f{CurveIssue::Overfitting, false, false, {}};
    if (val.size() >= 4 && !val_sm_late.empty()) {
      f.evaluated = true;
      const auto it = std::min_element(val_sm.begin(), val_sm.end(),
                                       [](auto& a, auto& b) { return a.value < b.value; });
      const double vmin = it->value;
      const double late_level =
          std::accumulate(val_sm_late.begin(), val_sm_late.end(), 0.0,
                          [](double s, const MetricPoint& p) { return s + p.value; }) /
          double(val_sm_late.size());
      const double noise = val_late.size() >= 3 ? fit_line(val_late).resid_std : 0.0;
      const double thr = std::max({th.overfit_rel * std::abs(vmin), th.overfit_abs, 2 * noise});
      const double rise = late_level - vmin;
      const auto train_after = from_step(train, double(it->step));
      const bool train_known = train_after.size() >= 3;
      const double train_slope = train_known ? fit_line(train_after).slope : 0.0;
      const bool min_early = double(it->step) < late_start;
      f.fired = rise > thr && min_early && (!train_known || train_slope < 0);
      if (!min_early)
        f.detail = fmt::format(
            "{} is lowest late in training ({} at step {}): no problematic "
            "overfitting",
            val_name, g(vmin), it->step);
      else
        f.detail = fmt::format(
            "{} rises from its minimum {} at step {} to {} late in training (+{}, threshold "
            "{}){}; {}",
            val_name, g(vmin), it->step, g(late_level), g(rise), g(thr),
            train_known
                ? fmt::format(" while train_loss {} (slope {}/step)",
                              train_slope < 0 ? "still falls" : "does not fall", g(train_slope))
                : std::string(" (too few train_loss points after the minimum to tell its trend)"),
            f.fired ? "problematic overfitting: add or tune regularization (dropout, weight decay, "
                      "label smoothing) before comparing scientific values"
                    : "no problematic overfitting");
    } else {
      f.detail = fmt::format("fewer than 4 {} points: overfitting not checked", val_name);
    }
    d.findings.push_back(std::move(f));
  }

  // High step-to-step variance late in training.
  {
    CurveFinding f{CurveIssue::HighLateVariance, false, false, {}};
    std::vector<std::string> parts;
    if (train_late.size() >= 5) {
      f.evaluated = true;
      const auto fit = fit_line(train_late);
      const double rel = fit.resid_std / std::max(std::abs(fit.mean), 1e-12);
      const bool hi = rel > th.variance_rel_train;
      f.fired |= hi;
      parts.push_back(
          fmt::format("train_loss residual std {:.1f}% of its level (threshold {:.0f}%)", 100 * rel,
                      100 * th.variance_rel_train));
    }
    if (val_late.size() >= 4) {
      f.evaluated = true;
      const auto fit = fit_line(val_late);
      const double rel = fit.resid_std / std::max(std::abs(fit.mean), 1e-12);
      f.fired |= rel > th.variance_rel_val;
      parts.push_back(fmt::format("{} residual std {:.1f}% of its level (threshold {:.0f}%)",
                                  val_name, 100 * rel, 100 * th.variance_rel_val));
    }
    if (!f.evaluated)
      f.detail = fmt::format(
          "fewer than 5 train_loss or 4 {} points in the last {:.0f}% of "
          "training: step-to-step variance not checked (log and evaluate more "
          "often)",
          val_name, 100 * th.late_fraction);
    else {
      f.detail = fmt::format("over the last {:.0f}% of training, ", 100 * th.late_fraction);
      for (size_t i = 0; i < parts.size(); ++i) f.detail += (i ? ", " : "") + parts[i];
      f.detail += f.fired ? ": high step-to-step variance; consider a larger batch, more "
                            "validation data, learning-rate decay or Polyak averaging"
                          : ": variance is moderate";
    }
    d.findings.push_back(std::move(f));
  }

  // Still improving at the end.
  {
    CurveFinding f{CurveIssue::StillImproving, false, false, {}};
    const bool use_val = val_late.size() >= 4;
    const auto& pts = use_val ? val_late : train_late;
    if (pts.size() >= 4 && span > 0) {
      f.evaluated = true;
      const auto fit = fit_line(pts);
      const double drop = -fit.slope * (double(last) - late_start);
      const double rel = drop / std::max(std::abs(fit.mean), 1e-12);
      const double t =
          fit.slope_stderr > 0 ? fit.slope / fit.slope_stderr : (fit.slope < 0 ? -1e9 : 0.0);
      f.fired = rel > th.improving_rel && t <= -2;
      f.detail = fmt::format(
          "{} fell {:.1f}% over the last {:.0f}% of training (threshold {:.0f}%, t = {:.1f}){}",
          use_val ? val_name : "train_loss", 100 * rel, 100 * th.late_fraction,
          100 * th.improving_rel, t,
          f.fired ? ": still improving at the end; the step budget may be short (compute-bound "
                    "regime), or the schedule's decay may be doing the work"
                  : ": flat at the end");
    } else {
      f.detail = fmt::format(
          "fewer than 4 points in the last {:.0f}% of training: end-of-run "
          "trend not checked (log and evaluate more often)",
          100 * th.late_fraction);
    }
    d.findings.push_back(std::move(f));
  }

  // Saturated early.
  {
    CurveFinding f{CurveIssue::SaturatedEarly, false, false, {}};
    const bool use_val = val.size() >= 4;
    const auto sm = use_val ? val_sm : smooth(train, 2 * th.smooth_window + 1);
    if (sm.size() >= 4 && span > 0) {
      f.evaluated = true;
      double best = sm.front().value;
      for (const auto& p : sm) best = std::min(best, p.value);
      const double tol = std::max(th.saturated_rel * std::abs(best), th.overfit_abs);
      int64_t reached = sm.back().step;
      for (const auto& p : sm)
        if (p.value <= best + tol) {
          reached = p.step;
          break;
        }
      const double frac = double(reached - first) / span;
      f.fired = frac < th.saturated_fraction;
      f.detail = fmt::format(
          "{} came within {} of its best ({}) at step {}, {:.0f}% of the run (threshold {:.0f}%)"
          "{}",
          use_val ? val_name : "train_loss", g(tol), g(best), reached, 100 * frac,
          100 * th.saturated_fraction,
          f.fired ? ": saturated early; the step budget may be longer than needed"
                  : ": uses most of its budget");
    } else {
      f.detail = "too few points: saturation not checked";
    }
    d.findings.push_back(std::move(f));
  }
  return d;
}

}  // namespace pb::tuning::insight
