#pragma once
// The report subcommand of `playbook`:
//   playbook report STUDY_DIR [-o FILE.html] [--json FILE.json] [--text]
// writes one self-contained HTML report (tuning/report.h; default STUDY_DIR/report.html), and
// optionally the analysis's verdicts as JSON and/or plain text on stdout. Exit codes: 0 written;
// 1 the study cannot be read or the chart assets are missing (one line saying why).
//
//   playbook study rerun STUDY_DIR [--best K] [--seeds S] [--workers N] [--devices D]
// (registered under `study`) measures trial variance: the best K completed trials of a train
// study are each rerun S times with new train.model_seed and train.data_seed (drawn as the two
// int dimensions of a child study, STUDY_DIR/reruns/trial_NNNN/, whose fixed values are the
// parent's plus the trial's parameters), then prints every group's spread and whether the gap
// between the top two exceeds it. The original run is not counted: it was picked for being
// best, so it is biased low. `playbook report` reads the reruns back. Running it again resumes.
#include <CLI/CLI.hpp>

#include <optional>
#include <string>

namespace pb::cli {

class ReportCommands {
 public:
  explicit ReportCommands(CLI::App& app);
  // The exit code when `report` was given; nullopt otherwise.
  std::optional<int> run();

 private:
  CLI::App* report_ = nullptr;
  CLI::App* rerun_ = nullptr;
  std::string study_dir_, out_, json_out_;
  bool text_ = false;
  int best_ = 3, seeds_ = 3, workers_ = 0;
  std::string devices_;
};

}  // namespace pb::cli
