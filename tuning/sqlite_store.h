#pragma once
// The one-machine study store: SQLite in WAL mode (readers never block the writer, and a
// process killed mid-transaction leaves the database consistent), with a busy timeout so that
// parallel workers wait for each other's short transactions instead of failing. Claims use
// BEGIN IMMEDIATE: the write lock is taken before the pending trial is read, so two workers
// can never claim the same trial.
//
// Tables (portable SQL: TEXT, INTEGER, REAL only):
//   studies(name, spec_text, spec_file, origin_dir, notes, created, total_trials)   one row
//   trials(idx PRIMARY KEY, params, status, reason, worker, heartbeat, attempts, failures,
//          run_dir, objective, best_step, metrics, started, finished)
// params and metrics are JSON objects ({"optimizer.learning_rate": 0.05}); run_dir is the
// trial's directory relative to the study directory.
#include <filesystem>
#include <memory>

#include "tuning/store.h"

struct sqlite3;

namespace pb::tuning {

class SqliteStore final : public StudyStore {
 public:
  // Opens (creating when absent) the database file; one connection per object, so give each
  // thread its own.
  explicit SqliteStore(const std::filesystem::path& db_file);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  bool create(const StudyRecord& study, const std::vector<NewTrial>& trials) override;
  std::optional<StudyRecord> study() override;
  std::vector<TrialRecord> trials() override;
  std::optional<TrialRecord> claim(const std::string& worker, double now) override;
  std::vector<int64_t> requeue_stale(double stale_before,
                                     const std::vector<std::string>& dead_workers) override;
  bool heartbeat(int64_t index, const std::string& worker, double now) override;
  bool finish(int64_t index, const std::string& worker, const TrialOutcome& outcome,
              int max_failures, double now) override;
  bool release(int64_t index, const std::string& worker) override;
  void set_notes(const std::string& notes) override;

 private:
  class Statement;
  class Transaction;
  void exec(const char* sql);
  [[noreturn]] void fail(const std::string& what);

  std::filesystem::path file_;
  sqlite3* db_ = nullptr;
};

// The store of a study directory: DIR/study.db.
std::unique_ptr<StudyStore> open_study_store(const std::filesystem::path& study_dir);

}  // namespace pb::tuning
