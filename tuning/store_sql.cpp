// The study store's SQL, shared by SQLite and PostgreSQL; see store_sql.h.
#include "tuning/store_sql.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <stdexcept>
#include <utility>

namespace pb::tuning {

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

bool sql_null(const SqlValue& v) {
  return std::holds_alternative<std::monostate>(v);
}

int64_t sql_int(const SqlValue& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  if (const auto* d = std::get_if<double>(&v)) return static_cast<int64_t>(*d);
  if (const auto* s = std::get_if<std::string>(&v)) return std::strtoll(s->c_str(), nullptr, 10);
  return 0;
}

double sql_real(const SqlValue& v) {
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  if (const auto* s = std::get_if<std::string>(&v)) return std::strtod(s->c_str(), nullptr);
  return 0;
}

std::string sql_text(const SqlValue& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  return {};
}

namespace {

constexpr const char* kTrialColumns =
    "idx, params, status, reason, worker, heartbeat, attempts, failures, run_dir, objective, "
    "best_step, metrics, started, finished";

TrialRecord read_trial(const std::vector<SqlValue>& row) {
  TrialRecord t;
  t.index = sql_int(row[0]);
  t.params_json = sql_text(row[1]);
  t.status = parse_trial_status(sql_text(row[2]));
  t.reason = sql_text(row[3]);
  t.worker = sql_text(row[4]);
  t.heartbeat = sql_real(row[5]);
  t.attempts = static_cast<int>(sql_int(row[6]));
  t.failures = static_cast<int>(sql_int(row[7]));
  t.run_dir = sql_text(row[8]);
  if (!sql_null(row[9])) t.objective = sql_real(row[9]);
  if (!sql_null(row[10])) t.best_step = sql_int(row[10]);
  t.metrics_json = sql_text(row[11]);
  t.started = sql_real(row[12]);
  t.finished = sql_real(row[13]);
  return t;
}

template <typename T>
SqlValue opt(const std::optional<T>& v) {
  if (!v) return std::monostate{};
  return SqlValue(*v);
}

// begin() ... commit(), rolled back when an exception leaves the scope.
class Transaction {
 public:
  explicit Transaction(SqlConnection& db) : db_(db) { db_.begin(); }
  ~Transaction() {
    if (!done_) db_.rollback();
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    db_.commit();
    done_ = true;
  }

 private:
  SqlConnection& db_;
  bool done_ = false;
};

}  // namespace

SqlStore::SqlStore(std::unique_ptr<SqlConnection> db) : db_(std::move(db)) {
  SqlConnection& c = *db_;
  const std::string real = c.real_type(), integer = c.int_type();
  Transaction tx(c);
  c.lock_study();
  c.query("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
  const SqlResult version = c.query("SELECT value FROM meta WHERE key = 'schema_version'");
  if (!version.rows.empty()) {
    const int64_t v = sql_int(version.rows[0][0]);
    if (v > kStoreSchemaVersion) {
      throw StoreError(fmt::format(
          "{}: the study store was created by a newer playbook (schema version {}; this one "
          "reads version {}); upgrade playbook",
          c.name(), v, kStoreSchemaVersion));
    }
  } else {
    c.query("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
            {std::to_string(kStoreSchemaVersion)});
  }
  c.query(fmt::format(
      "CREATE TABLE IF NOT EXISTS studies (name TEXT NOT NULL, spec_text TEXT NOT NULL, "
      "spec_file TEXT NOT NULL, origin_dir TEXT NOT NULL, notes TEXT NOT NULL, "
      "created {0} NOT NULL, total_trials {1} NOT NULL)",
      real, integer));
  c.query(fmt::format(
      "CREATE TABLE IF NOT EXISTS trials (idx {1} PRIMARY KEY, params TEXT NOT NULL, "
      "status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', worker TEXT NOT NULL DEFAULT '', "
      "heartbeat {0} NOT NULL DEFAULT 0, attempts {1} NOT NULL DEFAULT 0, "
      "failures {1} NOT NULL DEFAULT 0, run_dir TEXT NOT NULL, objective {0}, "
      "best_step {1}, metrics TEXT NOT NULL DEFAULT '{{}}', started {0} NOT NULL DEFAULT 0, "
      "finished {0} NOT NULL DEFAULT 0)",
      real, integer));
  c.query("CREATE INDEX IF NOT EXISTS trials_status ON trials (status, idx)");
  tx.commit();
}

bool SqlStore::create(const StudyRecord& study, const std::vector<NewTrial>& trials) {
  SqlConnection& c = *db_;
  Transaction tx(c);
  c.lock_study();
  const SqlResult existing = c.query("SELECT spec_text FROM studies");
  if (!existing.rows.empty()) {
    if (sql_text(existing.rows[0][0]) != study.spec_text) {
      throw StoreError(
          fmt::format("{}: holds a study made from a different study file (its copy is study.toml "
                      "next to it); run the changed study in another --dir",
                      c.name()));
    }
    return false;
  }
  c.query(
      "INSERT INTO studies (name, spec_text, spec_file, origin_dir, notes, created, "
      "total_trials) VALUES (?, ?, ?, ?, ?, ?, ?)",
      {study.name, study.spec_text, study.spec_file, study.origin_dir, study.notes, study.created,
       study.total_trials});
  for (const NewTrial& t : trials) {
    c.query("INSERT INTO trials (idx, params, status, run_dir) VALUES (?, ?, 'pending', ?)",
            {t.index, t.params_json, t.run_dir});
  }
  tx.commit();
  return true;
}

void SqlStore::import_study(const StudyRecord& study, const std::vector<TrialRecord>& trials) {
  SqlConnection& c = *db_;
  Transaction tx(c);
  c.lock_study();
  if (!c.query("SELECT name FROM studies").rows.empty() ||
      !c.query("SELECT idx FROM trials").rows.empty()) {
    throw StoreError(
        fmt::format("{}: holds a study already; migrate into an empty store", c.name()));
  }
  c.query(
      "INSERT INTO studies (name, spec_text, spec_file, origin_dir, notes, created, "
      "total_trials) VALUES (?, ?, ?, ?, ?, ?, ?)",
      {study.name, study.spec_text, study.spec_file, study.origin_dir, study.notes, study.created,
       study.total_trials});
  const std::string sql = fmt::format(
      "INSERT INTO trials ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", kTrialColumns);
  for (const TrialRecord& t : trials) {
    c.query(sql,
            {t.index, t.params_json, std::string(to_string(t.status)), t.reason, t.worker,
             t.heartbeat, static_cast<int64_t>(t.attempts), static_cast<int64_t>(t.failures),
             t.run_dir, opt(t.objective), opt(t.best_step), t.metrics_json, t.started, t.finished});
  }
  tx.commit();
}

std::optional<StudyRecord> SqlStore::study() {
  const SqlResult q = db_->query(
      "SELECT name, spec_text, spec_file, origin_dir, notes, created, total_trials FROM studies");
  if (q.rows.empty()) return std::nullopt;
  const auto& row = q.rows[0];
  StudyRecord r;
  r.name = sql_text(row[0]);
  r.spec_text = sql_text(row[1]);
  r.spec_file = sql_text(row[2]);
  r.origin_dir = sql_text(row[3]);
  r.notes = sql_text(row[4]);
  r.created = sql_real(row[5]);
  r.total_trials = sql_int(row[6]);
  return r;
}

std::vector<TrialRecord> SqlStore::trials() {
  const SqlResult q = db_->query(fmt::format("SELECT {} FROM trials ORDER BY idx", kTrialColumns));
  std::vector<TrialRecord> out;
  out.reserve(q.rows.size());
  for (const auto& row : q.rows) out.push_back(read_trial(row));
  return out;
}

std::optional<TrialRecord> SqlStore::claim(const std::string& worker, double now) {
  SqlConnection& c = *db_;
  Transaction tx(c);
  const SqlResult q = c.query(fmt::format(
      "SELECT idx FROM trials WHERE status = 'pending' ORDER BY idx LIMIT 1{}", c.claim_lock()));
  if (q.rows.empty()) {
    tx.commit();
    return std::nullopt;
  }
  const int64_t index = sql_int(q.rows[0][0]);
  c.query(
      "UPDATE trials SET status = 'running', worker = ?, heartbeat = ?, started = ?, "
      "attempts = attempts + 1 WHERE idx = ?",
      {worker, now, now, index});
  const SqlResult t =
      c.query(fmt::format("SELECT {} FROM trials WHERE idx = ?", kTrialColumns), {index});
  if (t.rows.empty()) throw StoreError(fmt::format("{}: claim: the trial vanished", c.name()));
  TrialRecord out = read_trial(t.rows[0]);
  tx.commit();
  return out;
}

std::vector<int64_t> SqlStore::requeue_stale(double stale_before,
                                             const std::vector<std::string>& dead_workers) {
  SqlConnection& c = *db_;
  Transaction tx(c);
  std::vector<int64_t> out;
  const SqlResult q = c.query(fmt::format(
      "SELECT idx, worker, heartbeat FROM trials WHERE status = 'running' ORDER BY idx{}",
      c.row_lock()));
  for (const auto& row : q.rows) {
    const std::string w = sql_text(row[1]);
    const bool dead = std::find(dead_workers.begin(), dead_workers.end(), w) != dead_workers.end();
    if (!dead && sql_real(row[2]) >= stale_before) continue;
    // Only the claim that was read: a claim renewed or retaken since stays.
    const SqlResult u = c.query(
        "UPDATE trials SET status = 'pending', worker = '', reason = 'worker lost' "
        "WHERE idx = ? AND status = 'running' AND worker = ? AND heartbeat = ?",
        {sql_int(row[0]), w, sql_real(row[2])});
    if (u.changes == 1) out.push_back(sql_int(row[0]));
  }
  tx.commit();
  return out;
}

bool SqlStore::heartbeat(int64_t index, const std::string& worker, double now) {
  return db_->query(
                "UPDATE trials SET heartbeat = ? WHERE idx = ? AND worker = ? AND status = "
                "'running'",
                {now, index, worker})
             .changes == 1;
}

bool SqlStore::finish(int64_t index, const std::string& worker, const TrialOutcome& outcome,
                      int max_failures, double now) {
  SqlConnection& c = *db_;
  Transaction tx(c);
  const SqlResult q =
      c.query(fmt::format("SELECT failures FROM trials WHERE idx = ? AND worker = ? AND status = "
                          "'running'{}",
                          c.row_lock()),
              {index, worker});
  if (q.rows.empty()) return false;
  int64_t failures = sql_int(q.rows[0][0]);
  TrialStatus status = outcome.status;
  double finished = now;
  if (status == TrialStatus::Failed) {
    ++failures;
    if (failures <= max_failures) {
      status = TrialStatus::Pending;
      finished = 0;
    }
  }
  c.query(
      "UPDATE trials SET status = ?, reason = ?, worker = ?, failures = ?, objective = ?, "
      "best_step = ?, metrics = ?, finished = ? WHERE idx = ?",
      {std::string(to_string(status)), outcome.reason,
       status == TrialStatus::Pending ? std::string() : worker, failures, opt(outcome.objective),
       opt(outcome.best_step), outcome.metrics_json, finished, index});
  tx.commit();
  return true;
}

bool SqlStore::release(int64_t index, const std::string& worker) {
  return db_->query(
                "UPDATE trials SET status = 'pending', worker = '', attempts = attempts - 1 "
                "WHERE idx = ? AND worker = ? AND status = 'running'",
                {index, worker})
             .changes == 1;
}

void SqlStore::set_notes(const std::string& notes) {
  db_->query("UPDATE studies SET notes = ?", {notes});
}

}  // namespace pb::tuning
