#include "train/step_phases.h"

namespace pb::train {

StepPhases::StepPhases(Device device) : device_(device) {}

bool StepPhases::device_timed(Phase phase) const {
  return device_.is_cuda() && phase != Phase::kDataWait;
}

StepPhases::Scope::Scope(StepPhases& owner, Phase phase, int64_t step)
    : owner_(owner), phase_(phase), range_(kPhaseNames[static_cast<int>(phase)], step) {
  if (!owner_.device_timed(phase)) {
    start_ = std::chrono::steady_clock::now();
    return;
  }
  if (owner_.spare_.empty()) {
    owner_.timed_.push_back(
        {phase, device::Event(owner_.device_, true), device::Event(owner_.device_, true)});
  } else {
    owner_.timed_.push_back(std::move(owner_.spare_.back()));
    owner_.spare_.pop_back();
    owner_.timed_.back().phase = phase;
  }
  event_ = static_cast<int>(owner_.timed_.size()) - 1;
  owner_.timed_.back().begin.record(phase == Phase::kH2D ? device::copy_stream(owner_.device_)
                                                         : device::compute_stream(owner_.device_));
}

StepPhases::Scope::~Scope() {
  if (event_ < 0) {
    owner_.host_seconds_[static_cast<int>(phase_)] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    return;
  }
  try {
    owner_.timed_[static_cast<std::size_t>(event_)].end.record(
        phase_ == Phase::kH2D ? device::copy_stream(owner_.device_)
                              : device::compute_stream(owner_.device_));
  } catch (...) {
    // A failed record leaves the pair unreadable: drop it rather than throw from a destructor.
    owner_.timed_.erase(owner_.timed_.begin() + event_);
  }
}

std::array<double, kPhaseCount> StepPhases::take() {
  std::array<double, kPhaseCount> out = host_seconds_;
  host_seconds_ = {};
  for (Timed& t : timed_) {
    t.end.synchronize();
    out[static_cast<int>(t.phase)] += t.begin.elapsed_ms(t.end) / 1000.0;
    spare_.push_back(std::move(t));
  }
  timed_.clear();
  return out;
}

}  // namespace pb::train
