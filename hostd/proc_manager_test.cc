// ProcManager's proc lifecycle with a fake launcher and a fake clock, in
// milliseconds: registration timeout, stop escalation, exit classification
// and the bounded history of finished procs. No process is started; the
// end-to-end tests (tests/) run the real supervisor and procd.
#include "hostd/proc_manager.h"

#include <signal.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "hostd/command_policy.h"
#include "hostd/proc_channels.h"
#include "lib/event/event_loop.h"
#include "lib/names.h"
#include "lib/store/durable_file.h"
#include "lib/testing/temp_dir.h"
#include "lib/time/clock.h"
#include "proto/proc_table.pb.h"

namespace mesh {
namespace {

// Starts nothing: hands out pids, records signals, and ends a "process"
// when the test says (Exit) or when it gets a signal it dies of. Exits run
// on the launcher's own thread, as the supervisor's run on its.
class FakeLauncher final : public ProcLauncher {
 public:
  absl::StatusOr<pid_t> Spawn(const SpawnOptions& options,
                              ExitCallback on_exit) override {
    absl::MutexLock lock(&mu_);
    const pid_t pid = next_pid_++;
    Child& child = children_[pid];
    child.path = options.path;
    child.from_template = options.from_template;
    child.on_exit = std::move(on_exit);
    return pid;
  }
  absl::Status Adopt(const AdoptOptions&, ExitCallback) override {
    return absl::UnimplementedError("the fake launcher adopts nothing");
  }
  std::optional<AdoptOptions> AdoptOptionsFor(pid_t) override {
    return std::nullopt;
  }
  absl::Status SignalGroup(pid_t pid, int sig) override {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(pid);
    if (it == children_.end() || it->second.ended) {
      return absl::NotFoundError("no such live child");
    }
    it->second.signals.push_back(sig);
    if (sig == SIGKILL || (sig == SIGTERM && dies_of_sigterm_)) {
      ExitInfo info;
      info.pid = pid;
      info.term_signal = sig;
      EndLocked(pid, info);
    }
    return absl::OkStatus();
  }
  std::string StderrTail(pid_t) override { return ""; }

  // Ends `pid` as `info` says (its pid is filled in); returns once the
  // manager heard it (its on_exit ran).
  void Exit(pid_t pid, ExitInfo info) {
    info.pid = pid;
    {
      absl::MutexLock lock(&mu_);
      EndLocked(pid, info);
    }
    exits_.RunDue();
  }
  // Signals sent to `pid`'s group, in order.
  std::vector<int> Signals(pid_t pid) {
    absl::MutexLock lock(&mu_);
    return children_[pid].signals;
  }
  std::string PathOf(pid_t pid) {
    absl::MutexLock lock(&mu_);
    return children_[pid].path;
  }
  ProcessTemplate* TemplateOf(pid_t pid) {
    absl::MutexLock lock(&mu_);
    return children_[pid].from_template;
  }
  void set_dies_of_sigterm(bool dies) {
    absl::MutexLock lock(&mu_);
    dies_of_sigterm_ = dies;
  }

 private:
  struct Child {
    std::string path;
    ProcessTemplate* from_template = nullptr;
    ExitCallback on_exit;
    std::vector<int> signals;
    bool ended = false;
  };

  void EndLocked(pid_t pid, const ExitInfo& info)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Child& child = children_[pid];
    if (child.ended) return;
    child.ended = true;
    exits_.Post([on_exit = child.on_exit, info] { on_exit(info); });
  }

  absl::Mutex mu_;
  std::map<pid_t, Child> children_ ABSL_GUARDED_BY(mu_);
  pid_t next_pid_ ABSL_GUARDED_BY(mu_) = 1000;
  bool dies_of_sigterm_ ABSL_GUARDED_BY(mu_) = false;
  // The "supervisor thread" (real clock; it only runs exits).
  EventLoop exits_;
};

// A manager on a fake clock and launcher: registration timeout 10s, stop
// grace 5s, any command allowed.
struct Host {
  struct Answer {
    absl::Notification done;
    absl::StatusOr<v1::ProcState> state;
  };

  explicit Host(std::function<void(ProcManager::Options&)> tweak = nullptr)
      : channels(ProcChannels::Options()) {
    channels.Start("test-host:1", [](const std::string&, v1::Envelope) {});
    ProcManager::Options options;
    options.procd_path = "/fake/procd";
    options.state_dir = dir.path();
    options.registration_timeout = absl::Seconds(10);
    options.stop_grace = absl::Seconds(5);
    CommandPolicy::Options policy;
    policy.allow_any_command = true;
    options.policy = *CommandPolicy::Create(policy);
    options.clock = &clock;
    options.on_lost = [this](const v1::ProcState&, const v1::ProcExit& exit) {
      absl::MutexLock lock(&mu);
      lost.push_back(exit);
    };
    if (tweak) tweak(options);
    manager =
        std::make_unique<ProcManager>(std::move(options), &launcher, &channels);
  }
  ~Host() { manager.reset(); }

  // Creates proc `name` (owned by "alice"); its state once spawned.
  absl::StatusOr<v1::ProcState> Create(const std::string& name) {
    v1::CreateOrUpdateProcRequest request;
    request.set_name(name);
    return Create(request);
  }
  absl::StatusOr<v1::ProcState> Create(v1::CreateOrUpdateProcRequest request) {
    request.set_owner("alice");
    auto answer = std::make_shared<Answer>();
    manager->CreateOrUpdate(request, [answer](auto state) {
      answer->state = std::move(state);
      answer->done.Notify();
    });
    if (!answer->done.WaitForNotificationWithTimeout(absl::Seconds(10))) {
      return absl::DeadlineExceededError("no answer to CreateOrUpdate");
    }
    return answer->state;
  }
  // Asks for a stop (`grace_ms` 0: the manager's default) by `by`; the
  // answer lands in the returned Answer once the proc ended.
  std::shared_ptr<Answer> Stop(const std::string& name, uint32_t grace_ms,
                               const std::string& by = "alice") {
    v1::StopProcRequest request;
    request.set_name(name);
    request.set_grace_ms(grace_ms);
    auto answer = std::make_shared<Answer>();
    manager->Stop(
        request,
        [answer](auto state) {
          answer->state = std::move(state);
          answer->done.Notify();
        },
        ProcManager::StopBy{.identity = by});
    return answer;
  }
  // The state of `name` once it reached `min` (at most 10s of real time).
  absl::StatusOr<v1::ProcState> Await(const std::string& name, v1::Status min) {
    v1::WaitProcsRequest request;
    request.add_names(name);
    request.set_min_status(min);
    auto answer = std::make_shared<Answer>();
    manager->Wait(request, absl::Hours(1), [answer](v1::WaitProcsResponse r) {
      if (r.timed_out() || r.procs_size() != 1) {
        answer->state = absl::DeadlineExceededError(r.DebugString());
      } else {
        answer->state = r.procs(0);
      }
      answer->done.Notify();
    });
    if (!answer->done.WaitForNotificationWithTimeout(absl::Seconds(10))) {
      return absl::DeadlineExceededError("proc did not reach the status");
    }
    return answer->state;
  }
  v1::Status StatusOf(const std::string& name) {
    absl::StatusOr<v1::ProcState> state = manager->GetState(name);
    return state.ok() ? state->status() : v1::NOT_EXIST;
  }
  // The procs reported lost (on_lost), once there are at least `n` (or
  // after 10s of real time): a report comes after the answers to stops.
  std::vector<v1::ProcExit> Lost(size_t n = 1) {
    absl::MutexLock lock(&mu);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return lost.size() >= n;
    };
    mu.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
    return lost;
  }
  // Moves the fake clock and lets every deadline that came due run.
  void Advance(absl::Duration by) {
    clock.Advance(by);
    manager->RunDueTimers();
  }

  testing::TempDir dir;
  FakeClock clock;
  ProcChannels channels;
  FakeLauncher launcher;
  absl::Mutex mu;
  std::vector<v1::ProcExit> lost ABSL_GUARDED_BY(mu);
  std::unique_ptr<ProcManager> manager;
};

TEST_CASE(
    "a proc that does not register within the registration timeout is "
    "SIGKILLed and FAILED, not a moment before") {
  Host host;
  absl::StatusOr<v1::ProcState> spawned = host.Create("p");
  REQUIRE(spawned.ok());
  CHECK(spawned->status() == v1::INITIALIZING);
  const pid_t pid = spawned->pid();
  CHECK(host.launcher.PathOf(pid) == "/fake/procd");

  host.Advance(absl::Seconds(10) - absl::Nanoseconds(1));
  CHECK(host.launcher.Signals(pid).empty());
  CHECK(host.StatusOf("p") == v1::INITIALIZING);

  host.Advance(absl::Nanoseconds(1));
  CHECK(host.launcher.Signals(pid) == std::vector<int>{SIGKILL});
  absl::StatusOr<v1::ProcState> ended = host.Await("p", v1::STOPPED);
  REQUIRE(ended.ok());
  CHECK(ended->status() == v1::FAILED);
  CHECK(ended->stopped_by() == "SIGKILL");
  CHECK(absl::StrContains(ended->reason(),
                          "proc \"p\" did not register within 10s; killed"));
}

TEST_CASE(
    "procs of the default procd are forked from its template unless their "
    "command or their env needs an exec") {
  auto tmpl = ProcessTemplate::Start("/bin/true");
  REQUIRE(tmpl.ok());
  Host host([&tmpl](ProcManager::Options& options) {
    options.procd_path = "/bin/true";
    options.proc_template = tmpl->get();
  });
  auto spawn = [&host](const std::string& name, const std::string& command,
                       const std::string& env) {
    v1::CreateOrUpdateProcRequest request;
    request.set_name(name);
    if (!command.empty()) request.mutable_spec()->set_command(command);
    if (!env.empty()) (*request.mutable_spec()->mutable_env())[env] = "1";
    absl::StatusOr<v1::ProcState> state = host.Create(request);
    REQUIRE(state.ok());
    return host.launcher.TemplateOf(state->pid());
  };
  CHECK(spawn("default", "", "") == tmpl->get());
  CHECK(spawn("named", "/bin/true", "RANK_VAR") == tmpl->get());
  CHECK(spawn("other", "/bin/false", "") == nullptr);
  CHECK(spawn("preload", "", "LD_PRELOAD") == nullptr);
  CHECK(spawn("glog", "", "GLOG_v") == nullptr);
  CHECK(spawn("tunables", "", "GLIBC_TUNABLES") == nullptr);
}

TEST_CASE(
    "a stop with grace 0 takes the default grace, SIGTERM and then SIGKILL "
    "exactly one grace later if the proc ignores SIGTERM") {
  Host host;
  absl::StatusOr<v1::ProcState> spawned = host.Create("p");
  REQUIRE(spawned.ok());
  const pid_t pid = spawned->pid();

  // Not registered: nothing to ask over the channel, so SIGTERM at once.
  std::shared_ptr<Host::Answer> stop = host.Stop("p", /*grace_ms=*/0);
  host.manager->RunDueTimers();
  CHECK(host.launcher.Signals(pid) == std::vector<int>{SIGTERM});
  CHECK(host.StatusOf("p") == v1::STOPPING);

  host.Advance(absl::Seconds(5) - absl::Nanoseconds(1));
  CHECK(host.launcher.Signals(pid) == std::vector<int>{SIGTERM});
  CHECK_FALSE(stop->done.HasBeenNotified());

  host.Advance(absl::Nanoseconds(1));
  CHECK(host.launcher.Signals(pid) == std::vector<int>{SIGTERM, SIGKILL});
  REQUIRE(stop->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(stop->state.ok());
  CHECK(stop->state->status() == v1::STOPPED);
  CHECK(stop->state->stopped_by() == "SIGKILL");
  CHECK(absl::StrContains(stop->state->reason(),
                          "was killed by SIGKILL (stop requested)"));
  // Its owner asked: the end was requested.
  std::vector<v1::ProcExit> lost = host.Lost();
  REQUIRE(lost.size() == 1);
  CHECK(lost[0].requested());
  CHECK(lost[0].status() == v1::STOPPED);
}

TEST_CASE(
    "a proc that dies of SIGTERM within the request's grace is STOPPED by "
    "SIGTERM and never SIGKILLed") {
  Host host;
  host.launcher.set_dies_of_sigterm(true);
  absl::StatusOr<v1::ProcState> spawned = host.Create("p");
  REQUIRE(spawned.ok());
  const pid_t pid = spawned->pid();
  std::shared_ptr<Host::Answer> stop =
      host.Stop("p", /*grace_ms=*/200, /*by=*/"bob");
  REQUIRE(stop->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(stop->state.ok());
  CHECK(stop->state->status() == v1::STOPPED);
  CHECK(stop->state->stopped_by() == "SIGTERM");
  host.Advance(absl::Minutes(1));
  CHECK(host.launcher.Signals(pid) == std::vector<int>{SIGTERM});
  // Not its owner who asked: not a requested end.
  std::vector<v1::ProcExit> lost = host.Lost();
  REQUIRE(lost.size() == 1);
  CHECK_FALSE(lost[0].requested());
}

TEST_CASE(
    "the request's stop grace, not the default, times the escalation to "
    "SIGKILL") {
  Host host;
  absl::StatusOr<v1::ProcState> spawned = host.Create("p");
  REQUIRE(spawned.ok());
  const pid_t pid = spawned->pid();
  std::shared_ptr<Host::Answer> stop = host.Stop("p", /*grace_ms=*/200);
  host.manager->RunDueTimers();  // the stop began (SIGTERM)
  host.Advance(absl::Milliseconds(199));
  CHECK(host.launcher.Signals(pid) == std::vector<int>{SIGTERM});
  host.Advance(absl::Milliseconds(1));
  CHECK(host.launcher.Signals(pid) == std::vector<int>{SIGTERM, SIGKILL});
  REQUIRE(stop->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST_CASE(
    "how a proc ended decides its status, exit 0 STOPPED and another code, "
    "a signal or the OOM killer FAILED, each saying so") {
  struct Case {
    std::string name;
    ExitInfo info;
    v1::Status status;
    std::string stopped_by;
    std::vector<std::string> reason_has;
  };
  ExitInfo clean;
  clean.exit_code = 0;
  ExitInfo code;
  code.exit_code = 3;
  code.stderr_tail = "I1202 16:05:19.123456  1234 x.cc:12] noise\nbad input\n";
  ExitInfo segv;
  segv.term_signal = SIGSEGV;
  ExitInfo oom;
  oom.term_signal = SIGKILL;
  oom.oom_kills = 1;
  const std::vector<Case> cases = {
      {"clean", clean, v1::STOPPED, "exited", {"\"clean\" exited with code 0"}},
      {"code", code, v1::FAILED, "exited", {"exited with code 3", "bad input"}},
      {"segv", segv, v1::FAILED, "SIGSEGV", {"was killed by SIGSEGV"}},
      {"oom",
       oom,
       v1::FAILED,
       "SIGKILL",
       {"was killed by SIGKILL", "the OOM killer killed 1 process(es)"}},
  };
  Host host;
  for (const Case& c : cases) {
    SECTION(c.name) {
      absl::StatusOr<v1::ProcState> spawned = host.Create(c.name);
      REQUIRE(spawned.ok());
      host.launcher.Exit(spawned->pid(), c.info);
      absl::StatusOr<v1::ProcState> ended = host.Await(c.name, v1::STOPPED);
      REQUIRE(ended.ok());
      CHECK(ended->status() == c.status);
      CHECK(ended->stopped_by() == c.stopped_by);
      for (const std::string& part : c.reason_has) {
        INFO(ended->reason());
        CHECK(absl::StrContains(ended->reason(), part));
      }
      CHECK_FALSE(absl::StrContains(ended->reason(), "noise"));
      std::vector<v1::ProcExit> lost = host.Lost();
      REQUIRE(lost.size() == 1);
      CHECK(lost[0].status() == c.status);
      CHECK_FALSE(lost[0].requested());
    }
  }
}

TEST_CASE(
    "at most max_finished_procs finished procs are kept in memory and in "
    "the table, the earliest to end going first and live procs staying") {
  testing::TempDir state;
  const std::string table = state.path() + "/procs.table";
  std::vector<std::string> table_names;
  {
    Host host([&](ProcManager::Options& options) {
      options.max_finished_procs = 3;
      options.table_path = table;
    });
    REQUIRE(host.manager->Recover().ok());
    REQUIRE(host.Create("live").ok());
    std::vector<pid_t> pids;
    for (int i = 0; i < 5; ++i) {
      absl::StatusOr<v1::ProcState> spawned = host.Create(absl::StrCat("p", i));
      REQUIRE(spawned.ok());
      pids.push_back(spawned->pid());
    }
    // They end in reverse order of creation: p4 first.
    for (int i = 4; i >= 0; --i) {
      ExitInfo info;
      info.exit_code = 0;
      host.launcher.Exit(pids[i], info);
    }
    std::vector<std::string> names;
    const v1::ListProcsResponse listed = host.manager->List();
    for (const v1::ProcState& state : listed.procs()) {
      names.push_back(state.name());
    }
    CHECK(names == std::vector<std::string>{"live", "p0", "p1", "p2"});
    absl::StatusOr<v1::ProcState> gone = host.manager->GetState("p4");
    CHECK(absl::IsNotFound(gone.status()));
    // A forgotten name may be created again.
    absl::StatusOr<v1::ProcState> again = host.Create("p4");
    REQUIRE(again.ok());
    CHECK(again->status() == v1::INITIALIZING);
    CHECK(host.manager->LiveProcs() == 2);
    // The manager's end kills "live" and "p4": both end after p0..p2, so
    // only p0 of those stays.
  }
  absl::StatusOr<std::string> payload = DurableFile(table).Load();
  REQUIRE(payload.ok());
  v1::ProcTable written;
  REQUIRE(written.ParseFromString(*payload));
  for (const v1::ProcRecord& record : written.procs()) {
    table_names.push_back(record.state().name());
  }
  CHECK(table_names == std::vector<std::string>{"live", "p0", "p4"});

  // A hostd with a smaller history keeps the latest of the table's.
  Host next([&](ProcManager::Options& options) {
    options.max_finished_procs = 1;
    options.table_path = table;
  });
  REQUIRE(next.manager->Recover().ok());
  const v1::ListProcsResponse kept = next.manager->List();
  REQUIRE(kept.procs_size() == 1);
  const std::string last = kept.procs(0).name();
  CHECK(last == "p4");  // "live" ended just before it
}

TEST_CASE(
    "a full history of procs that ended with a full stderr tail lists in one "
    "message under the 4 MiB cap, the tail kept for the proc's own state") {
  Host host;  // the default history: 1024 finished procs
  const std::string tail(4096, 'x');
  for (int i = 0; i < 1024; ++i) {
    absl::StatusOr<v1::ProcState> spawned = host.Create(absl::StrCat("p", i));
    REQUIRE(spawned.ok());
    ExitInfo info;
    info.exit_code = 1;
    info.stderr_tail = tail;
    host.launcher.Exit(spawned->pid(), info);
  }
  const v1::ListProcsResponse listed = host.manager->List();
  CHECK(listed.procs_size() == 1024);
  CHECK(listed.ByteSizeLong() < (4u << 20) / 2);
  absl::StatusOr<v1::ProcState> one = host.manager->GetState("p7");
  REQUIRE(one.ok());
  CHECK(one->status() == v1::FAILED);
  CHECK(one->stderr_tail() == tail);
}

TEST_CASE(
    "a failed proc's reason quotes the end of a Python traceback, bounded, "
    "and its lost report carries the traceback whole") {
  Host host;
  absl::StatusOr<v1::ProcState> spawned = host.Create("py");
  REQUIRE(spawned.ok());
  std::string tail =
      "I1202 16:05:19.123456  1234 procd_main.cc:236] procd py serving\n"
      "Traceback (most recent call last):\n";
  for (int i = 0; i < 10; ++i) {
    absl::StrAppend(&tail, "  File \"/app/step", i, ".py\", line ", i,
                    ", in step\n    step", i + 1, "(", std::string(150, 'a'),
                    ")\n");
  }
  absl::StrAppend(&tail,
                  "FileNotFoundError: [Errno 2] No such file or directory: "
                  "'/data/model.bin'\n");
  ExitInfo info;
  info.exit_code = 1;
  info.stderr_tail = tail;
  host.launcher.Exit(spawned->pid(), info);
  absl::StatusOr<v1::ProcState> ended = host.Await("py", v1::STOPPED);
  REQUIRE(ended.ok());
  INFO(ended->reason());
  CHECK(ended->status() == v1::FAILED);
  CHECK(ended->reason().size() <= kMaxErrorMessageBytes);
  CHECK(absl::StrContains(ended->reason(),
                          "\"FileNotFoundError: [Errno 2] No such file or "
                          "directory: '/data/model.bin'\")"));
  CHECK(absl::StrContains(ended->reason(), "(stderr: ... | \"File "));
  CHECK_FALSE(absl::StrContains(ended->reason(), "procd py serving"));
  std::vector<v1::ProcExit> lost = host.Lost();
  REQUIRE(lost.size() == 1);
  REQUIRE(lost[0].stderr_lines_size() == 22);
  CHECK(lost[0].stderr_lines(0) == "Traceback (most recent call last):");
  CHECK(lost[0].stderr_lines(21) ==
        "FileNotFoundError: [Errno 2] No such file or directory: "
        "'/data/model.bin'");
}

}  // namespace
}  // namespace mesh
