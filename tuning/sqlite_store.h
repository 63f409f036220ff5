#pragma once
// The one-machine study store: SQLite in WAL mode (readers never block the writer, and a
// process killed mid-transaction leaves the database consistent), with a busy timeout so that
// parallel workers wait for each other's short transactions instead of failing. Claims use
// BEGIN IMMEDIATE: the write lock is taken before the pending trial is read, so two workers
// can never claim the same trial. The schema and every statement are shared with the
// PostgreSQL store (tuning/store_sql.h).
#include <filesystem>
#include <memory>

#include "tuning/store_sql.h"

namespace pb::tuning {

class SqliteStore final : public SqlStore {
 public:
  // Opens (creating when absent) the database file; one connection per object, so give each
  // thread its own.
  explicit SqliteStore(const std::filesystem::path& db_file);
};

// The store of a study directory: DIR/study.db, or the store DIR/store names
// (study_store_location, tuning/store.h).
std::unique_ptr<StudyStore> open_study_store(const std::filesystem::path& study_dir);

}  // namespace pb::tuning
