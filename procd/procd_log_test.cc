#include "procd/procd_log.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/exit_cause.h"
#include "lib/process/supervisor.h"
#include "lib/process/testing.h"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

using testing::PathExists;
using testing::ReadFile;
using testing::TempDir;

mode_t ModeOf(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::string LogChildPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  REQUIRE(srcdir != nullptr);
  return absl::StrCat(srcdir, "/hostmesh/procd/testing/log_child");
}

// Runs log_child with `mode`, its stdout and stderr in `log_dir` (as hostd
// runs a proc) or, with no log_dir, pipes; its end.
ExitInfo RunLogChild(const std::string& mode, const std::string& log_dir) {
  absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
      ProcessSupervisor::Create();
  REQUIRE(supervisor.ok());
  SpawnOptions spawn;
  spawn.path = LogChildPath();
  spawn.args = {mode};
  spawn.log_dir = log_dir;
  absl::Notification exited;
  ExitInfo info;
  absl::StatusOr<pid_t> pid =
      (*supervisor)->Spawn(spawn, [&](const ExitInfo& exit) {
        info = exit;
        exited.Notify();
      });
  REQUIRE(pid.ok());
  if (!exited.WaitForNotificationWithTimeout(absl::Seconds(60))) {
    (*supervisor)->SignalGroup(*pid, SIGKILL).IgnoreError();
    exited.WaitForNotification();
    FAIL("log_child did not exit");
  }
  return info;
}

TEST_CASE(
    "the log dir is where a stderr.log open on the fd is, and only then") {
  TempDir dir;
  const std::string err = dir.path() + "/stderr.log";
  int fd = open(err.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  CHECK(LogDirOf(fd) == dir.path());
  close(fd);
  fd = open((dir.path() + "/output.txt").c_str(),
            O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  CHECK_FALSE(LogDirOf(fd).has_value());
  close(fd);
  int pipe_fds[2];
  REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
  CHECK_FALSE(LogDirOf(pipe_fds[1]).has_value());
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  CHECK_FALSE(LogDirOf(-1).has_value());
}

TEST_CASE(
    "procd.log is appended to, has the mode asked for, and past its bound "
    "becomes procd.log.1") {
  TempDir dir;
  const std::string path = dir.path() + "/procd.log";
  absl::StatusOr<std::unique_ptr<ProcdLogFile>> file =
      ProcdLogFile::Open(path, 1000, 0640);
  REQUIRE(file.ok());
  const std::string line = std::string(99, 'x') + "\n";
  for (int i = 0; i < 9; ++i) (*file)->Append(line);
  CHECK(ReadFile(path).size() == 900);
  CHECK_FALSE(PathExists(path + ".1"));
  CHECK(ModeOf(path) == 0640);
  for (int i = 0; i < 25; ++i) (*file)->Append(absl::StrCat(i, line));
  (*file)->Append("the last line\n");
  // At most the bound in each, the newest lines in procd.log.
  const std::string now = ReadFile(path);
  const std::string before = ReadFile(path + ".1");
  CHECK(now.size() <= 1000);
  CHECK(before.size() <= 1000);
  CHECK(before.size() > 900);
  CHECK(absl::EndsWith(now, "the last line\n"));
  CHECK(ModeOf(path) == 0640);
  CHECK(ModeOf(path + ".1") == 0640);
  CHECK_FALSE(PathExists(path + ".2"));
  // Opened again (a proc restarted), it appends.
  file->reset();
  file = ProcdLogFile::Open(path, 1000, 0600);
  REQUIRE(file.ok());
  (*file)->Append("again\n");
  CHECK(ReadFile(path) == now + "again\n");
  CHECK(ModeOf(path) == 0600);
  CHECK_FALSE(
      ProcdLogFile::Open(dir.path() + "/missing/procd.log", 1000, 0600).ok());
}

// Makes every open(2) of this process fail (EMFILE) while it lives, also
// for root, whom an unwritable directory would not stop; rename(2) still
// works.
class NoMoreFds {
 public:
  NoMoreFds() {
    REQUIRE(getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    const int lowest_free = dup(0);
    REQUIRE(lowest_free >= 0);
    close(lowest_free);
    struct rlimit limit = saved_;
    limit.rlim_cur = static_cast<rlim_t>(lowest_free);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &limit) == 0);
  }
  ~NoMoreFds() { setrlimit(RLIMIT_NOFILE, &saved_); }
  NoMoreFds(const NoMoreFds&) = delete;
  NoMoreFds& operator=(const NoMoreFds&) = delete;

 private:
  struct rlimit saved_;
};

TEST_CASE(
    "when no new procd.log can be opened at a rotation, lines go on to "
    "procd.log.1, which is never emptied, and the next rotation point "
    "retries") {
  TempDir dir;
  const std::string path = dir.path() + "/procd.log";
  absl::StatusOr<std::unique_ptr<ProcdLogFile>> file =
      ProcdLogFile::Open(path, 1000, 0640);
  REQUIRE(file.ok());
  const std::string line = std::string(99, 'x') + "\n";
  for (int i = 0; i < 10; ++i) (*file)->Append(line);
  const std::string first = ReadFile(path);
  REQUIRE(first.size() == 1000);
  {
    NoMoreFds no_more_fds;
    (*file)->Append("rotated but not reopened\n");
    (*file)->Append("still going\n");
  }
  CHECK_FALSE(PathExists(path));
  CHECK(ReadFile(path + ".1") ==
        first + "rotated but not reopened\nstill going\n");
  // Past max_bytes more, a new procd.log is opened; procd.log.1 is kept.
  for (int i = 0; i < 9; ++i) (*file)->Append(line);
  CHECK_FALSE(PathExists(path));
  (*file)->Append("a new file" + line);
  CHECK(ReadFile(path) == "a new file" + line);
  CHECK(ModeOf(path) == 0640);
  const std::string rotated = ReadFile(path + ".1");
  CHECK(absl::StartsWith(rotated, first + "rotated but not reopened\n"));
  CHECK(rotated.size() == first.size() + 37 + 9 * line.size());
}

TEST_CASE(
    "a proc's INFO and WARNING lines go to procd.log only, its ERROR and "
    "CHECK failure lines also to its stderr, which then explains the crash") {
  TempDir dir;
  const std::string log_dir = dir.path() + "/p";
  ExitInfo exit = RunLogChild("check", log_dir);
  CHECK(exit.term_signal == std::optional<int>(SIGABRT));
  CHECK(ReadFile(log_dir + "/stdout.log") == "procd.log: yes\n");

  const std::string err = ReadFile(log_dir + "/stderr.log");
  INFO("stderr.log:\n" << err);
  CHECK(absl::StrContains(err, "the user's own line"));
  CHECK(absl::StrContains(err, "] procd errs"));
  CHECK(absl::StrContains(err, "Check failed: argc < 0 the model is gone"));
  CHECK_FALSE(absl::StrContains(err, "procd says hello"));
  CHECK_FALSE(absl::StrContains(err, "procd warns"));
  const std::string log = ReadFile(log_dir + "/procd.log");
  INFO("procd.log:\n" << log);
  CHECK(absl::StrContains(log, "log_child.cc:16] procd says hello"));
  CHECK(absl::StrContains(log, "] procd warns"));
  CHECK(absl::StrContains(log, "] procd errs"));
  CHECK(absl::StrContains(log, "Check failed: argc < 0 the model is gone"));
  CHECK_FALSE(absl::StrContains(log, "the user's own line"));
  CHECK(ModeOf(log_dir + "/procd.log") == ModeOf(log_dir + "/stderr.log"));

  // The reason's lines: the ERROR line, the user's line and the CHECK, not
  // glog's frames.
  std::vector<std::string> lines = ExplainingStderrLines(exit.stderr_tail);
  INFO(::Catch::Detail::stringify(lines));
  REQUIRE(lines.size() >= 3);
  CHECK(absl::StrContains(lines.back(), "Check failed: argc < 0"));
  CHECK(lines[lines.size() - 2] == "the user's own line");
  CHECK(lines[lines.size() - 3].starts_with("E"));
  CHECK(absl::EndsWith(lines[lines.size() - 3], "] procd errs"));
}

TEST_CASE("a proc whose stderr is not a stderr.log logs to stderr as before") {
  ExitInfo exit = RunLogChild("exit", "");
  CHECK(exit.exit_code == std::optional<int>(0));
  INFO(exit.stderr_tail);
  CHECK(absl::StrContains(exit.stderr_tail, "procd says hello"));
  CHECK(absl::StrContains(exit.stderr_tail, "the user's own line"));
}

}  // namespace
}  // namespace mesh
