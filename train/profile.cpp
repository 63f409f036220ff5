#include "train/profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include "runtime/core/error.h"
#include "train/config.h"
#include "train/trainer.h"

namespace pb::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

ThroughputVerdict classify_throughput(double real_examples_per_sec,
                                      double synthetic_examples_per_sec, double data_wait_fraction,
                                      const InputBoundThresholds& thresholds) {
  ThroughputVerdict v;
  v.ratio = synthetic_examples_per_sec > 0 ? real_examples_per_sec / synthetic_examples_per_sec : 0;
  v.data_wait_fraction = data_wait_fraction;
  if (synthetic_examples_per_sec > 0 && v.ratio < thresholds.min_ratio) {
    v.reasons.push_back(fmt::format(
        "the real pipeline reaches {:.0f}% of the examples/s of data already on the device "
        "(below {:.0f}%)",
        100 * v.ratio, 100 * thresholds.min_ratio));
  }
  if (data_wait_fraction > thresholds.max_data_wait) {
    v.reasons.push_back(
        fmt::format("the step loop waits for data {:.0f}% of the time (above {:.0f}%)",
                    100 * data_wait_fraction, 100 * thresholds.max_data_wait));
  }
  if (!v.reasons.empty() && data_wait_fraction <= thresholds.max_data_wait) {
    v.reasons.push_back(
        "the step loop barely waits for data, so the pipeline slows the step itself: its threads "
        "compete with the step for CPU cores, or its copies with the device");
  }
  v.input_bound = !v.reasons.empty();
  v.verdict = v.input_bound ? "input-bound" : "compute-bound";
  if (v.input_bound) {
    // The playbook's "Optimizing the input pipeline", in this runtime's keys.
    v.remedies = {
        "more loader workers (data.workers): more jobs producing examples",
        "deeper prefetch (data.prefetch): batches built ahead of the step",
        "cheaper online augmentation (data.crop_padding, data.horizontal_flip), or do expensive "
        "preprocessing once offline and save it",
        "cache decoded data next to the training process instead of reading and decoding it each "
        "epoch (I/O latency when data is not colocated)",
    };
  } else {
    v.reasons.push_back(fmt::format(
        "the real pipeline reaches {:.0f}% of the examples/s of data on the device and waits for "
        "data {:.0f}% of the time",
        100 * v.ratio, 100 * data_wait_fraction));
  }
  return v;
}

namespace {

std::string shell_quote(const std::string& s) {
  if (s.find_first_of(" \t'\"$\\`*?[]{}()<>|&;!#~") == std::string::npos && !s.empty()) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The overrides that turn the config into a short measured run: warm-up window, then the
// measured windows; no validation, no divergence stop, one checkpoint at the end.
std::vector<std::string> run_overrides(const fs::path& file, const ProfileOptions& o,
                                       int64_t total_steps) {
  std::vector<std::string> out = o.overrides;
  out.push_back(fmt::format("train.max_train_steps={}", total_steps));
  out.push_back(fmt::format("train.log_every={}", o.warmup_steps));
  out.push_back(fmt::format("train.checkpoint_every={}", total_steps));
  out.push_back(fmt::format("train.eval_every={}", total_steps));
  out.push_back("train.divergence_factor=1e30");
  out.push_back("data.validation_size=0");
  // A warm-up longer than the short run would be rejected; the learning rate does not change
  // the time of a step.
  const config::Config base = resolve(file, o.overrides);
  if (base.has("schedule.warmup_steps") &&
      std::get<int64_t>(base.value("schedule.warmup_steps")) >= total_steps) {
    out.push_back("schedule.warmup_steps=0");
  }
  return out;
}

ThroughputMeasurement measure(const fs::path& file, const std::vector<std::string>& overrides,
                              const ProfileOptions& o, bool synthetic, const fs::path& out_dir) {
  const config::Config config = resolve(file, overrides);
  TrainOptions t;
  t.out_dir = out_dir;
  t.device_override = o.device_override;
  std::ostringstream discarded;
  t.log = o.log ? o.log : &discarded;
  t.device_synthetic_input = synthetic;
  t.final_evaluation = false;
  const RunSummary summary = train(config, file.string(), t);

  ThroughputMeasurement m;
  m.input_shape = summary.input_shape;
  m.batch_size = train_config(config).train.batch_size;
  std::ifstream in(out_dir / "metrics.jsonl");
  std::string text;
  int64_t previous = 0;
  double wait_seconds = 0;
  while (std::getline(in, text)) {
    if (text.empty()) continue;
    const json line = json::parse(text);
    const int64_t step = line.at("step").get<int64_t>();
    const int64_t window = step - previous;
    previous = step;
    if (step <= o.warmup_steps) continue;  // warm-up: allocator, caches, threads
    const double eps = line.at("examples_per_sec").get<double>();
    const double seconds = eps > 0 ? static_cast<double>(window * m.batch_size) / eps : 0;
    m.steps += window;
    m.seconds += seconds;
    wait_seconds += line.at("data_wait_fraction").get<double>() * seconds;
    const json& phases = line.at("phase_seconds");
    for (int p = 0; p < kPhaseCount; ++p) {
      m.phase_seconds_per_step[p] += phases.value(kPhaseNames[p], 0.0);
    }
  }
  if (m.steps == 0) fail("profile: {} logged no step after the warm-up", out_dir.string());
  m.examples_per_sec = m.seconds > 0 ? static_cast<double>(m.steps * m.batch_size) / m.seconds : 0;
  m.data_wait_fraction = m.seconds > 0 ? wait_seconds / m.seconds : 0;
  for (double& s : m.phase_seconds_per_step) s /= static_cast<double>(m.steps);
  return m;
}

json measurement_json(const ThroughputMeasurement& m) {
  json phases = json::object();
  for (int p = 0; p < kPhaseCount; ++p) phases[kPhaseNames[p]] = m.phase_seconds_per_step[p];
  return {{"steps", m.steps},
          {"batch_size", m.batch_size},
          {"seconds", m.seconds},
          {"examples_per_sec", m.examples_per_sec},
          {"data_wait_fraction", m.data_wait_fraction},
          {"input_shape", m.input_shape},
          {"phase_seconds_per_step", phases}};
}

}  // namespace

ProfileResult profile(const fs::path& file, const ProfileOptions& options) {
  ProfileOptions o = options;
  if (o.warmup_steps < 1) fail("profile: warm-up steps must be >= 1, got {}", o.warmup_steps);
  if (o.steps < 1) fail("profile: steps must be >= 1, got {}", o.steps);
  o.steps = (o.steps + o.warmup_steps - 1) / o.warmup_steps * o.warmup_steps;
  const int64_t total = o.warmup_steps + o.steps;
  const std::vector<std::string> overrides = run_overrides(file, o, total);

  fs::path work = o.work_dir;
  const bool temporary = work.empty();
  if (temporary) {
    std::random_device rd;
    work = fs::temp_directory_path() / fmt::format("playbook-profile-{:08x}", rd());
  }
  fs::create_directories(work);
  ProfileResult r;
  try {
    r.real = measure(file, overrides, o, false, work / "real");
    r.synthetic = measure(file, overrides, o, true, work / "synthetic");
  } catch (...) {
    if (temporary) fs::remove_all(work);
    throw;
  }
  if (temporary) fs::remove_all(work);

  r.verdict = classify_throughput(r.real.examples_per_sec, r.synthetic.examples_per_sec,
                                  r.real.data_wait_fraction, o.thresholds);
  std::vector<int> order(kPhaseCount);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return r.real.phase_seconds_per_step[a] > r.real.phase_seconds_per_step[b];
  });
  for (int p : order) r.top_phases.emplace_back(kPhaseNames[p]);

  std::string cmd = "nsys profile --trace=cuda,nvtx,osrt --sample=none -o playbook_profile";
  cmd += " playbook train " + shell_quote(file.string());
  for (const std::string& s : overrides) cmd += " --set " + shell_quote(s);
  cmd += " --set train.nvtx=step";
  if (!o.device_override.empty()) cmd += " --device " + shell_quote(o.device_override);
  cmd += " --out runs/profile_nsys";
  r.nsys_command = cmd;
  return r;
}

json ProfileResult::to_json() const {
  return {{"real", measurement_json(real)}, {"synthetic", measurement_json(synthetic)},
          {"ratio", verdict.ratio},         {"data_wait_fraction", verdict.data_wait_fraction},
          {"verdict", verdict.verdict},     {"input_bound", verdict.input_bound},
          {"reasons", verdict.reasons},     {"remedies", verdict.remedies},
          {"top_phases", top_phases},       {"nsys_command", nsys_command}};
}

std::string ProfileResult::to_text() const {
  std::string s;
  s += fmt::format("{:<34} {:>12} {:>12}\n", "", "real data", "on device");
  s += fmt::format("{:<34} {:>12.1f} {:>12.1f}\n", "examples/s", real.examples_per_sec,
                   synthetic.examples_per_sec);
  s += fmt::format("{:<34} {:>11.1f}% {:>11.1f}%\n", "data wait", 100 * real.data_wait_fraction,
                   100 * synthetic.data_wait_fraction);
  for (int p = 0; p < kPhaseCount; ++p) {
    s += fmt::format("{:<34} {:>12.3f} {:>12.3f}\n", fmt::format("{} ms/step", kPhaseNames[p]),
                     1e3 * real.phase_seconds_per_step[p],
                     1e3 * synthetic.phase_seconds_per_step[p]);
  }
  s += fmt::format("ratio real / on device: {:.2f} ({} steps of batch {} each, after warm-up)\n",
                   verdict.ratio, real.steps, real.batch_size);
  s += fmt::format("verdict: {}\n", verdict.verdict);
  for (const std::string& r : verdict.reasons) s += "  - " + r + "\n";
  if (verdict.input_bound) {
    s += "remedies (the playbook's \"Optimizing the input pipeline\"):\n";
    for (const std::string& r : verdict.remedies) s += "  - " + r + "\n";
  } else {
    s += "top phases of a step: ";
    for (std::size_t i = 0; i < top_phases.size() && i < 3; ++i) {
      const int p = static_cast<int>(
          std::find(kPhaseNames.begin(), kPhaseNames.end(), std::string_view(top_phases[i])) -
          kPhaseNames.begin());
      s += fmt::format("{}{} {:.3f} ms", i ? ", " : "", top_phases[i],
                       1e3 * real.phase_seconds_per_step[p]);
    }
    s += "\n";
  }
  s += "capture it in Nsight Systems (NVTX domain playbook):\n  " + nsys_command + "\n";
  return s;
}

}  // namespace pb::train
