// Insight from studies (tuning/analysis.h) on constructed trial sets whose answers are known.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "tuning/analysis.h"

namespace pb::tuning::insight {
namespace {

AxisSpec log_axis(std::string name, double lo, double hi, ParamRole role = ParamRole::Nuisance) {
  return AxisSpec{std::move(name), AxisScale::Log, lo, hi, {}, role};
}

TrialResult completed(int64_t index, Params params, double objective) {
  TrialResult t;
  t.index = index;
  t.status = TrialStatus::Completed;
  t.params = std::move(params);
  t.objective = objective;
  return t;
}

// n trials spread evenly over a log axis [1e-4, 1e-1] (u = (i + 0.5) / n), objective the squared
// distance in decades from `target`: the best trial is the one closest to target.
StudyData bowl_study(double target, int n = 30) {
  StudyData s;
  s.axes.push_back(log_axis("optimizer.lr", 1e-4, 1e-1));
  for (int i = 0; i < n; ++i) {
    const double u = (i + 0.5) / n;
    const double lr = 1e-4 * std::pow(1e3, u);
    const double d = std::log10(lr) - std::log10(target);
    s.trials.push_back(completed(i, {{"optimizer.lr", lr}}, 0.1 + d * d));
  }
  return s;
}

// ---- boundary check ----------------------------------------------------------------------------

TEST(Boundary, UnitPositionOnEachScale) {
  EXPECT_NEAR(unit_position(AxisSpec{"a", AxisScale::Linear, 2, 4, {}, {}}, 3), 0.5, 1e-12);
  EXPECT_NEAR(unit_position(log_axis("a", 1e-4, 1e-2), 1e-3), 0.5, 1e-12);
  const AxisSpec mom{"m", AxisScale::ReverseLog, 0.9, 0.999, {}, {}};
  EXPECT_NEAR(unit_position(mom, 0.9), 0.0, 1e-12);
  EXPECT_NEAR(unit_position(mom, 0.99), 0.5, 1e-12);
  EXPECT_NEAR(unit_position(mom, 0.999), 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(unit_position(log_axis("a", 1e-4, 1e-2), -1)));
}

TEST(Boundary, BestAtLowEdgeIsFlaggedWithADecadeMore) {
  const auto s = bowl_study(1e-5);  // the optimum lies below the range
  const auto b = boundary_check(s, s.axes[0]);
  ASSERT_TRUE(b.applicable);
  EXPECT_EQ(b.top_k, 3);  // max(3, ceil(10% of 30))
  EXPECT_TRUE(b.low.flagged);
  EXPECT_TRUE(b.low.best_in_edge);
  EXPECT_EQ(b.low.top_in_edge, 3);
  EXPECT_FALSE(b.high.flagged);
  EXPECT_NE(b.low.suggestion.find("1e-05"), std::string::npos) << b.low.suggestion;
  EXPECT_NE(b.verdict.find("low edge"), std::string::npos) << b.verdict;
}

TEST(Boundary, BestInTheMiddleIsNotFlagged) {
  const auto s = bowl_study(std::sqrt(1e-4 * 1e-1));
  const auto b = boundary_check(s, s.axes[0]);
  EXPECT_FALSE(b.low.flagged);
  EXPECT_FALSE(b.high.flagged);
  EXPECT_NEAR(b.best_position, 0.5, 1.0 / 30);
  EXPECT_NE(b.verdict.find("inside the range"), std::string::npos) << b.verdict;
}

TEST(Boundary, HighEdgeOnReverseLogSuggestsOneMoreNine) {
  StudyData s;
  s.axes.push_back(AxisSpec{"optimizer.momentum", AxisScale::ReverseLog, 0.9, 0.99, {}, {}});
  for (int i = 0; i < 20; ++i) {
    const double m = 1 - 0.1 * std::pow(0.1, (i + 0.5) / 20);              // reverse-log spread
    s.trials.push_back(completed(i, {{"optimizer.momentum", m}}, 1 - m));  // higher is better
  }
  const auto b = boundary_check(s, s.axes[0]);
  EXPECT_TRUE(b.high.flagged);
  EXPECT_FALSE(b.low.flagged);
  EXPECT_NE(b.high.suggestion.find("0.999"), std::string::npos) << b.high.suggestion;
}

TEST(Boundary, InfeasibleBeyondTheBestIsAStabilityLimit) {
  auto s = bowl_study(1.0);  // wants larger learning rates ...
  for (auto& t : s.trials)   // ... but everything above 0.05 diverges
    if (std::get<double>(t.params[0].value) > 0.05) {
      t.status = TrialStatus::Infeasible;
      t.objective.reset();
    }
  const auto b = boundary_check(s, s.axes[0]);
  EXPECT_FALSE(b.high.flagged);         // the best (lr ~0.048) is not in the outer 10% ...
  EXPECT_TRUE(b.high.stability_limit);  // ... but at the edge of the feasible region
  EXPECT_FALSE(b.low.stability_limit);
  EXPECT_NE(b.verdict.find("feasible region"), std::string::npos) << b.verdict;
  EXPECT_NE(b.high.suggestion.find("unstable"), std::string::npos) << b.high.suggestion;
}

TEST(Boundary, TopKIsConfigurable) {
  // Best at the low edge, but the next 9 in the middle: with k = 10 only 1 of 10 is in the edge,
  // the best one, which still flags the edge; k counts are reported.
  StudyData s;
  s.axes.push_back(AxisSpec{"x", AxisScale::Linear, 0, 1, {}, {}});
  s.trials.push_back(completed(0, {{"x", 0.01}}, 0.0));
  for (int i = 1; i < 40; ++i) s.trials.push_back(completed(i, {{"x", 0.3 + 0.01 * i}}, double(i)));
  AnalysisOptions o;
  o.boundary_top_k = 10;
  const auto b = boundary_check(s, s.axes[0], o);
  EXPECT_EQ(b.top_k, 10);
  EXPECT_EQ(b.low.top_in_edge, 1);
  EXPECT_TRUE(b.low.flagged);
  EXPECT_NE(b.low.suggestion.find("cannot widen"), std::string::npos) << b.low.suggestion;
}

// ---- isolation plots ---------------------------------------------------------------------------

TEST(Isolation, PicksTheBestTrialPerValue) {
  StudyData s;
  s.axes.push_back(AxisSpec{"model.width",
                            AxisScale::Categorical,
                            0,
                            0,
                            {int64_t{64}, int64_t{128}, int64_t{256}},
                            ParamRole::Scientific});
  s.axes.push_back(log_axis("optimizer.lr", 1e-3, 1));
  // (width, lr, objective): per width the best is trials 2, 3 and 7.
  const std::vector<std::tuple<int64_t, double, double>> rows = {
      {64, 0.01, 0.30}, {64, 0.1, 0.25},  {64, 0.3, 0.22},   {128, 0.01, 0.15},
      {128, 0.1, 0.18}, {128, 0.5, 0.40}, {256, 0.01, 0.21}, {256, 0.1, 0.19}};
  for (size_t i = 0; i < rows.size(); ++i) {
    auto [w, lr, obj] = rows[i];
    s.trials.push_back(completed(int64_t(i), {{"model.width", w}, {"optimizer.lr", lr}}, obj));
  }
  TrialResult bad;
  bad.index = 8;
  bad.status = TrialStatus::Infeasible;
  bad.params = {{"model.width", int64_t{256}}, {"optimizer.lr", 0.9}};
  s.trials.push_back(bad);

  const auto p = isolation_plot(s, s.axes[0]);
  ASSERT_EQ(p.buckets.size(), 3u);
  EXPECT_EQ(p.buckets[0].label, "64");
  EXPECT_EQ(*p.buckets[0].best_trial, 2);
  EXPECT_EQ(*p.buckets[1].best_trial, 3);
  EXPECT_EQ(*p.buckets[2].best_trial, 7);
  EXPECT_DOUBLE_EQ(*p.buckets[2].best_objective, 0.19);
  EXPECT_EQ(p.buckets[2].trials, 3);
  EXPECT_EQ(p.buckets[2].completed, 2);
  ASSERT_TRUE(p.best_bucket);
  EXPECT_EQ(*p.best_bucket, 1u);
  EXPECT_NE(p.verdict.find("128 is best"), std::string::npos) << p.verdict;
}

TEST(Isolation, GapIsJudgedAgainstMeasuredTrialVariance) {
  StudyData s;
  s.axes.push_back(AxisSpec{"model.depth",
                            AxisScale::Categorical,
                            0,
                            0,
                            {int64_t{2}, int64_t{4}},
                            ParamRole::Scientific});
  s.trials.push_back(completed(0, {{"model.depth", int64_t{2}}}, 0.150));
  s.trials.push_back(completed(1, {{"model.depth", int64_t{4}}}, 0.140));               // gap 0.01
  s.reruns = {{"trial 1", {0.139, 0.141, 0.140}}, {"trial 0", {0.149, 0.151, 0.150}}};  // std 1e-3
  auto a = analyze_study(s);
  ASSERT_EQ(a.isolation_plots.size(), 1u);
  EXPECT_NEAR(a.isolation_plots[0].gap, 0.01, 1e-12);
  EXPECT_NE(a.isolation_plots[0].verdict.find("exceeds"), std::string::npos)
      << a.isolation_plots[0].verdict;
  s.reruns = {{"trial 1", {0.13, 0.15, 0.14}}, {"trial 0", {0.14, 0.16, 0.15}}};  // std 0.01
  a = analyze_study(s);
  EXPECT_NE(a.isolation_plots[0].verdict.find("is within"), std::string::npos)
      << a.isolation_plots[0].verdict;
}

TEST(Isolation, BucketsAContinuousAxisOnItsScale) {
  StudyData s;
  s.axes.push_back(log_axis("wd", 1e-4, 1e-0, ParamRole::Scientific));
  // One decade per bucket: 4 buckets; the best of each decade is the trial with the odd index.
  for (int d = 0; d < 4; ++d) {
    const double lo = 1e-4 * std::pow(10.0, d);
    s.trials.push_back(completed(2 * d, {{"wd", lo * 2}}, 1.0 + d));
    s.trials.push_back(completed(2 * d + 1, {{"wd", lo * 5}}, 0.5 + d));
  }
  AnalysisOptions o;
  o.isolation_buckets = 4;
  const auto p = isolation_plot(s, s.axes[0], o);
  ASSERT_EQ(p.buckets.size(), 4u);
  for (int d = 0; d < 4; ++d) {
    EXPECT_EQ(p.buckets[size_t(d)].completed, 2);
    EXPECT_EQ(*p.buckets[size_t(d)].best_trial, 2 * d + 1);
    EXPECT_NEAR(p.buckets[size_t(d)].lo, 1e-4 * std::pow(10.0, d), 1e-12);
  }
  EXPECT_EQ(*p.best_bucket, 0u);
  EXPECT_THROW(isolation_plot(s, log_axis("nope", 1, 2)), std::invalid_argument);
}

// ---- training curves ---------------------------------------------------------------------------

// Deterministic small noise in [-a, a].
double wobble(int i, double a) {
  return a * std::sin(1.7 * i + 0.3 * i * i);
}

// val_error = floor + 0.5 exp(-t / tau) (+ extra), evaluated every 100 of `steps`; train loss
// alike at every 20 steps, scaled.
TrainingCurve make_curve(int steps, double tau, double val_noise = 0.0005,
                         double (*extra)(double) = nullptr, double train_noise = 0.002) {
  TrainingCurve c;
  for (int s = 20, i = 0; s <= steps; s += 20, ++i)
    c.train_loss.push_back({s, 0.2 + 2.0 * std::exp(-s / tau) + wobble(i, train_noise)});
  for (int s = 100, i = 0; s <= steps; s += 100, ++i) {
    double v = 0.1 + 0.5 * std::exp(-s / tau) + wobble(i, val_noise);
    if (extra) v += extra(double(s));
    c.val_error.push_back({s, v});
  }
  return c;
}

void expect_only(const CurveDiagnosis& d, std::optional<CurveIssue> issue) {
  for (const auto& f : d.findings) {
    EXPECT_TRUE(f.evaluated) << to_string(f.issue) << ": " << f.detail;
    EXPECT_EQ(f.fired, issue && f.issue == *issue) << to_string(f.issue) << ": " << f.detail;
  }
}

TEST(Curves, HealthyCurveRaisesNothing) {
  // 8 time constants: converged by the last quarter, and only after 2/3 of the run.
  expect_only(diagnose_curve(make_curve(4000, 500)), std::nullopt);
}

TEST(Curves, OverfittingFires) {
  auto rise = [](double s) { return s > 2000 ? 0.04 * (s - 2000) / 2000 : 0.0; };
  const auto d = diagnose_curve(make_curve(4000, 250, 0.0005, rise));
  EXPECT_TRUE(d.fired(CurveIssue::Overfitting)) << d.findings[0].detail;
  EXPECT_FALSE(d.fired(CurveIssue::StillImproving));
  // The same rise without the train loss falling is not overfitting (it is a broken run).
  auto c = make_curve(4000, 250, 0.0005, rise);
  for (auto& p : c.train_loss) p.value = 1.0 + 1e-4 * double(p.step);
  EXPECT_FALSE(diagnose_curve(c).fired(CurveIssue::Overfitting));
}

TEST(Curves, HighLateVarianceFires) {
  auto c = make_curve(4000, 500);
  for (size_t i = 0; i < c.train_loss.size(); ++i)
    if (c.train_loss[i].step > 3000) c.train_loss[i].value *= (i % 2 ? 1.5 : 0.6);
  const auto d = diagnose_curve(c);
  EXPECT_TRUE(d.fired(CurveIssue::HighLateVariance)) << d.findings[1].detail;
  EXPECT_FALSE(d.fired(CurveIssue::Overfitting));
}

TEST(Curves, StillImprovingFires) {
  const auto d = diagnose_curve(make_curve(4000, 2000));  // 2 time constants: far from done
  expect_only(d, CurveIssue::StillImproving);
}

TEST(Curves, SaturatedEarlyFires) {
  const auto d = diagnose_curve(make_curve(4000, 150));  // done after ~1/4 of the run
  expect_only(d, CurveIssue::SaturatedEarly);
}

TEST(Curves, NoiseAloneDoesNotFire) {
  // A flat-at-the-end curve with eval noise 10x the healthy one: no verdict flips.
  const auto d = diagnose_curve(make_curve(4000, 500, 0.003));
  EXPECT_FALSE(d.fired(CurveIssue::Overfitting)) << d.findings[0].detail;
  EXPECT_FALSE(d.fired(CurveIssue::StillImproving)) << d.findings[2].detail;
}

TEST(Curves, TooShortIsNotEvaluated) {
  TrainingCurve c;
  c.val_error = {{100, 0.5}, {200, 0.4}};
  const auto d = diagnose_curve(c);
  for (const auto& f : d.findings) {
    EXPECT_FALSE(f.evaluated) << to_string(f.issue);
    EXPECT_FALSE(f.fired);
  }
  EXPECT_FALSE(diagnose_curve(TrainingCurve{}).fired(CurveIssue::Overfitting));
}

// ---- sampled enough ----------------------------------------------------------------------------

TEST(Sampling, FlatSpaceSaysEnough) {
  // Every point of the space is equally good (up to 1e-6): more trials cannot help.
  std::vector<std::optional<double>> y;
  for (int i = 0; i < 40; ++i) y.push_back(0.25 + 1e-6 * wobble(i, 1.0));
  const auto c = sampling_check(y, true);
  ASSERT_TRUE(c.applicable);
  EXPECT_FALSE(c.more_trials_help) << c.verdict;
  ASSERT_EQ(c.curve.size(), 40u);
  // Flat: from n = 5 on, the median best moves by less than 1e-5.
  for (const auto& p : c.curve) {
    if (p.n >= 5) {
      EXPECT_NEAR(p.median, c.curve.back().median, 1e-5) << p.n;
    }
  }
}

TEST(Sampling, RareGoodRegionSaysMoreTrialsHelp) {
  // One in 20 trials lands in a good region: the best keeps improving with more trials.
  std::vector<std::optional<double>> y;
  for (int i = 0; i < 20; ++i) y.push_back(i == 7 ? 0.1 : 0.3 + 0.01 * i);
  const auto c = sampling_check(y, true);
  EXPECT_TRUE(c.more_trials_help) << c.verdict;
  EXPECT_GT(c.gain, 0.05);
  // The median best never gets worse with more trials, and the bands bracket it.
  for (size_t i = 1; i < c.curve.size(); ++i) {
    EXPECT_LE(c.curve[i].median, c.curve[i - 1].median + 1e-12);
    EXPECT_LE(c.curve[i].p10, c.curve[i].median);
    EXPECT_GE(c.curve[i].p90, c.curve[i].median);
  }
}

TEST(Sampling, SeededAndDeterministicAndHandlesMaximizeAndInfeasible) {
  std::vector<std::optional<double>> y;
  for (int i = 0; i < 30; ++i) y.push_back(i % 5 == 0 ? std::nullopt : std::optional(0.01 * i));
  AnalysisOptions o;
  o.bootstrap_seed = 42;
  const auto a = sampling_check(y, false, o), b = sampling_check(y, false, o);
  ASSERT_EQ(a.curve.size(), b.curve.size());
  for (size_t i = 0; i < a.curve.size(); ++i) EXPECT_EQ(a.curve[i].median, b.curve[i].median);
  // Maximising: the best of all draws is the largest value, 0.29.
  EXPECT_NEAR(a.curve.back().median, 0.29, 1e-12);
  EXPECT_LE(a.curve.back().p10, a.curve.back().p90);
  // n = 1: a fifth of the draws are infeasible, but the median draw is feasible.
  EXPECT_TRUE(std::isfinite(a.curve.front().median));
  EXPECT_FALSE(sampling_check({0.1, 0.2}, true).applicable);
}

// ---- trial variance ----------------------------------------------------------------------------

TEST(TrialVariance, SpreadAndGapAgainstNoise) {
  // Two configurations, 4 seeds each; std of {1,2,3,4} = 1.29099.
  auto tv =
      trial_variance({{"trial 3", {1.0, 2.0, 3.0, 4.0}}, {"trial 9", {2.0, 3.0, 4.0, 5.0}}}, true);
  ASSERT_EQ(tv.groups.size(), 2u);
  EXPECT_EQ(tv.groups[0].label, "trial 3");
  EXPECT_NEAR(tv.groups[0].std, std::sqrt(5.0 / 3.0), 1e-12);
  EXPECT_EQ(tv.groups[0].min, 1.0);
  EXPECT_EQ(tv.groups[0].max, 4.0);
  EXPECT_NEAR(tv.pooled_std, std::sqrt(5.0 / 3.0), 1e-12);
  EXPECT_NEAR(tv.top_gap, 1.0, 1e-12);
  EXPECT_FALSE(tv.gap_exceeds_noise) << tv.verdict;  // 1.0 < 2 * 1.29 * sqrt(1/2)
  EXPECT_TRUE(tv.ranges_overlap);

  tv = trial_variance({{"a", {0.200, 0.202, 0.198}}, {"b", {0.150, 0.151, 0.149}}}, true);
  EXPECT_EQ(tv.groups[0].label, "b");
  EXPECT_TRUE(tv.gap_exceeds_noise) << tv.verdict;
  EXPECT_FALSE(tv.ranges_overlap);
  EXPECT_NE(tv.verdict.find("larger than the trial variance"), std::string::npos);

  // Originals picked for being best sit below their reruns: a selection bias of 0.01.
  tv = trial_variance({{"a", {0.20, 0.21, 0.22}, 0.20}, {"b", {0.15, 0.16, 0.17}, 0.15}}, true);
  EXPECT_NEAR(tv.selection_bias, 0.01, 1e-12);
  EXPECT_NE(tv.verdict.find("lucky seeds"), std::string::npos) << tv.verdict;
  EXPECT_TRUE(std::isnan(trial_variance({{"a", {1.0, 2.0}}}, true).selection_bias));
  EXPECT_FALSE(trial_variance({{"a", {0.2}}, {"b", {0.3}}}, true).gap_exceeds_noise);
  EXPECT_TRUE(std::isnan(trial_variance({}, true).pooled_std));
}

// ---- the study ---------------------------------------------------------------------------------

TEST(Study, NoCompletedTrialGivesAVerdictNotACrash) {
  StudyData s;
  s.axes.push_back(log_axis("optimizer.lr", 1e-4, 1e-1));
  for (int i = 0; i < 3; ++i) {
    TrialResult t;
    t.index = i;
    t.status = i == 0 ? TrialStatus::Infeasible : TrialStatus::Pending;
    t.params = {{"optimizer.lr", 0.01}};
    s.trials.push_back(t);
  }
  const auto a = analyze_study(s);
  EXPECT_FALSE(a.best_trial);
  EXPECT_EQ(a.counts.infeasible, 1);
  EXPECT_EQ(a.counts.pending, 2);
  ASSERT_FALSE(a.verdicts.empty());
  EXPECT_NE(a.verdicts[0].find("No completed trial"), std::string::npos);
  ASSERT_EQ(a.axis_plots.size(), 1u);
  ASSERT_EQ(a.axis_plots[0].points.size(), 1u);  // the infeasible one, marked; pending left out
  EXPECT_EQ(a.axis_plots[0].points[0].status, TrialStatus::Infeasible);
  EXPECT_FALSE(a.boundaries[0].applicable);
  EXPECT_NE(analysis_text(s, a).find("No completed trial"), std::string::npos);
  EXPECT_TRUE(analysis_json(s, a)["best_trial"].is_null());
}

TEST(Study, RanksDiagnosesAndReportsInTextAndJson) {
  auto s = bowl_study(1e-5, 12);
  for (auto& t : s.trials) t.curve = make_curve(4000, 2000);  // all still improving
  const auto a = analyze_study(s);
  ASSERT_TRUE(a.best_trial);
  EXPECT_EQ(*a.best_trial, 0);
  EXPECT_EQ(a.ranked.size(), 12u);
  ASSERT_EQ(a.curves.size(), 3u);
  EXPECT_EQ(a.curves[0].trial, 0);
  EXPECT_TRUE(a.curves[0].fired(CurveIssue::StillImproving));
  const auto text = analysis_text(s, a);
  EXPECT_NE(text.find("low edge"), std::string::npos) << text;
  EXPECT_NE(text.find("still improving"), std::string::npos) << text;
  const auto j = analysis_json(s, a);
  EXPECT_TRUE(j["boundaries"][0]["low"]["flagged"].get<bool>());
  EXPECT_TRUE(j["curves"][0]["findings"]["still_improving"]["fired"].get<bool>());
  EXPECT_EQ(j["sampling"]["curve"].size(), 12u);
}

}  // namespace
}  // namespace pb::tuning::insight
