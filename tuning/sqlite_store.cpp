// SQLite study store; see sqlite_store.h.
#include "tuning/sqlite_store.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <utility>

namespace pb::tuning {
namespace fs = std::filesystem;

namespace {

constexpr int kBusyTimeoutMs = 60000;

class SqliteConnection final : public SqlConnection {
 public:
  explicit SqliteConnection(const fs::path& file) : name_(file.string()) {
    if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      db_ = nullptr;
      throw StoreError(fmt::format("{}: cannot open the study store: {}", name_, msg));
    }
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    try {
      exec_when_free("PRAGMA journal_mode=WAL");  // fails first on a file that is no database
      exec("PRAGMA synchronous=NORMAL");
    } catch (...) {
      sqlite3_close(db_);  // no destructor runs for a constructor that throws
      throw;
    }
  }
  ~SqliteConnection() override { sqlite3_close(db_); }
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  const std::string& name() const override { return name_; }

  SqlResult query(const std::string& sql, const std::vector<SqlValue>& params) override {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      fail(fmt::format("prepare '{}'", sql));
    }
    struct Finalize {
      sqlite3_stmt* s;
      ~Finalize() { sqlite3_finalize(s); }
    } finalize{stmt};
    for (std::size_t i = 0; i < params.size(); ++i) {
      const int at = static_cast<int>(i) + 1;
      const SqlValue& v = params[i];
      int rc = SQLITE_OK;
      if (const auto* s = std::get_if<std::string>(&v)) {
        rc = sqlite3_bind_text(stmt, at, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
      } else if (const auto* n = std::get_if<int64_t>(&v)) {
        rc = sqlite3_bind_int64(stmt, at, *n);
      } else if (const auto* d = std::get_if<double>(&v)) {
        rc = sqlite3_bind_double(stmt, at, *d);
      } else {
        rc = sqlite3_bind_null(stmt, at);
      }
      if (rc != SQLITE_OK) fail("bind");
    }
    SqlResult out;
    for (;;) {
      const int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) fail(fmt::format("step '{}'", sql));
      auto& row = out.rows.emplace_back();
      const int n = sqlite3_column_count(stmt);
      for (int col = 0; col < n; ++col) {
        switch (sqlite3_column_type(stmt, col)) {
          case SQLITE_NULL:
            row.emplace_back(std::monostate{});
            break;
          case SQLITE_INTEGER:
            row.emplace_back(static_cast<int64_t>(sqlite3_column_int64(stmt, col)));
            break;
          case SQLITE_FLOAT:
            row.emplace_back(sqlite3_column_double(stmt, col));
            break;
          default: {
            const auto* p = sqlite3_column_text(stmt, col);
            row.emplace_back(
                std::string(reinterpret_cast<const char*>(p),
                            static_cast<std::size_t>(sqlite3_column_bytes(stmt, col))));
          }
        }
      }
    }
    out.changes = sqlite3_changes(db_);
    return out;
  }

  void begin() override { exec("BEGIN IMMEDIATE"); }
  void lock_study() override {}  // BEGIN IMMEDIATE holds the write lock already
  void commit() override { exec("COMMIT"); }
  void rollback() noexcept override { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }
  const char* real_type() const override { return "REAL"; }
  const char* int_type() const override { return "INTEGER"; }
  const char* claim_lock() const override { return ""; }
  const char* row_lock() const override { return ""; }

 private:
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      const std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      throw StoreError(fmt::format("{}: {}: {}", name_, sql, msg));
    }
  }
  // Turning a new file to WAL needs it to itself for a moment, and SQLite answers BUSY at once,
  // without waiting in its busy handler, when another process opens the same new file then (two
  // `study run` started together on a new study). Such a statement is retried here until the
  // same timeout the busy handler has.
  void exec_when_free(const char* sql) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
    for (int wait_ms = 1;; wait_ms = std::min(2 * wait_ms, 100)) {
      const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
      if (rc == SQLITE_OK) return;
      const int primary = rc & 0xff;
      if ((primary != SQLITE_BUSY && primary != SQLITE_LOCKED) || Clock::now() >= deadline) {
        fail(sql);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    }
  }
  [[noreturn]] void fail(const std::string& what) {
    throw StoreError(fmt::format("{}: {}: {}", name_, what, sqlite3_errmsg(db_)));
  }

  std::string name_;
  sqlite3* db_ = nullptr;
};

}  // namespace

SqliteStore::SqliteStore(const fs::path& db_file)
    : SqlStore(std::make_unique<SqliteConnection>(db_file)) {}

}  // namespace pb::tuning
