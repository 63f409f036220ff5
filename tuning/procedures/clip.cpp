// The clipping sweep's verdict: the playbook's "Gradient clipping". The unclipped run logs the
// global gradient norm of every step (metrics.jsonl grad_norms: the steps since the previous
// line); the threshold is their p-th percentile (default 90, type-7 interpolation: see
// percentile() in sweep.h); the fraction it would clip counts the steps whose norm is strictly
// above it (the clipper scales g only when |g| > threshold). Above kAggressive the playbook
// calls it extremely aggressive: lower the learning rate instead.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tuning/procedures/sweep.h"

namespace pb::tuning::sweep {
namespace {

using ojson = nlohmann::ordered_json;
constexpr double kAggressive = 0.5;
constexpr int kBins = 30;

}  // namespace

Verdict analyse_clip(const Study& study, const nlohmann::json& record) {
  const double pct = record.value("percentile", 90.0);
  Verdict v;
  ojson& j = v.json;
  j["procedure"] = "clip";
  j["study"] = study.record.name;
  j["config"] = record.value("config", std::string());
  j["percentile"] = pct;
  j["percentile_definition"] =
      "linear interpolation between order statistics (NumPy default, Hyndman-Fan type 7): the "
      "value at position (n - 1) p / 100 of the sorted norms";
  ojson warnings = ojson::array();
  if (study.trials.empty()) throw StudyError(study.dir.string() + ": the clip sweep has no trial");
  const TrialRecord& t = study.trials.front();
  const std::string run_dir = run_dir_of(study, t);
  const RunLog run = read_run_log(study.dir / run_dir);
  // Every step's unclipped norm, with its step number.
  std::vector<std::pair<int64_t, double>> norms;
  for (const LogLine& l : run.lines) {
    const auto m = static_cast<int64_t>(l.grad_norms.size());
    for (int64_t i = 0; i < m; ++i) {
      norms.emplace_back(l.step - m + 1 + i, l.grad_norms[static_cast<std::size_t>(i)]);
    }
  }
  std::vector<double> finite;
  for (const auto& [s, n] : norms) {
    if (std::isfinite(n)) finite.push_back(n);
  }
  j["status"] = std::string(to_string(t.status));
  if (!t.reason.empty()) j["reason"] = t.reason;
  j["run_dir"] = run_dir;
  j["steps_logged"] = static_cast<int64_t>(norms.size());
  if (finite.size() != norms.size()) {
    warnings.push_back(fmt::format("{} of {} gradient norms are not finite and are left out",
                                   norms.size() - finite.size(), norms.size()));
  }
  const Stability stability = assess_stability(run);
  if (stability.unstable) {
    warnings.push_back("the unclipped run was unstable: " + stability.detail +
                       "; the norms up to there are used");
  }
  if (finite.empty()) {
    j["threshold"] = nullptr;
    j["summary"] = "no gradient norms logged (did the run start?)";
    j["warnings"] = warnings;
    v.text = "clip sweep of " + j["config"].get<std::string>() + ": " +
             j["summary"].get<std::string>() + "\n";
    return v;
  }
  const double threshold = percentile(finite, pct);
  const auto above =
      std::count_if(finite.begin(), finite.end(), [&](double n) { return n > threshold; });
  const double fraction = static_cast<double>(above) / static_cast<double>(finite.size());
  const auto [lo, hi] = std::minmax_element(finite.begin(), finite.end());
  j["threshold"] = threshold;
  j["clipped_fraction"] = fraction;
  j["norm_min"] = *lo;
  j["norm_median"] = percentile(finite, 50);
  j["norm_max"] = *hi;
  const bool aggressive = fraction > kAggressive;
  j["extremely_aggressive"] = aggressive;
  if (aggressive) {
    warnings.push_back(fmt::format(
        "the threshold clips {:.0f}% of the updates (> 50%): extremely aggressive: lower the "
        "learning rate instead",
        100 * fraction));
  }
  // Plot data: norm against step, and a histogram of kBins equal bins over [min, max].
  ojson by_step = ojson::array();
  for (const auto& [s, n] : norms) {
    by_step.push_back({{"step", s}, {"grad_norm", std::isfinite(n) ? ojson(n) : ojson(nullptr)}});
  }
  ojson hist = ojson::array();
  const double width = (*hi - *lo) / kBins;
  std::vector<int64_t> counts(kBins, 0);
  for (double n : finite) {
    const int b = width > 0 ? std::min(kBins - 1, static_cast<int>((n - *lo) / width)) : 0;
    ++counts[static_cast<std::size_t>(b)];
  }
  for (int b = 0; b < kBins; ++b) {
    hist.push_back({{"lo", *lo + b * width},
                    {"hi", *lo + (b + 1) * width},
                    {"count", counts[static_cast<std::size_t>(b)]}});
  }
  j["plots"] = {{"norm_by_step", by_step}, {"histogram", hist}};

  // --verify: the clipped run (child study verify/).
  const std::filesystem::path verify_dir = study.dir / "verify";
  if (std::filesystem::exists(verify_dir / "study.db")) {
    const Study vs = load_study(verify_dir);
    ojson vj;
    if (!vs.trials.empty()) {
      const TrialRecord& vt = vs.trials.front();
      const RunLog vr = read_run_log(verify_dir / run_dir_of(vs, vt));
      const Stability vstab = assess_stability(vr);
      double clipped = 0;
      int64_t steps = 0;
      for (const LogLine& l : vr.lines) {
        const auto m = static_cast<double>(std::max<std::size_t>(l.grad_norms.size(), 1));
        clipped += l.clipped_fraction * m;
        steps += static_cast<int64_t>(m);
      }
      vj["status"] = std::string(to_string(vt.status));
      if (!vt.reason.empty()) vj["reason"] = vt.reason;
      vj["max_norm"] = threshold;
      vj["stable"] = vt.status == TrialStatus::Completed && !vstab.unstable;
      vj["measured_clipped_fraction"] =
          steps > 0 ? ojson(clipped / static_cast<double>(steps)) : ojson(nullptr);
      vj["final_train_loss"] =
          vr.lines.empty() ? ojson(nullptr) : ojson(vr.lines.back().train_loss);
      vj["unclipped_final_train_loss"] =
          run.lines.empty() ? ojson(nullptr) : ojson(run.lines.back().train_loss);
      vj["best_val_error"] = vr.best_val_error ? ojson(*vr.best_val_error) : ojson(nullptr);
      vj["unclipped_best_val_error"] =
          run.best_val_error ? ojson(*run.best_val_error) : ojson(nullptr);
      vj["run_dir"] = "verify/" + run_dir_of(vs, vt);
    }
    j["verify"] = vj;
  } else {
    j["verify"] = nullptr;
  }

  std::string summary = fmt::format(
      "clip.max_norm = {:.4g}: the {:g}th percentile of {} unclipped gradient norms (median "
      "{:.4g}, max {:.4g}); it would clip {:.1f}% of the updates",
      threshold, pct, finite.size(), j["norm_median"].get<double>(), *hi, 100 * fraction);
  j["summary"] = summary;
  j["warnings"] = warnings;
  std::string& text = v.text;
  text += fmt::format("clip sweep of {} (unclipped run, {} steps)\n",
                      j["config"].get<std::string>(), norms.size());
  text += "verdict: " + summary + "\n";
  if (!j["verify"].is_null() && j["verify"].contains("status")) {
    const ojson& vj = j["verify"];
    text += fmt::format(
        "  verify: clipped run {}, {} clipped {}, final training loss {} (unclipped {})\n",
        vj["status"].get<std::string>(), vj["stable"].get<bool>() ? "stable" : "UNSTABLE",
        vj["measured_clipped_fraction"].is_number()
            ? fmt::format("{:.1f}% of updates", 100 * vj["measured_clipped_fraction"].get<double>())
            : std::string("?"),
        vj["final_train_loss"].dump(), vj["unclipped_final_train_loss"].dump());
  }
  for (const auto& w : warnings) text += "  warning: " + w.get<std::string>() + "\n";
  j["trials"] = ojson::array(
      {{{"max_norm", 0.0}, {"status", std::string(to_string(t.status))}, {"run_dir", run_dir}}});
  return v;
}

}  // namespace pb::tuning::sweep
