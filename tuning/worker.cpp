// Workers and the runner; see worker.h.
#include "tuning/worker.h"

#include <fmt/format.h>
#include <fmt/ostream.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <ostream>
#include <thread>

#include "tuning/process.h"
#include "tuning/sqlite_store.h"
#include "tuning/study.h"
#include "tuning/trial_runner.h"

namespace pb::tuning {
namespace fs = std::filesystem;

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int stops(const std::atomic<int>* s) {
  return s ? s->load() : 0;
}

// Claims of dead workers on this host and claims without a recent heartbeat go back to pending.
// A dead worker's claim waits one heartbeat period after its last beat: its trial child is
// killed with it (PR_SET_PDEATHSIG), and the retry must not start while that child still exits.
void requeue_lost(StudyStore& store, const StudySpec& spec) {
  std::vector<std::string> dead;
  const double settled = now_seconds() - spec.heartbeat_s;
  for (const TrialRecord& t : store.trials()) {
    if (t.status == TrialStatus::Running && t.heartbeat < settled &&
        is_dead_local_process(t.worker)) {
      dead.push_back(t.worker);
    }
  }
  store.requeue_stale(now_seconds() - spec.stale_after_s, dead);
}

// Heartbeats one claim from its own connection until stopped; sets `lost` (and `abort`) when
// another worker holds the trial now.
class Heartbeat {
 public:
  Heartbeat(const fs::path& study_dir, int64_t index, std::string worker, double period_s,
            std::atomic<bool>& abort)
      : abort_(abort) {
    thread_ = std::thread([this, study_dir, index, worker = std::move(worker), period_s] {
      std::unique_ptr<StudyStore> store;
      std::unique_lock lock(mutex_);
      while (!cv_.wait_for(lock, std::chrono::duration<double>(period_s), [&] { return done_; })) {
        lock.unlock();
        try {
          if (!store) store = open_study_store(study_dir);
          if (!store->heartbeat(index, worker, now_seconds())) {
            lost_ = true;
            abort_ = true;
          }
        } catch (const std::exception&) {
          // A busy or briefly unavailable database: try again at the next period.
        }
        lock.lock();
      }
    });
  }
  ~Heartbeat() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool lost() const { return lost_; }

 private:
  std::atomic<bool>& abort_;
  std::atomic<bool> lost_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

std::string params_line(const TrialRecord& t) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : params_of(t)) parts.push_back(k + "=" + v);
  return fmt::format("{}", fmt::join(parts, " "));
}

std::string duration_text(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  if (total >= 3600) return fmt::format("{}h{:02}m", total / 3600, (total % 3600) / 60);
  if (total >= 60) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}s", total);
}

}  // namespace

int run_worker(const WorkerOptions& options) {
  const Study study = load_study(options.study_dir);
  const StudySpec& spec = study.spec;
  auto store = open_study_store(options.study_dir);
  const std::string me = process_identity();
  TrialContext ctx;
  ctx.spec = &spec;
  ctx.study_dir = options.study_dir;
  ctx.playbook = options.playbook;
  ctx.device = options.device;
  ctx.threads = options.threads;
  int ended = 0;
  while (stops(options.stop_requests) == 0) {
    requeue_lost(*store, spec);
    const auto claimed = store->claim(me, now_seconds());
    if (!claimed) {
      const StudyCounts c = count_trials(store->trials());
      if (c.pending == 0 && c.running == 0) break;
      // Others still run trials: wait, in case one of them dies and its trial comes back.
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    const TrialRecord& trial = *claimed;
    std::atomic<bool> abort{false};
    std::optional<TrialOutcome> outcome;
    bool lost = false;
    {
      Heartbeat heartbeat(options.study_dir, trial.index, me, spec.heartbeat_s, abort);
      std::atomic<bool> watching{true};
      std::thread watcher([&] {
        while (watching) {
          if (stops(options.stop_requests) >= 2) abort = true;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      });
      try {
        outcome = run_trial(ctx, trial, abort);
      } catch (const std::exception& e) {
        TrialOutcome o;
        o.status = TrialStatus::Failed;
        o.reason = e.what();
        outcome = o;
      }
      watching = false;
      watcher.join();
      lost = heartbeat.lost();
    }
    if (lost) {
      if (options.log) {
        fmt::print(*options.log, "trial {}: claim lost to another worker; result dropped\n",
                   trial.index);
      }
      continue;
    }
    if (!outcome) {
      store->release(trial.index, me);
      if (options.log) fmt::print(*options.log, "trial {}: stopped, given back\n", trial.index);
      break;
    }
    if (store->finish(trial.index, me, *outcome, spec.retries, now_seconds())) ++ended;
    if (options.log) {
      fmt::print(*options.log, "trial {}: {}{}{}\n", trial.index, to_string(outcome->status),
                 outcome->objective ? fmt::format(" objective {}", *outcome->objective) : "",
                 outcome->reason.empty() ? "" : " (" + outcome->reason + ")");
      options.log->flush();
    }
  }
  return ended;
}

int run_study_workers(const StudySpec& spec, const RunnerOptions& options) {
  std::vector<std::string> devices = options.devices;
  const int n =
      options.workers > 0 ? options.workers : std::max<int>(1, static_cast<int>(devices.size()));
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const int threads = std::max(1, static_cast<int>(hw) / n);
  fs::create_directories(options.study_dir / "workers");
  std::ostream& out = *options.out;

  std::vector<pid_t> workers;
  for (int k = 0; k < n; ++k) {
    SpawnOptions opt;
    opt.argv = {options.playbook.string(),  "study",     "work",
                options.study_dir.string(), "--threads", std::to_string(threads)};
    if (!devices.empty()) {
      opt.argv.push_back("--device");
      opt.argv.push_back(devices[static_cast<std::size_t>(k) % devices.size()]);
    }
    opt.output = options.study_dir / "workers" / fmt::format("worker_{}.log", k);
    opt.own_process_group = true;  // stop requests come from this runner, once each
    opt.death_signal = SIGKILL;
    workers.push_back(spawn(opt));
  }
  fmt::print(out, "study {}: {} trials, {} worker(s){}, {} thread(s) each; directory {}\n",
             spec.name, spec.total_trials(), n,
             devices.empty() ? std::string() : fmt::format(" on {}", fmt::join(devices, ",")),
             threads, options.study_dir.string());
  out.flush();

  auto store = open_study_store(options.study_dir);
  std::map<int64_t, TrialStatus> seen;
  for (const TrialRecord& t : store->trials()) seen[t.index] = t.status;
  const auto start = std::chrono::steady_clock::now();
  int64_t done_at_start = 0;
  for (const auto& [i, s] : seen) done_at_start += is_done(s) ? 1 : 0;
  int forwarded = 0;
  bool worker_failed = false;
  std::string last_progress;
  auto last_print = start;
  std::vector<bool> alive(workers.size(), true);
  for (;;) {
    const int requested = stops(options.stop_requests);
    while (forwarded < requested) {
      // SIGTERM first, SIGINT then: two requests in a row must not merge into one pending
      // signal in the worker.
      for (std::size_t k = 0; k < workers.size(); ++k) {
        if (alive[k]) kill(workers[k], forwarded == 0 ? SIGTERM : SIGINT);
      }
      ++forwarded;
      out << (forwarded == 1 ? "stopping: no new trials; running trials finish (Ctrl-C again "
                               "to stop them now)\n"
                             : "stopping the running trials\n");
    }
    bool any_alive = false;
    for (std::size_t k = 0; k < workers.size(); ++k) {
      if (!alive[k]) continue;
      if (const auto e = try_wait(workers[k])) {
        alive[k] = false;
        if (e->signal != 0 || e->code != 0) {
          worker_failed = true;
          fmt::print(out, "worker {} ended with {} (see {})\n", k, e->str(),
                     (options.study_dir / "workers" / fmt::format("worker_{}.log", k)).string());
        }
      } else {
        any_alive = true;
      }
    }
    std::vector<TrialRecord> trials;
    try {
      trials = store->trials();
    } catch (const std::exception&) {
      trials.clear();
    }
    if (!trials.empty()) {
      const Objective& obj = spec.objective;
      for (const TrialRecord& t : trials) {
        TrialStatus& before = seen[t.index];
        if (is_done(t.status) && !is_done(before)) {
          fmt::print(out, "trial {:>4} {:<10} {}{}  {}\n", t.index, to_string(t.status),
                     t.objective ? fmt::format("{}={:.6g}", obj.metric, *t.objective) : "",
                     t.reason.empty() ? "" : t.reason, params_line(t));
        }
        before = t.status;
      }
      const StudyCounts c = count_trials(trials);
      const TrialRecord* best = nullptr;
      for (const TrialRecord& t : trials) {
        if (t.status == TrialStatus::Completed && t.objective &&
            (!best || obj.better(*t.objective, *best->objective))) {
          best = &t;
        }
      }
      const int64_t done = c.completed + c.infeasible + c.failed;
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const int64_t done_here = done - done_at_start;
      std::string eta = "?";
      if (done == c.total) {
        eta = "0s";
      } else if (done_here > 0) {
        eta = duration_text(elapsed / static_cast<double>(done_here) *
                            static_cast<double>(c.total - done));
      }
      const std::string progress = fmt::format(
          "[{}/{} done] {} running, {} infeasible, {} failed | best {} | ETA {}", done, c.total,
          c.running, c.infeasible, c.failed,
          best ? fmt::format("{:.6g} (trial {})", *best->objective, best->index) : "-", eta);
      // A line when a count or the best changes (not for every tick of the ETA), and every 30 s.
      const std::string key = progress.substr(0, progress.rfind(" | ETA"));
      const auto now = std::chrono::steady_clock::now();
      if (key != last_progress || now - last_print > std::chrono::seconds(30)) {
        fmt::print(out, "{}\n", progress);
        out.flush();
        last_progress = key;
        last_print = now;
      }
    }
    if (!any_alive) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  const StudyCounts c = count_trials(store->trials());
  const int64_t done = c.completed + c.infeasible + c.failed;
  if (done == c.total) return worker_failed ? 1 : 0;
  if (stops(options.stop_requests) > 0) {
    fmt::print(out, "stopped with {} of {} trials done; run the same command again to resume\n",
               done, c.total);
    return 130;
  }
  return 1;
}

}  // namespace pb::tuning
