#include "runtime/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <utility>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/optim/registry.h"

namespace pb::optim {
namespace {

using config::KeySpec;
using config::make_key;
using config::Type;

KeySpec warmup_steps() {
  return make_key("warmup_steps", Type::Int, int64_t{0},
                  "linear warmup from 0 over this many steps")
      .at_least(0)
      .alias("warmup");
}
KeySpec decay_steps() {
  return make_key("decay_steps", Type::Int, int64_t{0},
                  "length of the decay after warmup (0: until the end of training)")
      .at_least(0);
}
KeySpec end_factor(const char* doc) {
  return make_key("end_factor", Type::Float, 0.0, doc).at_least(0).at_most(1);
}

std::vector<ScheduleInfo> build_registry() {
  using K = ScheduleKind;
  std::vector<ScheduleInfo> r;
  r.push_back({"constant", K::kConstant, "f = 1", {warmup_steps()}, {}});
  r.push_back({"linear",
               K::kLinear,
               "f = 1 - (1 - e) u",
               {warmup_steps(), decay_steps(), end_factor("final lr / base")},
               {}});
  r.push_back({"cosine",
               K::kCosine,
               "f = e + (1 - e) (1 + cos(pi u)) / 2",
               {warmup_steps(), decay_steps(), end_factor("floor: final lr / base")},
               {}});
  r.push_back({"polynomial",
               K::kPolynomial,
               "f = e + (1 - e) (1 - u)^power",
               {warmup_steps(), decay_steps(), end_factor("final lr / base"),
                make_key("power", Type::Float, 1.0, "exponent of the decay").greater_than(0)},
               {}});
  r.push_back({"inverse_sqrt",
               K::kInverseSqrt,
               "f = sqrt(tau / (tau + s))",
               {warmup_steps(),
                make_key("timescale", Type::Float, 0.0, "tau in steps; 0: max(warmup_steps, 1)")
                    .at_least(0)},
               {}});
  r.push_back({"step",
               K::kStep,
               "f = gamma^floor(s / step_size)",
               {warmup_steps(),
                make_key("step_size", Type::Int, std::nullopt, "steps between decays").at_least(1),
                make_key("gamma", Type::Float, 0.1, "decay factor per step_size steps")
                    .greater_than(0)
                    .at_most(1)},
               {}});
  r.push_back({"piecewise_constant",
               K::kPiecewiseConstant,
               "f = factors[j], j = number of boundaries <= s",
               {warmup_steps()},
               {"boundaries", "factors"}});
  r.push_back(
      {"playbook_warmup",
       K::kPlaybookWarmup,
       "ramp from 0 to base over warmup_steps, then f = 1 for post_warmup_steps",
       {make_key("warmup_steps", Type::Int, std::nullopt, "ramp length")
            .at_least(1)
            .alias("warmup"),
        make_key("post_warmup_steps", Type::Int, int64_t{0}, "constant phase; 0: 2 * warmup_steps")
            .at_least(0)},
       {}});
  return r;
}

}  // namespace

const std::vector<ScheduleInfo>& schedule_registry() {
  static const std::vector<ScheduleInfo> registry = [] {
    std::vector<ScheduleInfo> r = build_registry();
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (static_cast<std::size_t>(r[i].kind) != i) {
        throw Error("schedule registry: entry " + r[i].name + " is out of ScheduleKind order");
      }
    }
    return r;
  }();
  return registry;
}

std::vector<std::string> schedule_names() {
  return entry_names(schedule_registry());
}

const ScheduleInfo& schedule_info(std::string_view name) {
  return find_entry(schedule_registry(), name, "schedule");
}

Schedule::Schedule(const ScheduleInfo& info, double base_learning_rate,
                   std::map<std::string, double> hp,
                   std::map<std::string, std::vector<double>> lists)
    : info_(&info), base_(base_learning_rate), hp_(std::move(hp)), lists_(std::move(lists)) {
  warmup_ = static_cast<int64_t>(hp_.at("warmup_steps"));
  if (info_->kind == ScheduleKind::kInverseSqrt && hp_.at("timescale") == 0.0) {
    hp_["timescale"] = static_cast<double>(std::max<int64_t>(warmup_, 1));
  }
  if (info_->kind == ScheduleKind::kPlaybookWarmup && hp_.at("post_warmup_steps") == 0.0) {
    hp_["post_warmup_steps"] = 2.0 * static_cast<double>(warmup_);
  }
}

double Schedule::factor(int64_t s) const {
  const double sd = static_cast<double>(s);
  auto progress = [&] {
    const double d = hp_.at("decay_steps");
    return std::min(sd, d) / d;
  };
  switch (info_->kind) {
    case ScheduleKind::kConstant:
    case ScheduleKind::kPlaybookWarmup:
      return 1.0;
    case ScheduleKind::kLinear: {
      const double e = hp_.at("end_factor");
      return 1.0 - (1.0 - e) * progress();
    }
    case ScheduleKind::kCosine: {
      const double e = hp_.at("end_factor");
      return e + (1.0 - e) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress()));
    }
    case ScheduleKind::kPolynomial: {
      const double e = hp_.at("end_factor");
      return e + (1.0 - e) * std::pow(1.0 - progress(), hp_.at("power"));
    }
    case ScheduleKind::kInverseSqrt: {
      const double tau = hp_.at("timescale");
      return std::sqrt(tau / (tau + sd));
    }
    case ScheduleKind::kStep:
      return std::pow(hp_.at("gamma"), std::floor(sd / hp_.at("step_size")));
    case ScheduleKind::kPiecewiseConstant: {
      const std::vector<double>& b = lists_.at("boundaries");
      const auto j = std::upper_bound(b.begin(), b.end(), sd) - b.begin();
      return lists_.at("factors")[static_cast<std::size_t>(j)];
    }
  }
  return 1.0;
}

double Schedule::learning_rate(int64_t step) const {
  if (step < 0) fail("schedule {}: step {} is negative", info_->name, step);
  if (step < warmup_) {
    return base_ * static_cast<double>(step) / static_cast<double>(warmup_);
  }
  return base_ * factor(step - warmup_);
}

int64_t Schedule::end_step() const {
  switch (info_->kind) {
    case ScheduleKind::kConstant:
      return warmup_;
    case ScheduleKind::kLinear:
    case ScheduleKind::kCosine:
    case ScheduleKind::kPolynomial:
      return warmup_ + static_cast<int64_t>(hp_.at("decay_steps"));
    case ScheduleKind::kPiecewiseConstant: {
      const std::vector<double>& b = lists_.at("boundaries");
      return warmup_ + (b.empty() ? 0 : static_cast<int64_t>(b.back()));
    }
    case ScheduleKind::kPlaybookWarmup:
      return warmup_ + static_cast<int64_t>(hp_.at("post_warmup_steps"));
    case ScheduleKind::kInverseSqrt:
    case ScheduleKind::kStep:
      return 0;
  }
  return 0;
}

nlohmann::json Schedule::to_json() const {
  nlohmann::json j;
  j["name"] = info_->name;
  j["base_learning_rate"] = base_;
  j["hyperparameters"] = hp_;
  if (!lists_.empty()) j["lists"] = lists_;
  j["end_step"] = end_step();
  return j;
}

Schedule make_schedule(const ScheduleConfig& config, double base_learning_rate,
                       int64_t total_steps) {
  const ScheduleInfo& info = schedule_info(config.name);
  const std::string what = "schedule " + info.name;
  if (!std::isfinite(base_learning_rate) || base_learning_rate < 0.0) {
    fail("{}: base learning rate {} must be finite and >= 0", what, base_learning_rate);
  }
  std::map<std::string, double> hp =
      config::resolve_numbers(what, info.hyperparameters, config.hyperparameters);
  if (hp.count("decay_steps") && hp.at("decay_steps") == 0.0) {
    // Until the end of training: the steps left after warmup.
    if (total_steps <= 0) {
      fail<config::ConfigError>(
          "{}: decay_steps = 0 means 'until the end of training', but the training length is not "
          "known here; give decay_steps",
          what);
    }
    hp["decay_steps"] = static_cast<double>(
        std::max<int64_t>(1, total_steps - static_cast<int64_t>(hp.at("warmup_steps"))));
  }
  for (const auto& [name, values] : config.lists) {
    (void)values;
    if (std::find(info.lists.begin(), info.lists.end(), name) == info.lists.end()) {
      if (info.lists.empty()) fail("{}: unknown list '{}'; it takes no lists", what, name);
      fail("{}: unknown list '{}'{}; it takes {}", what, name,
           config::did_you_mean_hint(name, info.lists), config::quoted_list(info.lists));
    }
  }
  std::map<std::string, std::vector<double>> lists;
  if (info.kind == ScheduleKind::kPiecewiseConstant) {
    for (const std::string& name : info.lists) {
      if (!config.lists.count(name)) fail("{}: missing required list '{}'", what, name);
      lists[name] = config.lists.at(name);
    }
    const std::vector<double>& b = lists.at("boundaries");
    const std::vector<double>& f = lists.at("factors");
    for (std::size_t i = 0; i < b.size(); ++i) {
      if (!std::isfinite(b[i]) || b[i] < 1.0 || b[i] != std::floor(b[i])) {
        fail("{}: boundaries[{}] = {} must be a whole number >= 1", what, i, b[i]);
      }
      if (i > 0 && !(b[i] > b[i - 1])) {
        fail("{}: boundaries must be strictly increasing, but boundaries[{}] = {} follows {}", what,
             i, b[i], b[i - 1]);
      }
    }
    if (f.size() != b.size() + 1) {
      fail("{}: {} factors for {} boundaries; there must be one more factor than boundaries", what,
           f.size(), b.size());
    }
    for (std::size_t i = 0; i < f.size(); ++i) {
      if (!std::isfinite(f[i]) || f[i] < 0.0) {
        fail("{}: factors[{}] = {} must be finite and >= 0", what, i, f[i]);
      }
    }
  }
  return Schedule(info, base_learning_rate, std::move(hp), std::move(lists));
}

}  // namespace pb::optim
