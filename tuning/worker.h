#pragma once
// Study workers and the study runner.
//
// A worker (`playbook study work STUDY_DIR`) loops: requeue claims whose worker is gone (a dead
// process on this host, or a heartbeat older than the study's stale_after_s), claim the lowest
// pending trial, run it as a child process while a thread heartbeats the claim, record the
// outcome. It exits when no trial is pending or running. A first stop request (SIGINT/SIGTERM)
// stops claiming and lets the running trial end; a second kills the trial and gives it back
// (it resumes from its last checkpoint later). A worker whose heartbeat finds the claim taken
// by another worker kills its trial and records nothing.
//
// The runner (`playbook study run`) creates or reopens the study directory, starts the workers
// (each in its own process group with a parent death signal, output in STUDY_DIR/workers/),
// forwards each stop request to them, and prints the trials as they end and a progress line.
#include <atomic>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include "tuning/study_spec.h"

namespace pb::tuning {

struct WorkerOptions {
  std::filesystem::path study_dir;
  std::string device;              // --device for train trials, PLAYBOOK_DEVICE for commands
  int threads = 0;                 // OMP/OpenBLAS threads of each trial (0: not set)
  std::filesystem::path playbook;  // the playbook executable
  const std::atomic<int>* stop_requests = nullptr;  // incremented by the signal handler
  std::ostream* log = nullptr;                      // one line per trial; nullptr: silent
};

// Runs trials until none remain or a stop is requested. Returns the number of trials this
// worker ended. Throws StudyError / StoreError for a bad study directory.
int run_worker(const WorkerOptions& options);

struct RunnerOptions {
  std::filesystem::path study_dir;
  std::vector<std::string> devices;  // one worker per entry (round robin when workers > size)
  int workers = 0;                   // 0: one per device (one when no device is given)
  std::filesystem::path playbook;
  const std::atomic<int>* stop_requests = nullptr;
  std::ostream* out = nullptr;  // trial lines and the progress line
};

// Starts the workers of an initialised study directory and waits for them. Returns 0 when
// every trial is done, 130 when stopped with trials left, 1 when a worker failed.
int run_study_workers(const StudySpec& spec, const RunnerOptions& options);

}  // namespace pb::tuning
