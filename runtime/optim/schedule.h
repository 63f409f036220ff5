#pragma once
// Learning-rate schedules: functions of the step, created by name from config.
//
//   Schedule schedule = make_schedule({"cosine", {{"warmup_steps", 1000}, {"decay_steps", 9000}}},
//                                     /*base_learning_rate=*/0.1);
//   optimizer.step(schedule(optimizer.step_count()));   // the rate is an argument of the update
//
// `step` is the number of updates already applied (0 for the first update). Every schedule
// takes `warmup_steps` W (a whole number >= 0, default 0): linear warmup from 0 prepended to the
// schedule, as the playbook prescribes ("prepend a schedule that ramps up the learning rate from 0
// to base_learning_rate"):
//
//   step <  W:  lr = base * step / W            (so the first update has lr 0 when W > 0)
//   step >= W:  lr = base * f(s),  s = step - W  (the decay runs on the steps after warmup)
//
// f per schedule (D = decay_steps > 0, e = end_factor in [0, 1], u = min(s, D) / D; after the
// decay ends the final value is held):
//
//   constant            f = 1
//   linear              f = 1 - (1 - e) u
//   cosine              f = e + (1 - e) (1 + cos(pi u)) / 2          (e is the floor fraction)
//   polynomial          f = e + (1 - e) (1 - u)^power                (power > 0, default 1)
//   inverse_sqrt        f = sqrt(tau / (tau + s)),  tau = timescale (default 0: max(W, 1), which
//                       gives Vaswani et al.'s base * sqrt(W / step) after warmup)
//   step                f = gamma^floor(s / step_size)               (step_size >= 1, gamma in (0,
//   1]) piecewise_constant  f = factors[j], j = number of boundaries <= s  (lists: boundaries,
//   whole
//                       numbers strictly increasing; factors, one more than boundaries, >= 0)
//   playbook_warmup     the playbook's warmup experiment: ramp from 0 to base over warmup_steps
//                       (required, >= 1), then constant for post_warmup_steps (default 0:
//                       2 * warmup_steps, "usually fine" per the playbook); f = 1, and end_step()
//                       = warmup_steps + post_warmup_steps is the length of the experiment.
//
// Unknown names, unknown hyperparameters or lists, missing required values and values out of
// range are ValueErrors naming them (with a did-you-mean for near misses).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/optim/optimizer.h"

namespace pb::optim {

struct ScheduleConfig {
  std::string name = "constant";
  std::map<std::string, double> hyperparameters;
  std::map<std::string, std::vector<double>> lists;  // piecewise_constant: boundaries, factors
};

enum class ScheduleKind {
  kConstant,
  kLinear,
  kCosine,
  kPolynomial,
  kInverseSqrt,
  kStep,
  kPiecewiseConstant,
  kPlaybookWarmup
};

struct ScheduleInfo {
  std::string name;
  ScheduleKind kind;
  std::string formula;                           // f(s), as in the table above
  std::vector<config::KeySpec> hyperparameters;  // bare names, with defaults and ranges
  std::vector<std::string> lists;
};

const std::vector<ScheduleInfo>& schedule_registry();
std::vector<std::string> schedule_names();
const ScheduleInfo& schedule_info(std::string_view name);

class Schedule {
 public:
  // Use make_schedule.
  Schedule(const ScheduleInfo& info, double base_learning_rate, std::map<std::string, double> hp,
           std::map<std::string, std::vector<double>> lists);

  // The learning rate of update number `step` (>= 0).
  double learning_rate(int64_t step) const;
  double operator()(int64_t step) const { return learning_rate(step); }

  const std::string& name() const { return info_->name; }
  ScheduleKind kind() const { return info_->kind; }
  double base_learning_rate() const { return base_; }
  int64_t warmup_steps() const { return warmup_; }
  // The step from which the schedule holds its final value (warmup + decay), 0 when it never
  // settles (inverse_sqrt, step) or is constant without warmup.
  int64_t end_step() const;
  // Resolved values (defaults filled in, "auto" values replaced by what they resolve to).
  const std::map<std::string, double>& hyperparameters() const { return hp_; }
  // {"name": "cosine", "base_learning_rate": 0.1, "hyperparameters": {...}, "lists": {...},
  //  "end_step": 10000}
  nlohmann::json to_json() const;

 private:
  double factor(int64_t s) const;

  const ScheduleInfo* info_;
  double base_;
  std::map<std::string, double> hp_;
  std::map<std::string, std::vector<double>> lists_;
  int64_t warmup_ = 0;
};

// The registry's factory. base_learning_rate: the optimizer's learning_rate (finite, >= 0).
// total_steps: the training length, which decay_steps = 0 ("until the end of training") resolves
// against (decay_steps = total_steps - warmup_steps); 0 when unknown, and then decay_steps = 0 is
// an error.
Schedule make_schedule(const ScheduleConfig& config, double base_learning_rate,
                       int64_t total_steps = 0);

}  // namespace pb::optim
