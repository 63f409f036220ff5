#include "runtime/device/errors.h"

#include <utility>

namespace pb {

std::string format_bytes(std::size_t nbytes) {
  constexpr double kKiB = 1024.0;
  const auto n = static_cast<double>(nbytes);
  if (nbytes < 1024) return fmt::format("{} B", nbytes);
  if (n < kKiB * kKiB) return fmt::format("{:.2f} KiB", n / kKiB);
  if (n < kKiB * kKiB * kKiB) return fmt::format("{:.2f} MiB", n / (kKiB * kKiB));
  return fmt::format("{:.2f} GiB", n / (kKiB * kKiB * kKiB));
}

namespace {

std::string out_of_memory_message(const std::string& where, std::size_t requested,
                                  std::size_t allocated, std::size_t reserved, std::size_t cap,
                                  const std::string& detail) {
  std::string message =
      fmt::format("{} out of memory: tried to allocate {}; {} allocated, {} reserved by playbook",
                  where, format_bytes(requested), format_bytes(allocated), format_bytes(reserved));
  if (cap > 0) message += fmt::format(" (cap {})", format_bytes(cap));
  if (!detail.empty()) message += "; " + detail;
  return message;
}

}  // namespace

OutOfMemoryError::OutOfMemoryError(std::string where, std::size_t requested, std::size_t allocated,
                                   std::size_t reserved, std::size_t cap, const std::string& detail)
    : Error(out_of_memory_message(where, requested, allocated, reserved, cap, detail)),
      where_(std::move(where)),
      requested_(requested),
      allocated_(allocated),
      reserved_(reserved),
      cap_(cap) {}

}  // namespace pb
