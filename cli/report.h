#pragma once
// The report subcommand of `playbook`:
//   playbook report STUDY_DIR [-o FILE.html] [--json FILE.json] [--text]
// writes one self-contained HTML report (tuning/report.h; default STUDY_DIR/report.html), and
// optionally the analysis's verdicts as JSON and/or plain text on stdout. Exit codes: 0 written;
// 1 the study cannot be read or the chart assets are missing (one line saying why).
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
  std::string study_dir_, out_, json_out_;
  bool text_ = false;
};

}  // namespace pb::cli
