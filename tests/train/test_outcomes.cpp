// What a run records besides its metrics: the unclipped gradient norm of every step (the
// clipping procedure reads them), divergence measured against the loss before the first update,
// out-of-memory as an outcome with its own status (a study records it as infeasible), and one
// test-set pass per distinct model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/device/errors.h"
#include "train/config.h"
#include "train/trainer.h"

namespace pb::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct RunRecord {
  fs::path dir;
  std::vector<json> metrics;
  json summary;
};

const std::vector<std::string> kJob = {
    "model.name=mlp",
    "model.hidden=[16]",
    "model.norm=none",
    "data.dataset=synthetic",
    "data.synthetic_shape=[1,4,4]",
    "data.synthetic_classes=4",
    "data.synthetic_count=96",
    "data.validation_size=16",
    "data.workers=0",
    "train.batch_size=16",
    "train.eval_batch_size=16",
    "train.max_train_steps=6",
    "train.log_every=3",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.device=cpu",
    "optimizer.learning_rate=0.05",
    "schedule.name=constant",
};

RunRecord run(const std::vector<std::string>& extra, const std::string& name) {
  std::vector<std::string> set = kJob;
  set.insert(set.end(), extra.begin(), extra.end());
  RunRecord r;
  r.dir = fs::temp_directory_path() / ("pb_outcomes_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(r.dir);
  TrainOptions options;
  options.out_dir = r.dir;
  std::ostringstream log;
  options.log = &log;
  try {
    train(resolve_text("", "test", set), "test", options);
  } catch (const OutOfMemoryError&) {
    // recorded in summary.json; the caller checks it
  }
  std::ifstream metrics(r.dir / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    if (!line.empty()) r.metrics.push_back(json::parse(line));
  }
  std::ifstream summary(r.dir / "summary.json");
  if (summary) r.summary = json::parse(summary);
  return r;
}

TEST(Outcomes, EveryStepsGradientNormIsLogged) {
  const RunRecord r = run({}, "norms");
  ASSERT_EQ(r.metrics.size(), 2u);
  for (const json& line : r.metrics) {
    const auto norms = line.at("grad_norms").get<std::vector<double>>();
    ASSERT_EQ(norms.size(), 3u);  // log_every steps per line
    // The last step's norm is the one logged as grad_norm.
    EXPECT_EQ(norms.back(), line.at("grad_norm").get<double>());
    for (double n : norms) EXPECT_GT(n, 0.0);
  }
  // Different steps, different norms.
  EXPECT_NE(r.metrics[0]["grad_norms"][0], r.metrics[0]["grad_norms"][1]);
  fs::remove_all(r.dir);
}

TEST(Outcomes, DivergenceIsMeasuredAgainstTheLossBeforeTheFirstUpdate) {
  // A learning rate far too high: the loss explodes within the first logged window, so the first
  // logged loss is already huge; compared with itself it would look healthy.
  const RunRecord r = run({"optimizer.learning_rate=1e6"}, "diverge");
  EXPECT_EQ(r.summary["status"], "diverged");
  EXPECT_EQ(r.summary["diverged_at_step"], 3);
  EXPECT_EQ(r.summary["reason"], "diverged at step 3");
  const double initial = r.summary["initial_loss"].get<double>();
  EXPECT_NEAR(initial, std::log(4.0), 0.5);  // 4 classes at initialisation
  // A healthy run keeps the loss near or below it.
  const RunRecord ok = run({}, "healthy");
  EXPECT_EQ(ok.summary["status"], "completed");
  EXPECT_NEAR(ok.summary["initial_loss"].get<double>(), std::log(4.0), 0.5);
  fs::remove_all(r.dir);
  fs::remove_all(ok.dir);
}

TEST(Outcomes, OutOfMemoryIsAnOutcomeWithItsOwnStatus) {
  // The model (16x16 inputs, 512 hidden: 0.5 MiB of weights) fits in 2 MiB; training batches of
  // 96 examples with their activations and gradients do not.
  const RunRecord r =
      run({"data.synthetic_shape=[1,16,16]", "model.hidden=[512]", "train.batch_size=96",
           "train.eval_batch_size=96", "data.synthetic_count=400", "train.memory_limit_mb=2"},
          "oom");
  ASSERT_TRUE(fs::exists(r.dir / "summary.json"));
  EXPECT_EQ(r.summary["status"], "out_of_memory");
  EXPECT_NE(r.summary["reason"].get<std::string>().find("out of memory"), std::string::npos);
  EXPECT_EQ(r.summary["memory_limit_bytes"], 2u << 20);
  EXPECT_LE(r.summary["peak_memory_bytes"].get<std::size_t>(), 2u << 20);
  // Without the cap the same run completes, and reports its peak.
  const RunRecord ok =
      run({"data.synthetic_shape=[1,16,16]", "model.hidden=[512]", "train.batch_size=96",
           "train.eval_batch_size=96", "data.synthetic_count=400"},
          "no_cap");
  EXPECT_EQ(ok.summary["status"], "completed");
  EXPECT_GT(ok.summary["peak_memory_bytes"].get<std::size_t>(), 2u << 20);
  fs::remove_all(r.dir);
  fs::remove_all(ok.dir);
}

// Retrospective checkpoint selection puts each distinct model through the test set once: when
// the best validation checkpoint is the final model, one pass serves both.
TEST(Outcomes, TheTestSetSeesEachDistinctModelOnce) {
  // One validation, at the last step: the best checkpoint is the final model.
  const RunRecord same = run({"train.eval_every=6"}, "eval_once");
  EXPECT_EQ(same.summary["best_step"], 6);
  EXPECT_EQ(same.summary["test_evaluations"], 1);
  EXPECT_EQ(same.summary["best_test_error"], same.summary["test_error"]);
  // A learning rate too small to change a prediction: steps 3 and 6 validate equally and the
  // earlier stays best, another checkpoint with the same predictions: two passes, one error.
  const RunRecord earlier = run({"optimizer.learning_rate=1e-12"}, "eval_twice");
  EXPECT_EQ(earlier.summary["best_step"], 3);
  EXPECT_EQ(earlier.summary["test_evaluations"], 2);
  EXPECT_EQ(earlier.summary["best_test_error"], earlier.summary["test_error"]);
  fs::remove_all(same.dir);
  fs::remove_all(earlier.dir);
}

}  // namespace
}  // namespace pb::train
