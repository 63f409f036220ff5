// `playbook train` end to end: real training on Fashion-MNIST, exact resume after SIGKILL,
// torchvision-compatible checkpoints, and every kind of bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/checkpoint/safetensors.h"
#include "tests/e2e/cli_runner.h"

namespace pb {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::read_file;
using testing::run_playbook;
using testing::TempDir;
using testing::write_file;

const fs::path kFashion = "/usr/share/datasets/fashion-mnist";

#define SKIP_WITHOUT_FASHION_MNIST() \
  if (!fs::exists(kFashion / "train-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST"

// A small, fast CPU job: an MLP on a subset of Fashion-MNIST.
std::string mlp_config(int64_t steps, int64_t train_examples, bool deterministic) {
  return fmt::format(R"(
[model]
name = "mlp"
hidden = [128]
[data]
dataset = "fashion_mnist"
dir = "{}"
validation_size = 2000
train_examples = {}
workers = 2
[optimizer]
name = "momentum"
learning_rate = 0.05
momentum = 0.9
[schedule]
name = "cosine"
[train]
batch_size = 64
eval_batch_size = 500
max_train_steps = {}
eval_every = 100
log_every = 20
checkpoint_every = 100
keep_best = 2
device = "cpu"
deterministic = {}
)",
                     kFashion.string(), train_examples, steps, deterministic);
}

std::vector<json> metrics(const fs::path& run) {
  std::vector<json> out;
  std::istringstream in(read_file(run / "metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json j = json::parse(line);
    j.erase("examples_per_sec");  // wall-clock measurements differ between runs
    j.erase("data_wait_fraction");
    j.erase("phase_seconds");
    out.push_back(j);
  }
  return out;
}

TEST(TrainCli, MlpReachesTheTargetAccuracyOnFashionMnist) {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir tmp("pb-train-mlp");
  write_file(tmp / "mlp.toml", mlp_config(1500, 20000, false));
  const auto start = std::chrono::steady_clock::now();
  const auto r = run_playbook(
      {"train", (tmp / "mlp.toml").string(), "--out", (tmp / "run").string()}, tmp / "io");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const json summary = json::parse(read_file(tmp / "run" / "summary.json"));
  EXPECT_EQ(summary["status"], "completed");
  const double accuracy = 1.0 - summary["test_error"].get<double>();
  EXPECT_GE(accuracy, 0.84) << r.out;
  EXPECT_LT(seconds, 120.0);
  EXPECT_NE(r.out.find("test accuracy:"), std::string::npos);
  // The interface the tuning layer reads.
  const std::vector<json> m = metrics(tmp / "run");
  ASSERT_EQ(m.size(), 1500u / 20u);
  for (const char* key : {"step", "lr", "train_loss", "grad_norm"})
    EXPECT_TRUE(m[0].contains(key)) << key;
  EXPECT_TRUE(m[4].contains("val_error"));  // step 100
  EXPECT_FALSE(m[0].contains("val_error"));
  EXPECT_TRUE(fs::exists(tmp / "run" / "config.toml"));
  EXPECT_EQ(summary["best_step"].is_number(), true);
  int best_files = 0;
  for (const auto& e : fs::directory_iterator(tmp / "run" / "best"))
    best_files += e.path().extension() == ".safetensors";
  EXPECT_EQ(best_files, 2);
}

TEST(TrainCli, SigkillAndResumeGivesBitwiseIdenticalParametersAndMetrics) {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir tmp("pb-train-resume");
  write_file(tmp / "mlp.toml", mlp_config(600, 5000, true));
  const std::string config = (tmp / "mlp.toml").string();
  const fs::path a = tmp / "uninterrupted", b = tmp / "killed";

  ASSERT_EQ(run_playbook({"train", config, "--out", a.string()}, tmp / "io-a").exit_code, 0);

  // Start the same run, SIGKILL it right after its first checkpoint, then resume it.
  const pid_t pid = testing::spawn_playbook({"train", config, "--out", b.string()},
                                            tmp / "b-out.txt", tmp / "b-err.txt");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(b / "checkpoints" / "step_00000100") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  ASSERT_EQ(testing::wait_exit(pid), -SIGKILL) << "the run ended before it could be killed";
  ASSERT_FALSE(fs::exists(b / "summary.json"));
  const auto resumed =
      run_playbook({"train", config, "--out", b.string(), "--resume"}, tmp / "io-b");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from"), std::string::npos) << resumed.out;

  const std::string final_ckpt = "checkpoints/step_00000600/model.safetensors";
  EXPECT_EQ(read_file(a / final_ckpt), read_file(b / final_ckpt)) << "parameters differ";
  EXPECT_EQ(read_file(a / "checkpoints/step_00000600/state.safetensors"),
            read_file(b / "checkpoints/step_00000600/state.safetensors"))
      << "optimizer state differs";
  EXPECT_EQ(metrics(a), metrics(b));
  const json sa = json::parse(read_file(a / "summary.json"));
  const json sb = json::parse(read_file(b / "summary.json"));
  EXPECT_EQ(sa["test_error"], sb["test_error"]);
  EXPECT_EQ(sa["best_step"], sb["best_step"]);
}

TEST(TrainCli, CheckpointNamesAndShapesFollowTorchvision) {
  // The demo's ResNet-20 config, on small synthetic 1x12x12 images so that it runs in seconds.
  TempDir tmp("pb-train-names");
  const auto r = run_playbook({"train",    "configs/resnet20_fashion_mnist.toml",
                               "--out",    (tmp / "run").string(),
                               "--device", "cpu",
                               "--set",    "data.dataset=synthetic",
                               "--set",    "data.synthetic_shape=[1, 12, 12]",
                               "--set",    "data.synthetic_classes=10",
                               "--set",    "data.synthetic_count=300",
                               "--set",    "data.validation_size=100",
                               "--set",    "train.max_train_steps=2",
                               "--set",    "schedule.warmup_steps=1",
                               "--set",    "train.log_every=1",
                               "--set",    "train.eval_every=2",
                               "--set",    "train.checkpoint_every=2",
                               "--set",    "train.eval_batch_size=128"},
                              tmp / "io");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const checkpoint::Loaded ckpt =
      checkpoint::load(tmp / "run" / "checkpoints" / "step_00000002" / "model.safetensors");
  std::map<std::string, std::string> shapes;
  for (const auto& [name, t] : ckpt.tensors) shapes[name] = t.shape().str();
  // stem conv + bn (4), 9 blocks x (2 convs + 2 bns), 2 projections x (conv + bn), fc (2)
  EXPECT_EQ(shapes.size(), 1u + 4 + 9 * (2 + 8) + 2 * (1 + 4) + 2);
  EXPECT_EQ(shapes.at("conv1.weight"), "(16, 1, 3, 3)");
  EXPECT_EQ(shapes.at("bn1.running_mean"), "(16)");
  EXPECT_EQ(shapes.at("layer1.0.conv1.weight"), "(16, 16, 3, 3)");
  EXPECT_EQ(shapes.at("layer2.0.downsample.0.weight"), "(32, 16, 1, 1)");
  EXPECT_EQ(shapes.at("layer2.0.downsample.1.running_var"), "(32)");
  EXPECT_EQ(shapes.at("layer3.2.bn2.weight"), "(64)");
  EXPECT_EQ(shapes.at("fc.weight"), "(10, 64)");
  EXPECT_EQ(ckpt.metadata.at("format"), "pt");
  // `playbook eval` rebuilds the model from the checkpoint's embedded config.
  const auto e =
      run_playbook({"eval", (tmp / "run/checkpoints/step_00000002/model.safetensors").string(),
                    "--device", "cpu"},
                   tmp / "io-eval");
  EXPECT_EQ(e.exit_code, 0) << e.err;
  EXPECT_NE(e.out.find("test on 300 examples"), std::string::npos) << e.out;
}

// Each bad input: a one-line error naming the file and key, a non-zero exit, and no run
// directory left behind that could pass for a finished run.
struct BadInput {
  std::string name;
  std::string config_edit;  // appended TOML, or a --set
  std::vector<std::string> extra_args;
  std::string expected;  // substring of stderr
};

// Command-line usage errors exit with 2, as config errors do (CLI11's own codes were 105 and
// 109), name the option, and create nothing.
TEST(TrainCli, UsageErrorsExitWithTwo) {
  TempDir tmp("pb-train-usage");
  write_file(tmp / "cfg.toml", mlp_config(10, 0, false));
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--threads", "0"}, "--threads: Value 0 not in range 1 to 4096"},
      {{"--no-such-option"}, "--no-such-option"},
  };
  for (const auto& [extra, expected] : cases) {
    std::vector<std::string> args = {"train", (tmp / "cfg.toml").string(), "--out",
                                     (tmp / "run").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_playbook(args, tmp / "io");
    EXPECT_EQ(r.exit_code, 2) << expected << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp / "run"));
  }
  EXPECT_EQ(run_playbook({"--help"}, tmp / "io").exit_code, 0);
}

TEST(TrainCli, BadInputsGiveOneLineErrorsAndLeaveNoRun) {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir tmp("pb-train-bad");
  // Data directories with problems.
  fs::create_directories(tmp / "empty-data");
  fs::create_directories(tmp / "bad-magic");
  fs::copy(kFashion, tmp / "bad-magic", fs::copy_options::recursive);
  write_file(tmp / "bad-magic" / "train-labels-idx1-ubyte.gz", "this is not gzip nor idx");
  const std::string base = mlp_config(10, 0, false);
  const std::vector<BadInput> cases = {
      {"unknown key",
       "",
       {"--set", "optimizer.learing_rate=0.1"},
       "unknown key 'optimizer.learing_rate' (did you mean 'optimizer.learning_rate'?)"},
      {"wrong type", "", {"--set", "train.batch_size=\"big\""}, "train.batch_size must be"},
      {"out of range", "", {"--set", "optimizer.learning_rate=-1"}, "optimizer.learning_rate"},
      {"unknown optimizer", "", {"--set", "optimizer.name=adamm"}, "adamm"},
      {"unknown schedule", "", {"--set", "schedule.name=cosin"}, "cosin"},
      {"unknown model", "", {"--set", "model.name=transformer"}, "transformer"},
      {"hyperparameter of another optimizer",
       "",
       {"--set", "optimizer.beta2=0.99"},
       "optimizer.beta2 does not apply to optimizer 'momentum'"},
      {"missing dataset", "", {"--set", "data.dir=" + (tmp / "empty-data").string()}, "empty-data"},
      {"corrupt dataset",
       "",
       {"--set", "data.dir=" + (tmp / "bad-magic").string()},
       "train-labels-idx1-ubyte.gz"},
      {"bad device", "", {"--device", "gpu"}, "invalid device 'gpu'"},
  };
  for (const BadInput& c : cases) {
    write_file(tmp / "cfg.toml", base + c.config_edit);
    std::vector<std::string> args = {"train", (tmp / "cfg.toml").string(), "--out",
                                     (tmp / "run").string()};
    args.insert(args.end(), c.extra_args.begin(), c.extra_args.end());
    const auto r = run_playbook(args, tmp / "io");
    EXPECT_NE(r.exit_code, 0) << c.name;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.name << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.name << ": " << r.err;
    EXPECT_FALSE(fs::exists(tmp / "run")) << c.name << ": left a run directory";
  }
  // A config file with a TOML syntax error names file and line.
  write_file(tmp / "broken.toml", "[train\nbatch_size = 3\n");
  const auto r = run_playbook(
      {"train", (tmp / "broken.toml").string(), "--out", (tmp / "run").string()}, tmp / "io");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("broken.toml"), std::string::npos) << r.err;
  // A corrupt checkpoint given to eval.
  write_file(tmp / "bad.safetensors", "garbage");
  const auto e = run_playbook({"eval", (tmp / "bad.safetensors").string()}, tmp / "io");
  EXPECT_NE(e.exit_code, 0);
  EXPECT_NE(e.err.find("bad.safetensors"), std::string::npos) << e.err;
  // An existing run is never overwritten.
  fs::create_directories(tmp / "taken");
  write_file(tmp / "taken" / "metrics.jsonl", "{}\n");
  write_file(tmp / "cfg.toml", base);
  const auto t = run_playbook(
      {"train", (tmp / "cfg.toml").string(), "--out", (tmp / "taken").string()}, tmp / "io");
  EXPECT_NE(t.exit_code, 0);
  EXPECT_NE(t.err.find("already exists"), std::string::npos) << t.err;
  EXPECT_EQ(read_file(tmp / "taken" / "metrics.jsonl"), "{}\n");
}

// Every cross-key rule is checked before anything is created: the command fails with exit code 2
// and a message naming the keys, leaves no run directory, and so fails the same way when run
// again (never with "already exists").
TEST(TrainCli, CrossKeyErrorsCreateNothing) {
  TempDir tmp("pb-train-cross");
  const std::string base = R"(
[model]
name = "mlp"
hidden = [8]
[data]
dataset = "synthetic"
synthetic_shape = [1, 4, 4]
synthetic_classes = 3
synthetic_count = 64
validation_size = 16
[optimizer]
learning_rate = 0.1
[train]
batch_size = 16
eval_batch_size = 16
max_train_steps = 4
log_every = 2
eval_every = 2
checkpoint_every = 2
device = "cpu"
)";
  write_file(tmp / "cfg.toml", base);
  struct Case {
    std::vector<std::string> set;
    std::vector<std::string> keys;
  };
  const std::vector<Case> cases = {
      {{"model.norm=ghost", "model.virtual_batch_size=6"},
       {"train.batch_size", "model.virtual_batch_size", "model.norm"}},
      {{"train.eval_batch_size=8"}, {"train.eval_batch_size", "train.batch_size"}},
      {{"train.checkpoint_every=3"}, {"train.checkpoint_every", "train.log_every"}},
      {{"schedule.name=cosine", "schedule.warmup_steps=4"},
       {"schedule.warmup_steps", "train.max_train_steps"}},
      {{"model.name=resnet", "model.norm=layer"}, {"model.norm", "model.name"}},
      {{"data.synthetic_shape=[1, 4]"}, {"data.synthetic_shape"}},
      {{"optimizer.name=sgd", "optimizer.momentum=0.9"}, {"optimizer.momentum", "optimizer 'sgd'"}},
      {{"schedule.name=step"}, {"schedule.step_size"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"train", (tmp / "cfg.toml").string(), "--out",
                                     (tmp / "run").string()};
    for (const std::string& s : c.set) args.insert(args.end(), {"--set", s});
    for (int attempt = 0; attempt < 2; ++attempt) {
      const auto r = run_playbook(args, tmp / "io");
      EXPECT_EQ(r.exit_code, 2) << c.set[0] << ": " << r.err;
      for (const std::string& key : c.keys) {
        EXPECT_NE(r.err.find(key), std::string::npos) << key << " not in: " << r.err;
      }
      EXPECT_EQ(r.err.find("already exists"), std::string::npos) << r.err;
      EXPECT_FALSE(fs::exists(tmp / "run")) << c.set[0] << ": left a run directory";
    }
  }
  // The alias of the learning rate is accepted on the command line and written canonically.
  const auto ok = run_playbook({"train", (tmp / "cfg.toml").string(), "--out",
                                (tmp / "run").string(), "--set", "optimizer.lr=0.0625"},
                               tmp / "io");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(read_file(tmp / "run" / "config.toml").find("learning_rate = 0.0625"),
            std::string::npos);
}

TEST(TrainCli, DivergenceStopsWithItsOwnExitCodeAndStatus) {
  SKIP_WITHOUT_FASHION_MNIST();
  TempDir tmp("pb-train-diverge");
  write_file(tmp / "cfg.toml", mlp_config(400, 2000, false));
  const auto r =
      run_playbook({"train", (tmp / "cfg.toml").string(), "--out", (tmp / "run").string(), "--set",
                    "optimizer.learning_rate=1000", "--set", "schedule.name=constant"},
                   tmp / "io");
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  const json summary = json::parse(read_file(tmp / "run" / "summary.json"));
  EXPECT_EQ(summary["status"], "diverged");
  EXPECT_LT(summary["steps"].get<int64_t>(), 400);
}

}  // namespace
}  // namespace pb
