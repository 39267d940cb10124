// Restart without loss (issue 9), end to end: a real hostd started as a
// plain process (tests/testing/restartable_host.h, no parent channel) with
// real procds, killed with SIGKILL, crashed at each step of a proc-table
// write, signalled (SIGHUP reloads, SIGUSR2 exits for a restart) and started
// again on the same state dir, runtime dir and port. Procs must be
// re-adopted with the same pids and their actors' state, keep writing their
// logs while hostd is down, exit by themselves past their orphan deadline
// (and not before), leave no descendant when stopped (cgroup leaves), and a
// process that merely took a dead proc's pid is never signalled.
//
// Bounds are short (--orphan-timeout 3s where the deadline itself is
// tested; longer where a restart must beat it) and are asserted with
// generous multiples: 2-core CI runs tests in parallel.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/auth/credentials.h"
#include "lib/process/process_identity.h"
#include "lib/process/supervisor.h"
#include "lib/process/testing.h"
#include "lib/testing/skip.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "proto/proc.pb.h"
#include "tests/testing/restartable_host.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::BinaryPath;
using testing::Context;
using testing::IsAlive;
using testing::ReadText;
using testing::RestartableHost;
using testing::Shell;
using testing::WaitGone;

// What "at once" may take on a loaded 2-core machine.
constexpr absl::Duration kSlack = absl::Seconds(10);
// The orphan timeout where the deadline itself is under test.
constexpr absl::Duration kShortOrphan = absl::Seconds(3);
// The orphan timeout where a restart (seconds on a loaded machine) must come
// well before the deadline.
constexpr absl::Duration kRestartOrphan = absl::Seconds(20);

RestartableHost::Options HostOptions(absl::Duration orphan_timeout) {
  RestartableHost::Options options;
  options.orphan_timeout = orphan_timeout;
  return options;
}

std::string Quote(const std::string& text) {
  return absl::StrCat("'", text, "'");
}

// The default procd with a writer beside it in the same proc: a loop that
// writes "<tag> tick <n>" to the proc's stdout every 200 ms as long as the
// procd lives (a zombie counts as gone), so output written while hostd is
// down can be looked for. The shell execs procd: the proc's pid is procd's.
v1::ProcSpec ChattyProcd(const std::string& tag) {
  return Shell(absl::StrCat(
      "p=$$; alive() { s=$(cat /proc/$p/stat 2>/dev/null) || return 1; ",
      "case \"${s##*) }\" in Z*|X*) return 1;; esac; }; ",
      "( n=0; while alive; do n=$((n+1)); echo \"", tag,
      " tick $n\"; sleep 0.2; done ) & exec ", Quote(BinaryPath("procd"))));
}

std::vector<std::string> Names(const std::string& prefix, int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(absl::StrCat(prefix, "_", i));
  return names;
}

// name -> state of every proc hostd lists.
std::map<std::string, v1::ProcState> ByName(const v1::ListProcsResponse& list) {
  std::map<std::string, v1::ProcState> procs;
  for (const v1::ProcState& proc : list.procs()) procs[proc.name()] = proc;
  return procs;
}

std::set<std::string> NamesOf(const std::map<std::string, v1::ProcState>& m) {
  std::set<std::string> names;
  for (const auto& [name, state] : m) names.insert(name);
  return names;
}

// Creates every proc (specs from `spec_of`) and waits until all are
// RUNNING; name -> pid. REQUIREs success.
std::map<std::string, pid_t> SpawnRunning(
    RestartableHost& host, const std::vector<std::string>& names,
    const std::function<v1::ProcSpec(const std::string&)>& spec_of) {
  for (size_t i = 0; i < names.size(); ++i) {
    v1::ProcState state;
    grpc::Status status = host.Create(names[i], i, spec_of(names[i]), &state);
    INFO(names[i] << ": " << status.error_message());
    REQUIRE(status.ok());
  }
  v1::WaitProcsResponse waited =
      host.Wait(names, v1::RUNNING, absl::Seconds(60));
  INFO(waited.DebugString() << host.HostdLog());
  REQUIRE_FALSE(waited.timed_out());
  std::map<std::string, pid_t> pids;
  for (const v1::ProcState& proc : waited.procs()) {
    REQUIRE(proc.status() == v1::RUNNING);
    REQUIRE(proc.pid() > 0);
    pids[proc.name()] = proc.pid();
    host.Track(proc.pid());
  }
  return pids;
}

v1::ProcSpec DefaultProcd(const std::string&) { return v1::ProcSpec(); }

// Waits until each proc answers GetProcInfo through the host with its old
// pid (it rejoined: its channel works again). The names that did not, with
// the last answer.
std::vector<std::string> AwaitReadopted(
    RestartableHost& host, const std::map<std::string, pid_t>& pids,
    absl::Duration timeout = absl::Seconds(30)) {
  absl::Time deadline = absl::Now() + timeout;
  std::vector<std::string> missing;
  for (const auto& [name, pid] : pids) {
    std::string last;
    bool found = false;
    while (!found) {
      v1::GetProcInfoRequest request;
      request.set_proc(name);
      v1::ProcInfo info;
      grpc::Status status = host.procs().GetProcInfo(
          Context(absl::Seconds(5)).get(), request, &info);
      if (status.ok() && info.pid() == pid) {
        found = true;
      } else {
        last = status.ok() ? absl::StrCat("pid ", info.pid())
                           : status.error_message();
        if (absl::Now() > deadline) break;
        absl::SleepFor(absl::Milliseconds(50));
      }
    }
    if (!found) missing.push_back(absl::StrCat(name, " (", last, ")"));
  }
  return missing;
}

// A "mesh.counter" actor named "counter" in proc `proc`.
grpc::Status MakeCounter(RestartableHost& host, const std::string& proc) {
  v1::CreateOrUpdateActorRequest request;
  request.set_proc(proc);
  request.set_name("counter");
  request.set_type("mesh.counter");
  v1::ActorState actor;
  return host.procs().CreateOrUpdateActor(Context().get(), request, &actor);
}

// Increments proc `proc`'s counter by `by` (or reads it: nullopt); its
// value.
absl::StatusOr<int64_t> CallCounter(RestartableHost& host,
                                    const std::string& proc,
                                    std::optional<int64_t> by) {
  v1::CallActorRequest call;
  call.set_proc(proc);
  call.set_actor("counter");
  call.set_timeout_ms(5000);
  if (by.has_value()) {
    v1::Increment increment;
    increment.set_by(*by);
    call.mutable_payload()->PackFrom(increment);
  } else {
    call.mutable_payload()->PackFrom(v1::GetCount());
  }
  v1::CallActorResponse reply;
  grpc::Status status =
      host.procs().CallActor(Context(absl::Seconds(10)).get(), call, &reply);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  v1::Count count;
  if (!reply.reply().UnpackTo(&count)) {
    return absl::InternalError("the reply is not a Count");
  }
  return count.value();
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

// Writes `text` to `path` (mode 0600) through a temp file and a rename: a
// reader (hostd reloading) sees the old or the new file, never half.
bool ReplaceFile(const std::string& path, const std::string& text) {
  const std::string temp = path + ".tmp";
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok =
      write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = close(fd) == 0 && ok;
  return ok && rename(temp.c_str(), path.c_str()) == 0;
}

// GetHostInfo presenting `token`: the call's status.
grpc::Status HostInfoWith(RestartableHost& host, const std::string& token) {
  ClientCredentials credentials;
  credentials.token = token;
  auto stub = v1::Host::NewStub(host.ChannelWith(credentials));
  v1::HostInfo info;
  return stub->GetHostInfo(Context(absl::Seconds(5)).get(),
                           v1::GetHostInfoRequest(), &info);
}

TEST_CASE(
    "kill -9 of hostd with 16 live procs and a restart on the same dirs and "
    "port re-adopts all 16 with the same pids, their counters keep their "
    "counts, and what they wrote while hostd was down is in their log "
    "files") {
  auto host = RestartableHost::Create(HostOptions(kRestartOrphan));
  REQUIRE(host->Start().ok());
  const std::vector<std::string> names = Names("keep", 16);
  std::map<std::string, pid_t> pids = SpawnRunning(*host, names, ChattyProcd);
  REQUIRE(pids.size() == 16);
  v1::ListProcsResponse before;
  REQUIRE(host->List(&before).ok());
  for (int i = 0; i < 16; ++i) {
    REQUIRE(MakeCounter(*host, names[i]).ok());
    REQUIRE(CallCounter(*host, names[i], i + 1).ok());
    absl::StatusOr<int64_t> value = CallCounter(*host, names[i], 100);
    REQUIRE(value.ok());
    REQUIRE(*value == 101 + i);
  }

  REQUIRE(host->Kill9().ok());
  std::map<std::string, int64_t> size_at_kill;
  for (const std::string& name : names) {
    CHECK(IsAlive(pids[name]));
    size_at_kill[name] = FileSize(host->LogDir(name) + "/stdout.log");
  }
  // hostd is down: the writers keep writing (every 200 ms).
  absl::SleepFor(absl::Milliseconds(1500));
  for (const std::string& name : names) {
    const std::string log = host->LogDir(name) + "/stdout.log";
    INFO(name << ": " << log << " had " << size_at_kill[name] << " bytes");
    CHECK(FileSize(log) > size_at_kill[name]);
    CHECK_THAT(ReadText(log).substr(std::max<int64_t>(size_at_kill[name], 0)),
               Catch::Contains(name + " tick"));
  }

  REQUIRE(host->Restart().ok());
  std::vector<std::string> missing = AwaitReadopted(*host, pids);
  INFO("not re-adopted: " << absl::StrJoin(missing, ", ") << "\n"
                          << host->HostdLog());
  CHECK(missing.empty());
  v1::ListProcsResponse after;
  REQUIRE(host->List(&after).ok());
  CHECK(after.procs_size() == 16);
  std::map<std::string, v1::ProcState> old = ByName(before);
  for (const v1::ProcState& proc : after.procs()) {
    INFO(proc.DebugString());
    CHECK(proc.status() == v1::RUNNING);
    CHECK(proc.pid() == pids[proc.name()]);
    // Generations never go backwards.
    CHECK(proc.generation() >= old[proc.name()].generation());
  }
  for (int i = 0; i < 16; ++i) {
    INFO(names[i]);
    absl::StatusOr<int64_t> kept = CallCounter(*host, names[i], std::nullopt);
    CHECK(kept.ok());
    if (kept.ok()) CHECK(*kept == 101 + i);
    absl::StatusOr<int64_t> more = CallCounter(*host, names[i], 1);
    CHECK(more.ok());
    if (more.ok()) CHECK(*more == 102 + i);
  }
}

TEST_CASE(
    "with hostd down past the orphan timeout every procd exits by itself and "
    "nothing of its procs is left; the next hostd reports them FAILED with "
    "their exit status unknown") {
  auto host = RestartableHost::Create(HostOptions(kShortOrphan));
  REQUIRE(host->Start().ok());
  const std::vector<std::string> names = Names("lost", 8);
  std::map<std::string, pid_t> pids = SpawnRunning(*host, names, DefaultProcd);
  v1::ListProcsResponse before;
  REQUIRE(host->List(&before).ok());

  REQUIRE(host->Kill9().ok());
  const absl::Time killed = absl::Now();
  const absl::Time deadline = killed + 3 * kShortOrphan + kSlack;
  for (const auto& [name, pid] : pids) {
    INFO(name << " pid " << pid);
    CHECK(
        WaitGone(pid, std::max(deadline - absl::Now(), absl::ZeroDuration())));
  }
  WARN("all procds gone " << absl::FormatDuration(absl::Now() - killed)
                          << " after hostd was killed (orphan timeout "
                          << absl::FormatDuration(kShortOrphan) << ")");
  host->ReapOrphans();
  // Nothing left: no process of their process groups or cgroup leaves.
  std::set<pid_t> groups;
  for (const auto& [name, pid] : pids) groups.insert(pid);
  CHECK(testing::LiveInGroups(groups).empty());
  CHECK(host->CgroupPids().empty());

  REQUIRE(host->Restart().ok());
  v1::WaitProcsResponse waited =
      host->Wait(names, v1::STOPPED, absl::Seconds(30));
  INFO(waited.DebugString() << host->HostdLog());
  CHECK_FALSE(waited.timed_out());
  std::map<std::string, v1::ProcState> old = ByName(before);
  for (const v1::ProcState& proc : waited.procs()) {
    INFO(proc.DebugString());
    CHECK(proc.status() == v1::FAILED);
    CHECK_THAT(proc.reason(),
               Catch::Contains("exit status unknown (re-adopted)"));
    CHECK(proc.generation() > old[proc.name()].generation());
  }
  // The restart started nothing in their place.
  CHECK(host->CgroupPids().empty());
}

// The pid an escapee grandchild wrote to `path` (0 if none).
pid_t ReadPid(const std::string& path) {
  pid_t pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadText(path)), &pid)) {
    return 0;
  }
  return pid;
}

// Whether `pid` ignores SIGTERM (bit 15 of SigIgn in /proc/<pid>/status).
bool IgnoresSigterm(pid_t pid) {
  std::string status = ReadText(absl::StrCat("/proc/", pid, "/status"));
  size_t at = status.find("SigIgn:\t");
  if (at == std::string::npos) return false;
  uint64_t mask = 0;
  if (!absl::SimpleHexAtoi(status.substr(at + 8, 16), &mask)) return false;
  return (mask >> (SIGTERM - 1)) & 1;
}

TEST_CASE(
    "a proc whose bootstrap leaves a setsid grandchild that ignores SIGTERM "
    "leaves no descendant once Stop answered, whether hostd spawned it or "
    "re-adopted it after a restart") {
  auto host = RestartableHost::Create(HostOptions(kRestartOrphan));
  if (host->cgroup_dir().empty()) {
    HOSTMESH_SKIP(
        "no writable cgroup v2 here: hostd runs with --cgroup=none "
        "and only cgroup leaves take setsid escapees");
  }
  REQUIRE(host->Start().ok());
  auto spec_of = [&](const std::string& name) {
    v1::ProcSpec spec;
    spec.set_command(BinaryPath("escapee"));
    spec.add_args(absl::StrCat(host->dir(), "/", name, ".grandchild"));
    spec.add_args(BinaryPath("procd"));
    return spec;
  };
  const std::vector<std::string> names = {"escapee_0", "escapee_1"};
  std::map<std::string, pid_t> pids = SpawnRunning(*host, names, spec_of);
  std::map<std::string, pid_t> grandchildren;
  for (const std::string& name : names) {
    pid_t grandchild =
        ReadPid(absl::StrCat(host->dir(), "/", name, ".grandchild"));
    INFO(name);
    REQUIRE(grandchild > 0);
    host->Track(grandchild);
    grandchildren[name] = grandchild;
    // It escaped the proc's process group and ignores SIGTERM.
    REQUIRE(IsAlive(grandchild));
    REQUIRE(getpgid(grandchild) == grandchild);
    REQUIRE(getpgid(grandchild) != pids[name]);
    REQUIRE(IgnoresSigterm(grandchild));
  }

  v1::ProcState stopped;
  REQUIRE(host->Stop("escapee_0", &stopped).ok());
  {
    INFO(stopped.DebugString());
    CHECK(stopped.status() == v1::STOPPED);
    CHECK_FALSE(IsAlive(pids["escapee_0"]));
    // Stop answered: nothing of the proc is left.
    CHECK_FALSE(IsAlive(grandchildren["escapee_0"]));
  }

  REQUIRE(host->Kill9().ok());
  REQUIRE(host->Restart().ok());
  std::vector<std::string> missing =
      AwaitReadopted(*host, {{"escapee_1", pids["escapee_1"]}});
  INFO(host->HostdLog());
  REQUIRE(missing.empty());
  REQUIRE(IsAlive(grandchildren["escapee_1"]));
  REQUIRE(host->Stop("escapee_1", &stopped).ok());
  INFO(stopped.DebugString());
  CHECK(stopped.status() == v1::STOPPED);
  CHECK_FALSE(IsAlive(pids["escapee_1"]));
  CHECK_FALSE(IsAlive(grandchildren["escapee_1"]));
}

TEST_CASE(
    "a process that took a dead proc's pid is never signalled by a restarted "
    "hostd, not by Stop and not by its shutdown; the proc is FAILED with its "
    "exit status unknown") {
  auto host = RestartableHost::Create(HostOptions(kRestartOrphan));
  if (geteuid() != 0) {
    HOSTMESH_SKIP("a decoy with a chosen pid (clone3 set_tid) needs root");
  }
  REQUIRE(host->Start().ok());
  std::map<std::string, pid_t> pids =
      SpawnRunning(*host, {"target", "bystander"}, DefaultProcd);
  const pid_t target = pids["target"];

  REQUIRE(host->Kill9().ok());
  // The orphaned procd is the test's child now (subreaper): kill and reap
  // it, so its pid is free for the decoy.
  REQUIRE(kill(target, SIGKILL) == 0);
  REQUIRE(WaitGone(target, kSlack));
  REQUIRE(host->Reap(target));
  REQUIRE(access(absl::StrCat("/proc/", target).c_str(), F_OK) != 0);

  const std::string decoy_dir = host->dir() + "/decoy";
  REQUIRE(mkdir(decoy_dir.c_str(), 0700) == 0);
  const int decoy =
      testing::SpawnWithPid(target, {BinaryPath("decoy"), decoy_dir});
  if (decoy == -EPERM) {
    HOSTMESH_SKIP("clone3 with set_tid is not permitted here");
  }
  INFO("SpawnWithPid: " << (decoy < 0 ? strerror(-decoy) : "ok"));
  REQUIRE(decoy >= 0);
  // The decoy is the test's child: killed and reaped whatever happens.
  testing::ChildGuard decoy_guard = testing::ChildGuard::OfPidfd(decoy);
  const absl::Time wait_until = absl::Now() + kSlack;
  while (access((decoy_dir + "/ready").c_str(), F_OK) != 0 &&
         absl::Now() < wait_until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  REQUIRE(ReadPid(decoy_dir + "/ready") == target);
  REQUIRE(host->Track(target));
  const uint64_t decoy_start = ProcessStartTime(target).value_or(0);

  REQUIRE(host->Restart().ok());
  v1::WaitProcsResponse ended =
      host->Wait({"target"}, v1::STOPPED, absl::Seconds(30));
  INFO(ended.DebugString() << host->HostdLog());
  REQUIRE_FALSE(ended.timed_out());
  CHECK(ended.procs(0).status() == v1::FAILED);
  CHECK_THAT(ended.procs(0).reason(),
             Catch::Contains("exit status unknown (re-adopted)"));
  CHECK(AwaitReadopted(*host, {{"bystander", pids["bystander"]}}).empty());
  v1::ProcState stopped;
  CHECK(host->Stop("target", &stopped).ok());
  CHECK(stopped.status() == v1::FAILED);
  // hostd stops what it runs when it shuts down: the decoy is not among it.
  REQUIRE(host->Signal(SIGTERM).ok());
  absl::StatusOr<ExitInfo> exit = host->WaitExit();
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == std::optional<int>(0));
  CHECK_FALSE(IsAlive(pids["bystander"]));

  CHECK(IsAlive(target));
  absl::StatusOr<ProcStat> decoy_stat = ReadProcStat(target);
  REQUIRE(decoy_stat.ok());
  CHECK(decoy_stat->start_time == decoy_start);
  CHECK(decoy_stat->state != 'T');
  CHECK(ReadText(decoy_dir + "/signals") == "");
}

// A proc list as the crash test compares it: names, and for each its status
// and pid.
std::string Describe(const std::map<std::string, v1::ProcState>& procs) {
  std::vector<std::string> parts;
  for (const auto& [name, state] : procs) {
    parts.push_back(absl::StrCat(name, "=", v1::Status_Name(state.status()),
                                 "/", state.pid(), "/g", state.generation()));
  }
  return absl::StrJoin(parts, " ");
}

TEST_CASE(
    "hostd killed at each step of a proc-table write, ten times per step, "
    "restarts with the table from before or after that write") {
  const std::vector<std::string> points = {"after-temp-write",
                                           "after-temp-fsync", "after-rename",
                                           "before-dir-fsync"};
  // Operations per run at most: the hook fires at the n-th write (n <= 10),
  // and every operation writes at least once.
  constexpr int kMaxOps = 12;
  int crashes = 0;
  for (const std::string& point : points) {
    for (int n = 1; n <= 10; ++n) {
      const std::string hook = absl::StrCat("--test-crash-at=", point, ":", n);
      INFO(hook);
      auto host = RestartableHost::Create(HostOptions(kRestartOrphan));
      // The procs as listed after the last operation that completed, and
      // what the operation in flight when hostd died changes.
      std::map<std::string, v1::ProcState> known;
      std::string target;
      bool target_is_new = false;
      absl::Status started = host->Start({hook});
      if (started.ok()) {
        bool crashed = false;
        for (int op = 0; op < kMaxOps && !crashed; ++op) {
          bool ok = true;
          if (op % 3 == 2) {
            // Stop the oldest proc still running.
            target.clear();
            for (const auto& [name, state] : known) {
              if (state.status() == v1::RUNNING) {
                target = name;
                break;
              }
            }
            target_is_new = false;
            v1::ProcState stopped;
            ok = host->Stop(target, &stopped, absl::Milliseconds(500)).ok();
          } else {
            target = absl::StrCat("c_", op);
            target_is_new = true;
            v1::ProcState created;
            ok = host->Create(target, op, {}, &created).ok() &&
                 !host->Wait({target}, v1::RUNNING).timed_out();
          }
          v1::ListProcsResponse list;
          ok = ok && host->List(&list).ok();
          if (!ok) {
            crashed = true;
          } else {
            known = ByName(list);
            for (const auto& [name, state] : known) host->Track(state.pid());
          }
        }
        INFO(host->HostdLog());
        REQUIRE(crashed);  // Else the hook never fired.
      } else {
        // It died at a write while starting (before serving): nothing was
        // created yet.
        target.clear();
      }
      absl::StatusOr<ExitInfo> exit = host->WaitExit(kSlack);
      INFO(host->HostdLog());
      REQUIRE(exit.ok());
      // The hook killed it, nothing else.
      REQUIRE(exit->term_signal == std::optional<int>(SIGKILL));
      ++crashes;

      absl::Status restarted = host->Restart();
      INFO(restarted.ToString());
      REQUIRE(restarted.ok());
      v1::ListProcsResponse list;
      REQUIRE(host->List(&list).ok());
      std::map<std::string, v1::ProcState> now = ByName(list);
      INFO("before the write: " << Describe(known));
      INFO("after the restart: " << Describe(now));
      std::set<std::string> old_names = NamesOf(known);
      std::set<std::string> new_names = old_names;
      if (target_is_new) new_names.insert(target);
      const std::set<std::string> names = NamesOf(now);
      CHECK((names == old_names || names == new_names));
      // Every proc the write did not touch is as it was: running ones
      // re-adopted with their pids, ended ones ended as they were.
      std::map<std::string, pid_t> running;
      for (const auto& [name, state] : known) {
        if (name == target || now.count(name) == 0) continue;
        const v1::ProcState& after = now[name];
        CHECK(after.generation() >= state.generation());
        if (state.status() == v1::RUNNING) {
          running[name] = state.pid();
        } else {
          CHECK(after.status() == state.status());
          // Taken over: a fresh generation, never a lower one.
          CHECK(after.generation() >= state.generation());
        }
      }
      std::vector<std::string> missing = AwaitReadopted(*host, running);
      INFO("not re-adopted: " << absl::StrJoin(missing, ", "));
      CHECK(missing.empty());
    }
  }
  CHECK(crashes == 40);
}

TEST_CASE(
    "the same CreateOrUpdate 100 times at once, and 100 times more at once "
    "right after a restart, makes one process") {
  auto host = RestartableHost::Create(HostOptions(kRestartOrphan));
  REQUIRE(host->Start().ok());
  // Each call's answer (ok, pid).
  auto create_100 = [&host] {
    std::vector<std::pair<bool, pid_t>> answers(100);
    std::vector<std::thread> threads;
    for (int i = 0; i < 100; ++i) {
      threads.emplace_back([&host, &answers, i] {
        v1::ProcState state;
        grpc::Status status = host->Create("only", 0, {}, &state);
        answers[i] = {status.ok(), state.pid()};
      });
    }
    for (std::thread& thread : threads) thread.join();
    return answers;
  };
  std::vector<std::pair<bool, pid_t>> first = create_100();
  v1::WaitProcsResponse waited = host->Wait({"only"}, v1::RUNNING);
  REQUIRE_FALSE(waited.timed_out());
  const pid_t pid = waited.procs(0).pid();
  host->Track(pid);
  for (const auto& [ok, answered] : first) {
    CHECK(ok);
    // Early answers may predate the pid; every pid seen is the one proc's.
    if (answered != 0) CHECK(answered == pid);
  }
  v1::ListProcsResponse list;
  REQUIRE(host->List(&list).ok());
  CHECK(list.procs_size() == 1);
  if (!host->cgroup_dir().empty()) {
    CHECK(host->CgroupPids() == std::vector<pid_t>{pid});
  }

  REQUIRE(host->Kill9().ok());
  REQUIRE(host->Restart().ok());
  // At once: the proc may not have rejoined yet.
  std::vector<std::pair<bool, pid_t>> second = create_100();
  std::vector<std::string> missing = AwaitReadopted(*host, {{"only", pid}});
  INFO(host->HostdLog());
  CHECK(missing.empty());
  for (const auto& [ok, answered] : second) {
    CHECK(ok);
    if (answered != 0) CHECK(answered == pid);
  }
  REQUIRE(host->List(&list).ok());
  REQUIRE(list.procs_size() == 1);
  CHECK(list.procs(0).pid() == pid);
  CHECK(list.procs(0).status() == v1::RUNNING);
  if (!host->cgroup_dir().empty()) {
    CHECK(host->CgroupPids() == std::vector<pid_t>{pid});
  }
}

TEST_CASE(
    "kill -9 of hostd the moment a wait says RUNNING leaves every procd "
    "alive until its orphan deadline, and a restart re-adopts them all") {
  constexpr absl::Duration kOrphan = absl::Seconds(15);
  auto host = RestartableHost::Create(HostOptions(kOrphan));
  REQUIRE(host->Start().ok());
  const std::vector<std::string> names = Names("fresh", 48);
  for (size_t i = 0; i < names.size(); ++i) {
    v1::ProcState state;
    REQUIRE(host->Create(names[i], i, {}, &state).ok());
  }
  v1::WaitProcsResponse waited =
      host->Wait(names, v1::RUNNING, absl::Seconds(60));
  // The moment it says so.
  REQUIRE(host->Kill9().ok());
  const absl::Time killed = absl::Now();
  INFO(waited.DebugString());
  REQUIRE_FALSE(waited.timed_out());
  std::map<std::string, pid_t> pids;
  for (const v1::ProcState& proc : waited.procs()) {
    REQUIRE(proc.status() == v1::RUNNING);
    pids[proc.name()] = proc.pid();
    host->Track(proc.pid());
  }
  // A third of the deadline: a procd that did not know it was accepted
  // would have exited at once.
  const absl::Time check_until = killed + kOrphan / 3;
  std::vector<std::string> exited;
  for (const auto& [name, pid] : pids) {
    if (WaitGone(pid,
                 std::max(check_until - absl::Now(), absl::ZeroDuration()))) {
      exited.push_back(absl::StrCat(name, " (pid ", pid, ")"));
    }
  }
  INFO("exited before the deadline: " << absl::StrJoin(exited, ", "));
  CHECK(exited.empty());

  REQUIRE(host->Restart().ok());
  std::vector<std::string> missing = AwaitReadopted(*host, pids);
  INFO("not re-adopted: " << absl::StrJoin(missing, ", ") << "\n"
                          << host->HostdLog());
  CHECK(missing.empty());
}

TEST_CASE(
    "SIGHUP makes hostd reload its tokens file and keep running with its "
    "procs; SIGUSR2 makes it exit 0 leaving its procs alive, and the next "
    "hostd re-adopts them") {
  RestartableHost::Options options = HostOptions(kRestartOrphan);
  options.tokens_file = true;
  auto host = RestartableHost::Create(options);
  REQUIRE(host->Start().ok());
  const pid_t hostd = host->pid();
  const std::vector<std::string> names = Names("hup", 4);
  std::map<std::string, pid_t> pids = SpawnRunning(*host, names, DefaultProcd);
  for (int i = 0; i < 4; ++i) {
    REQUIRE(MakeCounter(*host, names[i]).ok());
    REQUIRE(CallCounter(*host, names[i], i + 1).ok());
  }
  const std::string first_line =
      absl::StrCat("test-admin admin ", host->credentials().token, "\n");

  // A token added to the file works after SIGHUP, not before.
  const std::string late_token = "late-token-0123456789abcdef";
  CHECK(HostInfoWith(*host, late_token).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  REQUIRE(ReplaceFile(host->tokens_file(),
                      first_line + "late-admin admin " + late_token + "\n"));
  REQUIRE(host->Signal(SIGHUP).ok());
  absl::Time deadline = absl::Now() + kSlack;
  grpc::Status late = HostInfoWith(*host, late_token);
  while (!late.ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
    late = HostInfoWith(*host, late_token);
  }
  INFO(late.error_message() << "\n" << host->HostdLog());
  CHECK(late.ok());
  CHECK(host->running());
  CHECK(HostInfoWith(*host, host->credentials().token).ok());

  // A tokens file that does not parse keeps the tokens hostd had.
  REQUIRE(ReplaceFile(host->tokens_file(), "this is not a tokens file\n"));
  REQUIRE(host->Signal(SIGHUP).ok());
  absl::SleepFor(absl::Seconds(1));
  CHECK(host->running());
  {
    grpc::Status kept = HostInfoWith(*host, late_token);
    INFO(kept.error_code() << " " << kept.error_message() << "\n"
                           << host->HostdLog());
    CHECK(kept.ok());
  }
  CHECK(HostInfoWith(*host, host->credentials().token).ok());
  CHECK(host->pid() == hostd);
  for (int i = 0; i < 4; ++i) {
    INFO(names[i]);
    CHECK(IsAlive(pids[names[i]]));
    absl::StatusOr<int64_t> value = CallCounter(*host, names[i], std::nullopt);
    CHECK(value.ok());
    if (value.ok()) CHECK(*value == i + 1);
  }

  // The restart signal: hostd exits 0 and leaves its procs running.
  REQUIRE(ReplaceFile(host->tokens_file(), first_line));
  REQUIRE(host->Signal(SIGUSR2).ok());
  absl::StatusOr<ExitInfo> exit = host->WaitExit(kSlack);
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == std::optional<int>(0));
  absl::SleepFor(absl::Seconds(1));
  for (const auto& [name, pid] : pids) {
    INFO(name);
    CHECK(IsAlive(pid));
  }
  REQUIRE(host->Restart().ok());
  std::vector<std::string> missing = AwaitReadopted(*host, pids);
  INFO("not re-adopted: " << absl::StrJoin(missing, ", ") << "\n"
                          << host->HostdLog());
  CHECK(missing.empty());
  for (int i = 0; i < 4; ++i) {
    INFO(names[i]);
    absl::StatusOr<int64_t> value = CallCounter(*host, names[i], std::nullopt);
    CHECK(value.ok());
    if (value.ok()) CHECK(*value == i + 1);
  }
}

}  // namespace
}  // namespace mesh
