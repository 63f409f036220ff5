#pragma once
// The study store's logic, written once in portable SQL over a small connection interface
// (SqlConnection) that SQLite (tuning/sqlite_store.h) and PostgreSQL (tuning/postgres_store.h)
// implement. Statements use '?' placeholders; a connection rewrites them as it needs ($1, ...).
//
// Tables:
//   meta(key PRIMARY KEY, value)   schema_version = kStoreSchemaVersion
//   studies(name, spec_text, spec_file, origin_dir, notes, created, total_trials)   one row
//   trials(idx PRIMARY KEY, params, status, reason, worker, heartbeat, attempts, failures,
//          run_dir, objective, best_step, metrics, started, finished)
// params and metrics are JSON objects ({"optimizer.learning_rate": 0.05}); run_dir is the
// trial's directory relative to the study directory.
// worker is host:pid:start of the worker that holds the claim (running) or that ended the
// trial (done): with run_dir, where a trial of a study spread over machines ran.
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "tuning/store.h"

namespace pb::tuning {

// The schema this build reads and writes; a store with a higher version was made by a newer
// playbook and is refused.
inline constexpr int kStoreSchemaVersion = 1;

// A bound parameter or a result cell. Connections may return any cell as text.
using SqlValue = std::variant<std::monostate, int64_t, double, std::string>;

struct SqlResult {
  std::vector<std::vector<SqlValue>> rows;
  int64_t changes = 0;  // rows changed by an INSERT/UPDATE
};

class SqlConnection {
 public:
  virtual ~SqlConnection() = default;
  // The store's name in messages (a file path, or a URL without its password).
  virtual const std::string& name() const = 0;
  // One statement with '?' parameters.
  virtual SqlResult query(const std::string& sql, const std::vector<SqlValue>& params = {}) = 0;
  // Starts a write transaction that serialises with every other writer of the store that calls
  // lock_study() (SQLite: BEGIN IMMEDIATE; PostgreSQL: BEGIN + a transaction-level lock).
  virtual void begin() = 0;
  virtual void lock_study() = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;
  // Column types of the schema: a float column (REAL / DOUBLE PRECISION), an integer column.
  virtual const char* real_type() const = 0;
  virtual const char* int_type() const = 0;
  // Appended to the SELECT that picks the trial to claim (PostgreSQL: FOR UPDATE SKIP LOCKED)
  // and to the SELECTs of a claimed row that is then changed (PostgreSQL: FOR UPDATE).
  virtual const char* claim_lock() const = 0;
  virtual const char* row_lock() const = 0;
};

// The study store over a connection: every StudyStore operation, schema creation and the
// version check (run by the constructor).
class SqlStore : public StudyStore {
 public:
  explicit SqlStore(std::unique_ptr<SqlConnection> db);

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
  void import_study(const StudyRecord& study, const std::vector<TrialRecord>& trials) override;

 protected:
  SqlConnection& db() { return *db_; }

 private:
  std::unique_ptr<SqlConnection> db_;
};

// The cell accessors (a cell may be text: "12", "0.5").
bool sql_null(const SqlValue& v);
int64_t sql_int(const SqlValue& v);
double sql_real(const SqlValue& v);
std::string sql_text(const SqlValue& v);

}  // namespace pb::tuning
