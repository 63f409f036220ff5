#pragma once
// A progress line for long work: step, loss, examples/s and ETA, printed every `every` steps
// (and at the last step) to a stream, e.g.
//   step  1200/3000 (40%)  loss 0.4132  12,345 ex/s  elapsed 0:10  ETA 0:15
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace pb::train {

class ProgressLine {
 public:
  // first_step: the step the work starts from (a resumed run starts past 0).
  ProgressLine(int64_t total_steps, int64_t every, std::ostream& out, int64_t first_step = 0);
  // Call after each step with the number of examples it consumed; loss is printed as given.
  // `suffix` is appended to the printed line (e.g. validation metrics).
  void step(int64_t step, double loss, int64_t examples, const std::string& suffix = "");
  // The text of the current line (what step() prints when it prints).
  std::string format(int64_t step, double loss) const;
  double examples_per_second() const;

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_, every_;
  std::ostream& out_;
  Clock::time_point start_, window_start_;
  int64_t window_examples_ = 0, last_printed_step_ = 0;
  double rate_ = 0.0;       // examples/s over the last window
  double step_time_ = 0.0;  // seconds per step over the last window
};

// "1:02:03" or "2:03".
std::string format_duration(double seconds);

}  // namespace pb::train
