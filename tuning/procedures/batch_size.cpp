// The batch-size sweep's verdict: the playbook's "Determining the feasible batch sizes and
// estimating training throughput". See sweep.h and README "Procedures".
//
// Throughput of a trial: the median examples/s of its log windows after the first (the first
// window holds the warm-up: allocations, caches, the loader filling its queue). A doubling
// b -> 2b "stops growing" when throughput grows by less than kGrowth (efficiency = ratio / 2
// below 0.55); throughput plateaus at b when it stops growing there and no larger feasible size
// beats b's throughput by kGrowth either; the plateau's likely cause is the input pipeline when the
// real data runs below kInputShare x the synthetic twin's throughput at that size while waiting
// for data more than kSlowerWaitShare of the time, or waits more than kWaitShare whatever the
// twin does; otherwise the compute is saturated (a real run slower than its twin without waiting
// for data is timing noise, not the input pipeline).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "tuning/procedures/sweep.h"

namespace pb::tuning::sweep {
namespace {

using ojson = nlohmann::ordered_json;
constexpr double kGrowth = 1.1;
constexpr double kInputShare = 0.8;
constexpr double kWaitShare = 0.5;
constexpr double kSlowerWaitShare = 0.2;

struct Point {
  int64_t batch = 0;
  bool synthetic = false;
  std::string status, reason, run_dir;
  double examples_per_sec = NAN, data_wait = NAN;
  std::optional<double> peak_memory;
};

double median(std::vector<double> v) {
  return percentile(std::move(v), 50);
}

ojson number_or_null(double x) {
  return std::isfinite(x) ? ojson(x) : ojson(nullptr);
}

}  // namespace

Verdict analyse_batch_size(const Study& study, const nlohmann::json& record) {
  std::map<int64_t, std::map<bool, Point>> points;  // batch -> synthetic? -> point
  for (const TrialRecord& t : study.trials) {
    const auto params = nlohmann::json::parse(t.params_json, nullptr, false);
    Point p;
    p.batch = params.value("train.batch_size", int64_t{0});
    const std::string twin = record.value("twin", std::string("none"));
    p.synthetic =
        (twin == "dataset" && params.value("data.dataset", std::string()) == "synthetic") ||
        (twin == "delay" && params.value("data.example_delay_us", int64_t{-1}) == 0);
    p.status = std::string(to_string(t.status));
    p.reason = t.reason;
    p.run_dir = run_dir_of(study, t);
    const RunLog run = read_run_log(study.dir / p.run_dir);
    if (run.status == "out_of_memory") {
      p.status = "infeasible";
      p.reason = "out of memory";
    }
    if (t.status == TrialStatus::Completed) {
      std::vector<double> eps, wait;
      for (std::size_t i = 1; i < run.lines.size(); ++i) {
        eps.push_back(run.lines[i].examples_per_sec);
        wait.push_back(run.lines[i].data_wait_fraction);
      }
      p.examples_per_sec = median(eps);
      p.data_wait = median(wait);
      p.peak_memory = run.peak_memory_bytes;
    }
    points[p.batch][p.synthetic] = p;
  }

  Verdict v;
  ojson& j = v.json;
  j["procedure"] = "batch_size";
  j["study"] = study.record.name;
  j["config"] = record.value("config", std::string());
  j["timing"] = "median examples/s of the log windows after the first";
  ojson warnings = ojson::array();
  ojson trials = ojson::array();
  ojson plot_throughput = ojson::array(), plot_memory = ojson::array();
  auto point_json = [](const Point& p) {
    ojson o;
    o["batch_size"] = p.batch;
    o["data"] = p.synthetic ? "synthetic" : "real";
    o["status"] = p.status;
    if (!p.reason.empty()) o["reason"] = p.reason;
    o["examples_per_sec"] = number_or_null(p.examples_per_sec);
    o["step_time_ms"] = number_or_null(1000.0 * static_cast<double>(p.batch) / p.examples_per_sec);
    o["peak_memory_bytes"] = p.peak_memory ? ojson(*p.peak_memory) : ojson(nullptr);
    o["data_wait_fraction"] = number_or_null(p.data_wait);
    o["run_dir"] = p.run_dir;
    return o;
  };
  std::optional<int64_t> largest_feasible, first_oom;
  for (const auto& [batch, by_data] : points) {
    for (const auto& [synthetic, p] : by_data) {
      trials.push_back(point_json(p));
      if (std::isfinite(p.examples_per_sec)) {
        plot_throughput.push_back({{"batch_size", batch},
                                   {"data", synthetic ? "synthetic" : "real"},
                                   {"examples_per_sec", p.examples_per_sec}});
      }
      if (p.peak_memory) {
        plot_memory.push_back({{"batch_size", batch},
                               {"data", synthetic ? "synthetic" : "real"},
                               {"peak_memory_bytes", *p.peak_memory}});
      }
    }
    const auto real = by_data.find(false);
    if (real == by_data.end()) continue;
    if (real->second.reason == "out of memory") {
      if (!first_oom) first_oom = batch;
    } else if (!first_oom && std::isfinite(real->second.examples_per_sec)) {
      largest_feasible = batch;
    }
  }

  // Each doubling on the real data, up to the first infeasible size.
  ojson doublings = ojson::array();
  std::optional<int64_t> plateau_at;
  std::string cause, evidence;
  for (auto it = points.begin(); it != points.end(); ++it) {
    auto next = std::next(it);
    if (next == points.end() || next->first != 2 * it->first) continue;
    if (first_oom && next->first >= *first_oom) break;
    const auto a = it->second.find(false), b = next->second.find(false);
    if (a == it->second.end() || b == next->second.end()) continue;
    const double ratio = b->second.examples_per_sec / a->second.examples_per_sec;
    if (!std::isfinite(ratio)) continue;
    ojson d;
    d["from"] = it->first;
    d["to"] = next->first;
    d["throughput_ratio"] = ratio;
    d["scaling_efficiency"] = ratio / 2;
    const auto sa = it->second.find(true), sb = next->second.find(true);
    if (sa != it->second.end() && sb != next->second.end()) {
      d["synthetic_scaling_efficiency"] =
          number_or_null(sb->second.examples_per_sec / sa->second.examples_per_sec / 2);
    }
    const bool stops = ratio < kGrowth;
    d["stops_growing"] = stops;
    // The plateau: no larger feasible size beats this one by kGrowth (one noisy doubling that
    // recovers later is not a plateau).
    bool beaten = false;
    for (auto later = next; later != points.end(); ++later) {
      if (first_oom && later->first >= *first_oom) break;
      const auto r = later->second.find(false);
      if (r != later->second.end() &&
          r->second.examples_per_sec >= kGrowth * a->second.examples_per_sec) {
        beaten = true;
      }
    }
    if (stops && !beaten && !plateau_at) {
      plateau_at = it->first;
      const double synth = sb != next->second.end() ? sb->second.examples_per_sec
                                                    : std::numeric_limits<double>::quiet_NaN();
      const double wait = b->second.data_wait;
      const bool slower = std::isfinite(synth) && b->second.examples_per_sec < kInputShare * synth;
      if ((slower && wait > kSlowerWaitShare) || wait > kWaitShare) {
        cause = "input_bound";
        evidence = fmt::format(
            "at batch {} the real data runs {:.0f} examples/s{} and waits for data {:.0f}% of the "
            "time",
            next->first, b->second.examples_per_sec,
            std::isfinite(synth) ? fmt::format(" against {:.0f} on in-memory synthetic data", synth)
                                 : std::string(),
            100 * wait);
      } else {
        cause = "compute_saturated";
        evidence = fmt::format(
            "at batch {} the real data runs {:.0f} examples/s{}, waiting for data {:.0f}% of the "
            "time: the device is busy",
            next->first, b->second.examples_per_sec,
            std::isfinite(synth) ? fmt::format(" and synthetic data {:.0f}", synth) : std::string(),
            100 * wait);
      }
    }
    doublings.push_back(d);
  }

  std::optional<int64_t> recommended = largest_feasible;
  if (plateau_at && (!recommended || *plateau_at < *recommended)) recommended = plateau_at;
  j["largest_feasible_batch_size"] = largest_feasible ? ojson(*largest_feasible) : ojson(nullptr);
  j["first_infeasible_batch_size"] = first_oom ? ojson(*first_oom) : ojson(nullptr);
  j["throughput_stops_growing_at"] = plateau_at ? ojson(*plateau_at) : ojson(nullptr);
  j["cause"] = plateau_at ? ojson(cause) : ojson(nullptr);
  j["evidence"] = evidence;
  j["recommended_batch_size"] = recommended ? ojson(*recommended) : ojson(nullptr);
  j["doublings"] = doublings;
  if (!largest_feasible) warnings.push_back("no batch size trained: every trial was infeasible");
  // Doubling the batch cannot more than double throughput, nor should it halve it: such swings
  // are other processes sharing the machine, and the verdict above rests on them.
  for (const auto& d : doublings) {
    const double r = d["throughput_ratio"].get<double>();
    if (r > 2.5 || r < 0.5) {
      warnings.push_back(fmt::format(
          "throughput changes {:.2g}x from batch {} to {}: the timing is noisy (a shared "
          "machine?); rerun with more --steps on an idle machine before trusting the verdict",
          r, d["from"].get<int64_t>(), d["to"].get<int64_t>()));
      break;
    }
  }
  if (largest_feasible && points.rbegin()->first == *largest_feasible && !first_oom) {
    warnings.push_back(
        fmt::format("no size ran out of memory up to {}: larger batch sizes may fit (--max)",
                    *largest_feasible));
  }

  // The text a person reads in ten seconds.
  std::string& text = v.text;
  text += fmt::format("batch-size sweep of {} ({} steps per trial, {})\n",
                      j["config"].get<std::string>(), record.value("steps", int64_t{0}),
                      j["timing"].get<std::string>());
  text += fmt::format("{:>10}  {:>14}  {:>12}  {:>9}  {:>11}  {:>14}  {}\n", "batch", "examples/s",
                      "step (ms)", "efficiency", "data wait", "synthetic ex/s", "peak memory");
  for (const auto& [batch, by_data] : points) {
    const auto real = by_data.find(false);
    if (real == by_data.end()) continue;
    const Point& p = real->second;
    std::string eff;
    for (const auto& d : doublings) {
      if (d["to"] == batch) eff = fmt::format("{:.2f}", d["scaling_efficiency"].get<double>());
    }
    const auto s = by_data.find(true);
    const std::string synth = s != by_data.end() && std::isfinite(s->second.examples_per_sec)
                                  ? fmt::format("{:.0f}", s->second.examples_per_sec)
                                  : "";
    if (!std::isfinite(p.examples_per_sec)) {
      text +=
          fmt::format("{:>10}  infeasible: {}\n", batch, p.reason.empty() ? p.status : p.reason);
      continue;
    }
    text += fmt::format(
        "{:>10}  {:>14.0f}  {:>12.3f}  {:>9}  {:>10.0f}%  {:>14}  {}\n", batch, p.examples_per_sec,
        1000.0 * static_cast<double>(batch) / p.examples_per_sec, eff, 100 * p.data_wait, synth,
        p.peak_memory ? fmt::format("{:.1f} MiB", *p.peak_memory / (1 << 20)) : std::string());
  }
  std::string summary;
  if (!largest_feasible) {
    summary = "no feasible batch size";
  } else {
    summary =
        fmt::format("largest feasible batch size {}{}", *largest_feasible,
                    first_oom ? fmt::format(" ({} ran out of memory)", *first_oom) : std::string());
    if (plateau_at) {
      summary +=
          fmt::format("; throughput stops growing after {} ({}): use at most {}", *plateau_at,
                      cause == "input_bound" ? "input bound" : "compute saturated", *recommended);
    } else {
      summary += fmt::format("; throughput grows at every doubling: use {}", *recommended);
    }
  }
  j["summary"] = summary;
  text += "verdict: " + summary + "\n";
  if (!evidence.empty()) text += "  why: " + evidence + "\n";
  for (const auto& w : warnings) text += "  warning: " + w.get<std::string>() + "\n";
  j["warnings"] = warnings;
  j["trials"] = trials;
  j["plots"] = {{"throughput", plot_throughput}, {"peak_memory", plot_memory}};
  return v;
}

}  // namespace pb::tuning::sweep
