// How a trial ends: `playbook train` exit codes and run directories mapped to completed /
// infeasible / failed, and objectives read from summary.json or metrics.jsonl (best or last,
// minimised or maximised).

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tuning/trial_runner.h"

namespace pb::tuning {
namespace {

namespace fs = std::filesystem;

class OutcomeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("pb_outcome_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  fs::path dir_;
};

const char* kMetrics =
    "{\"step\": 10, \"train_loss\": 2.0}\n"
    "{\"step\": 20, \"train_loss\": 1.5, \"val_error\": 0.30, \"val_acc\": 0.70}\n"
    "{\"step\": 30, \"train_loss\": 1.2, \"val_error\": 0.20, \"val_acc\": 0.80}\n"
    "{\"step\": 40, \"train_loss\": 1.1, \"val_error\": 0.25, \"val_acc\": 0.75}\n";

TEST_F(OutcomeTest, ObjectiveFromSummaryOrMetrics) {
  write("summary.json",
        "{\"status\": \"completed\", \"steps\": 40, \"best_step\": 30, \"best_val_error\": 0.2, "
        "\"final_val_error\": 0.25, \"test_error\": 0.26}");
  write("metrics.jsonl", kMetrics);
  Objective obj;  // best_val_error, minimize
  TrialOutcome o = run_dir_outcome(obj, dir_);
  EXPECT_EQ(o.status, TrialStatus::Completed);
  EXPECT_EQ(*o.objective, 0.2);
  EXPECT_EQ(*o.best_step, 30);
  EXPECT_NE(o.metrics_json.find("\"test_error\":0.26"), std::string::npos) << o.metrics_json;

  obj.metric = "final_val_error";
  o = run_dir_outcome(obj, dir_);
  EXPECT_EQ(*o.objective, 0.25);
  EXPECT_EQ(*o.best_step, 40);

  obj.metric = "val_acc";  // a metrics.jsonl field
  obj.goal = Goal::Maximize;
  o = run_dir_outcome(obj, dir_);
  EXPECT_EQ(*o.objective, 0.80);
  EXPECT_EQ(*o.best_step, 30);
  obj.reduce = Reduce::Last;
  o = run_dir_outcome(obj, dir_);
  EXPECT_EQ(*o.objective, 0.75);
  EXPECT_EQ(*o.best_step, 40);

  obj = Objective{};
  obj.metric = "train_loss";
  o = run_dir_outcome(obj, dir_);
  EXPECT_EQ(*o.objective, 1.1);

  obj.metric = "val_loss";  // never logged
  o = run_dir_outcome(obj, dir_);
  EXPECT_EQ(o.status, TrialStatus::Infeasible);
  EXPECT_EQ(o.reason, "val_loss was never logged in metrics.jsonl");
}

TEST_F(OutcomeTest, NoEvaluationIsInfeasibleAndNoSummaryFails) {
  Objective obj;
  EXPECT_EQ(run_dir_outcome(obj, dir_).status, TrialStatus::Failed);
  write("summary.json", "{\"status\": \"completed\", \"steps\": 40, \"best_val_error\": null}");
  const TrialOutcome o = run_dir_outcome(obj, dir_);
  EXPECT_EQ(o.status, TrialStatus::Infeasible);
  EXPECT_NE(o.reason.find("no best_val_error"), std::string::npos) << o.reason;
}

TEST_F(OutcomeTest, ExitCodesOfPlaybookTrain) {
  StudySpec spec;
  write("summary.json", "{\"status\": \"diverged\", \"steps\": 35}");
  TrialOutcome o = train_outcome(spec, ExitStatus{3, 0}, "", dir_);
  EXPECT_EQ(o.status, TrialStatus::Infeasible);
  EXPECT_EQ(o.reason, "diverged at step 35");

  const std::string log =
      "loading\nplaybook: error: base.toml: train.batch_size (64) must be a multiple of "
      "model.virtual_batch_size (24)\n";
  o = train_outcome(spec, ExitStatus{2, 0}, log, dir_);
  EXPECT_EQ(o.status, TrialStatus::Infeasible);
  EXPECT_EQ(o.reason,
            "base.toml: train.batch_size (64) must be a multiple of model.virtual_batch_size (24)");

  o = train_outcome(spec, ExitStatus{4, 0}, "playbook: error: out of memory: 2 GiB\n", dir_);
  EXPECT_EQ(o.status, TrialStatus::Infeasible);
  EXPECT_EQ(o.reason, "out of memory");

  o = train_outcome(spec, ExitStatus{1, 0}, "playbook: error: corrupt checkpoint\n", dir_);
  EXPECT_EQ(o.status, TrialStatus::Failed);
  EXPECT_EQ(o.reason, "exit code 1: playbook: error: corrupt checkpoint");

  o = train_outcome(spec, ExitStatus{-1, 9}, "", dir_);
  EXPECT_EQ(o.status, TrialStatus::Failed);
  EXPECT_EQ(o.reason.rfind("killed by signal 9", 0), 0u) << o.reason;
}

}  // namespace
}  // namespace pb::tuning
