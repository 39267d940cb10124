#include "lib/process/supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/cgroup.h"
#include "lib/process/process_identity.h"
#include "lib/process/testing.h"
#include "lib/testing/skip.h"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

using testing::ChildGuard;
using testing::Eventually;
using testing::IgnoresSigterm;
using testing::KillAndReap;
using testing::PathExists;
using testing::PidfdExited;
using testing::PidfdOpen;
using testing::PidsIn;
using testing::ReadFile;
using testing::SessionOf;
using testing::StartSleeper;
using testing::SubtreeGuard;
using testing::UniqueName;

constexpr absl::Duration kDeadline = absl::Seconds(30);

// Collects one ExitInfo and signals when it arrives.
struct ExitWaiter {
  absl::Notification done;
  ExitInfo info;
  int calls = 0;
  ProcessSupervisor::ExitCallback Callback() {
    return [this](const ExitInfo& i) {
      info = i;
      ++calls;
      done.Notify();
    };
  }
  bool Wait() { return done.WaitForNotificationWithTimeout(kDeadline); }
};

std::unique_ptr<ProcessSupervisor> NewSupervisor() {
  auto supervisor = ProcessSupervisor::Create();
  REQUIRE(supervisor.ok());
  return std::move(*supervisor);
}

SpawnOptions Shell(const std::string& script) {
  SpawnOptions options;
  options.path = "/bin/sh";
  options.args = {"-c", script};
  return options;
}

// True once `pid` no longer exists or is only a zombie (which init reaps).
bool ProcessGone(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  if (absl::IsNotFound(stat.status())) return true;
  return stat.ok() && (stat->state == 'Z' || stat->state == 'X');
}

bool EventuallyGone(pid_t pid) {
  return Eventually([&] { return ProcessGone(pid); }, kDeadline);
}

// Waits until `pid`'s stderr tail is non-empty and returns it.
std::string WaitForStderr(ProcessSupervisor& supervisor, pid_t pid) {
  absl::Time deadline = absl::Now() + kDeadline;
  std::string tail;
  while ((tail = supervisor.StderrTail(pid)).empty() &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  return tail;
}

int CountOpenFds() {
  int count = 0;
  DIR* dir = opendir("/proc/self/fd");
  REQUIRE(dir != nullptr);
  while (struct dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

TEST_CASE("a child's exit code, stderr tail and stdout log are reported") {
  testing::TempDir temp;
  std::string dir = temp.path() + "/logs/nested";
  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  SpawnOptions options = Shell("echo to-stdout; echo oops >&2; exit 3");
  options.log_dir = dir;
  auto pid = supervisor->Spawn(options, waiter.Callback());
  REQUIRE(pid.ok());
  CHECK(*pid > 0);
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.pid == *pid);
  REQUIRE(waiter.info.exit_code.has_value());
  CHECK(*waiter.info.exit_code == 3);
  CHECK_FALSE(waiter.info.term_signal.has_value());
  CHECK(waiter.info.stderr_tail == "oops\n");
  CHECK(ReadFile(dir + "/stdout.log") == "to-stdout\n");
  CHECK(ReadFile(dir + "/stderr.log") == "oops\n");
  // The logs are the supervisor's user's alone.
  struct stat st;
  REQUIRE(stat((dir + "/stdout.log").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  REQUIRE(stat((temp.path() + "/logs").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  // Reaped before the callback: no zombie is left.
  CHECK(access(absl::StrCat("/proc/", *pid).c_str(), F_OK) != 0);
  CHECK(supervisor->LivePids().empty());
}

TEST_CASE(
    "log dirs and files get their modes and group whatever the umask and "
    "whatever they had") {
  testing::TempDir temp;
  std::string parent = temp.path() + "/logs";
  std::string dir = parent + "/p";
  REQUIRE(mkdir(parent.c_str(), 0755) == 0);
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  REQUIRE(chmod(dir.c_str(), 02755) == 0);
  std::string old_log = dir + "/stdout.log";
  int fd = open(old_log.c_str(), O_WRONLY | O_CREAT, 0666);
  REQUIRE(fd >= 0);
  REQUIRE(fchmod(fd, 0666) == 0);
  close(fd);
  // root may give files any group; anyone else, its own.
  const gid_t group = geteuid() == 0 ? 65534 : getegid();
  auto supervisor = NewSupervisor();
  mode_t mask = umask(077);  // Would take the group's bits away.
  for (bool with_group : {true, false}) {
    INFO("log_group " << (with_group ? std::to_string(group) : "unset"));
    ExitWaiter waiter;
    SpawnOptions options = Shell("echo hi");
    options.log_dir = dir;
    if (with_group) options.log_group = group;
    REQUIRE(supervisor->Spawn(options, waiter.Callback()).ok());
    REQUIRE(waiter.Wait());
    struct stat st;
    REQUIRE(stat(dir.c_str(), &st) == 0);
    // The setgid bit is gone either way.
    CHECK((st.st_mode & 07777) == (with_group ? 0750 : 0700));
    CHECK(st.st_gid == group);  // Kept when no group is asked for.
    for (const char* log : {"/stdout.log", "/stderr.log"}) {
      REQUIRE(stat((dir + log).c_str(), &st) == 0);
      CHECK((st.st_mode & 07777) == (with_group ? 0640 : 0600));
      CHECK(st.st_gid == group);
    }
  }
  // Directories it creates get the group too.
  ExitWaiter waiter;
  SpawnOptions options = Shell("echo hi");
  options.log_dir = temp.path() + "/new/q";
  options.log_group = group;
  REQUIRE(supervisor->Spawn(options, waiter.Callback()).ok());
  REQUIRE(waiter.Wait());
  for (const std::string& created : {temp.path() + "/new", options.log_dir}) {
    struct stat st;
    REQUIRE(stat(created.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0750);
    CHECK(st.st_gid == group);
  }
  umask(mask);
}

TEST_CASE("a log that is a symlink is not followed") {
  testing::TempDir temp;
  std::string dir = temp.path() + "/logs";
  REQUIRE(mkdir(dir.c_str(), 0700) == 0);
  std::string target = temp.path() + "/elsewhere";
  REQUIRE(symlink(target.c_str(), (dir + "/stdout.log").c_str()) == 0);
  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  SpawnOptions options = Shell("echo hi");
  options.log_dir = dir;
  auto pid = supervisor->Spawn(options, waiter.Callback());
  CHECK_FALSE(pid.ok());
  CHECK(access(target.c_str(), F_OK) != 0);
}

TEST_CASE("the stderr tail keeps only the last bytes") {
  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  SpawnOptions options =
      Shell("head -c 10000 /dev/zero | tr '\\0' a >&2; printf END >&2");
  options.stderr_tail_bytes = 100;
  REQUIRE(supervisor->Spawn(options, waiter.Callback()).ok());
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.stderr_tail == std::string(97, 'a') + "END");
}

TEST_CASE("the environment is inherited and overridden") {
  testing::TempDir temp;
  std::string dir = temp.path();
  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  setenv("SUPERVISOR_TEST_KEEP", "kept", 1);
  SpawnOptions options =
      Shell("echo \"$SUPERVISOR_TEST_KEEP $SUPERVISOR_TEST_NEW\"");
  options.env["SUPERVISOR_TEST_NEW"] = "new";
  options.log_dir = dir;
  REQUIRE(supervisor->Spawn(options, waiter.Callback()).ok());
  REQUIRE(waiter.Wait());
  CHECK(ReadFile(dir + "/stdout.log") == "kept new\n");
}

TEST_CASE("a child starts with no blocked and no ignored signals") {
  testing::TempDir temp;
  std::string dir = temp.path();
  // The supervisor thread inherits this thread's mask and dispositions.
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGTERM);
  REQUIRE(pthread_sigmask(SIG_BLOCK, &block, &old_mask) == 0);
  struct sigaction ignore = {}, old_action;
  ignore.sa_handler = SIG_IGN;
  REQUIRE(sigaction(SIGPIPE, &ignore, &old_action) == 0);
  auto supervisor = NewSupervisor();
  REQUIRE(pthread_sigmask(SIG_SETMASK, &old_mask, nullptr) == 0);
  ExitWaiter waiter;
  SpawnOptions options;
  options.path = "/bin/grep";
  options.args = {"-E", "^Sig(Blk|Ign)", "/proc/self/status"};
  options.log_dir = dir;
  REQUIRE(supervisor->Spawn(options, waiter.Callback()).ok());
  REQUIRE(waiter.Wait());
  REQUIRE(sigaction(SIGPIPE, &old_action, nullptr) == 0);
  CHECK(waiter.info.exit_code == 0);
  std::vector<std::string> lines =
      absl::StrSplit(ReadFile(dir + "/stdout.log"), '\n', absl::SkipEmpty());
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "SigBlk:\t0000000000000000");
  // glibc's posix_spawn leaves its internal signals 32 and 33 ignored.
  REQUIRE(lines[1].rfind("SigIgn:\t", 0) == 0);
  uint64_t ignored = std::stoull(lines[1].substr(8), nullptr, 16);
  CHECK((ignored & ~((uint64_t{1} << 31) | (uint64_t{1} << 32))) == 0);
}

TEST_CASE("Spawn from an exit callback fails instead of deadlocking") {
  auto supervisor = NewSupervisor();
  absl::Notification done;
  absl::StatusCode code = absl::StatusCode::kOk;
  SpawnOptions options;
  options.path = "/bin/true";
  REQUIRE(supervisor
              ->Spawn(options,
                      [&](const ExitInfo&) {
                        code =
                            supervisor->Spawn(options, nullptr).status().code();
                        done.Notify();
                      })
              .ok());
  REQUIRE(done.WaitForNotificationWithTimeout(kDeadline));
  CHECK(code == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("a group SIGKILL is reported as signal 9 and kills grandchildren") {
  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  auto pid = supervisor->Spawn(Shell("sleep 1000 & echo $! >&2; wait"),
                               waiter.Callback());
  REQUIRE(pid.ok());
  std::string tail = WaitForStderr(*supervisor, *pid);
  pid_t grandchild = std::atoi(tail.c_str());
  REQUIRE(grandchild > 0);
  CHECK(kill(grandchild, 0) == 0);
  REQUIRE(supervisor->SignalGroup(*pid, SIGKILL).ok());
  REQUIRE(waiter.Wait());
  REQUIRE(waiter.info.term_signal.has_value());
  CHECK(*waiter.info.term_signal == SIGKILL);
  CHECK_FALSE(waiter.info.exit_code.has_value());
  CHECK(EventuallyGone(grandchild));
  CHECK(supervisor->SignalGroup(*pid, SIGKILL).code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("a grandchild is killed when its leader exits on its own") {
  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  // The grandchild keeps the pipes open; the exit must not wait for them.
  auto pid = supervisor->Spawn(Shell("sleep 1000 & echo $! >&2; exit 0"),
                               waiter.Callback());
  REQUIRE(pid.ok());
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.exit_code == 0);
  pid_t grandchild = std::atoi(waiter.info.stderr_tail.c_str());
  REQUIRE(grandchild > 0);
  CHECK(EventuallyGone(grandchild));
}

TEST_CASE("signalling an unknown pid is NOT_FOUND") {
  auto supervisor = NewSupervisor();
  CHECK(supervisor->SignalGroup(getpid(), 0).code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("a child writing megabytes to stdout never blocks") {
  testing::TempDir temp;
  std::string dir = temp.path();
  auto supervisor = NewSupervisor();
  ExitWaiter logged, dropped;
  SpawnOptions options = Shell("head -c 3000000 /dev/zero");
  options.log_dir = dir;
  REQUIRE(supervisor->Spawn(options, logged.Callback()).ok());
  REQUIRE(
      supervisor->Spawn(Shell("head -c 3000000 /dev/zero"), dropped.Callback())
          .ok());
  REQUIRE(logged.Wait());
  REQUIRE(dropped.Wait());
  CHECK(logged.info.exit_code == 0);
  CHECK(dropped.info.exit_code == 0);
  CHECK(ReadFile(dir + "/stdout.log").size() == 3000000);
}

TEST_CASE("a missing executable is a Spawn error, not an exit") {
  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  SpawnOptions options;
  options.path = "/nonexistent/hostmesh-no-such-binary";
  auto pid = supervisor->Spawn(options, waiter.Callback());
  REQUIRE_FALSE(pid.ok());
  CHECK(pid.status().code() == absl::StatusCode::kNotFound);
  CHECK(std::string(pid.status().message()).find(options.path) !=
        std::string::npos);
  CHECK(supervisor->LivePids().empty());
  supervisor.reset();
  CHECK(waiter.calls == 0);
}

TEST_CASE("a non-executable file or a relative path is a Spawn error") {
  testing::TempDir temp;
  std::string file = temp.path() + "/not-executable";
  std::ofstream(file) << "#!/bin/sh\n";
  REQUIRE(chmod(file.c_str(), 0644) == 0);
  auto supervisor = NewSupervisor();
  SpawnOptions options;
  options.path = file;
  auto pid = supervisor->Spawn(options, nullptr);
  REQUIRE_FALSE(pid.ok());
  CHECK(pid.status().code() == absl::StatusCode::kFailedPrecondition);
  options.path = "bin/true";
  CHECK(supervisor->Spawn(options, nullptr).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(supervisor->LivePids().empty());
}

TEST_CASE("an inherited pipe is the child's fd 3 and nothing else leaks") {
  testing::TempDir temp;
  std::string dir = temp.path();
  auto supervisor = NewSupervisor();
  int fds[2];
  REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
  // Opened without close-on-exec: must still not reach the child.
  int stray = open("/dev/null", O_RDONLY);
  REQUIRE(stray >= 0);
  ExitWaiter waiter;
  // The shell's own descriptors, listed by ls (a separate process).
  SpawnOptions options = Shell("cat <&3; echo; ls /proc/$$/fd | sort -n");
  options.inherit_fds = {{fds[0], 3}};
  options.log_dir = dir;
  auto pid = supervisor->Spawn(options, waiter.Callback());
  close(fds[0]);
  close(stray);
  REQUIRE(pid.ok());
  REQUIRE(write(fds[1], "hello", 5) == 5);
  close(fds[1]);
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.exit_code == 0);
  CHECK(ReadFile(dir + "/stdout.log") == "hello\n0\n1\n2\n3\n");
}

TEST_CASE("an inherited fd keeps its number when source equals destination") {
  testing::TempDir temp;
  std::string dir = temp.path();
  auto supervisor = NewSupervisor();
  // A free single-digit fd, so the shell can redirect from it.
  int number = 9;
  while (number > 3 && fcntl(number, F_GETFD) >= 0) --number;
  REQUIRE(number > 3);
  int fds[2];
  REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
  REQUIRE(dup3(fds[0], number, O_CLOEXEC) == number);
  close(fds[0]);
  ExitWaiter waiter;
  SpawnOptions options = Shell(absl::StrCat("cat <&", number));
  options.inherit_fds = {{number, number}};
  options.log_dir = dir;
  auto pid = supervisor->Spawn(options, waiter.Callback());
  close(number);
  REQUIRE(pid.ok());
  REQUIRE(write(fds[1], "same", 4) == 4);
  close(fds[1]);
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.exit_code == 0);
  CHECK(ReadFile(dir + "/stdout.log") == "same");
}

TEST_CASE("inherited fds whose numbers cross are all delivered") {
  testing::TempDir temp;
  std::string dir = temp.path();
  auto supervisor = NewSupervisor();
  int a[2], b[2];
  REQUIRE(pipe2(a, O_CLOEXEC) == 0);
  REQUIRE(pipe2(b, O_CLOEXEC) == 0);
  ExitWaiter waiter;
  // Each source is the other's destination.
  SpawnOptions options = Shell(
      absl::StrCat("cat /proc/self/fd/", b[0], "; cat /proc/self/fd/", a[0]));
  options.inherit_fds = {{a[0], b[0]}, {b[0], a[0]}};
  options.log_dir = dir;
  auto pid = supervisor->Spawn(options, waiter.Callback());
  close(a[0]);
  close(b[0]);
  REQUIRE(pid.ok());
  REQUIRE(write(a[1], "A", 1) == 1);
  REQUIRE(write(b[1], "B", 1) == 1);
  close(a[1]);
  close(b[1]);
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.exit_code == 0);
  CHECK(ReadFile(dir + "/stdout.log") == "AB");
}

TEST_CASE("the destructor kills and reaps a running child") {
  ExitWaiter waiter;
  pid_t pid;
  {
    auto supervisor = NewSupervisor();
    SpawnOptions options;
    options.path = "/bin/sleep";
    options.args = {"1000"};
    auto spawned = supervisor->Spawn(options, waiter.Callback());
    REQUIRE(spawned.ok());
    pid = *spawned;
    CHECK(supervisor->LivePids() == std::vector<pid_t>{pid});
  }
  CHECK(waiter.done.HasBeenNotified());
  CHECK(waiter.calls == 1);
  CHECK(waiter.info.term_signal == SIGKILL);
  CHECK(access(absl::StrCat("/proc/", pid).c_str(), F_OK) != 0);
}

TEST_CASE("concurrent spawns from several threads are all reported") {
  int fds_before = CountOpenFds();
  {
    auto supervisor = NewSupervisor();
    constexpr int kThreads = 4;
    constexpr int kPerThread = 8;
    absl::Mutex mutex;
    std::vector<pid_t> exited;
    int failures = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < kPerThread; ++i) {
          SpawnOptions options;
          options.path = "/bin/true";
          auto pid = supervisor->Spawn(options, [&](const ExitInfo& info) {
            absl::MutexLock lock(&mutex);
            if (info.exit_code != 0) ++failures;
            exited.push_back(info.pid);
          });
          if (!pid.ok()) {
            absl::MutexLock lock(&mutex);
            ++failures;
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    absl::MutexLock lock(&mutex);
    auto all_exited = [&] {
      return exited.size() + failures >= kThreads * kPerThread;
    };
    CHECK(mutex.AwaitWithTimeout(absl::Condition(&all_exited), kDeadline));
    CHECK(failures == 0);
    CHECK(exited.size() == kThreads * kPerThread);
  }
  CHECK(CountOpenFds() == fds_before);
}

TEST_CASE("no descriptor leaks after children with logs and a destructor") {
  testing::TempDir temp;
  std::string dir = temp.path();
  int fds_before = CountOpenFds();
  {
    auto supervisor = NewSupervisor();
    ExitWaiter done;
    SpawnOptions options = Shell("echo out; echo err >&2");
    options.log_dir = dir;
    REQUIRE(supervisor->Spawn(options, done.Callback()).ok());
    REQUIRE(done.Wait());
    SpawnOptions sleeper;
    sleeper.path = "/bin/sleep";
    sleeper.args = {"1000"};
    sleeper.log_dir = dir;
    REQUIRE(supervisor->Spawn(sleeper, nullptr).ok());
    SpawnOptions missing;
    missing.path = "/nonexistent/binary";
    missing.log_dir = dir;
    REQUIRE_FALSE(supervisor->Spawn(missing, nullptr).ok());
  }
  CHECK(CountOpenFds() == fds_before);
}

// ---------------------------------------------------------------------------
// Restart without loss (issue 9): files, Release, Adopt, leaves, subreaper.

std::string ReadLink(const std::string& path) {
  char buf[4096];
  ssize_t n = readlink(path.c_str(), buf, sizeof(buf));
  return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
}

TEST_CASE(
    "with a log_dir the child writes its own files, and output written after "
    "Release still lands") {
  testing::TempDir temp;
  const std::string dir = temp.path() + "/logs";
  REQUIRE(mkdir(dir.c_str(), 0700) == 0);
  const std::string earlier = "an earlier proc's line\n";
  { std::ofstream(dir + "/stderr.log") << earlier; }
  int go[2];
  REQUIRE(pipe2(go, O_CLOEXEC) == 0);
  ExitWaiter waiter;
  auto supervisor = NewSupervisor();
  SpawnOptions options = Shell(
      "echo out-1; echo err-1 >&2; read x <&3; echo \"out-2 $x\"; "
      "echo err-2 >&2; exit 5");
  options.log_dir = dir;
  options.inherit_fds = {{go[0], 3}};
  auto pid = supervisor->Spawn(options, waiter.Callback());
  close(go[0]);
  REQUIRE(pid.ok());
  ChildGuard guard(*pid);
  // stdout and stderr are the files themselves, not pipes to us.
  CHECK(ReadLink(absl::StrCat("/proc/", *pid, "/fd/1")) == dir + "/stdout.log");
  CHECK(ReadLink(absl::StrCat("/proc/", *pid, "/fd/2")) == dir + "/stderr.log");
  // The tail starts where the file ended at the spawn.
  CHECK(WaitForStderr(*supervisor, *pid) == "err-1\n");
  auto record = supervisor->AdoptOptionsFor(*pid);
  REQUIRE(record.has_value());
  CHECK(record->pid == *pid);
  CHECK(record->start_time == ProcessStartTime(*pid).value_or(0));
  CHECK(record->stderr_offset == earlier.size());
  CHECK(record->log_dir == dir);
  CHECK(record->cgroup_dir.empty());

  supervisor->Release();
  CHECK(supervisor->LivePids().empty());
  CHECK(supervisor->SignalGroup(*pid, 0).code() == absl::StatusCode::kNotFound);
  CHECK(supervisor->Spawn(Shell("true"), nullptr).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(supervisor->Adopt(*record, nullptr).code() ==
        absl::StatusCode::kFailedPrecondition);
  supervisor.reset();  // Kills nothing.
  CHECK_FALSE(ProcessGone(*pid));

  REQUIRE(write(go[1], "go\n", 3) == 3);
  close(go[1]);
  int status = 0;
  REQUIRE(waitpid(*pid, &status, 0) == *pid);  // Still this test's child.
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 5);  // Its writes did not fail.
  CHECK(waiter.calls == 0);
  CHECK(ReadFile(dir + "/stdout.log") == "out-1\nout-2 go\n");
  CHECK(ReadFile(dir + "/stderr.log") == earlier + "err-1\nerr-2\n");
}

TEST_CASE("Release kills nothing, also when called from an exit callback") {
  auto supervisor = NewSupervisor();
  ExitWaiter sleeper_exit;
  SpawnOptions sleeper;
  sleeper.path = "/bin/sleep";
  sleeper.args = {"1000"};
  auto sleeping = supervisor->Spawn(sleeper, sleeper_exit.Callback());
  REQUIRE(sleeping.ok());
  ChildGuard guard(*sleeping);
  absl::Notification released;
  absl::StatusCode spawn_after = absl::StatusCode::kOk;
  REQUIRE(supervisor
              ->Spawn(Shell("exit 0"),
                      [&](const ExitInfo&) {
                        supervisor->Release();
                        released.Notify();
                      })
              .ok());
  REQUIRE(released.WaitForNotificationWithTimeout(kDeadline));
  CHECK(Eventually([&] { return supervisor->LivePids().empty(); }, kDeadline));
  spawn_after = supervisor->Spawn(sleeper, nullptr).status().code();
  CHECK(spawn_after == absl::StatusCode::kFailedPrecondition);
  supervisor.reset();
  CHECK(sleeper_exit.calls == 0);
  CHECK_FALSE(ProcessGone(*sleeping));
}

TEST_CASE(
    "an adopted process's end is seen, its status unknown and its tail read "
    "from its file") {
  testing::TempDir temp;
  const std::string dir = temp.path();
  { std::ofstream(dir + "/stderr.log") << "old\n"; }
  int go[2];
  REQUIRE(pipe2(go, O_CLOEXEC) == 0);
  // Started by an earlier supervisor (an earlier hostd) that let it go.
  auto earlier = NewSupervisor();
  SpawnOptions options =
      Shell("echo err-1 >&2; read x <&3; echo \"err-2 $x\" >&2; exit 5");
  options.log_dir = dir;
  options.inherit_fds = {{go[0], 3}};
  auto pid = earlier->Spawn(options, nullptr);
  close(go[0]);
  REQUIRE(pid.ok());
  ChildGuard guard(*pid);
  REQUIRE(WaitForStderr(*earlier, *pid) == "err-1\n");
  auto record = earlier->AdoptOptionsFor(*pid);
  REQUIRE(record.has_value());
  earlier->Release();
  earlier.reset();

  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  REQUIRE(supervisor->Adopt(*record, waiter.Callback()).ok());
  CHECK(supervisor->LivePids() == std::vector<pid_t>{*pid});
  CHECK(supervisor->StderrTail(*pid) == "err-1\n");
  CHECK(supervisor->Adopt(*record, nullptr).code() ==
        absl::StatusCode::kAlreadyExists);
  auto again = supervisor->AdoptOptionsFor(*pid);
  REQUIRE(again.has_value());
  CHECK(again->start_time == record->start_time);
  CHECK(again->stderr_offset == 4);

  SECTION("it exits by itself") {
    REQUIRE(write(go[1], "go\n", 3) == 3);
    REQUIRE(waiter.Wait());
    CHECK(waiter.info.stderr_tail == "err-1\nerr-2 go\n");
  }
  SECTION("SignalGroup reaches it") {
    REQUIRE(supervisor->SignalGroup(*pid, SIGTERM).ok());
    REQUIRE(waiter.Wait());
    CHECK(waiter.info.stderr_tail == "err-1\n");
  }
  CHECK(waiter.info.pid == *pid);
  CHECK(waiter.info.status_unknown);
  CHECK_FALSE(waiter.info.exit_code.has_value());
  CHECK_FALSE(waiter.info.term_signal.has_value());
  CHECK(waiter.calls == 1);
  CHECK(supervisor->LivePids().empty());
  close(go[1]);
}

TEST_CASE(
    "Adopt refuses another process's start time, a zombie and no process") {
  auto supervisor = NewSupervisor();
  pid_t pid = StartSleeper();
  ChildGuard guard(pid);
  auto start = ProcessStartTime(pid);
  REQUIRE(start.ok());
  AdoptOptions options;
  options.pid = pid;
  options.start_time = *start + 1;
  absl::Status other = supervisor->Adopt(options, nullptr);
  CHECK(absl::IsFailedPrecondition(other));
  CHECK_THAT(std::string(other.message()),
             Catch::Contains(absl::StrCat("pid ", pid, " is another process")));
  options.start_time = *start;
  REQUIRE(kill(pid, SIGKILL) == 0);
  siginfo_t info = {};
  REQUIRE(waitid(P_PID, pid, &info, WEXITED | WNOWAIT) == 0);
  CHECK(absl::IsNotFound(supervisor->Adopt(options, nullptr)));  // A zombie.
  KillAndReap(pid);
  CHECK(absl::IsNotFound(supervisor->Adopt(options, nullptr)));
  CHECK(supervisor->LivePids().empty());
}

TEST_CASE("a decoy given a dead proc's pid is refused and never signalled") {
  if (geteuid() != 0) {
    HOSTMESH_SKIP("clone3 set_tid needs root (euid " << geteuid() << ")");
  }
  auto earlier = NewSupervisor();
  SpawnOptions sleeper;
  sleeper.path = "/bin/sleep";
  sleeper.args = {"1000"};
  auto pid = earlier->Spawn(sleeper, nullptr);
  REQUIRE(pid.ok());
  std::optional<AdoptOptions> record;
  {
    ChildGuard guard(*pid);  // Killed and reaped at the end of this block.
    record = earlier->AdoptOptionsFor(*pid);
    earlier->Release();
    earlier.reset();
    // The proc dies while no hostd runs; its pid goes to someone else.
  }
  REQUIRE(record.has_value());
  absl::SleepFor(absl::Milliseconds(30));  // Another clock tick.
  int decoy = testing::SpawnDecoyWithPid(*pid);
  if (decoy == -EPERM) HOSTMESH_SKIP("clone3 set_tid is not allowed (EPERM)");
  REQUIRE(decoy >= 0);
  ChildGuard decoy_guard = ChildGuard::OfPidfd(decoy);

  auto supervisor = NewSupervisor();
  ExitWaiter waiter;
  absl::Status adopted = supervisor->Adopt(*record, waiter.Callback());
  CHECK(absl::IsFailedPrecondition(adopted));
  CHECK_THAT(std::string(adopted.message()),
             Catch::Contains("is another process"));
  CHECK(supervisor->SignalGroup(*pid, SIGKILL).code() ==
        absl::StatusCode::kNotFound);
  supervisor.reset();
  absl::SleepFor(absl::Milliseconds(50));
  CHECK_FALSE(PidfdExited(decoy));
  CHECK(waiter.calls == 0);
}

TEST_CASE("a subreaper reaps an orphaned grandchild, and only that") {
  int was = -1;
  REQUIRE(prctl(PR_GET_CHILD_SUBREAPER, &was, 0, 0, 0) == 0);
  REQUIRE(was == 0);
  auto created =
      ProcessSupervisor::Create(ProcessSupervisor::Options{.subreaper = true});
  REQUIRE(created.ok());
  std::unique_ptr<ProcessSupervisor> supervisor = std::move(*created);
  int is = 0;
  REQUIRE(prctl(PR_GET_CHILD_SUBREAPER, &is, 0, 0, 0) == 0);
  CHECK(is == 1);
  ExitWaiter waiter;
  // The grandchild escapes the group kill (new session), is orphaned when
  // the leader exits, is reparented here and exits a little later.
  auto pid = supervisor->Spawn(
      Shell("setsid sh -c 'sleep 0.3; exit 0' & echo $! >&2; exit 7"),
      waiter.Callback());
  REQUIRE(pid.ok());
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.exit_code == 7);  // The tracked child's own status.
  pid_t grandchild = std::atoi(waiter.info.stderr_tail.c_str());
  REQUIRE(grandchild > 0);
  // Reaped: not even a zombie is left.
  CHECK(Eventually(
      [&] { return !PathExists(absl::StrCat("/proc/", grandchild)); },
      kDeadline));
  supervisor.reset();
  REQUIRE(prctl(PR_GET_CHILD_SUBREAPER, &is, 0, 0, 0) == 0);
  CHECK(is == 0);  // Cleared again.
  int status;
  waitpid(grandchild, &status, WNOHANG);  // If the check above failed.
}

// ---------------------------------------------------------------------------
// Leaves (root and cgroup v2; under CI these fail instead of skipping).

std::unique_ptr<ProcessSupervisor> NewSubreaper() {
  auto supervisor =
      ProcessSupervisor::Create(ProcessSupervisor::Options{.subreaper = true});
  REQUIRE(supervisor.ok());
  return std::move(*supervisor);
}

TEST_CASE(
    "in a cgroup leaf, a setsid escapee that ignores SIGTERM is gone when "
    "on_exit runs") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("escapee"));
  auto parent = root->Create(guard.dir());
  REQUIRE(parent.ok());
  testing::TempDir temp;
  const std::string leaf_dir = *parent + "/proc";
  // A subreaper: the escapees, orphaned, are reparented here and reaped.
  auto supervisor = NewSubreaper();
  // At on_exit: which of the leaf's processes had exited, and the leaf.
  std::vector<int> pidfds;
  int exited_at_exit = -1;
  bool leaf_at_exit = true;
  ExitWaiter waiter;
  auto on_exit = [&](const ExitInfo& info) {
    exited_at_exit = 0;
    for (int pidfd : pidfds) exited_at_exit += PidfdExited(pidfd) ? 1 : 0;
    leaf_at_exit = PathExists(leaf_dir);
    waiter.Callback()(info);
  };
  // sh, its sleep, and in a new session: sh ignoring SIGTERM and its sleep.
  SpawnOptions options =
      Shell("setsid sh -c 'trap \"\" TERM; sleep 1000; :' & sleep 1000; :");
  options.cgroup_parent = *parent;
  options.cgroup_name = "proc";
  options.log_dir = temp.path();
  auto pid = supervisor->Spawn(options, on_exit);
  REQUIRE(pid.ok());
  CHECK(CgroupOfPid(*pid).value_or("") == root->PathOf(leaf_dir));
  std::vector<pid_t> pids;
  REQUIRE(Eventually(
      [&] {
        pids = PidsIn(leaf_dir);
        if (pids.size() != 4) return false;
        int escaped = 0;
        for (pid_t p : pids) {
          if (SessionOf(p) != *pid && IgnoresSigterm(p)) ++escaped;
        }
        return escaped == 2;
      },
      kDeadline));
  INFO("pids in the leaf: " << absl::StrJoin(pids, " "));
  for (pid_t p : pids) {
    int pidfd = PidfdOpen(p);
    REQUIRE(pidfd >= 0);
    pidfds.push_back(pidfd);
  }
  bool adopted = false;
  SECTION("a spawned child") {
    auto record = supervisor->AdoptOptionsFor(*pid);
    REQUIRE(record.has_value());
    CHECK(record->cgroup_dir == leaf_dir);
  }
  SECTION("adopted after a Release") {
    auto record = supervisor->AdoptOptionsFor(*pid);
    REQUIRE(record.has_value());
    supervisor->Release();
    supervisor.reset();
    CHECK(PidsIn(leaf_dir).size() == 4);  // Release killed nothing.
    supervisor = NewSubreaper();
    // A sibling leaf is not its leaf.
    REQUIRE(mkdir((*parent + "/other").c_str(), 0755) == 0);
    AdoptOptions wrong_leaf = *record;
    wrong_leaf.cgroup_dir = *parent + "/other";
    absl::Status refused = supervisor->Adopt(wrong_leaf, nullptr);
    CHECK(absl::IsFailedPrecondition(refused));
    CHECK_THAT(std::string(refused.message()),
               Catch::Contains("is not in cgroup"));
    REQUIRE(supervisor->Adopt(*record, on_exit).ok());
    adopted = true;
  }
  REQUIRE(supervisor->SignalGroup(*pid, SIGTERM).ok());
  REQUIRE(waiter.Wait());
  CHECK(exited_at_exit == 4);
  CHECK_FALSE(leaf_at_exit);
  if (adopted) {
    CHECK(waiter.info.status_unknown);
  } else {
    CHECK(waiter.info.term_signal == SIGTERM);
  }
  // No memory controller for the leaf (as here): no OOM count.
  if (ReadFile(*parent + "/cgroup.subtree_control").find("memory") ==
      std::string::npos) {
    CHECK_FALSE(waiter.info.oom_kills.has_value());
  } else {
    CHECK(waiter.info.oom_kills == uint64_t{0});
  }
  supervisor.reset();
  for (size_t i = 0; i < pids.size(); ++i) {
    int status;
    waitpid(pids[i], &status, WNOHANG);  // Ours (subreaper) if not reaped.
    close(pidfds[i]);
  }
}

TEST_CASE(
    "with a leaf, a signal reaches a setsid escapee too, and SIGKILL takes "
    "the leaf") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("signal"));
  auto parent = root->Create(guard.dir());
  REQUIRE(parent.ok());
  testing::TempDir temp;
  const std::string leader_file = temp.path() + "/leader";
  const std::string escapee_file = temp.path() + "/escapee";
  auto supervisor = NewSubreaper();
  ExitWaiter waiter;
  // Both note SIGUSR1 and live on (their sleeps die of it and are rerun).
  SpawnOptions options = Shell(
      absl::StrCat("trap 'echo usr1 >> ", leader_file,
                   "' USR1; setsid sh -c 'trap \"echo usr1 >> ", escapee_file,
                   "\" USR1; while :; do sleep 0.05; done' & "
                   "while :; do sleep 0.05; done"));
  options.cgroup_parent = *parent;
  options.cgroup_name = "p";
  auto pid = supervisor->Spawn(options, waiter.Callback());
  REQUIRE(pid.ok());
  std::vector<pid_t> escapees;
  REQUIRE(Eventually(
      [&] {
        escapees.clear();
        for (pid_t p : PidsIn(*parent + "/p")) {
          if (SessionOf(p) != *pid && SessionOf(p) > 0) escapees.push_back(p);
        }
        return !escapees.empty();
      },
      kDeadline));
  absl::SleepFor(absl::Milliseconds(100));  // Its trap is set.
  REQUIRE(supervisor->SignalGroup(*pid, SIGUSR1).ok());
  CHECK(Eventually(
      [&] { return ReadFile(escapee_file).find("usr1") != std::string::npos; },
      absl::Seconds(10)));
  CHECK(Eventually(
      [&] { return ReadFile(leader_file).find("usr1") != std::string::npos; },
      absl::Seconds(10)));
  CHECK_FALSE(waiter.done.HasBeenNotified());

  std::vector<pid_t> pids = PidsIn(*parent + "/p");
  std::vector<int> pidfds;
  for (pid_t p : pids) {
    int pidfd = PidfdOpen(p);
    if (pidfd >= 0) pidfds.push_back(pidfd);
  }
  REQUIRE(supervisor->SignalGroup(*pid, SIGKILL).ok());
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.term_signal == SIGKILL);
  for (int pidfd : pidfds) {
    CHECK(PidfdExited(pidfd));
    close(pidfd);
  }
  CHECK_FALSE(PathExists(*parent + "/p"));
  supervisor.reset();
  for (pid_t p : pids) {
    int status;
    waitpid(p, &status, WNOHANG);
  }
}

TEST_CASE("Spawn errors in a leaf name it and leave no leaf behind") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("errors"));
  auto parent = root->Create(guard.dir());
  REQUIRE(parent.ok());
  auto supervisor = NewSupervisor();
  SpawnOptions missing;
  missing.path = "/nonexistent/hostmesh-no-such-binary";
  missing.cgroup_parent = *parent;
  missing.cgroup_name = "p";
  auto failed = supervisor->Spawn(missing, nullptr);
  REQUIRE(absl::IsNotFound(failed.status()));
  CHECK_THAT(std::string(failed.status().message()),
             Catch::Contains(missing.path) && Catch::Contains(*parent + "/p"));
  CHECK_FALSE(PathExists(*parent + "/p"));

  SpawnOptions not_cgroup = Shell("true");
  not_cgroup.cgroup_parent = "/tmp";
  not_cgroup.cgroup_name = "p";
  auto refused = supervisor->Spawn(not_cgroup, nullptr);
  CHECK(absl::IsFailedPrecondition(refused.status()));
  CHECK_THAT(std::string(refused.status().message()), Catch::Contains("/tmp"));

  SpawnOptions half = Shell("true");
  half.cgroup_name = "p";
  CHECK(absl::IsInvalidArgument(supervisor->Spawn(half, nullptr).status()));
  CHECK(supervisor->LivePids().empty());
}

}  // namespace
}  // namespace mesh

namespace mesh {
namespace {

TEST_CASE(
    "a child forked from a template is supervised like a spawned one: its "
    "logs, inherited descriptors, exit code and reaping") {
  auto tmpl = ProcessTemplate::Start(testing::TemplateChildPath());
  REQUIRE(tmpl.ok());
  auto supervisor = NewSupervisor();
  testing::TempDir temp;
  int extra[2];
  REQUIRE(pipe2(extra, O_CLOEXEC) == 0);
  ExitWaiter waiter;
  SpawnOptions options;
  options.path = testing::TemplateChildPath();
  options.args = {"5"};
  options.env = {{"TEMPLATE_TEST_VAR", "per-spawn"}};
  options.log_dir = temp.path();
  options.inherit_fds = {{extra[1], 4}};
  options.from_template = tmpl->get();
  auto pid = supervisor->Spawn(options, waiter.Callback());
  close(extra[1]);
  REQUIRE(pid.ok());
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.pid == *pid);
  CHECK(waiter.info.exit_code == std::optional<int>(5));
  CHECK(ReadFile(temp.path() + "/stdout.log") ==
        absl::StrCat("ppid=", getpid(), " pgid=", *pid, " pid=", *pid,
                     " var=per-spawn fds=0,1,2,4 blocked=0 sigterm=0 "
                     "comm=template_child cmdline=1\n"));
  close(extra[0]);
}

TEST_CASE(
    "when the template is gone the supervisor starts the child by exec "
    "instead") {
  auto tmpl = ProcessTemplate::Start(testing::TemplateChildPath());
  REQUIRE(tmpl.ok());
  const int template_pidfd = testing::PidfdOpen((*tmpl)->pid());
  REQUIRE(template_pidfd >= 0);
  REQUIRE(kill((*tmpl)->pid(), SIGKILL) == 0);
  REQUIRE(PidfdExited(template_pidfd, kDeadline));
  close(template_pidfd);

  auto supervisor = NewSupervisor();
  testing::TempDir temp;
  ExitWaiter waiter;
  SpawnOptions options;
  options.path = testing::TemplateChildPath();
  options.args = {"6"};
  options.log_dir = temp.path();
  options.from_template = tmpl->get();
  auto pid = supervisor->Spawn(options, waiter.Callback());
  REQUIRE(pid.ok());
  REQUIRE(waiter.Wait());
  CHECK(waiter.info.exit_code == std::optional<int>(6));
  // An exec'd child: its own command line (a fork shows the template's).
  CHECK_THAT(ReadFile(temp.path() + "/stdout.log"),
             Catch::Contains(absl::StrCat("pgid=", *pid, " pid=", *pid)) &&
                 Catch::EndsWith("cmdline=2\n"));
}

}  // namespace
}  // namespace mesh
