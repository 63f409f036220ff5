// playbook sweep end to end on the CPU: small problems whose answers are known by construction.
//   lr       full-batch gradient descent on linear least squares diverges above 2 / lambda_max
//            of the loss's Hessian, computed here from the very inputs the trainer sees
//   warmup   a learning rate that diverges without warmup trains with a long enough one
//   clip     the threshold is the 90th percentile of the norms the run logged, checked here
//   batch    a loader slowed per example plateaus and is flagged input bound; a fast one is not;
//            a memory cap makes large batches infeasible (out of memory) and the sweep goes on
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/data/augment.h"
#include "tests/common/sanitized.h"
#include "train/config.h"
#include "train/evaluate.h"

namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("pb_sweep_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

std::vector<json> read_lines(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

// Runs the playbook executable; returns its exit code, output in `log`.
int playbook(const std::string& args, const fs::path& log) {
  const std::string cmd = std::string("OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ") + PLAYBOOK_BIN +
                          " " + args + " > " + log.string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A linear model (MLP without hidden layers) on a tiny synthetic dataset.
std::string linear_config(const std::string& loss, const std::string& optimizer, int64_t count,
                          int64_t batch, int64_t steps, int64_t log_every,
                          const std::string& extra_data = "") {
  return "[model]\nname = \"mlp\"\nhidden = []\nnorm = \"none\"\n"
         "[data]\ndataset = \"synthetic\"\nsynthetic_shape = [1, 4, 4]\nsynthetic_classes = 4\n"
         "synthetic_count = " +
         std::to_string(count) + "\nvalidation_size = 0\nworkers = 0\n" + extra_data +
         "[optimizer]\nname = \"" + optimizer +
         "\"\nlearning_rate = 0.1\n"
         "[schedule]\nname = \"constant\"\n"
         "[train]\nbatch_size = " +
         std::to_string(batch) +
         "\neval_batch_size = " + std::to_string(std::max<int64_t>(batch, 64)) +
         "\nmax_train_steps = " + std::to_string(steps) +
         "\nlog_every = " + std::to_string(log_every) + "\neval_every = " + std::to_string(steps) +
         "\ncheckpoint_every = " + std::to_string(steps) + "\nloss = \"" + loss +
         "\"\ndeterministic = true\ndevice = \"cpu\"\n";
}

// lambda_max of the mean-squared-error Hessian of the linear model over the training set the
// trainer builds: L = 1/(N K) sum_i sum_k (w_k . x_i + b_k - y_ik)^2 has, for every output k,
// the Hessian H = 2/(N K) sum_i [x_i; 1][x_i; 1]^T, with x_i the normalised pixels.
double mse_hessian_lambda_max(const fs::path& config) {
  const pb::train::TrainConfig t = pb::train::train_config(pb::train::resolve(config));
  const auto ds = pb::train::load_split(t.data, "train");
  const pb::data::Augmenter aug(pb::data::default_augment(ds->name, true), ds->channels, ds->height,
                                ds->width);
  const auto d = static_cast<std::size_t>(ds->example_size() + 1);
  std::vector<double> h(d * d, 0.0);
  std::vector<float> x(d - 1);
  for (int64_t i = 0; i < ds->count; ++i) {
    aug.apply(ds->image(i), pb::data::AugmentDraw{}, x.data());
    std::vector<double> v(x.begin(), x.end());
    v.push_back(1.0);
    for (std::size_t a = 0; a < d; ++a) {
      for (std::size_t b = 0; b < d; ++b) h[a * d + b] += v[a] * v[b];
    }
  }
  const double scale = 2.0 / static_cast<double>(ds->count * ds->num_classes);
  for (double& e : h) e *= scale;
  // Power iteration (H is symmetric positive semi-definite).
  std::vector<double> q(d, 1.0), r(d);
  double lambda = 0;
  for (int it = 0; it < 5000; ++it) {
    double norm = 0;
    for (std::size_t a = 0; a < d; ++a) {
      r[a] = 0;
      for (std::size_t b = 0; b < d; ++b) r[a] += h[a * d + b] * q[b];
      norm += r[a] * r[a];
    }
    norm = std::sqrt(norm);
    lambda = norm;
    for (std::size_t a = 0; a < d; ++a) q[a] = r[a] / norm;
  }
  return lambda;
}

TEST(SweepLr, UnstableLearningRateBracketsTheGradientDescentLimit) {
  const fs::path dir = temp_dir("lr");
  const fs::path config = dir / "linear.toml";
  // Full batch (64 of 64 examples), plain gradient descent, mean squared error.
  write(config, linear_config("mse", "sgd", 64, 64, 150, 5));
  const double limit = 2.0 / mse_hessian_lambda_max(config);
  // A quarter-decade grid that puts the limit half way (in log) between two points.
  const double r = std::pow(10.0, 0.25);
  const double lo = limit / std::pow(r, 4.5), hi = lo * std::pow(r, 8);
  char args[512];
  std::snprintf(
      args, sizeof(args),
      "sweep lr %s --min %.10g --max %.10g --trials 9 --fit-train 0.2 --dir %s --workers 2",
      config.c_str(), lo, hi, (dir / "study").c_str());
  ASSERT_EQ(playbook(args, dir / "log.txt"), 0) << slurp(dir / "log.txt");
  const json v = read_json(dir / "study" / "verdict.json");
  ASSERT_TRUE(v["unstable_base_learning_rate"].is_number()) << v.dump(2);
  const double unstable = v["unstable_base_learning_rate"];
  const double stable = v["largest_stable_learning_rate_below_it"];
  EXPECT_GT(unstable, limit) << "limit " << limit;
  EXPECT_LT(stable, limit);
  EXPECT_LT(unstable / stable, r * 1.01);
  // Every point is on the right side of the limit, and the divergence was seen.
  for (const json& t : v["trials"]) {
    const double lr = t["learning_rate"];
    EXPECT_EQ(t["unstable"].get<bool>(), lr > limit) << t.dump();
    if (lr > limit) {
      EXPECT_TRUE(t["diverged"].get<bool>()) << t.dump();
    }
  }
  // The best rate is a stable one.
  EXPECT_LE(v["best_learning_rate"].get<double>(), stable);
  // max_train_steps candidate: the first logged step where a stable trial reached loss 0.2.
  std::optional<int64_t> first;
  for (const json& t : v["trials"]) {
    if (t["unstable"].get<bool>()) continue;
    for (const json& line :
         read_lines(dir / "study" / t["run_dir"].get<std::string>() / "metrics.jsonl")) {
      if (line["train_loss"].get<double>() <= 0.2) {
        if (!first || line["step"].get<int64_t>() < *first) first = line["step"].get<int64_t>();
        break;
      }
    }
  }
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(v["max_train_steps_candidate"].get<int64_t>(), *first);
  const std::string text = slurp(dir / "study" / "verdict.txt");
  EXPECT_NE(text.find("unstable from"), std::string::npos) << text;
  // The study is listed by playbook studies.
  ASSERT_EQ(playbook("studies " + dir.string(), dir / "studies.txt"), 0);
  EXPECT_NE(slurp(dir / "studies.txt").find("sweep_lr_linear"), std::string::npos);
  fs::remove_all(dir);
}

TEST(SweepClip, ThresholdIsThe90thPercentileOfEveryLoggedNorm) {
  const fs::path dir = temp_dir("clip");
  const fs::path config = dir / "clip.toml";
  write(config, linear_config("cross_entropy", "momentum", 256, 16, 120, 8));
  ASSERT_EQ(
      playbook("sweep clip " + config.string() + " --verify --dir " + (dir / "study").string(),
               dir / "log.txt"),
      0)
      << slurp(dir / "log.txt");
  const json v = read_json(dir / "study" / "verdict.json");
  // Every step's norm, straight from metrics.jsonl.
  std::vector<double> norms;
  for (const json& line :
       read_lines(dir / "study" / v["run_dir"].get<std::string>() / "metrics.jsonl")) {
    for (const json& n : line["grad_norms"]) norms.push_back(n.get<double>());
  }
  ASSERT_EQ(norms.size(), 120u);  // every step, though only every 8th is a log line
  std::sort(norms.begin(), norms.end());
  const double h = 0.9 * static_cast<double>(norms.size() - 1);
  const auto k = static_cast<std::size_t>(h);
  const double p90 = norms[k] + (h - static_cast<double>(k)) * (norms[k + 1] - norms[k]);
  EXPECT_DOUBLE_EQ(v["threshold"].get<double>(), p90);
  const auto above = std::count_if(norms.begin(), norms.end(), [&](double n) { return n > p90; });
  EXPECT_DOUBLE_EQ(v["clipped_fraction"].get<double>(), static_cast<double>(above) / 120.0);
  EXPECT_FALSE(v["extremely_aggressive"].get<bool>());
  EXPECT_EQ(v["plots"]["norm_by_step"].size(), 120u);
  // --verify ran clipped at that threshold.
  ASSERT_TRUE(v["verify"].is_object()) << v.dump(2);
  const json verify_summary =
      read_json(dir / "study" / v["verify"]["run_dir"].get<std::string>() / "summary.json");
  EXPECT_NEAR(verify_summary["clip"]["max_norm"].get<double>(), p90, 1e-5 * p90);
  // A low percentile clips most updates: the verdict warns.
  ASSERT_EQ(playbook("sweep clip " + config.string() + " --percentile 30 --dir " +
                         (dir / "aggressive").string(),
                     dir / "log2.txt"),
            0)
      << slurp(dir / "log2.txt");
  const json a = read_json(dir / "aggressive" / "verdict.json");
  EXPECT_TRUE(a["extremely_aggressive"].get<bool>());
  EXPECT_NE(slurp(dir / "aggressive" / "verdict.txt").find("lower the learning rate instead"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(SweepWarmup, ALongEnoughWarmupTrainsWhereNoWarmupDiverges) {
  // Logistic regression on separable data (32 random examples in 64 dimensions): gradient
  // descent blows up in its first steps at a large learning rate, but once the margins have grown
  // the gradients are tiny and the same rate is harmless; a ramp gets it there.
  const fs::path dir = temp_dir("warmup");
  const fs::path config = dir / "separable.toml";
  std::string text = linear_config("cross_entropy", "sgd", 32, 32, 10000, 5);
  text.replace(text.find("[1, 4, 4]"), 9, "[1, 8, 8]");
  write(config, text);
  // First the learning-rate sweep finds the unstable rate, as a user would.
  ASSERT_EQ(
      playbook("sweep lr " + config.string() +
                   " --min 100 --max 100000 --trials 7 --steps 300 --dir " + (dir / "lr").string(),
               dir / "lr.txt"),
      0)
      << slurp(dir / "lr.txt");
  const json lr = read_json(dir / "lr" / "verdict.json");
  ASSERT_TRUE(lr["unstable_base_learning_rate"].is_number()) << lr.dump(2);
  const double unstable = lr["unstable_base_learning_rate"];
  // Without warmup, 10x that rate diverges (exit code 3).
  char base_lr[64];
  std::snprintf(base_lr, sizeof(base_lr), "%.10g", 10 * unstable);
  EXPECT_EQ(playbook("train " + config.string() + " --set optimizer.learning_rate=" + base_lr +
                         " --set train.max_train_steps=300 --out " + (dir / "nowarmup").string(),
                     dir / "nowarmup.txt"),
            3)
      << slurp(dir / "nowarmup.txt");
  // Default warmups 10, 100, 1000 (10% of max_train_steps = 1000).
  char args[64];
  std::snprintf(args, sizeof(args), " --unstable-lr %.10g --workers 2", unstable);
  ASSERT_EQ(playbook("sweep warmup " + config.string() + args + " --dir " + (dir / "w").string(),
                     dir / "w.txt"),
            0)
      << slurp(dir / "w.txt");
  const json v = read_json(dir / "w" / "verdict.json");
  ASSERT_EQ(v["trials"].size(), 3u) << v.dump(2);
  ASSERT_TRUE(v["shortest_stable_warmup_steps"].is_number()) << v.dump(2);
  const int64_t shortest = v["shortest_stable_warmup_steps"];
  EXPECT_GT(shortest, 10);  // the shortest warmup diverged, a longer one did not
  for (const json& t : v["trials"]) {
    const int64_t w = static_cast<int64_t>(t["warmup_steps"].get<double>());
    EXPECT_EQ(t["unstable"].get<bool>(), w < shortest) << t.dump();
    // Each trial ran warmup + 2 x warmup steps with the playbook_warmup schedule.
    const json summary = read_json(dir / "w" / t["run_dir"].get<std::string>() / "summary.json");
    EXPECT_EQ(summary["schedule"]["name"], "playbook_warmup");
    EXPECT_EQ(summary["config"]["train"]["max_train_steps"].get<int64_t>(), 3 * w);
  }
  // 1000 of max_train_steps 10000 is above 5%: the verdict says so.
  EXPECT_NE(slurp(dir / "w" / "verdict.txt").find("more than 5%"), std::string::npos);
  fs::remove_all(dir);
}

// An MLP on synthetic 16x16 images; the loader reads on one thread, each example sleeping
// `delay_us` (simulated storage).
std::string throughput_config(int64_t delay_us, int64_t memory_mb) {
  std::string text = linear_config("cross_entropy", "momentum", 2048, 16, 100, 10,
                                   "example_delay_us = " + std::to_string(delay_us) + "\n");
  text.replace(text.find("hidden = []"), 11, "hidden = [256, 256]");
  text.replace(text.find("[1, 4, 4]"), 9, "[1, 16, 16]");
  text.replace(text.find("workers = 0"), 11, "workers = 1");
  if (memory_mb > 0) text += "memory_limit_mb = " + std::to_string(memory_mb) + "\n";
  return text;
}

TEST(SweepBatchSize, SlowLoaderPlateausInputBoundAndFastOneDoesNot) {
  PB_SKIP_TIME_RATIOS_IN_SANITIZED_BUILDS();
  const fs::path dir = temp_dir("batch");
  write(dir / "slow.toml", throughput_config(1000, 0));
  ASSERT_EQ(playbook("sweep batch-size " + (dir / "slow.toml").string() +
                         " --sizes 16,32,64,128 --steps 25 --dir " + (dir / "slow").string(),
                     dir / "slow.txt"),
            0)
      << slurp(dir / "slow.txt");
  const json slow = read_json(dir / "slow" / "verdict.json");
  // 1 ms per example caps the real pipeline near 1000 examples/s at every size: throughput stops
  // growing at once (16, or 32 when a loaded machine slows the smallest batch's pipeline).
  ASSERT_TRUE(slow["throughput_stops_growing_at"].is_number()) << slow.dump(2);
  EXPECT_LE(slow["throughput_stops_growing_at"].get<int64_t>(), 32) << slow.dump(2);
  EXPECT_EQ(slow["cause"], "input_bound") << slow.dump(2);
  EXPECT_EQ(slow["largest_feasible_batch_size"], 128);
  EXPECT_EQ(slow["trials"].size(), 8u);  // every size on the real data and its synthetic twin
  for (const json& t : slow["trials"]) {
    ASSERT_TRUE(t["examples_per_sec"].is_number()) << t.dump();
    if (t["data"] == "real") {
      EXPECT_LT(t["examples_per_sec"].get<double>(), 1e6 / 1000.0 * 1.05) << t.dump();
      EXPECT_GT(t["data_wait_fraction"].get<double>(), 0.5) << t.dump();
    }
  }
  EXPECT_NE(slurp(dir / "slow" / "verdict.txt").find("input bound"), std::string::npos);

  write(dir / "fast.toml", throughput_config(0, 0));
  ASSERT_EQ(playbook("sweep batch-size " + (dir / "fast.toml").string() +
                         " --sizes 16,32,64,128 --steps 25 --dir " + (dir / "fast").string(),
                     dir / "fast.txt"),
            0)
      << slurp(dir / "fast.txt");
  const json fast = read_json(dir / "fast" / "verdict.json");
  EXPECT_NE(fast["cause"], "input_bound") << fast.dump(2);
  EXPECT_EQ(fast["trials"].size(), 4u);  // a synthetic base without delay is its own twin
  fs::remove_all(dir);
}

TEST(SweepBatchSize, OutOfMemoryIsInfeasibleAndTheSweepGoesOn) {
  const fs::path dir = temp_dir("oom");
  // An 8 MiB cap: batch 256 peaks near 4.5 MiB, 1024 near 12.6 MiB.
  write(dir / "oom.toml", throughput_config(0, 8));
  ASSERT_EQ(playbook("sweep batch-size " + (dir / "oom.toml").string() +
                         " --sizes 16,64,256,1024 --steps 10 --dir " + (dir / "s").string(),
                     dir / "log.txt"),
            0)
      << slurp(dir / "log.txt");
  const json v = read_json(dir / "s" / "verdict.json");
  ASSERT_TRUE(v["first_infeasible_batch_size"].is_number()) << v.dump(2);
  const int64_t oom = v["first_infeasible_batch_size"];
  ASSERT_TRUE(v["largest_feasible_batch_size"].is_number()) << v.dump(2);
  EXPECT_EQ(v["largest_feasible_batch_size"].get<int64_t>(), 256);
  EXPECT_EQ(oom, 1024);
  for (const json& t : v["trials"]) {
    const int64_t b = t["batch_size"];
    if (b < oom) {
      EXPECT_EQ(t["status"], "completed") << t.dump();
      continue;
    }
    EXPECT_EQ(t["status"], "infeasible") << t.dump();
    EXPECT_EQ(t["reason"], "out of memory") << t.dump();
    const json summary = read_json(dir / "s" / t["run_dir"].get<std::string>() / "summary.json");
    EXPECT_EQ(summary["status"], "out_of_memory");
  }
  EXPECT_NE(slurp(dir / "s" / "verdict.txt").find("ran out of memory"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
