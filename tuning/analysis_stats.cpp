// "Have we sampled enough" (a bootstrap of the best-of-n objective) and trial variance over
// reruns (analysis.h).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tuning/analysis.h"

namespace pb::tuning::insight {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// SplitMix64 and rejection sampling, not <random> distributions: the same seed gives the same
// bootstrap on every standard library (as in quasi_random.cpp).
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n >= 1.
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = next();
    while (r >= limit);
    return r % n;
  }
};

// Linear interpolation between order statistics; values sorted; +-inf entries give NaN.
double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return kNaN;
  const double pos = q * double(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(sorted.size() - 1, lo + 1);
  const double a = sorted[lo], b = sorted[hi];
  if (!std::isfinite(a) || !std::isfinite(b)) return kNaN;
  return a + (pos - double(lo)) * (b - a);
}

std::string g(double v) {
  return fmt::format("{:.4g}", v);
}

}  // namespace

SamplingCheck sampling_check(const std::vector<std::optional<double>>& objectives, bool minimize,
                             const AnalysisOptions& options) {
  SamplingCheck out;
  const int n_all = static_cast<int>(objectives.size());
  out.finished = n_all;
  const int completed = static_cast<int>(
      std::count_if(objectives.begin(), objectives.end(), [](auto& o) { return o.has_value(); }));
  if (n_all < 4 || completed < 2) {
    out.verdict = fmt::format(
        "{} finished trials ({} completed): too few to tell whether more trials would help.", n_all,
        completed);
    return out;
  }
  // Work in "lower is better" with infeasible = +inf, so the best of a draw is its minimum.
  std::vector<double> y(size_t(n_all), std::numeric_limits<double>::infinity());
  for (size_t i = 0; i < objectives.size(); ++i)
    if (objectives[i]) y[i] = minimize ? *objectives[i] : -*objectives[i];
  const double sign = minimize ? 1.0 : -1.0;

  std::vector<int> ns;
  if (n_all <= 64) {
    for (int n = 1; n <= n_all; ++n) ns.push_back(n);
  } else {
    for (int k = 0; k < 40; ++k)
      ns.push_back(static_cast<int>(std::lround(std::pow(double(n_all), k / 39.0))));
    ns.push_back(n_all / 2);
    std::sort(ns.begin(), ns.end());
    ns.erase(std::unique(ns.begin(), ns.end()), ns.end());
  }
  const int samples = std::max(50, options.bootstrap_samples);
  // One stream per n (seed mixed with n), so the curve at n does not depend on the grid.
  std::vector<double> best(static_cast<size_t>(samples));
  for (int n : ns) {
    SplitMix64 rng{options.bootstrap_seed ^ (0xd1b54a32d192ed03ULL * uint64_t(n))};
    for (auto& b : best) {
      double m = std::numeric_limits<double>::infinity();
      for (int j = 0; j < n; ++j) m = std::min(m, y[rng.below(uint64_t(n_all))]);
      b = m;
    }
    std::sort(best.begin(), best.end());
    BootstrapPoint p;
    p.n = n;
    // In "lower is better" units the 10% quantile is the optimistic band; map back.
    const double q10 = quantile(best, 0.1), q50 = quantile(best, 0.5), q90 = quantile(best, 0.9);
    p.median = sign * q50;
    p.p10 = minimize ? q10 : -q90;  // p10/p90 are quantiles of the objective itself
    p.p90 = minimize ? q90 : -q10;
    out.curve.push_back(p);
  }
  auto at = [&](int n) {
    for (const auto& p : out.curve)
      if (p.n == n) return p;
    return BootstrapPoint{};
  };
  const auto full = at(n_all), half = at(n_all / 2);
  out.applicable = true;
  out.gain = sign * (half.median - full.median);
  out.band = std::abs(full.p90 - full.p10);
  out.tolerance =
      options.trial_std ? *options.trial_std : options.bootstrap_rel_tol * std::abs(full.median);
  if (!std::isfinite(out.gain)) {
    out.more_trials_help = true;
    out.verdict = fmt::format(
        "with {} of {} trials infeasible, a study half this size often "
        "finds no feasible trial at all: more trials (or a better search "
        "space) are needed.",
        n_all - completed, n_all);
    return out;
  }
  const double bar = std::max(out.band / 2, out.tolerance);
  out.more_trials_help = out.gain > bar;
  out.verdict = fmt::format(
      "the median best {} improves by {} from {} to {} trials (bootstrap, {} resamples); "
      "10-90% band at {} trials {}..{}, {} {} ({}). {}",
      "objective", g(out.gain), n_all / 2, n_all, samples, n_all, g(full.p10), g(full.p90),
      out.more_trials_help ? "above" : "within", g(bar),
      options.trial_std ? "the larger of half the band and the trial std"
                        : "the larger of half the band and 1% of the best",
      out.more_trials_help
          ? "More trials are still paying off: sample more before trusting the best point."
          : "The curve has flattened: doubling the trials is unlikely to find a clearly better "
            "point in this search space.");
  return out;
}

TrialVariance trial_variance(const std::vector<RerunGroup>& groups, bool minimize) {
  TrialVariance out;
  double ss = 0;
  int dof = 0;
  for (const auto& gr : groups) {
    RerunStats s;
    s.label = gr.label;
    for (double v : gr.objectives)
      if (std::isfinite(v)) ++s.n;
    if (s.n == 0) continue;
    s.min = std::numeric_limits<double>::infinity();
    s.max = -s.min;
    for (double v : gr.objectives)
      if (std::isfinite(v)) s.mean += v, s.min = std::min(s.min, v), s.max = std::max(s.max, v);
    s.mean /= s.n;
    double q = 0;
    for (double v : gr.objectives)
      if (std::isfinite(v)) q += (v - s.mean) * (v - s.mean);
    s.std = s.n > 1 ? std::sqrt(q / (s.n - 1)) : 0.0;
    ss += q;
    dof += s.n - 1;
    out.groups.push_back(s);
  }
  double bias = 0, bias_var_units = 0;
  int with_original = 0;
  for (const auto& gr : groups) {
    if (!gr.original || !std::isfinite(*gr.original)) continue;
    for (const auto& s : out.groups)
      if (s.label == gr.label && s.n > 0) {
        bias += minimize ? s.mean - *gr.original : *gr.original - s.mean;
        // Var(rerun mean - original) = sigma^2 (1/n + 1): the original is one more draw.
        bias_var_units += 1.0 / s.n + 1.0;
        ++with_original;
      }
  }
  if (with_original > 0) out.selection_bias = bias / with_original;
  std::stable_sort(out.groups.begin(), out.groups.end(),
                   [&](auto& a, auto& b) { return minimize ? a.mean < b.mean : a.mean > b.mean; });
  if (dof > 0) out.pooled_std = std::sqrt(ss / dof);
  // Standard error of the mean bias over the groups: sigma sqrt(sum(1/n + 1)) / groups.
  if (dof > 0 && with_original > 0)
    out.selection_bias_stderr = out.pooled_std * std::sqrt(bias_var_units) / with_original;
  if (out.groups.empty()) {
    out.verdict = "no rerun finished: trial variance unknown.";
    return out;
  }
  if (dof == 0) {
    out.verdict = "every configuration ran once: rerun with new seeds to measure trial variance.";
    return out;
  }
  std::string spread;
  for (const auto& s : out.groups)
    spread += fmt::format("{}{}: {} +- {} (min {}, max {}, n={})", spread.empty() ? "" : "; ",
                          s.label, g(s.mean), g(s.std), g(s.min), g(s.max), s.n);
  if (out.groups.size() < 2) {
    out.verdict = fmt::format("trial std {} ({}).", g(out.pooled_std), spread);
    return out;
  }
  const auto& a = out.groups[0];
  const auto& b = out.groups[1];
  out.top_gap = std::abs(a.mean - b.mean);
  out.gap_stderr = out.pooled_std * std::sqrt(1.0 / a.n + 1.0 / b.n);
  out.gap_exceeds_noise = out.top_gap > 2 * out.gap_stderr;
  out.ranges_overlap = !(a.max < b.min || b.max < a.min);
  out.verdict = fmt::format(
      "pooled trial std {}; {} beats {} by {} = {:.1f} standard errors of the difference{}{}. "
      "({})",
      g(out.pooled_std), a.label, b.label, g(out.top_gap),
      out.gap_stderr > 0 ? out.top_gap / out.gap_stderr : 0.0,
      out.gap_exceeds_noise ? ": larger than the trial variance"
                            : ": within the trial variance, the ranking is not reliable",
      out.ranges_overlap ? " (their min-max ranges overlap)" : " (their min-max ranges are apart)",
      spread);
  if (std::isfinite(out.selection_bias))
    out.verdict += fmt::format(
        " The original runs were {} their reruns' means by {} on average{}.",
        out.selection_bias > 0 ? "better than" : "no better than", g(std::abs(out.selection_bias)),
        out.selection_bias > out.selection_bias_stderr
            ? fmt::format(" ({:.1f} standard errors): picking the best of a study picks lucky "
                          "seeds too",
                          out.selection_bias / out.selection_bias_stderr)
            : "");
  return out;
}

}  // namespace pb::tuning::insight
