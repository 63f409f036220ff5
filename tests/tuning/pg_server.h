#pragma once
// A throwaway PostgreSQL server for tests: initdb + pg_ctl (Debian's postgresql-15, installed
// by scripts/setup) in a temporary directory, listening on a free loopback port, password
// authentication over TCP. Started once per test binary on first use, stopped and deleted at
// exit; the system's clusters are never touched. As root the server runs as the `postgres`
// user (postgres refuses root). Missing binaries are a test failure, not a skip.
//
//   PgServer& pg = PgServer::get();          // ASSERT_TRUE(pg.ok()) << pg.error();
//   std::string url = pg.new_database();     // postgresql://postgres:secret@127.0.0.1:P/db_N
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace pb::testing_pg {

class PgServer {
 public:
  static PgServer& get() {
    static PgServer server;
    return server;
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  int port() const { return port_; }
  static constexpr const char* kPassword = "secret";

  std::string url(const std::string& db, const std::string& password = kPassword) const {
    return "postgresql://postgres:" + password + "@127.0.0.1:" + std::to_string(port_) + "/" + db;
  }
  // A new empty database; its URL.
  std::string new_database() {
    const std::string name = "db_" + std::to_string(::getpid()) + "_" + std::to_string(++dbs_);
    run(bin("createdb") + " -h 127.0.0.1 -p " + std::to_string(port_) + " -U postgres " + name,
        "createdb");
    return url(name);
  }

  ~PgServer() {
    if (started_) {
      std::system((as_user() + bin("pg_ctl") + " -D " + (dir_ / "data").string() +
                   " -m immediate -w stop >/dev/null 2>&1")
                      .c_str());
    }
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

 private:
  PgServer() {
    const char* env = std::getenv("PLAYBOOK_PG_BIN");
    bin_dir_ = env ? env : "/usr/lib/postgresql/15/bin";
    std::error_code ec;
    if (!std::filesystem::exists(bin("initdb"), ec) ||
        !std::filesystem::exists(bin("pg_ctl"), ec)) {
      error_ = "PostgreSQL server binaries not found in " + bin_dir_ +
               " (initdb, pg_ctl): install them with scripts/setup (postgresql) or set "
               "PLAYBOOK_PG_BIN";
      return;
    }
    char tmpl[] = "/tmp/pb_pg_XXXXXX";
    if (!::mkdtemp(tmpl)) {
      error_ = "mkdtemp failed";
      return;
    }
    dir_ = tmpl;
    ::chmod(tmpl, 0755);
    if (::geteuid() == 0) {
      const passwd* pw = ::getpwnam("postgres");
      if (!pw) {
        error_ = "running as root and no `postgres` user to run the test server as";
        return;
      }
      if (::chown(tmpl, pw->pw_uid, pw->pw_gid) != 0) {
        error_ = "chown of " + dir_.string() + " failed";
        return;
      }
      user_ = "postgres";
    }
    port_ = free_port();
    const std::string pwfile = (dir_ / "pw").string();
    {
      std::ofstream(pwfile) << kPassword << "\n";
      ::chmod(pwfile.c_str(), 0644);
    }
    if (!run(as_user() + bin("initdb") + " -D " + (dir_ / "data").string() +
                 " -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile=" + pwfile +
                 " -E UTF8 --no-sync >" + (dir_ / "initdb.log").string() + " 2>&1",
             "initdb")) {
      return;
    }
    const std::string opts = "-c listen_addresses=127.0.0.1 -p " + std::to_string(port_) + " -k " +
                             dir_.string() +
                             " -c fsync=off -c synchronous_commit=off -c full_page_writes=off";
    if (!run(as_user() + bin("pg_ctl") + " -D " + (dir_ / "data").string() + " -o '" + opts +
                 "' -l " + (dir_ / "server.log").string() + " -w -t 60 start >/dev/null",
             "pg_ctl start")) {
      return;
    }
    started_ = true;
    ::setenv("PGPASSWORD", kPassword, 1);  // createdb
  }

  std::string bin(const std::string& name) const { return bin_dir_ + "/" + name; }
  std::string as_user() const { return user_.empty() ? "" : "runuser -u " + user_ + " -- "; }

  bool run(const std::string& cmd, const std::string& what) {
    if (std::system(cmd.c_str()) != 0) {
      if (error_.empty()) error_ = what + " failed: " + cmd + " (logs in " + dir_.string() + ")";
      return false;
    }
    return true;
  }

  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    int port = 54329;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
    ::close(fd);
    return port;
  }

  std::string bin_dir_, user_, error_;
  std::filesystem::path dir_;
  int port_ = 0, dbs_ = 0;
  bool started_ = false;
};

}  // namespace pb::testing_pg
