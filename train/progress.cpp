#include "train/progress.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ostream>

namespace pb::train {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, std::round(seconds)));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

ProgressLine::ProgressLine(int64_t total_steps, int64_t every, std::ostream& out,
                           int64_t first_step)
    : total_(total_steps),
      every_(std::max<int64_t>(every, 1)),
      out_(out),
      last_printed_step_(first_step) {
  start_ = window_start_ = Clock::now();
}

void ProgressLine::step(int64_t step, double loss, int64_t examples, const std::string& suffix) {
  window_examples_ += examples;
  if (step % every_ != 0 && step != total_) return;
  const auto now = Clock::now();
  const double window = std::chrono::duration<double>(now - window_start_).count();
  // Steps since the last printed line (callers may call only at print steps).
  const int64_t steps = std::max<int64_t>(step - last_printed_step_, 1);
  if (window > 0) {
    rate_ = static_cast<double>(window_examples_) / window;
    step_time_ = window / static_cast<double>(steps);
  }
  window_start_ = now;
  window_examples_ = 0;
  last_printed_step_ = step;
  out_ << format(step, loss) << suffix << std::endl;
}

std::string ProgressLine::format(int64_t step, double loss) const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  const double eta = step_time_ * static_cast<double>(std::max<int64_t>(total_ - step, 0));
  const int width = static_cast<int>(std::to_string(total_).size());
  return fmt::format(
      "step {:>{}}/{} ({:3.0f}%)  loss {:.4f}  {:.0f} ex/s  elapsed {}  ETA {}", step, width,
      total_, 100.0 * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(total_, 1)),
      loss, rate_, format_duration(elapsed), format_duration(eta));
}

double ProgressLine::examples_per_second() const {
  return rate_;
}

}  // namespace pb::train
