#pragma once
// Durable, all-or-nothing file writes: the one place playbook writes checkpoints, summaries and
// run-directory files through.
//
// AtomicFile writes to `<target>.tmp`; commit() fsyncs it, renames it over the target and
// fsyncs the directory, so after a crash (SIGKILL, power loss) the target holds either its old
// bytes or all of its new ones. A file that is never committed (an error, an exception) is
// removed. Every failure is a CheckpointError naming the file and the system's reason
// ("No space left on device", "Read-only file system").
//
// Fault injection for tests (tests/faults): PLAYBOOK_TEST_FAULT="ACTION:BYTES[:PATH_PART]" makes
// the writes of this process misbehave once BYTES bytes have been written to files whose target
// path contains PATH_PART (every file when absent):
//   kill    SIGKILL the process right there (the file is left half written, as by a real kill)
//   enospc  the write fails with ENOSPC (a full disk)
//   erofs   creating the file fails with EROFS (a read-only run directory); BYTES is ignored
#include <cstddef>
#include <filesystem>
#include <string_view>

namespace pb::checkpoint {

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t n);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // fsync, close, rename over the target, fsync the directory.
  void commit();

 private:
  std::filesystem::path target_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// AtomicFile in one call.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// fsync of a directory, so that a rename or a new entry in it survives a crash. Best effort:
// some file systems refuse fsync on directories, which is not an error.
void fsync_directory(const std::filesystem::path& dir);

}  // namespace pb::checkpoint
