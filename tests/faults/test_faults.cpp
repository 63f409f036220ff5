// Fault tests with real `playbook train` processes: SIGKILL in the middle of a checkpoint write,
// corrupt and truncated checkpoints, a loop of random kills with `--resume` on every start, a
// full disk, a read-only run directory, a checkpoint folder removed during the run, and
// out-of-memory. Every test ends by checking that nothing was lost: the last good checkpoint
// reads whole, and a resumed run ends bitwise identical (parameters, optimizer state, metrics) to
// an uninterrupted one (train.deterministic = true, a small MLP on synthetic data).
//
// Faults come from PLAYBOOK_TEST_FAULT (runtime/checkpoint/atomic_file.h), or from a real small
// tmpfs where this process may mount one (root); those tests skip themselves elsewhere.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <nlohmann/json.hpp>
#include <random>

#include "tests/e2e/cli_runner.h"
#include "train/run_dir.h"

namespace pb {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::read_file;
using testing::TempDir;
using testing::wait_exit;
using testing::write_file;

constexpr int64_t kSteps = 300;

std::string config_text() {
  return R"(
[model]
name = "mlp"
hidden = [32]
[data]
dataset = "synthetic"
synthetic_shape = [1, 8, 8]
synthetic_count = 2000
validation_size = 200
workers = 1
[optimizer]
name = "momentum"
learning_rate = 0.05
[schedule]
name = "cosine"
[train]
batch_size = 16
eval_batch_size = 200
max_train_steps = 300
eval_every = 50
log_every = 10
checkpoint_every = 50
keep_checkpoints = 3
keep_best = 2
device = "cpu"
deterministic = true
)";
}

// `playbook args...` with PLAYBOOK_TEST_FAULT=fault (when not empty); returns the pid.
pid_t spawn(const std::vector<std::string>& args, const fs::path& io, const std::string& fault) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (!fault.empty()) setenv("PLAYBOOK_TEST_FAULT", fault.c_str(), 1);
    std::vector<char*> argv;
    std::string bin = PLAYBOOK_BIN;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (!std::freopen((io.string() + ".out").c_str(), "w", stdout) ||
        !std::freopen((io.string() + ".err").c_str(), "w", stderr))
      _exit(126);
    execv(PLAYBOOK_BIN, argv.data());
    _exit(127);
  }
  return pid;
}

struct Result {
  int exit_code;
  std::string out, err;
};

// A fixture: the config file, and an uninterrupted run to compare against (made once).
class Faults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ = new TempDir("pb-faults");
    write_file(*shared_ / "mlp.toml", config_text());
    const Result r = run_in(*shared_ / "reference", {}, "", "reference");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }

  static fs::path reference() { return *shared_ / "reference"; }
  static std::string config() { return (*shared_ / "mlp.toml").string(); }

  // playbook train into `dir` (with --resume when asked), to the end.
  static Result run_in(const fs::path& dir, std::vector<std::string> extra,
                       const std::string& fault, const std::string& tag) {
    std::vector<std::string> args = {"train", config(), "--out", dir.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const fs::path io = *shared_ / ("io-" + tag);
    Result r;
    r.exit_code = wait_exit(spawn(args, io, fault));
    r.out = read_file(io.string() + ".out");
    r.err = read_file(io.string() + ".err");
    return r;
  }

  // The run in `dir` ended exactly as the uninterrupted one: final parameters and optimizer state
  // byte for byte, every metrics line but the wall-clock ones, the summary's results.
  static void expect_same_as_reference(const fs::path& dir) {
    const std::string last = "checkpoints/" + train::step_name(kSteps) + "/";
    for (const char* file : {"model.safetensors", "state.safetensors", "state.json"}) {
      EXPECT_EQ(read_file(reference() / (last + file)), read_file(dir / (last + file)))
          << file << " differs in " << dir;
    }
    EXPECT_EQ(metrics(reference()), metrics(dir));
    const json a = json::parse(read_file(reference() / "summary.json"));
    const json b = json::parse(read_file(dir / "summary.json"));
    for (const char* key : {"status", "steps", "best_step", "best_val_error", "test_error",
                            "best_test_error", "final_val_error"}) {
      EXPECT_EQ(a[key], b[key]) << key;
    }
    std::vector<std::string> best_a, best_b;
    for (const auto& e : fs::directory_iterator(reference() / "best"))
      best_a.push_back(e.path().filename());
    for (const auto& e : fs::directory_iterator(dir / "best"))
      best_b.push_back(e.path().filename());
    std::sort(best_a.begin(), best_a.end());
    std::sort(best_b.begin(), best_b.end());
    EXPECT_EQ(best_a, best_b);
  }

  static std::vector<json> metrics(const fs::path& run) {
    std::vector<json> out;
    std::istringstream in(read_file(run / "metrics.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      json j = json::parse(line);
      j.erase("examples_per_sec");
      j.erase("data_wait_fraction");
      j.erase("phase_seconds");
      out.push_back(j);
    }
    return out;
  }

  // No temporary file or directory anywhere under `dir`.
  static void expect_no_partial_files(const fs::path& dir) {
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
    }
  }

  static uint64_t size_of(const std::string& file) {
    return fs::file_size(reference() / "checkpoints" / train::step_name(kSteps) / file);
  }

  static TempDir* shared_;
};
TempDir* Faults::shared_ = nullptr;

TEST_F(Faults, SigkillInsideACheckpointWriteResumesFromTheLastCompleteOne) {
  const uint64_t model = size_of("model.safetensors"), state = size_of("state.safetensors");
  // Offsets into the bytes of checkpoint 100: its first byte, inside the model's header, inside
  // its data, at its very end, inside state.safetensors, and inside state.json.
  for (const uint64_t offset :
       {uint64_t{0}, uint64_t{40}, model / 2, model, model + state / 2, model + state + 10}) {
    SCOPED_TRACE(offset);
    TempDir tmp("pb-fault-kill");
    const fs::path run = tmp / "run";
    const std::string fault = fmt::format("kill:{}:checkpoints/step_00000100", offset);
    const Result killed = run_in(run, {}, fault, "kill");
    ASSERT_EQ(killed.exit_code, -SIGKILL) << killed.err;
    EXPECT_FALSE(fs::exists(run / "checkpoints" / "step_00000100"));
    EXPECT_TRUE(fs::exists(run / "checkpoints" / "step_00000100.tmp"));  // the kill's leftover
    const Result resumed = run_in(run, {"--resume"}, "", "kill-resume");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_NE(resumed.out.find("resumed from " + (run / "checkpoints" / "step_00000050").string() +
                               " at step 50"),
              std::string::npos)
        << resumed.out;
    expect_same_as_reference(run);
    expect_no_partial_files(run);
  }
}

TEST_F(Faults, ACorruptOrIncompleteLatestCheckpointIsSkippedWithAMessage) {
  struct Damage {
    const char* name;
    std::function<void(const fs::path&)> apply;  // on the checkpoint directory
  };
  const std::vector<Damage> damages = {
      {"truncated model",
       [](const fs::path& c) {
         fs::resize_file(c / "model.safetensors", fs::file_size(c / "model.safetensors") / 2);
       }},
      {"bit flip in the optimizer state",
       [](const fs::path& c) {
         std::string bytes = read_file(c / "state.safetensors");
         bytes[bytes.size() - 3] ^= 0x10;
         write_file(c / "state.safetensors", bytes);
       }},
      {"state.json missing", [](const fs::path& c) { fs::remove(c / "state.json"); }},
      {"state.json cut short",
       [](const fs::path& c) {
         const std::string text = read_file(c / "state.json");
         write_file(c / "state.json", text.substr(0, text.size() / 3));
       }},
  };
  for (const Damage& damage : damages) {
    SCOPED_TRACE(damage.name);
    TempDir tmp("pb-fault-corrupt");
    const fs::path run = tmp / "run";
    // Killed just before checkpoint 200: 50, 100 and 150 are complete.
    ASSERT_EQ(run_in(run, {}, "kill:0:checkpoints/step_00000200", "corrupt").exit_code, -SIGKILL);
    const fs::path latest = run / "checkpoints" / "step_00000150";
    damage.apply(latest);
    const Result resumed = run_in(run, {"--resume"}, "", "corrupt-resume");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_NE(resumed.out.find("checkpoint " + latest.string() + " is incomplete or corrupt"),
              std::string::npos)
        << resumed.out;
    EXPECT_NE(resumed.out.find("resumed from " + (run / "checkpoints" / "step_00000100").string()),
              std::string::npos)
        << resumed.out;
    expect_same_as_reference(run);
  }
}

TEST_F(Faults, RandomSigkillsWithResumeOnEveryStartEndBitwiseIdentical) {
  TempDir tmp("pb-fault-loop");
  const fs::path run = tmp / "run";
  const unsigned seed = static_cast<unsigned>(std::random_device{}());
  SCOPED_TRACE(fmt::format("seed {}", seed));
  std::mt19937 rng(seed);
  // Kill times from the first milliseconds (before the run directory exists) to about the length
  // of a whole run; a requeued job runs the same command, --resume included, every time.
  std::uniform_int_distribution<int> delay_ms(0, 1500);
  int kills = 0;
  for (int attempt = 0; attempt < 40; ++attempt) {
    const int delay = attempt < 2 ? attempt * 20 : delay_ms(rng);
    const pid_t pid =
        spawn({"train", config(), "--out", run.string(), "--resume"}, tmp / "loop", "");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    kill(pid, SIGKILL);
    const int rc = wait_exit(pid);
    if (rc == 0) break;
    ASSERT_EQ(rc, -SIGKILL) << read_file(tmp.path().string() + "/loop.err");
    ++kills;
    if (kills == 12) break;
  }
  EXPECT_GE(kills, 2);
  const Result last = run_in(run, {"--resume"}, "", "loop-last");
  if (fs::exists(run / "summary.json") && last.exit_code != 0) {
    // The run completed inside the loop: --resume refuses a completed run.
    EXPECT_NE(last.err.find("already completed"), std::string::npos) << last.err;
  } else {
    ASSERT_EQ(last.exit_code, 0) << last.err;
  }
  expect_same_as_reference(run);
  expect_no_partial_files(run);
}

TEST_F(Faults, AFullDiskEndsTheRunWithAClearErrorAndKeepsTheLastCheckpoint) {
  TempDir tmp("pb-fault-enospc");
  const fs::path run = tmp / "run";
  const std::string fault =
      fmt::format("enospc:{}:checkpoints/step_00000100", size_of("model.safetensors") / 2);
  const Result full = run_in(run, {}, fault, "enospc");
  EXPECT_EQ(full.exit_code, 1);
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;
  EXPECT_NE(full.err.find("step_00000100"), std::string::npos) << full.err;
  EXPECT_FALSE(fs::exists(run / "checkpoints" / "step_00000100"));
  expect_no_partial_files(run);
  // The previous checkpoint is intact: it reads whole, sizes and CRC-32s as recorded.
  EXPECT_NO_THROW(train::read_checkpoint(run / "checkpoints" / "step_00000050"));
  const Result resumed = run_in(run, {"--resume"}, "", "enospc-resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  expect_same_as_reference(run);
}

TEST_F(Faults, AReadOnlyRunDirectoryIsAClearErrorAndChangesNothing) {
  TempDir tmp("pb-fault-erofs");
  const fs::path run = tmp / "run";
  ASSERT_EQ(run_in(run, {}, "kill:0:checkpoints/step_00000100", "erofs-kill").exit_code, -SIGKILL);
  // The resume cannot write its first file (metrics.jsonl, cut to the restored step).
  const std::string before = read_file(run / "metrics.jsonl");
  const Result ro = run_in(run, {"--resume"}, "erofs:0", "erofs");
  EXPECT_EQ(ro.exit_code, 1);
  EXPECT_NE(ro.err.find("Read-only file system"), std::string::npos) << ro.err;
  EXPECT_EQ(read_file(run / "metrics.jsonl"), before);
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step_00000050"));
  const Result resumed = run_in(run, {"--resume"}, "", "erofs-resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  expect_same_as_reference(run);
}

// A small tmpfs (root only; skipped elsewhere), unmounted at the end.
class Tmpfs {
 public:
  Tmpfs(const fs::path& at, const std::string& options) : at_(at) {
    fs::create_directories(at);
    mounted_ = ::mount("tmpfs", at.c_str(), "tmpfs", 0, options.c_str()) == 0;
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(at_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  bool remount(unsigned long flags, const std::string& options) {
    return ::mount("tmpfs", at_.c_str(), "tmpfs", MS_REMOUNT | flags, options.c_str()) == 0;
  }

 private:
  fs::path at_;
  bool mounted_ = false;
};

TEST_F(Faults, ARealFullTmpfsEndsTheRunAndItsLastCheckpointResumesElsewhere) {
  TempDir tmp("pb-fault-tmpfs");
  // Room for the config, the metrics and a few checkpoints, not for the whole run.
  uint64_t checkpoint = 0;
  for (const auto& e : fs::directory_iterator(reference() / "checkpoints" / "step_00000300"))
    checkpoint += (fs::file_size(e.path()) + 4095) / 4096 * 4096;
  Tmpfs disk(tmp / "disk", fmt::format("size={}", 2 * checkpoint + 4 * 4096));
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root)";
  const fs::path run = tmp / "disk" / "run";
  const Result full = run_in(run, {}, "", "tmpfs");
  EXPECT_EQ(full.exit_code, 1) << full.out;
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;
  const std::vector<fs::path> left = train::checkpoints_newest_first(run / "checkpoints");
  ASSERT_FALSE(left.empty());
  EXPECT_NO_THROW(train::read_checkpoint(left.front()));
  // Moved to a disk with room, the run resumes from it and loses nothing.
  const fs::path moved = tmp / "moved";
  fs::copy(run, moved, fs::copy_options::recursive);
  const Result resumed = run_in(moved, {"--resume"}, "", "tmpfs-resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from"), std::string::npos) << resumed.out;
  expect_same_as_reference(moved);
}

TEST_F(Faults, ARealReadOnlyMountIsAClearErrorAndResumesOnceWritable) {
  TempDir tmp("pb-fault-romount");
  Tmpfs disk(tmp / "disk", "size=64m");
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root)";
  const fs::path run = tmp / "disk" / "run";
  ASSERT_EQ(run_in(run, {}, "kill:0:checkpoints/step_00000150", "ro-kill").exit_code, -SIGKILL);
  ASSERT_TRUE(disk.remount(MS_RDONLY, "size=64m"));
  const Result ro = run_in(run, {"--resume"}, "", "ro");
  EXPECT_EQ(ro.exit_code, 1);
  EXPECT_NE(ro.err.find("Read-only file system"), std::string::npos) << ro.err;
  ASSERT_TRUE(disk.remount(0, "size=64m"));
  const Result resumed = run_in(run, {"--resume"}, "", "ro-resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("step_00000100 at step 100"), std::string::npos) << resumed.out;
  expect_same_as_reference(run);
}

TEST_F(Faults, ACheckpointFolderRemovedDuringTheRunIsAClearError) {
  TempDir tmp("pb-fault-removed");
  const fs::path run = tmp / "run";
  // A slowed-down run (simulated read latency) so that the folder goes while it trains.
  const pid_t pid =
      spawn({"train", config(), "--out", run.string(), "--set", "data.example_delay_us=200"},
            tmp / "removed", "");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(run / "checkpoints" / "step_00000050") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  fs::remove_all(run / "checkpoints");
  EXPECT_EQ(wait_exit(pid), 1);
  const std::string err = read_file(tmp.path().string() + "/removed.err");
  EXPECT_NE(err.find((run / "checkpoints").string()), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(run / "summary.json"));
}

TEST_F(Faults, ResumeWithADifferentConfigNamesTheKeys) {
  TempDir tmp("pb-fault-config");
  const fs::path run = tmp / "run";
  ASSERT_EQ(run_in(run, {}, "kill:0:checkpoints/step_00000100", "cfg-kill").exit_code, -SIGKILL);
  const Result r = run_in(
      run, {"--resume", "--set", "optimizer.learning_rate=0.1", "--set", "train.batch_size=32"}, "",
      "cfg");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("optimizer.learning_rate (0.05 in the run, 0.1 now)"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("train.batch_size (16 in the run, 32 now)"), std::string::npos) << r.err;
}

TEST_F(Faults, ResumeStartsARunThatWasKilledBeforeItsConfigWasWritten) {
  TempDir tmp("pb-fault-fresh");
  // What a kill during the creation of the directory leaves: empty folders, a temporary file.
  const fs::path run = tmp / "run";
  fs::create_directories(run / "checkpoints");
  fs::create_directories(run / "best");
  write_file(run / "config.toml.tmp", "[model]\nna");
  const Result r = run_in(run, {"--resume"}, "", "fresh");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("no run in"), std::string::npos) << r.out;
  expect_same_as_reference(run);
  // A directory with something else in it is not taken over.
  const fs::path other = tmp / "other";
  fs::create_directories(other);
  write_file(other / "notes.txt", "mine");
  const Result refused = run_in(other, {"--resume"}, "", "fresh-other");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("notes.txt"), std::string::npos) << refused.err;
  EXPECT_EQ(read_file(other / "notes.txt"), "mine");
}

TEST_F(Faults, OutOfMemoryIsATypedErrorWithSizesAndExitCode4) {
  TempDir tmp("pb-fault-oom");
  const fs::path run = tmp / "run";
  const Result r = run_in(run,
                          {"--set", "train.memory_limit_mb=1", "--set",
                           "train.eval_batch_size=2000", "--set", "data.validation_size=1900"},
                          "", "oom");
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("out of memory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tried to allocate"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cap 1.00 MiB"), std::string::npos) << r.err;
  const json s = json::parse(read_file(run / "summary.json"));
  EXPECT_EQ(s["status"], "out_of_memory");
  expect_no_partial_files(run);
  // Every checkpoint left behind reads whole.
  for (const fs::path& c : train::checkpoints_newest_first(run / "checkpoints"))
    EXPECT_NO_THROW(train::read_checkpoint(c)) << c;
}

}  // namespace
}  // namespace pb
