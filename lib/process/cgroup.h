// cgroup v2 tracking for supervised children (issue 9, "tracking that cannot
// be fooled"): one leaf cgroup per proc, a child started directly inside its
// leaf (clone3 with CLONE_INTO_CGROUP | CLONE_PIDFD, so it never runs a
// single instruction outside it), and a kill that takes the whole leaf,
// descendants that called setsid and ignore SIGTERM included.
//
// ProcessSupervisor starts children in leaves (SpawnOptions.cgroup_parent).
// Layout it is meant for:
//
//   <this process's cgroup>/hostmesh-<name>/   CgroupRoot::Create: the
//                                               daemon's delegated subtree
//       <proc leaf>/                           ProcCgroup::Create, one per proc
//
// What the machine allows (permissions, controllers, cgroup.kill) is found
// at run time and every refusal names the path and the reason. Nothing here
// removes a cgroup implicitly: leaves must outlive a restarting daemon
// (re-adoption); the owner calls Kill() and Remove().
//
// Permissions: creating a leaf needs write access to the parent dir; putting
// a child into it (CLONE_INTO_CGROUP, like a migration) needs write access to
// the leaf's cgroup.procs and to that of the nearest common ancestor of this
// process's cgroup and the leaf, i.e. this process's own cgroup (systemd
// grants both with Delegate=yes).
#ifndef HOSTMESH_LIB_PROCESS_CGROUP_H_
#define HOSTMESH_LIB_PROCESS_CGROUP_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace mesh {

// Where this process may create cgroups: the cgroup v2 mount and this
// process's own cgroup in it.
class CgroupRoot {
 public:
  // Reads /proc/self/mountinfo (the first mount of fstype cgroup2 that holds
  // this process's cgroup) and /proc/self/cgroup (its "0::" line), and checks
  // that the own cgroup's directory is there. NOT_FOUND if no cgroup2 is
  // mounted or this process has no cgroup v2 path; FAILED_PRECONDITION if the
  // own cgroup is not visible in any cgroup2 mount.
  static absl::StatusOr<CgroupRoot> Find();

  // The same from the texts of mountinfo and /proc/<pid>/cgroup, without
  // touching the file system (for tests).
  static absl::StatusOr<CgroupRoot> FromProcFiles(
      absl::string_view mountinfo, absl::string_view proc_cgroup);

  // Where cgroup2 is mounted, e.g. "/sys/fs/cgroup" or, on a hybrid
  // machine, "/sys/fs/cgroup/unified".
  const std::string& mount_point() const { return mount_point_; }
  // This process's cgroup as /proc/self/cgroup names it, e.g. "/" or
  // "/system.slice/hostd.service".
  const std::string& own_path() const { return own_path_; }
  // The directory of this process's cgroup.
  std::string own_dir() const { return DirOf(own_path_); }

  // Directory <-> cgroup path (as in /proc/<pid>/cgroup). PathOf returns ""
  // for a directory outside the mount.
  std::string DirOf(absl::string_view cgroup_path) const;
  std::string PathOf(absl::string_view dir) const;

  // Makes (or reuses, after a restart) the daemon's subtree and returns its
  // directory. `dir_or_name` is an absolute directory inside the cgroup2
  // mount (a flag) or one path component made under own_dir(), e.g.
  // "hostmesh-hostd". Every controller among "memory" and "pids" that the
  // subtree has in its cgroup.controllers is enabled in its
  // cgroup.subtree_control (best effort: leaves get them where the machine
  // allows; ProcCgroup::SetLimits says clearly where not). Errors name the
  // path: PERMISSION_DENIED without write access, FAILED_PRECONDITION if
  // the directory is not a cgroup v2 directory.
  absl::StatusOr<std::string> Create(absl::string_view dir_or_name) const;

 private:
  CgroupRoot(std::string mount_point, std::string mount_root,
             std::string own_path)
      : mount_point_(std::move(mount_point)),
        mount_root_(std::move(mount_root)),
        own_path_(std::move(own_path)) {}

  std::string mount_point_;
  std::string mount_root_;  // The hierarchy path mounted there ("/" mostly).
  std::string own_path_;
};

// The cgroup v2 path of a live process (its "0::" line in /proc/<pid>/cgroup).
absl::StatusOr<std::string> CgroupOfPid(pid_t pid);

// Limits for one leaf; unset ones are left alone.
struct CgroupLimits {
  std::optional<int64_t> memory_max;  // bytes, memory.max
  std::optional<int64_t> pids_max;    // pids.max
};

// The counters of memory.events.
struct CgroupMemoryEvents {
  uint64_t low = 0;
  uint64_t high = 0;
  uint64_t max = 0;
  uint64_t oom = 0;
  uint64_t oom_kill = 0;
  uint64_t oom_group_kill = 0;
};

// One proc's leaf cgroup, held by an open directory descriptor. Movable;
// destroying it closes the descriptor only (the cgroup stays, see above).
class ProcCgroup {
 public:
  // mkdir <parent_dir>/<name> (one path component). ALREADY_EXISTS if it
  // exists (re-adoption uses Open); FAILED_PRECONDITION if parent_dir is not
  // a cgroup v2 directory.
  static absl::StatusOr<ProcCgroup> Create(const std::string& parent_dir,
                                           absl::string_view name);
  // An existing leaf (re-adoption after a restart).
  static absl::StatusOr<ProcCgroup> Open(const std::string& dir);

  ProcCgroup(ProcCgroup&& other) noexcept;
  ProcCgroup& operator=(ProcCgroup&& other) noexcept;
  ProcCgroup(const ProcCgroup&) = delete;
  ProcCgroup& operator=(const ProcCgroup&) = delete;
  ~ProcCgroup();

  const std::string& dir() const { return dir_; }
  // O_RDONLY | O_DIRECTORY | O_CLOEXEC descriptor of the leaf (what
  // CLONE_INTO_CGROUP takes); owned by this object.
  int dir_fd() const { return dir_fd_; }

  // Every process in the leaf and in cgroups below it (a root proc may make
  // some), in no particular order.
  absl::StatusOr<std::vector<pid_t>> Procs() const;
  // True once no process is left in the leaf or below (cgroup.events
  // "populated 0"; exited processes count as gone even before they are
  // reaped).
  absl::StatusOr<bool> Empty() const;
  // Waits up to `timeout` for Empty(); DEADLINE_EXCEEDED naming the pids
  // still there.
  absl::Status WaitEmpty(absl::Duration timeout) const;

  // SIGKILLs everything in the leaf and below and waits until it is empty.
  // Writes "1" to cgroup.kill where the kernel has it (>= 5.14: atomic,
  // forks racing with it are killed too); else KillBySignals. NOT_FOUND if
  // the leaf is gone; DEADLINE_EXCEEDED if it is not empty within `timeout`.
  absl::Status Kill(absl::Duration timeout = absl::Seconds(10)) const;
  // The fallback Kill uses without cgroup.kill (public to be tested where
  // cgroup.kill exists): freezes the leaf (cgroup.freeze, where present, so
  // nothing forks meanwhile), then repeatedly reads the pids and SIGKILLs
  // each through a pidfd, only if the pid is still in the leaf after the
  // pidfd was opened (never a reused pid), until empty; then thaws it.
  absl::Status KillBySignals(absl::Duration timeout = absl::Seconds(10)) const;
  // SIGKILLs everything in the leaf and below without waiting for it to
  // empty: "1" to cgroup.kill, or where the kernel lacks it one pass of
  // Signal(SIGKILL). NOT_FOUND if the leaf is gone.
  absl::Status StartKill() const;
  // Sends `sig` to every process in the leaf and below, each through a pidfd
  // and only if it is still in the leaf after its pidfd was opened (never a
  // reused pid), except processes of process group `except_pgrp` (> 0; the
  // caller signalled that group itself). Does not wait. NOT_FOUND if the
  // leaf is gone.
  absl::Status Signal(int sig, pid_t except_pgrp = 0) const;

  // rmdir the leaf and any cgroups below it once they are empty, waiting up
  // to `timeout` for the last processes to go (it never kills: call Kill
  // first). OK if already gone; FAILED_PRECONDITION naming the pids still
  // there after `timeout`.
  absl::Status Remove(absl::Duration timeout = absl::Seconds(5)) const;

  // memory.events (oom_kill: how many processes the OOM killer took here).
  // FAILED_PRECONDITION naming the missing controller and the leaf's
  // cgroup.controllers if the memory controller is not enabled for the
  // leaf; NOT_FOUND if the leaf is gone.
  absl::StatusOr<CgroupMemoryEvents> MemoryEvents() const;

  // Writes memory.max / pids.max. All requested controllers are checked
  // before anything is written: FAILED_PRECONDITION naming each missing
  // controller and the leaf's cgroup.controllers content.
  absl::Status SetLimits(const CgroupLimits& limits) const;

  // The leaf's cgroup.controllers, split ("" if none).
  absl::StatusOr<std::vector<std::string>> Controllers() const;

 private:
  ProcCgroup(std::string dir, int dir_fd)
      : dir_(std::move(dir)), dir_fd_(dir_fd) {}
  // The text of the leaf's file `name`; NOT_FOUND "is gone" once the leaf
  // was removed.
  absl::StatusOr<std::string> Read(const std::string& name) const;

  std::string dir_;
  int dir_fd_ = -1;
};

struct CgroupSpawnOptions {
  // Absolute path of the executable.
  std::string path;
  // The full argv (argv[0] included); empty: {path}.
  std::vector<std::string> argv;
  // The full environment as KEY=VALUE; unset: this process's environment.
  std::optional<std::vector<std::string>> envp;
  // Descriptors the child gets: {fd in this process, fd in the child}.
  // Destinations are distinct; 0-2 not named here are inherited as they
  // are; apart from them the child inherits nothing, even descriptors
  // opened without close-on-exec. The parent's copies stay open.
  std::vector<std::pair<int, int>> fds;
  // The child leads a new process group (pgid = pid).
  bool new_process_group = true;
};

// A started child. The caller owns `pidfd` (close-on-exec) and must reap the
// child (waitid(P_PIDFD, pidfd, ..., WEXITED)).
struct CgroupChild {
  pid_t pid = 0;
  int pidfd = -1;
};

// Starts a child inside `leaf` from its first instruction: clone3 with
// CLONE_INTO_CGROUP | CLONE_PIDFD (raw syscall; glibc 2.36 has no wrapper),
// then in the child only async-signal-safe calls (setpgid, dup2, close,
// sigaction/sigprocmask to reset signals, execve, a write of errno to a
// close-on-exec pipe and _exit). Returns once the child has exec'd; a failed
// exec is an error here (NOT_FOUND, PERMISSION_DENIED, ... naming the path)
// and the child is reaped. UNIMPLEMENTED if the kernel has no clone3 or no
// CLONE_INTO_CGROUP (ENOSYS, E2BIG, EINVAL: Linux < 5.7); the caller falls
// back to a process group.
absl::StatusOr<CgroupChild> SpawnIntoCgroup(const ProcCgroup& leaf,
                                            const CgroupSpawnOptions& options);

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_CGROUP_H_
