// For lib/process tests: files, /proc, children guarded through pidfds,
// cgroup subtrees removed whatever a test did, and processes given a chosen
// pid. The guards and readers use plain syscalls and file reads, not the
// code under test (except ReadProcStat, the project's one /proc/<pid>/stat
// reader, and CgroupRoot::Find in CannotRunCgroups).
#ifndef HOSTMESH_LIB_PROCESS_TESTING_H_
#define HOSTMESH_LIB_PROCESS_TESTING_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "lib/testing/skip.h"

namespace mesh::testing {

// ---------------------------------------------------------------------------
// Files and waiting.

// The whole file, byte for byte, or "" if it cannot be read.
std::string ReadFile(const std::string& path);

// True if `path` names anything, a dangling symlink included (lstat).
bool PathExists(const std::string& path);

// Calls `done` every 10 ms until it returns true (then true) or `timeout`
// has passed (then false).
bool Eventually(const std::function<bool()>& done, absl::Duration timeout);

// ---------------------------------------------------------------------------
// Processes.

// The session of a live pid (from ReadProcStat), or -1 if it is gone or
// its stat does not parse.
pid_t SessionOf(pid_t pid);

// True if `pid` ignores SIGTERM (SigIgn in /proc/<pid>/status).
bool IgnoresSigterm(pid_t pid);

// pidfd_open(pid, 0): a pidfd (the caller closes it) or -1.
int PidfdOpen(pid_t pid);

// True once the process behind `pidfd` has exited (the pidfd is readable),
// waiting up to `wait` for it.
bool PidfdExited(int pidfd, absl::Duration wait = absl::ZeroDuration());

// A `sleep 1000` child of this process (posix_spawn, REQUIREd to work),
// outside any supervisor; the test kills and reaps it.
pid_t StartSleeper();

// Path of //lib/process:template_child in this test's runfiles (a test
// that uses it lists it in `data`).
std::string TemplateChildPath();

// SIGKILL to `pid` (a zombie ignores it) and waits to reap it. Only for an
// unreaped child of this process: then the pid cannot have been reused.
void KillAndReap(pid_t pid);

// Kills and reaps a child of this test when the scope ends, however the test
// ends (through a pidfd opened while it was unreaped: never a reused pid).
// Harmless if the child was reaped already.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid);
  // Takes `pidfd` (of a child of this process) and closes it at the end.
  static ChildGuard OfPidfd(int pidfd) { return ChildGuard(pidfd, true); }
  ChildGuard(ChildGuard&& other) noexcept;
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard();

 private:
  ChildGuard(int pidfd, bool) : pidfd_(pidfd) {}
  int pidfd_;
};

// Starts argv (argv[0]: the absolute path to exec, also the program's
// argv[0]) with an empty environment as pid `pid`, leading its own process
// group, with clone3's set_tid (needs CAP_SYS_ADMIN over this pid namespace:
// root here) -- the way a recycled pid would look to a daemon re-adopting by
// pid. Every C string is made before clone3; the child only calls
// async-signal-safe setpgid, execve and _exit (127 if execve fails). Returns
// its pidfd (the caller kills and reaps it, e.g. ChildGuard::OfPidfd) or
// -errno: EEXIST the pid is taken; EPERM not allowed here; EINVAL argv is
// empty or argv[0] is not absolute.
int SpawnWithPid(pid_t pid, const std::vector<std::string>& argv);

// SpawnWithPid(pid, {"/bin/sleep", "1000"}): a decoy given a dead process's
// pid.
int SpawnDecoyWithPid(pid_t pid);

// ---------------------------------------------------------------------------
// cgroups v2.

// The reason a test that makes cgroups cannot run here (not root, no usable
// cgroup v2), or "".
std::string CannotRunCgroups();

// The pids listed in `cgroup_dir`/cgroup.procs (a plain read).
std::vector<pid_t> PidsIn(const std::string& cgroup_dir);

// "hostmesh-test-<this pid>-<what>-<n>": a cgroup name no other test (or
// other run of this one) uses.
std::string UniqueName(const std::string& what);

// Removes a test's cgroup subtree and every process in it whatever the test
// did, with plain syscalls (not the code under test): cgroup.kill, or SIGKILL
// to every pid listed where there is none, in every cgroup of the subtree;
// waits for it to empty, reaps the adopted direct children, rmdir deepest
// first. Complains on stderr if it cannot.
class SubtreeGuard {
 public:
  explicit SubtreeGuard(std::string dir) : dir_(std::move(dir)) {}
  ~SubtreeGuard();
  SubtreeGuard(const SubtreeGuard&) = delete;
  SubtreeGuard& operator=(const SubtreeGuard&) = delete;

  const std::string& dir() const { return dir_; }
  // A direct child's pidfd: reaped (if still ours) and closed at the end.
  void Adopt(int pidfd) { pidfds_.push_back(pidfd); }

 private:
  std::string dir_;
  std::vector<int> pidfds_;
};

}  // namespace mesh::testing

// At the top of a TEST_CASE (before any SECTION) that makes cgroups:
// HOSTMESH_SKIP with CannotRunCgroups()'s reason if there is one.
#define HOSTMESH_REQUIRE_CGROUPS()                                \
  do {                                                            \
    std::string cannot_run = ::mesh::testing::CannotRunCgroups(); \
    if (!cannot_run.empty()) HOSTMESH_SKIP(cannot_run);           \
  } while (false)

#endif  // HOSTMESH_LIB_PROCESS_TESTING_H_
