// ProcessSupervisor: starts child processes (or adopts live processes an
// earlier supervisor started) and watches them until they end.
//
// Promises:
//  - Children are started on the supervisor's own thread, never on the
//    caller's, each in its own process group (pgid = pid): with posix_spawn
//    (vfork-style clone: no copy of this multithreaded process), or, with
//    SpawnOptions.cgroup_parent, inside a new cgroup v2 leaf from their
//    first instruction (clone3 with CLONE_INTO_CGROUP | CLONE_PIDFD).
//  - Each tracked process is watched through a pidfd (immune to pid reuse);
//    children are reaped by the supervisor thread: no zombies. When one
//    ends, the rest of its process group is SIGKILLed (children only: an
//    adopted process's pid may be reused by then), and its leaf, if any, is
//    killed (cgroup.kill), waited for until empty (at most ~5 s) and
//    removed; only then does on_exit run. So an on_exit for a process with
//    a leaf means no descendant of it is left, setsid escapees that ignore
//    SIGTERM included.
//  - With a log_dir, the child's stdout and stderr ARE <log_dir>/stdout.log
//    and stderr.log, opened for appending: no pipe, so its output keeps
//    landing in the files while no supervisor runs (hostd restarting). The
//    stderr tail is read back from stderr.log: the last bytes written since
//    the spawn, across a rotation (stderr.log.1, lib/process/proc_log.h).
//    Without one, stdout/stderr are pipes the supervisor thread drains and
//    drops, keeping the stderr tail. The logs are the
//    supervisor's user's alone (dirs 0700, files 0600; with a log_group,
//    0750 and 0640 and of that group), whatever the umask, even if they
//    existed before with other modes; the child gets only the two open
//    files (or the pipes).
//  - Adopt watches a live process this supervisor did not start (a proc of
//    an earlier hostd), verified by pidfd, start time and leaf; its end is
//    seen through the pidfd and reported with status_unknown (only its
//    parent could know the status).
//  - Release stops watching everything without signalling anything (hostd
//    exits for a restart; the next one adopts the processes).
//  - With Options.subreaper, this process is a child subreaper: orphaned
//    descendants are reparented to it and the supervisor thread reaps every
//    zombie child it does not track (checked about once a second; never
//    waitpid(-1), which could take a tracked child's status, and never a
//    process another ProcessSupervisor of this process tracks).
//
// Threads and owners: one supervisor thread per instance owns the epoll
// set, every pipe, log and pidfd descriptor and every leaf; it spawns,
// adopts, releases, reaps and runs every on_exit. Other threads queue work
// for it (Spawn, Adopt, Release wait for their answer) or read/signal
// tracked processes under a mutex.
//
// Shutdown: Release() (optional) drops everything without a signal; the
// destructor then SIGKILLs every process (and leaf) still tracked, waits
// until each has ended (their on_exit still runs, on the supervisor thread,
// before it returns) and clears the subreaper flag it set.
//
// Thread-safe. Callbacks run on the supervisor thread: they must not block
// and must not call Spawn or Adopt (which fail there); Release may be called
// there (it then takes effect once the callback returns).
#ifndef HOSTMESH_LIB_PROCESS_SUPERVISOR_H_
#define HOSTMESH_LIB_PROCESS_SUPERVISOR_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/process/process_template.h"

namespace mesh {

// What systemd sets for the process it runs, and no child of it may take
// as its own: on NOTIFY_SOCKET a child would speak for its parent (and
// with NotifyAccess=all stop its unit), with WATCHDOG_* it would owe the
// parent's keep-alives, LISTEN_* are the parent's sockets, and a hostd
// started by a proc or a client would default to the parent's
// STATE_DIRECTORY and RUNTIME_DIRECTORY (and their lock).
inline const std::vector<std::string> kServiceManagerEnv = {
    "NOTIFY_SOCKET", "WATCHDOG_USEC",  "WATCHDOG_PID",    "LISTEN_FDS",
    "LISTEN_PID",    "LISTEN_FDNAMES", "STATE_DIRECTORY", "RUNTIME_DIRECTORY"};

struct SpawnOptions {
  // Absolute path of the executable; argv[0] is the path.
  std::string path;
  std::vector<std::string> args;
  // Added to (or overriding) the supervisor's own environment.
  std::map<std::string, std::string> env;
  // Names taken out of the supervisor's own environment before `env`
  // applies: variables meant for the supervisor alone
  // (kServiceManagerEnv). The supervisor's environment itself is never
  // changed (no unsetenv once threads run: lib/process/env.h).
  std::vector<std::string> unset_env;
  // Directory for stdout.log / stderr.log (created if missing). Empty: the
  // output is drained and dropped (the stderr tail is still kept).
  std::string log_dir;
  // A group that may read the logs (operators): the dirs the supervisor
  // creates, log_dir itself and the log files get this group and modes
  // 0750 and 0640. Unset: 0700 and 0600, the supervisor's user's alone.
  std::optional<gid_t> log_group;
  // Descriptors the child inherits: {fd in this process, fd in the child}.
  // Destinations are distinct and >= 3; apart from them and 0-2 the child
  // inherits nothing, even descriptors opened without close-on-exec.
  // The parent's copies stay open (the caller closes them after Spawn).
  std::vector<std::pair<int, int>> inherit_fds;
  // The child's stdin and stdout, if set (>= 0): these descriptors (e.g.
  // pipe ends through which a parent talks to it) instead of /dev/null and
  // of stdout.log (or the drained pipe). stderr is unchanged. The parent's
  // copies stay open (the caller closes them after Spawn).
  int stdin_fd = -1;
  int stdout_fd = -1;
  // How many trailing bytes of stderr to keep for ExitInfo::stderr_tail.
  size_t stderr_tail_bytes = 4096;
  // A cgroup v2 directory (e.g. CgroupRoot::Create's subtree) and one path
  // component: the child runs in the new leaf <cgroup_parent>/<cgroup_name>
  // from its first instruction (a leftover empty leaf of that name is
  // reused). Errors creating or entering the leaf are Spawn errors naming
  // it. Empty cgroup_parent: a process group only.
  std::string cgroup_parent;
  std::string cgroup_name;
  // A pre-loaded template of `path` (lib/process/process_template.h): the
  // child is forked from it instead of exec'd, with the same descriptors,
  // environment, process group and leaf. If the template is gone, the
  // child is exec'd (a warning the first time). Not owned; outlives the
  // Spawn.
  ProcessTemplate* from_template = nullptr;
};

// What identifies a tracked process to a later supervisor (Adopt), e.g.
// after hostd restarted. AdoptOptionsFor returns it for a tracked process.
struct AdoptOptions {
  pid_t pid = 0;
  // /proc/<pid>/stat field 22 (ProcessStartTime).
  uint64_t start_time = 0;
  // Its cgroup v2 leaf; empty: none (process group only).
  std::string cgroup_dir;
  // Where its stdout.log and stderr.log are; empty: no tail.
  std::string log_dir;
  // Where its stderr starts in stderr.log: the logical offset (bytes
  // rotated out included, lib/process/proc_log.h) at its spawn.
  uint64_t stderr_offset = 0;
  size_t stderr_tail_bytes = 4096;
};

struct ExitInfo {
  pid_t pid = 0;
  // Exactly one of these is set. exit_code is -1 if the status was lost
  // (the child was reaped by someone else, e.g. with SIGCHLD ignored).
  std::optional<int> exit_code;
  std::optional<int> term_signal;
  std::string stderr_tail;
  // An adopted process (not our child): its status is not knowable, and
  // exit_code and term_signal are both unset.
  bool status_unknown = false;
  // How many processes the OOM killer took in its leaf (memory.events
  // oom_kill), where a leaf with the memory controller was readable.
  std::optional<uint64_t> oom_kills;
};

class ProcessSupervisor {
 public:
  using ExitCallback = std::function<void(const ExitInfo&)>;

  struct Options {
    // prctl(PR_SET_CHILD_SUBREAPER) and reap untracked zombie children (see
    // above). The flag is process-wide; the destructor clears it again if
    // this supervisor set it.
    bool subreaper = false;
  };

  static absl::StatusOr<std::unique_ptr<ProcessSupervisor>> Create();
  static absl::StatusOr<std::unique_ptr<ProcessSupervisor>> Create(
      const Options& options);
  ~ProcessSupervisor();
  ProcessSupervisor(const ProcessSupervisor&) = delete;
  ProcessSupervisor& operator=(const ProcessSupervisor&) = delete;

  // Starts a child on the supervisor thread and returns its pid once it is
  // running (exec succeeded or failed: a missing or non-executable path is
  // an error here, not an exit). `on_exit` runs once, after it is reaped.
  // Blocks the caller for the spawn itself (well under a millisecond of
  // work); never call it from a gRPC reaction.
  // FAILED_PRECONDITION after Release or from a callback.
  absl::StatusOr<pid_t> Spawn(const SpawnOptions& options,
                              ExitCallback on_exit);

  // Watches a live process this supervisor did not start (a proc of an
  // earlier hostd), as if it were a child: SignalGroup, StderrTail and
  // LivePids work for it, its leaf is handled as a child's. Verified first:
  // a pidfd opened, then its start time equal, then (with cgroup_dir) it is
  // in that leaf. NOT_FOUND if it is gone (a zombie included: pid 1 may not
  // reap); FAILED_PRECONDITION naming the mismatch (another process has
  // the pid, or it is not in the leaf), after Release or from a callback;
  // ALREADY_EXISTS if the pid is tracked already. `on_exit` runs once when
  // it ends, with status_unknown and the tail read from its stderr.log.
  absl::Status Adopt(const AdoptOptions& options, ExitCallback on_exit);

  // What a later supervisor needs to Adopt a tracked (spawned or adopted)
  // process; nullopt if `pid` is not tracked.
  std::optional<AdoptOptions> AdoptOptionsFor(pid_t pid);

  // Stops watching every child and adopted process WITHOUT signalling any
  // (hostd exits for a restart; a later hostd adopts them). Their leaves
  // and log files stay; children are not reaped. No on_exit runs after it
  // returns (called from a callback: after that callback); later Spawn and
  // Adopt fail FAILED_PRECONDITION; the destructor then kills nothing.
  void Release();

  // Sends `sig` to the process's whole process group and, with a leaf, to
  // every process in it (each once; SIGKILL through cgroup.kill, not
  // waiting for it to empty). NOT_FOUND if `pid` is not a live tracked
  // process of this supervisor.
  absl::Status SignalGroup(pid_t pid, int sig);

  // The current stderr tail of a live or ended-but-unreported process.
  std::string StderrTail(pid_t pid);

  // Pids of tracked processes that have not ended.
  std::vector<pid_t> LivePids();

 private:
  class Impl;
  explicit ProcessSupervisor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_SUPERVISOR_H_
