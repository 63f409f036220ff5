// The SQLite study store: every trial is claimed by exactly one of many concurrent claimers
// (threads with their own connections), a lost claim changes nothing, crashes are retried up to
// the limit, stale and dead-worker claims go back to pending.

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tuning/sqlite_store.h"

namespace pb::tuning {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("pb_store_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void create(int n) {
    SqliteStore store(dir_ / "study.db");
    StudyRecord rec{"s", "text", "s.toml", "/tmp", "notes", 1.0, n};
    std::vector<NewTrial> trials;
    for (int i = 0; i < n; ++i) trials.push_back({i, "{\"x\":" + std::to_string(i) + "}", "t"});
    EXPECT_TRUE(store.create(rec, trials));
  }
  fs::path dir_;
};

TEST_F(StoreTest, CreateIsIdempotentAndRefusesAnotherStudy) {
  create(3);
  SqliteStore store(dir_ / "study.db");
  EXPECT_FALSE(store.create({"s", "text", "s.toml", "/tmp", "", 2.0, 3}, {}));
  EXPECT_THROW(store.create({"s", "other text", "s.toml", "/tmp", "", 2.0, 3}, {}), StoreError);
  ASSERT_EQ(store.trials().size(), 3u);
  EXPECT_EQ(store.study()->notes, "notes");
  EXPECT_EQ(store.trials()[2].params_json, "{\"x\":2}");
}

TEST_F(StoreTest, ConcurrentClaimersNeverShareATrial) {
  const int n = 60;
  create(n);
  std::mutex mu;
  std::map<int64_t, std::vector<std::string>> claims;
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      SqliteStore store(dir_ / "study.db");
      const std::string me = "worker" + std::to_string(w);
      while (auto t = store.claim(me, 100.0)) {
        {
          std::lock_guard lock(mu);
          claims[t->index].push_back(me);
        }
        TrialOutcome o;
        o.status = TrialStatus::Completed;
        o.objective = static_cast<double>(t->index);
        EXPECT_TRUE(store.finish(t->index, me, o, 0, 101.0));
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(claims.size(), static_cast<std::size_t>(n));
  for (const auto& [index, who] : claims) EXPECT_EQ(who.size(), 1u) << "trial " << index;
  SqliteStore store(dir_ / "study.db");
  for (const TrialRecord& t : store.trials()) {
    EXPECT_EQ(t.status, TrialStatus::Completed);
    EXPECT_EQ(t.attempts, 1);
    EXPECT_EQ(*t.objective, static_cast<double>(t.index));
  }
}

TEST_F(StoreTest, LostClaimsChangeNothingAndStaleClaimsReturn) {
  create(2);
  SqliteStore store(dir_ / "study.db");
  auto a = store.claim("a", 10.0);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->index, 0);
  EXPECT_TRUE(store.heartbeat(0, "a", 20.0));
  // Not stale yet at 15; stale when nothing was heard since before 25.
  EXPECT_TRUE(store.requeue_stale(15.0, {}).empty());
  EXPECT_EQ(store.requeue_stale(25.0, {}), std::vector<int64_t>{0});
  auto b = store.claim("b", 30.0);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->index, 0);
  EXPECT_EQ(b->attempts, 2);
  // "a" lost the claim: its heartbeat and result are refused.
  EXPECT_FALSE(store.heartbeat(0, "a", 31.0));
  TrialOutcome done;
  done.status = TrialStatus::Completed;
  done.objective = 1.5;
  EXPECT_FALSE(store.finish(0, "a", done, 2, 32.0));
  EXPECT_TRUE(store.finish(0, "b", done, 2, 33.0));
  // A dead worker's claim returns at once, whatever its heartbeat.
  auto c = store.claim("c", 40.0);
  ASSERT_TRUE(c);
  EXPECT_EQ(store.requeue_stale(0.0, {"c"}), std::vector<int64_t>{1});
  EXPECT_EQ(store.trials()[1].status, TrialStatus::Pending);
  EXPECT_FALSE(store.claim("d", 50.0) == std::nullopt);
  EXPECT_TRUE(store.release(1, "d"));
  EXPECT_EQ(store.trials()[1].status, TrialStatus::Pending);
  EXPECT_EQ(store.trials()[0].status, TrialStatus::Completed);
  EXPECT_EQ(*store.trials()[0].objective, 1.5);
}

TEST_F(StoreTest, CrashesAreRetriedThenFailed) {
  create(1);
  SqliteStore store(dir_ / "study.db");
  TrialOutcome crash;
  crash.status = TrialStatus::Failed;
  crash.reason = "exit code 1";
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto t = store.claim("w", attempt);
    ASSERT_TRUE(t) << "attempt " << attempt;
    EXPECT_TRUE(store.finish(0, "w", crash, 2, attempt + 0.5));
  }
  EXPECT_FALSE(store.claim("w", 9.0));
  const TrialRecord t = store.trials()[0];
  EXPECT_EQ(t.status, TrialStatus::Failed);
  EXPECT_EQ(t.failures, 3);
  EXPECT_EQ(t.attempts, 3);
  EXPECT_EQ(t.reason, "exit code 1");
}

}  // namespace
}  // namespace pb::tuning
