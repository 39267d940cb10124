#include "bench/util.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "lib/launcher/launcher.h"

extern char** environ;

namespace mesh::bench {

void QuietLogging(const char* argv0) {
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = google::GLOG_ERROR;
  google::InitGoogleLogging(argv0);
}

absl::StatusOr<std::string> FindBenchBinary(const std::string& name) {
  if (name == "hostd" || name == "procd") return FindBinary(name);
  std::vector<std::filesystem::path> candidates;
  if (const char* path = std::getenv(
          absl::StrCat("HOSTMESH_", absl::AsciiStrToUpper(name)).c_str())) {
    candidates.push_back(path);
  }
  std::error_code error;
  std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    candidates.push_back(self.parent_path() / name);
    candidates.push_back(self.parent_path() / "floors" / name);
    std::filesystem::path runfiles = self;
    runfiles += ".runfiles";
    candidates.push_back(runfiles / "hostmesh" / "bench" / name);
    candidates.push_back(runfiles / "hostmesh" / "bench" / "floors" / name);
  }
  std::vector<std::string> tried;
  for (const auto& candidate : candidates) {
    tried.push_back(candidate.string());
    if (access(candidate.c_str(), X_OK) == 0) {
      return std::filesystem::weakly_canonical(candidate).string();
    }
  }
  return absl::NotFoundError(absl::StrCat("cannot find bench binary ", name,
                                          " (tried ",
                                          absl::StrJoin(tried, ", "), ")"));
}

absl::StatusOr<Child> Child::Spawn(const Options& options) {
  int hold[2] = {-1, -1};
  if (options.hold_stdin && pipe2(hold, O_CLOEXEC) != 0) {
    return absl::ErrnoToStatus(errno, "pipe2");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (options.hold_stdin) {
    posix_spawn_file_actions_adddup2(&actions, hold[0], 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  if (options.stdout_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, options.stdout_fd, 1);
  } else {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  }
  if (options.stderr_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, options.stderr_fd, 2);
  } else {
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  }
  if (options.fd3 >= 0)
    posix_spawn_file_actions_adddup2(&actions, options.fd3, 3);
  std::vector<std::string> args = {options.path};
  args.insert(args.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int spawned = posix_spawn(&pid, options.path.c_str(), &actions, nullptr,
                            argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (options.hold_stdin) close(hold[0]);
  if (spawned != 0) {
    if (options.hold_stdin) close(hold[1]);
    return absl::ErrnoToStatus(spawned,
                               absl::StrCat("posix_spawn ", options.path));
  }
  Child child;
  child.pid_ = pid;
  child.reaped_ = false;
  child.stdin_ = hold[1];
  child.pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  return child;
}

Child::Child(Child&& other) noexcept { *this = std::move(other); }

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    End();
    pid_ = std::exchange(other.pid_, 0);
    pidfd_ = std::exchange(other.pidfd_, -1);
    stdin_ = std::exchange(other.stdin_, -1);
    reaped_ = std::exchange(other.reaped_, true);
  }
  return *this;
}

void Child::CloseStdin() {
  if (stdin_ >= 0) close(stdin_);
  stdin_ = -1;
}

bool Child::WaitExited(absl::Duration timeout) const {
  if (reaped_) return true;
  if (pidfd_ < 0) return false;
  return PidfdExited(pidfd_, timeout);
}

bool Child::TryReap() {
  if (reaped_) return true;
  if (waitpid(pid_, nullptr, WNOHANG) == pid_) reaped_ = true;
  return reaped_;
}

void Child::End(absl::Duration grace) {
  CloseStdin();
  if (!reaped_) {
    if (!WaitExited(grace)) {
      if (pidfd_ >= 0) {
        syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0);
      } else {
        kill(pid_, SIGKILL);  // not reaped yet: still our child's pid
      }
    }
    waitpid(pid_, nullptr, 0);
    reaped_ = true;
  }
  if (pidfd_ >= 0) close(pidfd_);
  pidfd_ = -1;
}

int OpenPidfd(pid_t pid) {
  return pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
}

bool PidfdExited(int pidfd, absl::Duration timeout) {
  pollfd exited = {pidfd, POLLIN, 0};
  int ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  return poll(&exited, 1, ms) == 1;
}

absl::StatusOr<Footprint> ReadFootprint(pid_t pid) {
  Footprint footprint;
  bool pss = false;
  bool rss = false;
  bool threads = false;
  auto field = [](const std::string& line, const char* key, double* value) {
    if (line.rfind(key, 0) != 0) return false;
    std::istringstream rest(line.substr(std::strlen(key)));
    return static_cast<bool>(rest >> *value);
  };
  std::ifstream rollup(absl::StrCat("/proc/", pid, "/smaps_rollup"));
  for (std::string line; std::getline(rollup, line);) {
    pss = pss || field(line, "Pss:", &footprint.pss_kb);
    rss = rss || field(line, "Rss:", &footprint.rss_kb);
  }
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(status, line);) {
    threads = threads || field(line, "Threads:", &footprint.threads);
  }
  if (!pss || !rss || !threads) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the footprint of pid ", pid));
  }
  return footprint;
}

double SelfCpuMs() {
  timespec used;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
  return static_cast<double>(used.tv_sec) * 1e3 +
         static_cast<double>(used.tv_nsec) / 1e6;
}

std::optional<double> ProcessCpuMs(pid_t pid) {
  clockid_t clock;
  timespec used;
  if (clock_getcpuclockid(pid, &clock) != 0 ||
      clock_gettime(clock, &used) != 0) {
    return std::nullopt;
  }
  return static_cast<double>(used.tv_sec) * 1e3 +
         static_cast<double>(used.tv_nsec) / 1e6;
}

std::optional<double> CgroupCpuMs(const std::string& dir) {
  std::ifstream stat(dir + "/cpu.stat");
  for (std::string key; stat >> key;) {
    double usec = 0;
    if (!(stat >> usec)) break;
    if (key == "usage_usec") return usec / 1e3;
  }
  return std::nullopt;
}

std::string CgroupDirOf(pid_t pid) {
  std::ifstream cgroups(absl::StrCat("/proc/", pid, "/cgroup"));
  for (std::string line; std::getline(cgroups, line);) {
    if (line.rfind("0::", 0) != 0) continue;
    const std::string path = line.substr(3);
    for (const char* root : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
      const std::string dir = absl::StrCat(root, path == "/" ? "" : path);
      if (access((dir + "/cpu.stat").c_str(), R_OK) == 0) return dir;
    }
  }
  return "";
}

absl::StatusOr<std::string> ReadLine(int fd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string line;
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat("no line within ", absl::FormatDuration(timeout),
                       " (got \"", line, "\")"));
    }
    pollfd readable = {fd, POLLIN, 0};
    int ready = poll(&readable, 1,
                     static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "poll");
    if (ready <= 0) continue;
    char c;
    ssize_t got = read(fd, &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (line.empty()) return absl::UnavailableError("EOF before a line");
      return line;
    }
    if (c == '\n') return line;
    line += c;
  }
}

}  // namespace mesh::bench
