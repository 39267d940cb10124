// ProcessSupervisor: starts child processes and watches them until reaped.
//
// Promises:
//  - Children are started with posix_spawn (vfork-style clone: no copy of
//    this multithreaded process) on the supervisor's own thread, never on
//    the caller's, each in its own process group (pgid = pid).
//  - Each child is tracked by a pidfd (immune to pid reuse) and reaped by
//    the supervisor thread: no zombies. When a child exits, the rest of its
//    process group is SIGKILLed, so no grandchild outlives it.
//  - stdout/stderr go through pipes that the supervisor thread drains into
//    <log_dir>/stdout.log and <log_dir>/stderr.log, so a child never blocks
//    on a full pipe; the last bytes of stderr are kept as a tail. The logs
//    are the supervisor's user's alone (dirs 0700, files 0600; with a
//    log_group, 0750 and 0640 and of that group), whatever the umask, even
//    if they existed before with other modes; the child gets only the pipes.
//  - The destructor SIGKILLs every remaining group and reaps it; their
//    on_exit callbacks still run (on the supervisor thread) before it returns.
// Thread-safe. Callbacks run on the supervisor thread: they must not block
// and must not call back into the supervisor synchronously (Spawn/Wait).
#ifndef HOSTMESH_LIB_PROCESS_SUPERVISOR_H_
#define HOSTMESH_LIB_PROCESS_SUPERVISOR_H_

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mesh {

struct SpawnOptions {
  // Absolute path of the executable; argv[0] is the path.
  std::string path;
  std::vector<std::string> args;
  // Added to (or overriding) the supervisor's own environment.
  std::map<std::string, std::string> env;
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
  // How many trailing bytes of stderr to keep for ExitInfo::stderr_tail.
  size_t stderr_tail_bytes = 4096;
};

struct ExitInfo {
  pid_t pid = 0;
  // Exactly one of these is set. exit_code is -1 if the status was lost
  // (the child was reaped by someone else, e.g. with SIGCHLD ignored).
  std::optional<int> exit_code;
  std::optional<int> term_signal;
  std::string stderr_tail;
};

class ProcessSupervisor {
 public:
  using ExitCallback = std::function<void(const ExitInfo&)>;

  static absl::StatusOr<std::unique_ptr<ProcessSupervisor>> Create();
  ~ProcessSupervisor();
  ProcessSupervisor(const ProcessSupervisor&) = delete;
  ProcessSupervisor& operator=(const ProcessSupervisor&) = delete;

  // Starts a child on the supervisor thread and returns its pid once it is
  // running (exec succeeded or failed: a missing or non-executable path is
  // an error here, not an exit). `on_exit` runs once, after it is reaped.
  // Blocks the caller for the spawn itself (well under a millisecond of
  // work); never call it from a gRPC reaction.
  absl::StatusOr<pid_t> Spawn(const SpawnOptions& options,
                              ExitCallback on_exit);

  // Sends `sig` to the child's whole process group. NOT_FOUND if `pid` is
  // not a live child of this supervisor.
  absl::Status SignalGroup(pid_t pid, int sig);

  // The current stderr tail of a live or exited-but-unreported child.
  std::string StderrTail(pid_t pid);

  // Pids of children not yet reaped.
  std::vector<pid_t> LivePids();

 private:
  class Impl;
  explicit ProcessSupervisor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_SUPERVISOR_H_
