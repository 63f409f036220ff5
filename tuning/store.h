#pragma once
// The study store: one study's trials, shared by every worker. The interface is narrow so that
// a PostgreSQL store (studies spanning machines) can implement it with the same portable SQL;
// SqliteStore (tuning/sqlite_store.h) is the one-machine store, a study directory's study.db.
//
// Every state change is one transaction, and every change to a claimed trial names the worker
// that claimed it: a worker that lost its claim (its heartbeat went stale and another worker
// took the trial) changes nothing. That is what makes "each trial completed exactly once" hold
// when workers crash at any moment.
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
};

}  // namespace pb::tuning
