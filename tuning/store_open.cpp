// Opening a study store by its location; see store.h.
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "tuning/postgres_store.h"
#include "tuning/sqlite_store.h"

namespace pb::tuning {
namespace fs = std::filesystem;

namespace {

constexpr const char* kStoreFile = "store";  // STUDY_DIR/store: the location of a remote store

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  std::size_t b = 0;
  while (b < s.size() && s[b] == ' ') ++b;
  return s.substr(b);
}

}  // namespace

bool is_postgres_location(const std::string& location) {
  return location.rfind("postgresql://", 0) == 0 || location.rfind("postgres://", 0) == 0;
}

std::string redact_location(const std::string& location) {
  if (!is_postgres_location(location)) return location;
  const std::size_t scheme = location.find("://") + 3;
  const std::size_t at = location.find('@', scheme);
  const std::size_t slash = location.find('/', scheme);
  if (at == std::string::npos || (slash != std::string::npos && slash < at)) return location;
  const std::size_t colon = location.find(':', scheme);
  if (colon == std::string::npos || colon > at) return location;
  return location.substr(0, colon + 1) + "***" + location.substr(at);
}

std::unique_ptr<StudyStore> open_store(const std::string& location) {
  if (is_postgres_location(location)) return std::make_unique<PostgresStore>(location);
  const std::size_t scheme = location.find("://");
  if (scheme != std::string::npos) {
    if (location.rfind("sqlite://", 0) == 0) {
      return std::make_unique<SqliteStore>(location.substr(scheme + 3));
    }
    throw StoreError(
        fmt::format("{}: unknown study store (use postgresql://user@host/db or a SQLite file)",
                    redact_location(location)));
  }
  std::error_code ec;
  if (fs::is_directory(location, ec)) return open_study_store(location);
  return std::make_unique<SqliteStore>(location);
}

std::string study_store_location(const fs::path& study_dir) {
  std::ifstream in(study_dir / kStoreFile);
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string location = trim(ss.str());
    if (!location.empty()) return location;
  }
  return (study_dir / "study.db").string();
}

bool has_study_store(const fs::path& study_dir) {
  std::error_code ec;
  return fs::is_regular_file(study_dir / "study.db", ec) ||
         fs::is_regular_file(study_dir / kStoreFile, ec);
}

void bind_study_store(const fs::path& study_dir, const std::string& location) {
  if (location.empty()) return;
  const std::string current = study_store_location(study_dir);
  if (current == location) return;
  std::error_code ec;
  const bool bound = fs::is_regular_file(study_dir / kStoreFile, ec);
  if (bound || fs::is_regular_file(study_dir / "study.db", ec)) {
    throw StoreError(fmt::format(
        "{}: the study directory's store is {}, not {}; use another directory or `playbook "
        "study migrate`",
        study_dir.string(), redact_location(current), redact_location(location)));
  }
  fs::create_directories(study_dir);
  // The URL may hold a password: readable by its owner only, written whole (rename).
  const fs::path tmp = study_dir / fmt::format(".{}.{}", kStoreFile, ::getpid());
  {
    const mode_t old = ::umask(077);
    std::ofstream out(tmp);
    ::umask(old);
    out << location << "\n";
    if (!out) throw StoreError(fmt::format("{}: cannot write", tmp.string()));
  }
  fs::rename(tmp, study_dir / kStoreFile);
}

std::unique_ptr<StudyStore> open_study_store(const fs::path& study_dir) {
  std::error_code ec;
  if (fs::is_regular_file(study_dir / kStoreFile, ec)) {
    return open_store(study_store_location(study_dir));
  }
  return std::make_unique<SqliteStore>(study_dir / "study.db");
}

}  // namespace pb::tuning
