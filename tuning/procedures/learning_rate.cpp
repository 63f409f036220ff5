// The learning-rate and warmup sweeps' verdicts: the playbook's "Identifying unstable
// workloads", "Algorithm for picking an initial candidate for max_train_steps" and "How to
// apply learning rate warmup". See sweep.h and README "Procedures".
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tuning/procedures/sweep.h"

namespace pb::tuning::sweep {
namespace {

using ojson = nlohmann::ordered_json;

ojson number_or_null(std::optional<double> x) {
  return x && std::isfinite(*x) ? ojson(*x) : ojson(nullptr);
}

// One trial of an lr or warmup sweep: its point and what its run shows.
struct Trial {
  const TrialRecord* record = nullptr;
  double point = 0;  // the learning rate, or the warmup steps
  RunLog run;
  Stability stability;
  std::optional<double> final_loss, best_loss, best_val_error;
  std::string run_dir;
};

std::vector<Trial> read_trials(const Study& study, const std::string& key) {
  std::vector<Trial> out;
  for (const TrialRecord& t : study.trials) {
    Trial tr;
    tr.record = &t;
    const auto params = nlohmann::json::parse(t.params_json, nullptr, false);
    if (params.contains(key) && params[key].is_number()) tr.point = params[key].get<double>();
    tr.run_dir = run_dir_of(study, t);
    tr.run = read_run_log(study.dir / tr.run_dir);
    tr.stability = assess_stability(tr.run);
    if (!tr.run.lines.empty()) {
      tr.final_loss = tr.run.lines.back().train_loss;
      for (const LogLine& l : tr.run.lines) {
        if (std::isfinite(l.train_loss) && (!tr.best_loss || l.train_loss < *tr.best_loss)) {
          tr.best_loss = l.train_loss;
        }
      }
    }
    tr.best_val_error = tr.run.best_val_error;
    out.push_back(std::move(tr));
  }
  std::sort(out.begin(), out.end(),
            [](const Trial& a, const Trial& b) { return a.point < b.point; });
  return out;
}

bool finished(const Trial& t) {
  return is_done(t.record->status);
}

ojson trial_json(const Trial& t, const char* point_name) {
  ojson o;
  o[point_name] = t.point;
  o["status"] = std::string(to_string(t.record->status));
  if (!t.record->reason.empty()) o["reason"] = t.record->reason;
  o["final_train_loss"] = number_or_null(t.final_loss);
  o["best_train_loss"] = number_or_null(t.best_loss);
  o["best_val_error"] = number_or_null(t.best_val_error);
  o["initial_loss"] = number_or_null(t.run.initial_loss);
  o["diverged"] = t.stability.kind == "diverged";
  o["unstable"] = t.stability.unstable;
  o["instability"] =
      t.stability.unstable
          ? ojson({{"kind", t.stability.kind},
                   {"step", t.stability.step ? ojson(*t.stability.step) : ojson(nullptr)},
                   {"detail", t.stability.detail}})
          : ojson(nullptr);
  o["run_dir"] = t.run_dir;
  return o;
}

// Long-form training curves: one row per (trial, log step).
ojson curves(const std::vector<Trial>& trials, const char* point_name) {
  ojson rows = ojson::array();
  for (const Trial& t : trials) {
    for (const LogLine& l : t.run.lines) {
      rows.push_back(
          {{point_name, t.point},
           {"step", l.step},
           {"train_loss", std::isfinite(l.train_loss) ? ojson(l.train_loss) : ojson(nullptr)},
           {"lr", l.lr}});
    }
  }
  return rows;
}

std::string trial_line(const Trial& t, const std::string& point) {
  std::string state;
  if (!finished(t)) {
    state = std::string(to_string(t.record->status));
  } else if (t.stability.unstable) {
    state = (t.stability.kind == "diverged" ? "DIVERGED: " : "UNSTABLE: ") + t.stability.detail;
  } else if (t.record->status == TrialStatus::Completed) {
    state = "stable";
  } else {
    state = fmt::format("{}: {}", to_string(t.record->status), t.record->reason);
  }
  auto g = [](std::optional<double> x) { return x ? fmt::format("{:.4g}", *x) : std::string("-"); };
  return fmt::format("{:>10}  {:>11}  {:>11}  {:>9}  {}\n", point, g(t.final_loss), g(t.best_loss),
                     g(t.best_val_error), state);
}

}  // namespace

Verdict analyse_lr(const Study& study, const nlohmann::json& record) {
  const std::vector<Trial> trials = read_trials(study, "optimizer.learning_rate");
  const bool by_val = record.value("has_validation", true);
  Verdict v;
  ojson& j = v.json;
  j["procedure"] = "lr";
  j["study"] = study.record.name;
  j["config"] = record.value("config", std::string());
  j["schedule"] = "constant";
  j["steps"] = record.value("steps", int64_t{0});
  j["best_by"] = by_val ? "best_val_error" : "final_train_loss";
  ojson warnings = ojson::array();

  // The best: the lowest objective among stable completed trials.
  const Trial* best = nullptr;
  auto score = [&](const Trial& t) { return by_val ? t.best_val_error : t.final_loss; };
  for (const Trial& t : trials) {
    if (t.record->status != TrialStatus::Completed || t.stability.unstable || !score(t)) continue;
    if (!best || *score(t) < *score(*best)) best = &t;
  }
  const Trial* unstable = nullptr;
  for (const Trial& t : trials) {
    if (finished(t) && t.stability.unstable) {
      unstable = &t;
      break;
    }
  }
  const Trial* largest_stable_below = nullptr;
  for (const Trial& t : trials) {
    if (unstable && t.point >= unstable->point) break;
    if (t.record->status == TrialStatus::Completed && !t.stability.unstable)
      largest_stable_below = &t;
  }
  j["best_learning_rate"] = best ? ojson(best->point) : ojson(nullptr);
  j["best_objective"] = best ? number_or_null(score(*best)) : ojson(nullptr);
  j["unstable_base_learning_rate"] = unstable ? ojson(unstable->point) : ojson(nullptr);
  j["largest_stable_learning_rate_below_it"] =
      largest_stable_below ? ojson(largest_stable_below->point) : ojson(nullptr);
  const bool at_low = best && best->point == trials.front().point;
  const bool at_high = best && best->point == trials.back().point;
  j["best_at_boundary"] = at_low ? ojson("min") : at_high ? ojson("max") : ojson(nullptr);
  if (at_low) {
    warnings.push_back(fmt::format(
        "the best learning rate {:g} is the smallest in the range: lower --min (bad search "
        "spaces can make it possible to engage in self-deception)",
        best->point));
  }
  if (at_high) {
    warnings.push_back(fmt::format(
        "the best learning rate {:g} is the largest in the range: raise --max", best->point));
  }
  if (best && unstable && largest_stable_below == best && unstable->point > best->point) {
    warnings.push_back(fmt::format(
        "the best learning rate {:g} sits next to the unstable {:g}: instability may be what "
        "limits the learning rate (try playbook sweep warmup --unstable-lr {:g}, or sweep clip)",
        best->point, unstable->point, unstable->point));
  }
  for (const Trial& t : trials) {
    if (!finished(t)) {
      warnings.push_back(fmt::format("trial at lr {:g} has not finished ({})", t.point,
                                     to_string(t.record->status)));
    }
  }

  // max_train_steps: the first logged step where the fastest stable trial reached the target.
  std::optional<int64_t> candidate;
  const Trial* fastest = nullptr;
  if (record.contains("fit_train") && record["fit_train"].is_number()) {
    const double target = record["fit_train"].get<double>();
    for (const Trial& t : trials) {
      if (t.record->status != TrialStatus::Completed || t.stability.unstable) continue;
      for (const LogLine& l : t.run.lines) {
        if (std::isfinite(l.train_loss) && l.train_loss <= target) {
          if (!candidate || l.step < *candidate) {
            candidate = l.step;
            fastest = &t;
          }
          break;
        }
      }
    }
    j["fit_train_target"] = target;
    j["max_train_steps_candidate"] = candidate ? ojson(*candidate) : ojson(nullptr);
    j["fastest_learning_rate"] = fastest ? ojson(fastest->point) : ojson(nullptr);
    j["fit_resolution_steps"] = trials.empty() || trials.front().run.lines.empty()
                                    ? ojson(nullptr)
                                    : ojson(trials.front().run.lines.front().step);
    if (!candidate) {
      warnings.push_back(fmt::format(
          "no stable trial reached training loss {:g} in {} steps: train longer or widen the "
          "range",
          target, j["steps"].get<int64_t>()));
    } else if (fastest &&
               (fastest->point == trials.front().point || fastest->point == trials.back().point)) {
      warnings.push_back(
          "the fastest trial is at the boundary of the range: the candidate "
          "max_train_steps may be off (widen the range)");
    }
  }

  std::string& text = v.text;
  text += fmt::format("learning-rate sweep of {} (constant schedule, {} steps per trial)\n",
                      j["config"].get<std::string>(), j["steps"].get<int64_t>());
  text += fmt::format("{:>10}  {:>11}  {:>11}  {:>9}  {}\n", "lr", "final loss", "best loss",
                      "best val", "stability");
  for (const Trial& t : trials) text += trial_line(t, fmt::format("{:g}", t.point));
  std::string summary = best ? fmt::format("best learning rate {:g} ({} {:.4g})", best->point,
                                           j["best_by"].get<std::string>(), *score(*best))
                             : std::string("no stable trial");
  summary +=
      unstable ? fmt::format("; unstable from {:g} (unstable_base_learning_rate)", unstable->point)
               : std::string("; no learning rate in the range was unstable");
  if (candidate) {
    summary += fmt::format("; max_train_steps candidate {} (lr {:g} reached training loss {:g})",
                           *candidate, fastest->point, record["fit_train"].get<double>());
  }
  j["summary"] = summary;
  text += "verdict: " + summary + "\n";
  for (const auto& w : warnings) text += "  warning: " + w.get<std::string>() + "\n";
  j["warnings"] = warnings;
  ojson rows = ojson::array(), axis = ojson::array();
  for (const Trial& t : trials) {
    rows.push_back(trial_json(t, "learning_rate"));
    axis.push_back(
        {{"learning_rate", t.point},
         {"objective", number_or_null(score(t))},
         {"status", t.stability.unstable ? "unstable" : std::string(to_string(t.record->status))}});
  }
  j["trials"] = rows;
  j["plots"] = {{"axis", axis}, {"curves", curves(trials, "learning_rate")}};
  return v;
}

Verdict analyse_warmup(const Study& study, const nlohmann::json& record) {
  const std::vector<Trial> trials = read_trials(study, "schedule.warmup_steps");
  const int64_t max_steps = record.value("base_max_train_steps", int64_t{0});
  const double lr = record.value("base_learning_rate", 0.0);
  Verdict v;
  ojson& j = v.json;
  j["procedure"] = "warmup";
  j["study"] = study.record.name;
  j["config"] = record.value("config", std::string());
  j["unstable_base_learning_rate"] = record.value("unstable_base_learning_rate", 0.0);
  j["factor"] = record.value("factor", 0.0);
  j["base_learning_rate"] = lr;
  j["max_train_steps"] = max_steps;
  j["schedule"] =
      "playbook_warmup: linear from 0 over warmup_steps, then constant for 2 x "
      "warmup_steps";
  ojson warnings = ojson::array();
  const Trial* shortest = nullptr;
  for (const Trial& t : trials) {
    if (t.record->status == TrialStatus::Completed && !t.stability.unstable) {
      shortest = &t;
      break;
    }
  }
  const auto w = shortest ? static_cast<int64_t>(shortest->point) : int64_t{0};
  j["shortest_stable_warmup_steps"] = shortest ? ojson(w) : ojson(nullptr);
  j["warmup_fraction_of_max_train_steps"] =
      shortest && max_steps > 0 ? ojson(static_cast<double>(w) / static_cast<double>(max_steps))
                                : ojson(nullptr);
  if (shortest && max_steps > 0 && 20 * w > max_steps) {
    warnings.push_back(fmt::format(
        "warmup {} is more than 5% of max_train_steps {}: max_train_steps may need to be "
        "increased to account for it",
        w, max_steps));
  }
  for (const Trial& t : trials) {
    if (shortest && t.point > shortest->point && finished(t) && t.stability.unstable) {
      warnings.push_back(
          fmt::format("warmup {:g} was unstable although {} was stable: check the "
                      "curves (noise or a long-run instability)",
                      t.point, w));
    }
    if (!finished(t)) {
      warnings.push_back(fmt::format("trial with warmup {:g} has not finished", t.point));
    }
  }
  std::string& text = v.text;
  text += fmt::format(
      "warmup sweep of {} at base learning rate {:g} ({:g} x unstable {:g}); each trial warms up "
      "over W steps then trains 2W at the base rate\n",
      j["config"].get<std::string>(), lr, j["factor"].get<double>(),
      j["unstable_base_learning_rate"].get<double>());
  text += fmt::format("{:>10}  {:>11}  {:>11}  {:>9}  {}\n", "warmup", "final loss", "best loss",
                      "best val", "stability");
  for (const Trial& t : trials) text += trial_line(t, fmt::format("{:g}", t.point));
  const std::string summary =
      shortest ? fmt::format(
                     "shortest stable warmup {} steps at learning rate {:g} ({:.1f}% of "
                     "max_train_steps {}): prepend it to the baseline schedule",
                     w, lr,
                     100.0 * static_cast<double>(w) /
                         static_cast<double>(std::max<int64_t>(max_steps, 1)),
                     max_steps)
               : fmt::format(
                     "no warmup in the sweep trained stably at learning rate {:g}: try a "
                     "smaller --factor, longer warmups, or gradient clipping",
                     lr);
  j["summary"] = summary;
  text += "verdict: " + summary + "\n";
  for (const auto& x : warnings) text += "  warning: " + x.get<std::string>() + "\n";
  j["warnings"] = warnings;
  ojson rows = ojson::array();
  for (const Trial& t : trials) rows.push_back(trial_json(t, "warmup_steps"));
  j["trials"] = rows;
  j["plots"] = {{"curves", curves(trials, "warmup_steps")}};
  return v;
}

}  // namespace pb::tuning::sweep
