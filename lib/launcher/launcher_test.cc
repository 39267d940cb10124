// The launcher with real child processes: registering_child (beside this
// test) registers back over the inherited channel the way hostd does.
#include "lib/launcher/launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "lib/bootstrap/registrar.h"
#include "lib/process/supervisor.h"
#include "lib/testing/sockets.h"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(30);

std::string RegisteringChild() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  REQUIRE(srcdir != nullptr);
  std::string path =
      absl::StrCat(srcdir, "/hostmesh/lib/launcher/registering_child");
  REQUIRE(access(path.c_str(), X_OK) == 0);
  return path;
}

std::unique_ptr<Launcher> MakeLauncher(const testing::TempDir& dir) {
  Launcher::Options options;
  options.log_root = dir.path() + "/logs";
  absl::StatusOr<std::unique_ptr<Launcher>> launcher =
      Launcher::Create(options);
  REQUIRE(launcher.ok());
  return *std::move(launcher);
}

TEST_CASE(
    "a failed launch leaves nothing behind: the name can be launched again") {
  testing::TempDir dir;
  auto launcher = MakeLauncher(dir);
  SpawnOptions missing;
  missing.path = "/no/such/hostd";
  absl::StatusOr<Launcher::Child> first =
      launcher->Launch("h", 0, missing, absl::Seconds(5));
  CHECK(first.status().code() == absl::StatusCode::kNotFound);
  // Not ALREADY_EXISTS: the failed launch was forgotten.
  absl::StatusOr<Launcher::Child> again =
      launcher->Launch("h", 0, missing, absl::Seconds(5));
  CHECK(again.status().code() == absl::StatusCode::kNotFound);
  // No entry is left for StopAll to wait on.
  CHECK(launcher->Signal("h", 9).code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a child that exits before registering is reported with its exit") {
  testing::TempDir dir;
  auto launcher = MakeLauncher(dir);
  SpawnOptions quits;
  quits.path = "/bin/sh";
  quits.args = {"-c", "echo no luck >&2; exit 4"};
  absl::StatusOr<Launcher::Child> child =
      launcher->Launch("q", 0, quits, kWait);
  CHECK(child.status().code() == absl::StatusCode::kUnavailable);
  CHECK(absl::StrContains(child.status().message(), "exited with code 4"));
  CHECK(absl::StrContains(child.status().message(), "no luck"));
}

TEST_CASE(
    "launched children register over their inherited channel, and the "
    "launcher listens on no socket") {
  testing::TempDir dir;
  auto launcher = MakeLauncher(dir);
  constexpr int kChildren = 4;
  for (int i = 0; i < kChildren; ++i) {
    SpawnOptions spawn;
    spawn.path = RegisteringChild();
    spawn.args = {absl::StrCat("127.0.0.1:", 7450 + i)};
    absl::StatusOr<Launcher::Child> child =
        launcher->Launch(absl::StrCat("h", i), i, spawn, kWait);
    REQUIRE(child.ok());
    CHECK(child->address == absl::StrCat("127.0.0.1:", 7450 + i));
    CHECK(child->pid > 0);
  }
  CHECK(testing::ListeningSockets(getpid()).empty());

  for (int i = 0; i < kChildren; ++i) {
    const std::string name = absl::StrCat("h", i);
    REQUIRE(launcher->AskStop(name, "test over", absl::Seconds(5)).ok());
    absl::StatusOr<ExitInfo> exit = launcher->WaitExit(name, kWait);
    REQUIRE(exit.ok());
    CHECK(exit->exit_code == 0);
    CHECK(absl::StrContains(exit->stderr_tail, "stopping (test over)"));
  }
  CHECK(launcher->AskStop("nobody", "", absl::Seconds(1)).code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("StopAll asks every registered child to stop, and they do") {
  testing::TempDir dir;
  auto launcher = MakeLauncher(dir);
  for (const char* name : {"a", "b"}) {
    SpawnOptions spawn;
    spawn.path = RegisteringChild();
    REQUIRE(launcher->Launch(name, 0, spawn, kWait).ok());
  }
  launcher->StopAll(kWait);
  for (const char* name : {"a", "b"}) {
    absl::StatusOr<ExitInfo> exit = launcher->WaitExit(name, absl::Seconds(1));
    REQUIRE(exit.ok());
    CHECK(exit->exit_code == 0);  // Asked, not signalled.
  }
}

TEST_CASE(
    "a child without the inherited channel cannot register: it has "
    "nowhere else to call") {
  testing::TempDir dir;
  auto launcher = MakeLauncher(dir);

  SECTION("the fd is closed before the child runs") {
    SpawnOptions spawn;
    spawn.path = "/bin/sh";
    spawn.args = {"-c", "exec 3>&-; exec \"$0\"", RegisteringChild()};
    absl::StatusOr<Launcher::Child> child =
        launcher->Launch("closed", 0, spawn, kWait);
    CHECK(child.status().code() == absl::StatusCode::kUnavailable);
    CHECK(absl::StrContains(child.status().message(), "exited with code 1"));
    CHECK(absl::StrContains(child.status().message(),
                            "fd 3 is not a stream socket"));
  }
  SECTION("the variable naming the fd is gone") {
    SpawnOptions spawn;
    spawn.path = "/usr/bin/env";
    spawn.args = {"-u", "HOSTMESH_PARENT_FD", RegisteringChild()};
    absl::StatusOr<Launcher::Child> child =
        launcher->Launch("unnamed", 0, spawn, kWait);
    CHECK(child.status().code() == absl::StatusCode::kUnavailable);
    CHECK(absl::StrContains(child.status().message(), "exited with code 2"));
    CHECK(
        absl::StrContains(child.status().message(), "not spawned by a parent"));
  }
  CHECK(testing::ListeningSockets(getpid()).empty());
}

TEST_CASE("a child that does not register in time is killed") {
  testing::TempDir dir;
  auto launcher = MakeLauncher(dir);
  SpawnOptions spawn;
  spawn.path = "/bin/sh";
  spawn.args = {"-c", "exec sleep 600"};
  absl::StatusOr<Launcher::Child> child =
      launcher->Launch("mute", 0, spawn, absl::Milliseconds(300));
  CHECK(child.status().code() == absl::StatusCode::kDeadlineExceeded);
  absl::StatusOr<ExitInfo> exit = launcher->WaitExit("mute", kWait);
  REQUIRE(exit.ok());
  CHECK(exit->term_signal == SIGKILL);
}

// Sets an environment variable for one scope (unset if `value` is null).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value == nullptr) {
      unsetenv(name);
    } else {
      setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    if (old_.has_value()) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// An executable file `name` in `dir`.
std::string MakeExecutable(const std::string& dir, const std::string& name) {
  std::string path = absl::StrCat(dir, "/", name);
  std::ofstream(path) << "#!/bin/sh\n";
  REQUIRE(chmod(path.c_str(), 0755) == 0);
  return path;
}

TEST_CASE("FindBinary finds a binary on the PATH, after its variable") {
  testing::TempDir dir;
  std::string on_path = MakeExecutable(dir.path(), "hmfindtest");
  std::string elsewhere = MakeExecutable(dir.path(), "other");
  ScopedEnv path("PATH", absl::StrCat("/nonexistent:", dir.path()).c_str());
  {
    ScopedEnv unset("HOSTMESH_HMFINDTEST", nullptr);
    absl::StatusOr<std::string> found = FindBinary("hmfindtest");
    REQUIRE(found.ok());
    CHECK(*found == on_path);
  }
  {
    ScopedEnv variable("HOSTMESH_HMFINDTEST", elsewhere.c_str());
    absl::StatusOr<std::string> found = FindBinary("hmfindtest");
    REQUIRE(found.ok());
    CHECK(*found == elsewhere);
  }
  // A variable that names no executable is an error, not skipped.
  ScopedEnv wrong("HOSTMESH_HMFINDTEST", "/nonexistent/hmfindtest");
  absl::StatusOr<std::string> found = FindBinary("hmfindtest");
  REQUIRE(found.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(
      absl::StrContains(found.status().message(),
                        "HOSTMESH_HMFINDTEST is \"/nonexistent/hmfindtest\""));
}

TEST_CASE("FindBinary names where it looked, and refuses a path") {
  ScopedEnv path("PATH", "/nonexistent-hostmesh-dir");
  absl::StatusOr<std::string> missing = FindBinary("hmnosuchbinary");
  REQUIRE(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK(absl::StrContains(missing.status().message(),
                          "/nonexistent-hostmesh-dir/hmnosuchbinary"));
  CHECK(
      absl::StrContains(missing.status().message(), "HOSTMESH_HMNOSUCHBINARY"));
  CHECK(FindBinary("bin/hostd").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(FindBinary("").status().code() == absl::StatusCode::kInvalidArgument);
}

// Copies what `from` has to `to` until `from` ends (EIO once a pty's slave
// is closed everywhere, or EOF), then closes `to`.
void Bridge(int from, int to) {
  char buffer[4096];
  for (;;) {
    ssize_t n = read(from, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t wrote = write(to, buffer + done, n - done);
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote <= 0) {
        close(to);
        return;
      }
      done += wrote;
    }
  }
  close(to);
}

TEST_CASE(
    "a child on its stdio registers through a pipe and a cooked pty with "
    "every byte intact, and stray output goes to stderr") {
  // What `srun --unbuffered` does: the task's stdout is a pty, which
  // slurmstepd reads on the master side. A pty in its default mode turns
  // 0x0a into 0x0d 0x0a; every RegisterRequest frame has a 0x0a byte.
  testing::TempDir dir;
  Registrar::Options registrar_options;
  registrar_options.orphan_timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<Registrar>> registrar =
      Registrar::Create(registrar_options);
  REQUIRE(registrar.ok());
  absl::Notification registered;
  std::string address;
  Registrar::ChildCallbacks callbacks;
  callbacks.on_registered = [&](const std::string& a, pid_t) {
    address = a;
    registered.Notify();
  };
  absl::StatusOr<Registrar::PipeTicket> ticket =
      (*registrar)->ExpectOnPipes("pty child", 0, std::move(callbacks));
  REQUIRE(ticket.ok());

  const int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(master >= 0);
  REQUIRE(grantpt(master) == 0);
  REQUIRE(unlockpt(master) == 0);
  const int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(slave >= 0);
  struct termios mode;
  REQUIRE(tcgetattr(slave, &mode) == 0);
  mode.c_oflag |= OPOST | ONLCR;  // Cooked, as a pty starts.
  REQUIRE(tcsetattr(slave, TCSANOW, &mode) == 0);
  // The master's output goes on into the registrar's pipe.
  std::thread bridge(Bridge, master, ticket->child_stdout);

  absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
      ProcessSupervisor::Create();
  REQUIRE(supervisor.ok());
  SpawnOptions spawn;
  spawn.path = RegisteringChild();
  spawn.args = {"--stdio", "127.0.0.1:7"};
  spawn.log_dir = dir.path() + "/child";
  spawn.stdin_fd = ticket->child_stdin;
  spawn.stdout_fd = slave;
  absl::Notification exited;
  ExitInfo exit;
  absl::StatusOr<pid_t> pid =
      (*supervisor)->Spawn(spawn, [&](const ExitInfo& info) {
        exit = info;
        exited.Notify();
      });
  close(ticket->child_stdin);
  close(slave);
  REQUIRE(pid.ok());
  const bool got = registered.WaitForNotificationWithTimeout(kWait);
  if (!got) (*supervisor)->SignalGroup(*pid, SIGKILL).IgnoreError();
  CHECK(got);
  CHECK(address == "127.0.0.1:7");
  // The parent goes: EOF on the child's stdin, orphaned after 1 s: exit 3.
  (*registrar)->Forget(ticket->id);
  if (!exited.WaitForNotificationWithTimeout(kWait)) {
    (*supervisor)->SignalGroup(*pid, SIGKILL).IgnoreError();
    exited.WaitForNotification();
  }
  INFO(exit.stderr_tail);
  CHECK(exit.exit_code == 3);
  CHECK(absl::StrContains(exit.stderr_tail, "stray output"));
  supervisor->reset();
  bridge.join();  // The slave is closed everywhere: the master reads EIO.
  close(master);
}

}  // namespace
}  // namespace mesh
