#pragma once
// The study store: one study's trials, shared by every worker. The interface is narrow so that
// a PostgreSQL store (studies spanning machines) can implement it with the same portable SQL;
// SqliteStore (tuning/sqlite_store.h) is the one-machine store, a study directory's study.db.
//
// Every state change is one transaction, and every change to a claimed trial names the worker
// that claimed it: a worker that lost its claim (its heartbeat went stale and another worker
// took the trial) changes nothing. That is what makes "each trial completed exactly once" hold
// when workers crash at any moment.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "tuning/trial.h"

namespace pb::tuning {

// The store cannot be opened or a statement failed; one line naming the database.
class StoreError : public pb::Error {
 public:
  using pb::Error::Error;
};

struct StudyRecord {
  std::string name;
  std::string spec_text;   // the study file's text, as it was when the study was created
  std::string spec_file;   // the study file's path, as given
  std::string origin_dir;  // absolute directory of the study file (base, command are relative)
  std::string notes;
  double created = 0;  // unix seconds
  int64_t total_trials = 0;
};

// A trial to create: its index, parameters and run directory.
struct NewTrial {
  int64_t index = 0;
  std::string params_json;
  std::string run_dir;
};

class StudyStore {
 public:
  virtual ~StudyStore() = default;

  // Creates the study with all its trials pending, in one transaction; when the store already
  // holds a study, checks that its spec text is `study.spec_text` (throws StoreError otherwise)
  // and changes nothing. Returns true when it created the study.
  virtual bool create(const StudyRecord& study, const std::vector<NewTrial>& trials) = 0;
  // The study, or nullopt when the store is empty.
  virtual std::optional<StudyRecord> study() = 0;
  virtual std::vector<TrialRecord> trials() = 0;

  // In one transaction: the lowest pending trial becomes running for `worker`, with
  // heartbeat = started = now and attempts + 1. Nullopt when no trial is pending.
  virtual std::optional<TrialRecord> claim(const std::string& worker, double now) = 0;
  // Running trials whose heartbeat is older than `stale_before`, or whose worker is in
  // `dead_workers`, return to pending (their worker is gone). Returns the indices requeued.
  virtual std::vector<int64_t> requeue_stale(double stale_before,
                                             const std::vector<std::string>& dead_workers) = 0;
  // Refreshes the heartbeat of a claimed trial; false when `worker` no longer holds it.
  virtual bool heartbeat(int64_t index, const std::string& worker, double now) = 0;
  // Records how an attempt ended: a Failed outcome with failures < max_failures (the retries)
  // returns the trial to pending with failures + 1. False when `worker` no longer holds it.
  virtual bool finish(int64_t index, const std::string& worker, const TrialOutcome& outcome,
                      int max_failures, double now) = 0;
  // Gives a claimed trial back (pending, nothing counted): a worker stopped before it ended.
  virtual bool release(int64_t index, const std::string& worker) = 0;

  virtual void set_notes(const std::string& notes) = 0;

  // Copies a study into this empty store as it is: the record and every trial with its status,
  // attempts and results (`playbook study migrate`). Throws StoreError when the store holds a
  // study already.
  virtual void import_study(const StudyRecord& study, const std::vector<TrialRecord>& trials) = 0;
};

// Opens a store by its location: a postgresql:// (or postgres://) URL (tuning/postgres_store.h;
// the server's schema is created on first use), or the path of a SQLite file (sqlite:// prefix
// optional). Throws StoreError (one line) for a bad URL, an unreachable server, a refused login
// or a store made by a newer playbook.
std::unique_ptr<StudyStore> open_store(const std::string& location);
bool is_postgres_location(const std::string& location);
// The location without a password, for messages: postgresql://user:***@host/db.
std::string redact_location(const std::string& location);

// A study directory's store: STUDY_DIR/study.db, unless STUDY_DIR/store names another location
// (a PostgreSQL URL shared by workers on many machines; written by `--store`).
std::string study_store_location(const std::filesystem::path& study_dir);
// Records `location` as the store of STUDY_DIR (creating the directory); a directory bound to
// another store is refused with a StoreError. An empty location or STUDY_DIR/study.db is a no-op.
void bind_study_store(const std::filesystem::path& study_dir, const std::string& location);
// True when STUDY_DIR has a store: study.db or a store file.
bool has_study_store(const std::filesystem::path& study_dir);

}  // namespace pb::tuning
