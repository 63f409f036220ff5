#include "runtime/checkpoint/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "runtime/checkpoint/safetensors.h"

namespace pb::checkpoint {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail_errno(const fs::path& path, std::string_view what, int error) {
  throw CheckpointError(path.string() + ": " + std::string(what) + ": " + std::strerror(error));
}

// PLAYBOOK_TEST_FAULT, parsed once (see atomic_file.h).
struct Fault {
  enum class Action { kNone, kKill, kEnospc, kErofs } action = Action::kNone;
  std::size_t bytes = 0;
  std::string path_part;
  std::size_t written = 0;  // bytes written so far to matching files
  std::mutex mutex;
};

Fault& fault() {
  static Fault* f = [] {
    auto* out = new Fault;
    const char* env = std::getenv("PLAYBOOK_TEST_FAULT");
    if (env == nullptr || *env == '\0') return out;
    const std::string spec = env;
    const std::size_t c1 = spec.find(':');
    const std::string action = spec.substr(0, c1);
    if (action == "kill") out->action = Fault::Action::kKill;
    if (action == "enospc") out->action = Fault::Action::kEnospc;
    if (action == "erofs") out->action = Fault::Action::kErofs;
    if (c1 != std::string::npos) {
      const std::size_t c2 = spec.find(':', c1 + 1);
      const std::string bytes = spec.substr(c1 + 1, c2 == std::string::npos ? c2 : c2 - c1 - 1);
      std::from_chars(bytes.data(), bytes.data() + bytes.size(), out->bytes);
      if (c2 != std::string::npos) out->path_part = spec.substr(c2 + 1);
    }
    return out;
  }();
  return *f;
}

// write(2) until all n bytes are written.
void write_all(int fd, const fs::path& path, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t written = ::write(fd, p, n);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail_errno(path, "write failed", errno);
    }
    p += written;
    n -= static_cast<std::size_t>(written);
  }
}

bool fault_applies(const Fault& f, const fs::path& target) {
  return f.action != Fault::Action::kNone && target.string().find(f.path_part) != std::string::npos;
}

}  // namespace

AtomicFile::AtomicFile(fs::path target) : target_(std::move(target)) {
  tmp_ = target_.string() + ".tmp";
  Fault& f = fault();
  if (fault_applies(f, target_) && f.action == Fault::Action::kErofs) {
    fail_errno(tmp_, "cannot create", EROFS);
  }
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_errno(tmp_, "cannot create", errno);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) {
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
}

void AtomicFile::write(const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  Fault& f = fault();
  if (fault_applies(f, target_)) {
    std::lock_guard lock(f.mutex);
    if (f.written + n > f.bytes && f.action != Fault::Action::kErofs) {
      const std::size_t part = f.bytes > f.written ? f.bytes - f.written : 0;
      f.written += part;
      write_all(fd_, tmp_, p, part);
      if (f.action == Fault::Action::kKill) ::kill(::getpid(), SIGKILL);
      fail_errno(tmp_, "write failed", ENOSPC);
    }
    f.written += n;
  }
  write_all(fd_, tmp_, p, n);
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) fail_errno(tmp_, "fsync failed", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail_errno(tmp_, "close failed", errno);
  if (::rename(tmp_.c_str(), target_.c_str()) != 0) {
    fail_errno(target_, "cannot rename " + tmp_.string() + " into place", errno);
  }
  committed_ = true;
  fsync_directory(target_.parent_path());
}

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  AtomicFile out(path);
  out.write(bytes);
  out.commit();
}

void fsync_directory(const fs::path& dir) {
  const fs::path d = dir.empty() ? fs::path(".") : dir;
  const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

}  // namespace pb::checkpoint
