// The study store, against both SQLite and a real PostgreSQL server (tests/tuning/pg_server.h):
// every trial is claimed by exactly one of many concurrent claimers (threads with their own
// connections), a lost claim changes nothing, crashes are retried up to the limit, stale and
// dead-worker claims go back to pending; a study copies between the two stores unchanged; a bad
// location, an unreachable server, a wrong password and a newer schema are one-line errors.

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/tuning/pg_server.h"
#include "tuning/postgres_store.h"
#include "tuning/sqlite_store.h"

namespace pb::tuning {
namespace {

namespace fs = std::filesystem;
using pb::testing_pg::PgServer;

class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char& ch : name) {
      if (ch == '/') ch = '_';
    }
    dir_ = fs::temp_directory_path() / ("pb_store_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    if (GetParam() == "postgres") {
      PgServer& pg = PgServer::get();
      ASSERT_TRUE(pg.ok()) << pg.error();
      location_ = pg.new_database();
    } else {
      location_ = (dir_ / "study.db").string();
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<StudyStore> open() { return open_store(location_); }

  void create(int n) {
    auto store = open();
    StudyRecord rec{"s", "text", "s.toml", "/tmp", "notes", 1.0, n};
    std::vector<NewTrial> trials;
    for (int i = 0; i < n; ++i) trials.push_back({i, "{\"x\":" + std::to_string(i) + "}", "t"});
    EXPECT_TRUE(store->create(rec, trials));
  }
  fs::path dir_;
  std::string location_;
};

TEST_P(StoreTest, CreateIsIdempotentAndRefusesAnotherStudy) {
  create(3);
  auto store = open();
  EXPECT_FALSE(store->create({"s", "text", "s.toml", "/tmp", "", 2.0, 3}, {}));
  EXPECT_THROW(store->create({"s", "other text", "s.toml", "/tmp", "", 2.0, 3}, {}), StoreError);
  ASSERT_EQ(store->trials().size(), 3u);
  EXPECT_EQ(store->study()->notes, "notes");
  EXPECT_EQ(store->trials()[2].params_json, "{\"x\":2}");
}

TEST_P(StoreTest, ConcurrentClaimersNeverShareATrial) {
  const int n = 60;
  create(n);
  std::mutex mu;
  std::map<int64_t, std::vector<std::string>> claims;
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      auto store = open();
      const std::string me = "worker" + std::to_string(w);
      while (auto t = store->claim(me, 100.0)) {
        {
          std::lock_guard lock(mu);
          claims[t->index].push_back(me);
        }
        TrialOutcome o;
        o.status = TrialStatus::Completed;
        o.objective = static_cast<double>(t->index);
        EXPECT_TRUE(store->finish(t->index, me, o, 0, 101.0));
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(claims.size(), static_cast<std::size_t>(n));
  for (const auto& [index, who] : claims) EXPECT_EQ(who.size(), 1u) << "trial " << index;
  auto store = open();
  for (const TrialRecord& t : store->trials()) {
    EXPECT_EQ(t.status, TrialStatus::Completed);
    EXPECT_EQ(t.attempts, 1);
    EXPECT_EQ(*t.objective, static_cast<double>(t.index));
  }
}

TEST_P(StoreTest, LostClaimsChangeNothingAndStaleClaimsReturn) {
  create(2);
  auto store = open();
  auto a = store->claim("a", 10.0);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->index, 0);
  EXPECT_TRUE(store->heartbeat(0, "a", 20.0));
  // Not stale yet at 15; stale when nothing was heard since before 25.
  EXPECT_TRUE(store->requeue_stale(15.0, {}).empty());
  EXPECT_EQ(store->requeue_stale(25.0, {}), std::vector<int64_t>{0});
  auto b = store->claim("b", 30.0);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->index, 0);
  EXPECT_EQ(b->attempts, 2);
  // "a" lost the claim: its heartbeat and result are refused.
  EXPECT_FALSE(store->heartbeat(0, "a", 31.0));
  TrialOutcome done;
  done.status = TrialStatus::Completed;
  done.objective = 1.5;
  EXPECT_FALSE(store->finish(0, "a", done, 2, 32.0));
  EXPECT_TRUE(store->finish(0, "b", done, 2, 33.0));
  // A dead worker's claim returns at once, whatever its heartbeat.
  auto c = store->claim("c", 40.0);
  ASSERT_TRUE(c);
  EXPECT_EQ(store->requeue_stale(0.0, {"c"}), std::vector<int64_t>{1});
  EXPECT_EQ(store->trials()[1].status, TrialStatus::Pending);
  EXPECT_FALSE(store->claim("d", 50.0) == std::nullopt);
  EXPECT_TRUE(store->release(1, "d"));
  EXPECT_EQ(store->trials()[1].status, TrialStatus::Pending);
  EXPECT_EQ(store->trials()[0].status, TrialStatus::Completed);
  EXPECT_EQ(*store->trials()[0].objective, 1.5);
}

TEST_P(StoreTest, CrashesAreRetriedThenFailed) {
  create(1);
  auto store = open();
  TrialOutcome crash;
  crash.status = TrialStatus::Failed;
  crash.reason = "exit code 1";
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto t = store->claim("w", attempt);
    ASSERT_TRUE(t) << "attempt " << attempt;
    EXPECT_TRUE(store->finish(0, "w", crash, 2, attempt + 0.5));
  }
  EXPECT_FALSE(store->claim("w", 9.0));
  const TrialRecord t = store->trials()[0];
  EXPECT_EQ(t.status, TrialStatus::Failed);
  EXPECT_EQ(t.failures, 3);
  EXPECT_EQ(t.attempts, 3);
  EXPECT_EQ(t.reason, "exit code 1");
}

// Many processes opening one store that does not exist yet, all at the same moment (as two
// `study run` started together on a new study do): every one opens it, the study is created
// once and every trial is claimed by one of them.
TEST_P(StoreTest, ProcessesOpeningANewStoreTogetherAllSucceed) {
  const int rounds = GetParam() == "postgres" ? 4 : 12;  // a new PostgreSQL database is slow
  for (int round = 0; round < rounds; ++round) {
    const std::string location = GetParam() == "postgres"
                                     ? PgServer::get().new_database()
                                     : (dir_ / ("race" + std::to_string(round) + ".db")).string();
    int go[2];
    ASSERT_EQ(::pipe(go), 0);
    std::vector<pid_t> kids;
    for (int k = 0; k < 6; ++k) {
      const pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        ::close(go[1]);
        char c;
        while (::read(go[0], &c, 1) > 0) {
        }
        int code = 0;
        try {
          auto store = open_store(location);
          std::vector<NewTrial> trials;
          for (int i = 0; i < 6; ++i) trials.push_back({i, "{}", "t"});
          store->create({"s", "text", "s.toml", "/tmp", "", 1.0, 6}, trials);
          if (auto t = store->claim("w" + std::to_string(k), 1.0)) {
            TrialOutcome done;
            done.status = TrialStatus::Completed;
            done.objective = 1.0;
            if (!store->finish(t->index, "w" + std::to_string(k), done, 2, 2.0)) code = 3;
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "child %d: %s\n", k, e.what());
          code = 2;
        }
        ::_exit(code);
      }
      kids.push_back(pid);
    }
    ::close(go[0]);
    ::close(go[1]);  // all children start now
    for (pid_t pid : kids) {
      int status = 0;
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "round " << round << ": a process failed to open or use the new store";
    }
    auto store = open_store(location);
    ASSERT_EQ(store->trials().size(), 6u);
    int completed = 0;
    for (const auto& t : store->trials()) completed += t.status == TrialStatus::Completed;
    EXPECT_EQ(completed, 6) << "round " << round;
  }
}

// Every record, as it is, into an empty store of the other kind and back.
TEST_P(StoreTest, MigrateRoundTripsEveryRecord) {
  create(4);
  {
    auto store = open();
    auto a = store->claim("host:1:1", 10.0);
    TrialOutcome done;
    done.status = TrialStatus::Completed;
    done.objective = 0.1 + 0.2;  // not exact in decimal: must survive as text and back
    done.best_step = 1234567890123;
    done.metrics_json = "{\"val_loss\":0.25}";
    ASSERT_TRUE(store->finish(a->index, "host:1:1", done, 1, 11.5));
    auto b = store->claim("host:2:1", 12.25);
    TrialOutcome crash;
    crash.reason = "exit code 1";
    ASSERT_TRUE(store->finish(b->index, "host:2:1", crash, 1, 13.0));  // pending, failures 1
    ASSERT_TRUE(store->claim("host:3:1", 14.0));  // the crashed trial again, left running
    store->set_notes("migrated");
  }
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  const std::string other =
      GetParam() == "postgres" ? (dir_ / "copy.db").string() : pg.new_database();
  const std::string back = (dir_ / "back.db").string();
  {
    auto src = open();
    auto mid = open_store(other);
    mid->import_study(*src->study(), src->trials());
    auto end = open_store(back);
    end->import_study(*mid->study(), mid->trials());
    // A second copy into a store that holds the study is refused.
    EXPECT_THROW(end->import_study(*mid->study(), mid->trials()), StoreError);
  }
  auto src = open();
  for (const std::string& loc : {other, back}) {
    auto copy = open_store(loc);
    const StudyRecord a = *src->study(), b = *copy->study();
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.spec_text, b.spec_text);
    EXPECT_EQ(a.spec_file, b.spec_file);
    EXPECT_EQ(a.origin_dir, b.origin_dir);
    EXPECT_EQ(b.notes, "migrated");
    EXPECT_EQ(a.created, b.created);
    EXPECT_EQ(a.total_trials, b.total_trials);
    const auto x = src->trials(), y = copy->trials();
    ASSERT_EQ(x.size(), y.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      SCOPED_TRACE(loc + " trial " + std::to_string(i));
      EXPECT_EQ(x[i].index, y[i].index);
      EXPECT_EQ(x[i].params_json, y[i].params_json);
      EXPECT_EQ(x[i].status, y[i].status);
      EXPECT_EQ(x[i].reason, y[i].reason);
      EXPECT_EQ(x[i].worker, y[i].worker);
      EXPECT_EQ(x[i].heartbeat, y[i].heartbeat);
      EXPECT_EQ(x[i].attempts, y[i].attempts);
      EXPECT_EQ(x[i].failures, y[i].failures);
      EXPECT_EQ(x[i].run_dir, y[i].run_dir);
      EXPECT_EQ(x[i].objective, y[i].objective);
      EXPECT_EQ(x[i].best_step, y[i].best_step);
      EXPECT_EQ(x[i].metrics_json, y[i].metrics_json);
      EXPECT_EQ(x[i].started, y[i].started);
      EXPECT_EQ(x[i].finished, y[i].finished);
    }
  }
  EXPECT_EQ(*src->trials()[0].objective, 0.1 + 0.2);
  EXPECT_EQ(src->trials()[0].worker, "host:1:1");  // who ended it stays recorded
  EXPECT_EQ(src->trials()[1].status, TrialStatus::Running);
  EXPECT_EQ(src->trials()[1].failures, 1);
  EXPECT_EQ(src->trials()[1].attempts, 2);
  EXPECT_EQ(src->trials()[2].status, TrialStatus::Pending);
}

// A store written by a newer playbook (a higher schema version) is refused with one line.
TEST_P(StoreTest, NewerSchemaIsRefused) {
  create(1);
  if (GetParam() == "postgres") {
    const std::string cmd = "/usr/lib/postgresql/15/bin/psql -q '" + location_ +
                            "' -c \"UPDATE meta SET value = '99' WHERE key = 'schema_version'\"";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  } else {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(location_.c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'", nullptr,
                           nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  try {
    open();
    FAIL() << "opened a store of schema version 99";
  } catch (const StoreError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("newer playbook (schema version 99"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& p) { return p.param; });

// A bad URL, an unreachable server and a wrong password: one line each, naming the store
// without its password.
TEST(PostgresStoreErrors, OneLineErrors) {
  PgServer& pg = PgServer::get();
  ASSERT_TRUE(pg.ok()) << pg.error();
  const auto message = [](const std::string& url) -> std::string {
    try {
      open_store(url);
    } catch (const StoreError& e) {
      return e.what();
    }
    return "(no error)";
  };
  const std::string bad = message("postgresql://u@h/db?nosuchoption=1");
  EXPECT_NE(bad.find("not a PostgreSQL URL"), std::string::npos) << bad;
  const std::string scheme = message("mysql://u@h/db");
  EXPECT_NE(scheme.find("unknown study store"), std::string::npos) << scheme;
  // A port nothing listens on (the server's, plus one, is free in practice).
  const std::string down = message(
      "postgresql://postgres:secret@127.0.0.1:" + std::to_string(pg.port() + 1) + "/postgres");
  EXPECT_NE(down.find("cannot connect to the study store"), std::string::npos) << down;
  EXPECT_EQ(down.find("secret"), std::string::npos) << down;
  const std::string refused = message(pg.url("postgres", "wrong"));
  EXPECT_NE(refused.find("password authentication failed"), std::string::npos) << refused;
  EXPECT_NE(refused.find("postgres:***@"), std::string::npos) << refused;
  for (const std::string& m : {bad, scheme, down, refused}) {
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace pb::tuning
