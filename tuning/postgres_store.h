#pragma once
// The study store shared by workers on many machines: PostgreSQL through libpq, selected by a
// URL (postgresql://user@host:port/db; libpq's other parameters too: ?sslmode=require,
// ?options=-csearch_path%3Dmy_study for one study per schema). Passwords come from the URL,
// PGPASSWORD or ~/.pgpass. One database (or schema) holds one study, as one study.db does.
//
// Same schema and semantics as the SQLite store (tuning/store_sql.h): a claim selects the
// lowest pending trial with FOR UPDATE SKIP LOCKED and marks it running in the same
// transaction, so concurrent workers never claim the same trial and never wait for each
// other; the changes of a claimed trial lock its row first. Schema creation and the version
// check run once per connection, serialised by a transaction-level advisory lock.
#include <memory>
#include <string>

#include "tuning/store_sql.h"

namespace pb::tuning {

class PostgresStore final : public SqlStore {
 public:
  // Connects (throws StoreError, one line, for a bad URL, an unreachable server or a refused
  // login) and creates or checks the schema.
  explicit PostgresStore(const std::string& url);
};

}  // namespace pb::tuning
