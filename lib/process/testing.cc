#include "lib/process/testing.h"

#include <dirent.h>
#include <errno.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/process/cgroup.h"
#include "lib/process/process_identity.h"

extern char** environ;

namespace mesh::testing {

std::string TemplateChildPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir != nullptr ? srcdir : ".",
                      "/hostmesh/lib/process/template_child");
}
namespace {

// The cgroups directly below `dir`.
std::vector<std::string> Subdirs(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (e->d_type == DT_DIR && name != "." && name != "..") {
        out.push_back(dir + "/" + name);
      }
    }
    closedir(d);
  }
  return out;
}

void KillTree(const std::string& dir, int depth) {
  if (depth > 16 || !PathExists(dir)) return;
  if (PathExists(dir + "/cgroup.kill")) {
    std::ofstream(dir + "/cgroup.kill") << "1";
  } else {
    for (pid_t pid : PidsIn(dir)) kill(pid, SIGKILL);
  }
  for (const std::string& sub : Subdirs(dir)) KillTree(sub, depth + 1);
}

void RemoveTree(const std::string& dir, int depth) {
  if (depth > 16) return;
  for (const std::string& sub : Subdirs(dir)) RemoveTree(sub, depth + 1);
  rmdir(dir.c_str());
}

}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

bool Eventually(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

pid_t SessionOf(pid_t pid) {
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  return stat.ok() ? stat->session : -1;
}

bool IgnoresSigterm(pid_t pid) {
  std::istringstream status(ReadFile(absl::StrCat("/proc/", pid, "/status")));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("SigIgn:", 0) != 0) continue;
    uint64_t mask = 0;
    if (!absl::SimpleHexAtoi(line.substr(7), &mask)) return false;
    return (mask >> (SIGTERM - 1)) & 1;
  }
  return false;
}

int PidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

bool PidfdExited(int pidfd, absl::Duration wait) {
  const absl::Time deadline = absl::Now() + wait;
  while (true) {
    const absl::Duration left =
        std::max(deadline - absl::Now(), absl::ZeroDuration());
    struct pollfd p = {pidfd, POLLIN, 0};
    int rc = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)));
    if (rc == 1) return true;
    if (rc == 0 || errno != EINTR) return false;
  }
}

pid_t StartSleeper() {
  pid_t pid = 0;
  char arg0[] = "sleep";
  char arg1[] = "1000";
  char* argv[] = {arg0, arg1, nullptr};
  REQUIRE(posix_spawn(&pid, "/bin/sleep", nullptr, nullptr, argv, environ) ==
          0);
  return pid;
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

ChildGuard::ChildGuard(pid_t pid) : pidfd_(PidfdOpen(pid)) {}

ChildGuard::ChildGuard(ChildGuard&& other) noexcept
    : pidfd_(std::exchange(other.pidfd_, -1)) {}

ChildGuard::~ChildGuard() {
  if (pidfd_ < 0) return;
  syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0);
  siginfo_t info = {};
  while (waitid(P_PIDFD, static_cast<id_t>(pidfd_), &info, WEXITED) != 0 &&
         errno == EINTR) {
  }
  close(pidfd_);
}

int SpawnWithPid(pid_t pid, const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') return -EINVAL;
  // Everything the child reads, made here: after clone3 it must not
  // allocate (another thread may have held the allocator's lock).
  std::vector<std::string> strings = argv;
  std::vector<char*> child_argv;
  for (std::string& s : strings) child_argv.push_back(s.data());
  child_argv.push_back(nullptr);
  char* const child_envp[] = {nullptr};
  const char* path = strings[0].c_str();

  pid_t tids[1] = {pid};
  int pidfd = -1;
  struct clone_args args;
  std::memset(&args, 0, sizeof(args));
  args.flags = CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.set_tid = reinterpret_cast<uint64_t>(tids);
  args.set_tid_size = 1;
  long rc = syscall(SYS_clone3, &args, sizeof(args));
  if (rc == 0) {
    setpgid(0, 0);
    execve(path, child_argv.data(), child_envp);
    _exit(127);
  }
  if (rc < 0) return -errno;
  return pidfd;
}

int SpawnDecoyWithPid(pid_t pid) {
  return SpawnWithPid(pid, {"/bin/sleep", "1000"});
}

std::string CannotRunCgroups() {
  if (geteuid() != 0) {
    return absl::StrCat("needs root to create cgroups (euid ", geteuid(), ")");
  }
  absl::StatusOr<CgroupRoot> root = CgroupRoot::Find();
  if (!root.ok()) {
    return absl::StrCat("no usable cgroup v2: ", root.status().ToString());
  }
  return "";
}

std::vector<pid_t> PidsIn(const std::string& cgroup_dir) {
  std::vector<pid_t> pids;
  std::istringstream procs(ReadFile(cgroup_dir + "/cgroup.procs"));
  for (pid_t pid; procs >> pid;) pids.push_back(pid);
  return pids;
}

std::string UniqueName(const std::string& what) {
  static std::atomic<int> counter = 0;
  return absl::StrCat("hostmesh-test-", getpid(), "-", what, "-", counter++);
}

SubtreeGuard::~SubtreeGuard() {
  KillTree(dir_, 0);
  bool empty = Eventually(
      [&] {
        std::string events = ReadFile(dir_ + "/cgroup.events");
        return events.empty() ||
               events.find("populated 0") != std::string::npos;
      },
      absl::Seconds(10));
  if (!empty) std::cerr << "guard: " << dir_ << " still populated\n";
  for (int pidfd : pidfds_) {
    siginfo_t info;
    Eventually(
        [&] {
          std::memset(&info, 0, sizeof(info));
          int rc = waitid(P_PIDFD, static_cast<id_t>(pidfd), &info,
                          WEXITED | WNOHANG);
          return rc != 0 || info.si_pid != 0;  // Reaped, or not ours.
        },
        absl::Seconds(5));
    close(pidfd);
  }
  bool removed = Eventually(
      [&] {
        RemoveTree(dir_, 0);
        return !PathExists(dir_);
      },
      absl::Seconds(5));
  if (!removed) std::cerr << "guard: cannot remove " << dir_ << "\n";
}

}  // namespace mesh::testing
