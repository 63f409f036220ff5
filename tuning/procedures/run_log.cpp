// Reading a trial's run directory, the stability check every sweep shares, and verdict files;
// see sweep.h.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "tuning/procedures/sweep.h"

namespace pb::tuning::sweep {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::optional<double> number(const json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number()) return std::nullopt;
  return j[key].get<double>();
}

// metrics.jsonl writes NaN and Inf as null; a null training loss is not finite.
double loss_of(const json& j) {
  if (!j.contains("train_loss")) return NAN;
  return j["train_loss"].is_number() ? j["train_loss"].get<double>() : INFINITY;
}

}  // namespace

RunLog read_run_log(const fs::path& run_dir) {
  RunLog run;
  std::ifstream s(run_dir / "summary.json");
  if (s) {
    const json j = json::parse(s, nullptr, false);
    if (j.is_object()) {
      run.has_summary = true;
      run.status = j.value("status", "");
      if (j.contains("reason") && j["reason"].is_string()) run.reason = j["reason"];
      run.initial_loss = number(j, "initial_loss");
      run.best_val_error = number(j, "best_val_error");
      run.peak_memory_bytes = number(j, "peak_memory_bytes");
      if (j.contains("steps") && j["steps"].is_number_integer()) run.steps = j["steps"];
      if (j.contains("config") && j["config"].is_object()) {
        const json& c = j["config"];
        if (c.contains("train") && c["train"].is_object()) {
          if (auto f = number(c["train"], "divergence_factor")) run.divergence_factor = *f;
        }
      }
    }
  }
  std::ifstream m(run_dir / "metrics.jsonl");
  std::string line;
  while (std::getline(m, line)) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("step")) continue;
    LogLine l;
    l.step = j.value("step", int64_t{0});
    l.lr = number(j, "lr").value_or(0);
    l.train_loss = loss_of(j);
    l.examples_per_sec = number(j, "examples_per_sec").value_or(0);
    l.data_wait_fraction = number(j, "data_wait_fraction").value_or(0);
    l.clipped_fraction = number(j, "clipped_fraction").value_or(0);
    l.val_error = number(j, "val_error");
    if (j.contains("grad_norms") && j["grad_norms"].is_array()) {
      for (const json& g : j["grad_norms"]) {
        l.grad_norms.push_back(g.is_number() ? g.get<double>() : INFINITY);
      }
    }
    run.lines.push_back(std::move(l));
  }
  return run;
}

Stability assess_stability(const RunLog& run) {
  Stability s;
  const double reference = run.initial_loss.value_or(NAN);
  if (run.status == "diverged") {
    s.unstable = true;
    s.kind = "diverged";
    s.step = run.steps;
    s.detail = run.reason.empty() ? fmt::format("diverged at step {}", run.steps) : run.reason;
  }
  double lowest = INFINITY;
  const double first = run.lines.empty() ? NAN : run.lines.front().train_loss;
  for (const LogLine& l : run.lines) {
    const bool not_finite = !std::isfinite(l.train_loss);
    const bool far_above =
        std::isfinite(reference) && l.train_loss > run.divergence_factor * reference;
    if (not_finite || far_above) {
      if (s.kind != "diverged" || !s.step || l.step < *s.step) {
        s.unstable = true;
        s.kind = "diverged";
        s.step = l.step;
        s.detail = not_finite ? fmt::format("training loss not finite at step {}", l.step)
                              : fmt::format(
                                    "training loss {:.4g} at step {} is above {:g} x the "
                                    "loss before the first update ({:.4g})",
                                    l.train_loss, l.step, run.divergence_factor, reference);
      }
      return s;
    }
    // A sudden rise after a steady decline.
    if (!s.unstable && std::isfinite(lowest) && lowest < 0.9 * first &&
        l.train_loss > kRiseFactor * lowest &&
        l.train_loss - lowest > kRiseFloor * (std::isfinite(reference) ? reference : first)) {
      s.unstable = true;
      s.kind = "loss_spike";
      s.step = l.step;
      s.detail = fmt::format(
          "training loss rose to {:.4g} at step {} after falling to {:.4g}: a sudden rise after a "
          "steady decline",
          l.train_loss, l.step, lowest);
    }
    lowest = std::min(lowest, l.train_loss);
  }
  return s;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  const double h = static_cast<double>(values.size() - 1) * p / 100.0;
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const std::size_t hi = std::min(values.size() - 1, lo + 1);
  return values[lo] + (h - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

Verdict analyse(const fs::path& study_dir) {
  std::ifstream in(study_dir / "sweep.json");
  const json record = in ? json::parse(in, nullptr, false) : json();
  if (!record.is_object() || !record.contains("procedure")) {
    throw StudyError(
        fmt::format("{}: not a sweep (no sweep.json; run playbook sweep)", study_dir.string()));
  }
  const Study study = load_study(study_dir);
  const std::string p = record["procedure"];
  if (p == "batch_size") return analyse_batch_size(study, record);
  if (p == "lr") return analyse_lr(study, record);
  if (p == "warmup") return analyse_warmup(study, record);
  if (p == "clip") return analyse_clip(study, record);
  throw StudyError(fmt::format("{}/sweep.json: unknown procedure '{}'", study_dir.string(), p));
}

void write_verdict(const fs::path& study_dir, const Verdict& verdict) {
  auto write = [&](const fs::path& p, const std::string& text) {
    const fs::path tmp = p.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary);
      out << text;
      if (!out) throw StudyError(fmt::format("{}: cannot write", tmp.string()));
    }
    fs::rename(tmp, p);
  };
  write(study_dir / "verdict.json", verdict.json.dump(2) + "\n");
  write(study_dir / "verdict.txt", verdict.text);
}

}  // namespace pb::tuning::sweep
