// Writes study reports from constructed studies for the browser test (check_report.py):
//   pb_report_fixture OUT_DIR
// OUT_DIR/full.html    every section: a log, a reverse-log and a linear nuisance axis, a
//                      scientific choice, infeasible and failed trials, curves, reruns
// OUT_DIR/empty.html   a study without a completed trial (the report must still say so)
// OUT_DIR/expect.json  per report, the number of trials, so the test knows what "every trial
//                      drawn" means without trusting the report's own counts
#include <cmath>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "tuning/analysis.h"
#include "tuning/report.h"

namespace in = pb::tuning::insight;

namespace {

double wobble(int i, double a) {
  return a * std::sin(1.7 * i + 0.3 * i * i);
}

in::StudyData full_study() {
  in::StudyData s;
  s.name = "fixture_lr_momentum_width";
  s.study_dir = "studies/fixture";
  s.study_file = "name = \"fixture\"\n# a constructed study </script> <b>escaped</b>\n";
  s.axes = {
      {"model.width",
       in::AxisScale::Categorical,
       0,
       0,
       {int64_t{64}, int64_t{256}},
       in::ParamRole::Scientific},
      {"optimizer.learning_rate", in::AxisScale::Log, 1e-3, 1.0, {}, in::ParamRole::Nuisance},
      {"optimizer.momentum", in::AxisScale::ReverseLog, 0.5, 0.999, {}, in::ParamRole::Nuisance},
      {"optimizer.weight_decay", in::AxisScale::Linear, 0.0, 1e-3, {}, in::ParamRole::Nuisance},
  };
  const int n = 24;
  for (int i = 0; i < n; ++i) {
    in::TrialResult t;
    t.index = i;
    const double u1 = std::fmod(0.618 * i + 0.1, 1.0), u2 = std::fmod(0.414 * i + 0.3, 1.0);
    const double lr = 1e-3 * std::pow(1e3, u1);
    const double mom = 1 - 0.5 * std::pow(0.001 / 0.5, u2);
    const int64_t width = i % 2 ? 256 : 64;
    t.params = {{"model.width", width},
                {"optimizer.learning_rate", lr},
                {"optimizer.momentum", mom},
                {"optimizer.weight_decay", 1e-3 * std::fmod(0.29 * i, 1.0)}};
    if (lr > 0.5) {
      t.status = in::TrialStatus::Infeasible;
      t.reason = "diverged at step 40";
    } else if (i == 5) {
      t.status = in::TrialStatus::Failed;
      t.reason = "killed";
    } else {
      t.status = in::TrialStatus::Completed;
      const double d = std::log10(lr) - std::log10(0.3);
      const double floor = 0.1 + 0.2 * d * d + (width == 256 ? -0.01 : 0.0);
      const double tau = 300 + 40 * i;
      for (int step = 20; step <= 3000; step += 20)
        t.curve.train_loss.push_back(
            {step, 0.5 * floor + 2 * std::exp(-step / tau) + wobble(step, 0.01)});
      double best = 1;
      for (int step = 100; step <= 3000; step += 100) {
        const double v = floor + 0.6 * std::exp(-step / tau) + wobble(step / 100, 0.002);
        t.curve.val_error.push_back({step, v});
        best = std::min(best, v);
      }
      t.objective = best;
    }
    s.trials.push_back(std::move(t));
  }
  s.trials.push_back(in::TrialResult{n, in::TrialStatus::Pending, "", {}, {}, -1, {}, ""});
  s.tracking = {{"study", s.name}, {"objective", "best_val_error (min)"}};
  s.reruns = {{"trial 3", {0.112, 0.115, 0.109}, 0.108}, {"trial 9", {0.118, 0.121, 0.116}, {}}};
  return s;
}

in::StudyData empty_study() {
  in::StudyData s;
  s.name = "fixture_empty";
  s.axes = {{"optimizer.learning_rate", in::AxisScale::Log, 1e-3, 1.0, {}, {}}};
  for (int i = 0; i < 3; ++i) {
    in::TrialResult t;
    t.index = i;
    t.status = i == 0 ? in::TrialStatus::Infeasible : in::TrialStatus::Pending;
    t.params = {{"optimizer.learning_rate", 0.01 * (i + 1)}};
    s.trials.push_back(t);
  }
  s.warnings.push_back("1 completed trial(s) have no metrics.jsonl");
  return s;
}

int finished_with_value(const in::StudyData& s) {
  int n = 0;
  for (const auto& t : s.trials)
    n += t.status != in::TrialStatus::Pending && t.status != in::TrialStatus::Running;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: pb_report_fixture OUT_DIR\n";
    return 2;
  }
  try {
    const auto assets = in::load_report_assets(in::default_assets_dir());
    nlohmann::json expect;
    for (const auto& [name, study] : {std::pair{"full", full_study()}, {"empty", empty_study()}}) {
      const auto analysis = in::analyze_study(study);
      std::ofstream(std::string(argv[1]) + "/" + name + ".html")
          << in::render_report(study, analysis, assets);
      expect[name] = {{"trials_drawn", finished_with_value(study)},
                      {"axes", study.axes.size()},
                      {"completed", analysis.counts.completed}};
    }
    std::ofstream(std::string(argv[1]) + "/expect.json") << expect.dump(2) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "pb_report_fixture: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
