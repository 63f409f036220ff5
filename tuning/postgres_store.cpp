// PostgreSQL study store; see postgres_store.h.
#include "tuning/postgres_store.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <utility>

namespace pb::tuning {

namespace {

// libpq's messages span lines ("connection to server at ... failed: ...\n\tIs the server
// running ...?"): one line, without the "FATAL:" / "ERROR:" prefix.
std::string one_line(std::string msg) {
  for (char& ch : msg) {
    if (ch == '\n' || ch == '\t') ch = ' ';
  }
  std::string out;
  for (char ch : msg) {
    if (ch == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += ch;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  for (const char* prefix : {"FATAL:  ", "FATAL: ", "ERROR:  ", "ERROR: "}) {
    for (std::size_t at; (at = out.find(prefix)) != std::string::npos;) {
      out.erase(at, std::string(prefix).size());
    }
  }
  return out;
}

// '?' placeholders become $1, $2, ... (the shared statements have no '?' in literals).
std::string numbered(const std::string& sql) {
  std::string out;
  int n = 0;
  for (char ch : sql) {
    if (ch == '?') {
      out += fmt::format("${}", ++n);
    } else {
      out += ch;
    }
  }
  return out;
}

class PgConnection final : public SqlConnection {
 public:
  explicit PgConnection(const std::string& url) : name_(redact_location(url)) {
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(url.c_str(), &err);
    if (!opts) {
      const std::string msg = err ? one_line(err) : "out of memory";
      PQfreemem(err);
      throw StoreError(fmt::format("{}: not a PostgreSQL URL: {}", name_, msg));
    }
    PQconninfoFree(opts);
    // A server that does not answer fails after 10 s instead of the TCP timeout.
    const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
    const char* values[] = {url.c_str(), "10", "playbook", nullptr};
    conn_ = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
      const std::string msg = conn_ ? one_line(PQerrorMessage(conn_)) : "out of memory";
      PQfinish(conn_);
      conn_ = nullptr;
      throw StoreError(fmt::format("{}: cannot connect to the study store: {}", name_, msg));
    }
    query("SET client_min_messages = warning", {});
  }
  ~PgConnection() override { PQfinish(conn_); }
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  const std::string& name() const override { return name_; }

  SqlResult query(const std::string& sql, const std::vector<SqlValue>& params) override {
    std::vector<std::string> text(params.size());
    std::vector<const char*> values(params.size(), nullptr);
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (sql_null(params[i])) continue;
      text[i] = sql_text(params[i]);
      values[i] = text[i].c_str();
    }
    PGresult* res = PQexecParams(conn_, numbered(sql).c_str(), static_cast<int>(params.size()),
                                 nullptr, values.data(), nullptr, nullptr, /*resultFormat=*/0);
    struct Clear {
      PGresult* r;
      ~Clear() { PQclear(r); }
    } clear{res};
    const ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      const std::string msg = one_line(res ? PQresultErrorMessage(res) : PQerrorMessage(conn_));
      if (PQstatus(conn_) != CONNECTION_OK) {
        throw StoreError(fmt::format("{}: lost the connection to the study store: {}", name_, msg));
      }
      throw StoreError(fmt::format("{}: {}: {}", name_, one_line(sql), msg));
    }
    SqlResult out;
    const int rows = PQntuples(res), cols = PQnfields(res);
    out.rows.reserve(static_cast<std::size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      auto& row = out.rows.emplace_back();
      row.reserve(static_cast<std::size_t>(cols));
      for (int c = 0; c < cols; ++c) {
        if (PQgetisnull(res, r, c)) {
          row.emplace_back(std::monostate{});
        } else {
          row.emplace_back(
              std::string(PQgetvalue(res, r, c), static_cast<std::size_t>(PQgetlength(res, r, c))));
        }
      }
    }
    const char* changed = PQcmdTuples(res);
    out.changes = (changed && *changed) ? std::stoll(changed) : 0;
    return out;
  }

  void begin() override { query("BEGIN", {}); }
  // One lock per database (the study's): creates and schema changes run one at a time.
  void lock_study() override { query("SELECT pg_advisory_xact_lock(7221430713)", {}); }
  void commit() override { query("COMMIT", {}); }
  void rollback() noexcept override {
    if (PGresult* r = PQexec(conn_, "ROLLBACK")) PQclear(r);
  }
  const char* real_type() const override { return "DOUBLE PRECISION"; }
  const char* int_type() const override { return "BIGINT"; }
  const char* claim_lock() const override { return " FOR UPDATE SKIP LOCKED"; }
  const char* row_lock() const override { return " FOR UPDATE"; }

 private:
  std::string name_;
  PGconn* conn_ = nullptr;
};

}  // namespace

PostgresStore::PostgresStore(const std::string& url)
    : SqlStore(std::make_unique<PgConnection>(url)) {}

}  // namespace pb::tuning
