#include "lib/process/supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

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

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
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
  std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (stat.empty()) return true;
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() &&
         (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X');
}

bool EventuallyGone(pid_t pid) {
  absl::Time deadline = absl::Now() + kDeadline;
  while (!ProcessGone(pid)) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
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

}  // namespace
}  // namespace mesh
