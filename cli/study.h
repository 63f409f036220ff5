#pragma once
// The study subcommands of `playbook`:
//   playbook study run STUDY.toml [--dir STUDY_DIR] [--workers N] [--devices cuda:0,cuda:1|cpu]
//   playbook study plan STUDY.toml                                 (validate, list trials)
//   playbook study work STUDY_DIR [--device D] [--threads T] [--store URL]
//                                                   (one worker; run or a scheduler starts these)
//   playbook study init STUDY.toml [--dir STUDY_DIR] [--store URL]  (create, run nothing)
//   playbook study migrate SRC DST                 (copy a study: STUDY_DIR, FILE.db, URL)
//   playbook study status STUDY_DIR
//   playbook study best STUDY_DIR
//   playbook study export STUDY_DIR [--out FILE.csv]
//   playbook study note STUDY_DIR TEXT [--append]                  (the notes of the table)
//   playbook studies [ROOT] [--format text|csv|md]                (the tracking table)
// Registered on the app before parsing; run() handles the one that was given.
#include <CLI/CLI.hpp>

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "tuning/study_spec.h"

namespace pb::cli {

// Shared with the sweep commands (cli/sweep.h): a train study's validation rules (the training
// config's key specs and resolver), the SIGINT/SIGTERM handlers that count stop requests for the
// workers, and a comma-separated list.
tuning::TrainRules train_rules();
void install_stop_handlers();
const std::atomic<int>* stop_requests();
std::vector<std::string> split_list(const std::string& s);

class StudyCommands {
 public:
  explicit StudyCommands(CLI::App& app);
  // The exit code when a study subcommand was given; nullopt otherwise.
  std::optional<int> run();

 private:
  CLI::App* study_ = nullptr;
  CLI::App* run_ = nullptr;
  CLI::App* plan_ = nullptr;
  CLI::App* work_ = nullptr;
  CLI::App* status_ = nullptr;
  CLI::App* best_ = nullptr;
  CLI::App* export_ = nullptr;
  CLI::App* note_ = nullptr;
  CLI::App* studies_ = nullptr;
  CLI::App* init_ = nullptr;
  CLI::App* migrate_ = nullptr;
  std::string store_, migrate_src_, migrate_dst_;
  std::string study_file_, dir_, devices_, device_, out_, root_ = "studies", format_ = "text";
  std::string note_text_;
  bool append_ = false;
  int workers_ = 0, threads_ = 0;
};

}  // namespace pb::cli
