// SQLite study store; see sqlite_store.h.
#include "tuning/sqlite_store.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace pb::tuning {
namespace fs = std::filesystem;

std::string_view to_string(TrialStatus status) {
  switch (status) {
    case TrialStatus::Pending:
      return "pending";
    case TrialStatus::Running:
      return "running";
    case TrialStatus::Completed:
      return "completed";
    case TrialStatus::Infeasible:
      return "infeasible";
    case TrialStatus::Failed:
      return "failed";
  }
  return "?";
}

TrialStatus parse_trial_status(std::string_view name) {
  for (TrialStatus s : {TrialStatus::Pending, TrialStatus::Running, TrialStatus::Completed,
                        TrialStatus::Infeasible, TrialStatus::Failed}) {
    if (to_string(s) == name) return s;
  }
  throw std::invalid_argument(fmt::format("unknown trial status '{}'", name));
}

// A prepared statement with positional binds (1-based, ?N-free: plain '?').
class SqliteStore::Statement {
 public:
  Statement(SqliteStore& store, const char* sql) : store_(store) {
    if (sqlite3_prepare_v2(store.db_, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      store.fail(fmt::format("prepare '{}'", sql));
    }
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int i, int64_t v) {
    check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Statement& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Statement& bind(int i, double v) {
    check(sqlite3_bind_double(stmt_, i, v));
    return *this;
  }
  Statement& bind_null(int i) {
    check(sqlite3_bind_null(stmt_, i));
    return *this;
  }
  template <typename T>
  Statement& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }
  // True while a row is available.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    store_.fail("step");
  }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  double f64(int col) const { return sqlite3_column_double(stmt_, col); }
  bool null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) store_.fail("bind");
  }
  SqliteStore& store_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back when an exception leaves the scope.
class SqliteStore::Transaction {
 public:
  explicit Transaction(SqliteStore& store) : store_(store) { store_.exec("BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (!done_) sqlite3_exec(store_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    store_.exec("COMMIT");
    done_ = true;
  }

 private:
  SqliteStore& store_;
  bool done_ = false;
};

namespace {

constexpr const char* kTrialColumns =
    "idx, params, status, reason, worker, heartbeat, attempts, failures, run_dir, objective, "
    "best_step, metrics, started, finished";

}  // namespace

SqliteStore::SqliteStore(const fs::path& db_file) : file_(db_file) {
  if (sqlite3_open_v2(db_file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw StoreError(fmt::format("{}: cannot open the study store: {}", file_.string(), msg));
  }
  sqlite3_busy_timeout(db_, 60000);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  exec(
      "CREATE TABLE IF NOT EXISTS studies (name TEXT NOT NULL, spec_text TEXT NOT NULL, "
      "spec_file TEXT NOT NULL, origin_dir TEXT NOT NULL, notes TEXT NOT NULL, "
      "created REAL NOT NULL, total_trials INTEGER NOT NULL)");
  exec(
      "CREATE TABLE IF NOT EXISTS trials (idx INTEGER PRIMARY KEY, params TEXT NOT NULL, "
      "status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', worker TEXT NOT NULL DEFAULT '', "
      "heartbeat REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, "
      "failures INTEGER NOT NULL DEFAULT 0, run_dir TEXT NOT NULL, objective REAL, "
      "best_step INTEGER, metrics TEXT NOT NULL DEFAULT '{}', started REAL NOT NULL DEFAULT 0, "
      "finished REAL NOT NULL DEFAULT 0)");
  exec("CREATE INDEX IF NOT EXISTS trials_status ON trials (status, idx)");
}

SqliteStore::~SqliteStore() {
  sqlite3_close(db_);
}

void SqliteStore::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw StoreError(fmt::format("{}: {}: {}", file_.string(), sql, msg));
  }
}

void SqliteStore::fail(const std::string& what) {
  throw StoreError(fmt::format("{}: {}: {}", file_.string(), what, sqlite3_errmsg(db_)));
}

bool SqliteStore::create(const StudyRecord& study, const std::vector<NewTrial>& trials) {
  Transaction tx(*this);
  {
    Statement q(*this, "SELECT spec_text FROM studies");
    if (q.step()) {
      if (q.text(0) != study.spec_text) {
        throw StoreError(fmt::format(
            "{}: holds a study made from a different study file (its copy is study.toml "
            "next to it); run the changed study in another --dir",
            file_.string()));
      }
      return false;
    }
  }
  Statement ins(*this,
                "INSERT INTO studies (name, spec_text, spec_file, origin_dir, notes, created, "
                "total_trials) VALUES (?, ?, ?, ?, ?, ?, ?)");
  ins.bind(1, study.name)
      .bind(2, study.spec_text)
      .bind(3, study.spec_file)
      .bind(4, study.origin_dir)
      .bind(5, study.notes)
      .bind(6, study.created)
      .bind(7, study.total_trials);
  ins.step();
  for (const NewTrial& t : trials) {
    Statement tr(*this, "INSERT INTO trials (idx, params, status, run_dir) VALUES (?, ?, ?, ?)");
    tr.bind(1, t.index).bind(2, t.params_json).bind(3, std::string("pending")).bind(4, t.run_dir);
    tr.step();
  }
  tx.commit();
  return true;
}

std::optional<StudyRecord> SqliteStore::study() {
  Statement q(*this,
              "SELECT name, spec_text, spec_file, origin_dir, notes, created, total_trials FROM "
              "studies");
  if (!q.step()) return std::nullopt;
  StudyRecord r;
  r.name = q.text(0);
  r.spec_text = q.text(1);
  r.spec_file = q.text(2);
  r.origin_dir = q.text(3);
  r.notes = q.text(4);
  r.created = q.f64(5);
  r.total_trials = q.i64(6);
  return r;
}

namespace {

template <typename Stmt>
TrialRecord read_trial(const Stmt& q) {
  TrialRecord t;
  t.index = q.i64(0);
  t.params_json = q.text(1);
  t.status = parse_trial_status(q.text(2));
  t.reason = q.text(3);
  t.worker = q.text(4);
  t.heartbeat = q.f64(5);
  t.attempts = static_cast<int>(q.i64(6));
  t.failures = static_cast<int>(q.i64(7));
  t.run_dir = q.text(8);
  if (!q.null(9)) t.objective = q.f64(9);
  if (!q.null(10)) t.best_step = q.i64(10);
  t.metrics_json = q.text(11);
  t.started = q.f64(12);
  t.finished = q.f64(13);
  return t;
}

}  // namespace

std::vector<TrialRecord> SqliteStore::trials() {
  const std::string sql = fmt::format("SELECT {} FROM trials ORDER BY idx", kTrialColumns);
  Statement q(*this, sql.c_str());
  std::vector<TrialRecord> out;
  while (q.step()) out.push_back(read_trial(q));
  return out;
}

std::optional<TrialRecord> SqliteStore::claim(const std::string& worker, double now) {
  Transaction tx(*this);
  int64_t index = -1;
  {
    Statement q(*this, "SELECT MIN(idx) FROM trials WHERE status = 'pending'");
    if (q.step() && !q.null(0)) index = q.i64(0);
  }
  if (index < 0) {
    tx.commit();
    return std::nullopt;
  }
  {
    Statement u(*this,
                "UPDATE trials SET status = 'running', worker = ?, heartbeat = ?, started = ?, "
                "attempts = attempts + 1 WHERE idx = ?");
    u.bind(1, worker).bind(2, now).bind(3, now).bind(4, index);
    u.step();
  }
  const std::string sql = fmt::format("SELECT {} FROM trials WHERE idx = ?", kTrialColumns);
  Statement q(*this, sql.c_str());
  q.bind(1, index);
  if (!q.step()) fail("claim: the trial vanished");
  TrialRecord t = read_trial(q);
  tx.commit();
  return t;
}

std::vector<int64_t> SqliteStore::requeue_stale(double stale_before,
                                                const std::vector<std::string>& dead_workers) {
  Transaction tx(*this);
  std::vector<int64_t> out;
  {
    Statement q(*this, "SELECT idx, worker, heartbeat FROM trials WHERE status = 'running'");
    while (q.step()) {
      const std::string w = q.text(1);
      const bool dead =
          std::find(dead_workers.begin(), dead_workers.end(), w) != dead_workers.end();
      if (dead || q.f64(2) < stale_before) out.push_back(q.i64(0));
    }
  }
  for (const int64_t index : out) {
    Statement u(*this,
                "UPDATE trials SET status = 'pending', worker = '', reason = 'worker lost' "
                "WHERE idx = ? AND status = 'running'");
    u.bind(1, index);
    u.step();
  }
  tx.commit();
  return out;
}

bool SqliteStore::heartbeat(int64_t index, const std::string& worker, double now) {
  Statement u(*this,
              "UPDATE trials SET heartbeat = ? WHERE idx = ? AND worker = ? AND status = "
              "'running'");
  u.bind(1, now).bind(2, index).bind(3, worker);
  u.step();
  return sqlite3_changes(db_) == 1;
}

bool SqliteStore::finish(int64_t index, const std::string& worker, const TrialOutcome& outcome,
                         int max_failures, double now) {
  Transaction tx(*this);
  int failures = 0;
  {
    Statement q(*this,
                "SELECT failures FROM trials WHERE idx = ? AND worker = ? AND status = "
                "'running'");
    q.bind(1, index).bind(2, worker);
    if (!q.step()) return false;
    failures = static_cast<int>(q.i64(0));
  }
  TrialStatus status = outcome.status;
  double finished = now;
  if (status == TrialStatus::Failed) {
    ++failures;
    if (failures <= max_failures) {
      status = TrialStatus::Pending;
      finished = 0;
    }
  }
  Statement u(*this,
              "UPDATE trials SET status = ?, reason = ?, worker = '', failures = ?, "
              "objective = ?, best_step = ?, metrics = ?, finished = ? WHERE idx = ?");
  u.bind(1, std::string(to_string(status)))
      .bind(2, outcome.reason)
      .bind(3, failures)
      .bind(4, outcome.objective)
      .bind(5, outcome.best_step)
      .bind(6, outcome.metrics_json)
      .bind(7, finished)
      .bind(8, index);
  u.step();
  tx.commit();
  return true;
}

bool SqliteStore::release(int64_t index, const std::string& worker) {
  Statement u(*this,
              "UPDATE trials SET status = 'pending', worker = '', attempts = attempts - 1 "
              "WHERE idx = ? AND worker = ? AND status = 'running'");
  u.bind(1, index).bind(2, worker);
  u.step();
  return sqlite3_changes(db_) == 1;
}

void SqliteStore::set_notes(const std::string& notes) {
  Statement u(*this, "UPDATE studies SET notes = ?");
  u.bind(1, notes);
  u.step();
}

std::unique_ptr<StudyStore> open_study_store(const fs::path& study_dir) {
  return std::make_unique<SqliteStore>(study_dir / "study.db");
}

}  // namespace pb::tuning
