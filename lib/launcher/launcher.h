// Launcher: spawns children that register back, one level up from hostd's
// ProcManager — a client spawning hostds (the process allocator behind
// HostMesh::Process and HostMesh::Local), or a test spawning hostd.
//
// Each child inherits its end of a private channel to the launcher (a
// socketpair, or two pipes as its stdin and stdout: lib/bootstrap; the
// launcher listens on no socket) and runs
// under a ProcessSupervisor (own process group, pidfd, reaped, stdout and
// stderr to <log_root>/<name>/). Launch answers once the child registered
// with its address over that channel, or fails with the reason (exited
// first: code/signal and stderr tail; no call-back in time: killed).
// Destroying the launcher closes every channel (children start their orphan
// timers), then SIGKILLs and reaps any child still alive. Thread-safe.
#ifndef HOSTMESH_LIB_LAUNCHER_LAUNCHER_H_
#define HOSTMESH_LIB_LAUNCHER_LAUNCHER_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/bootstrap/registrar.h"
#include "lib/process/supervisor.h"

namespace mesh {

class Launcher {
 public:
  struct Options {
    // Children's logs: <log_root>/<name>/{stdout,stderr}.log.
    std::string log_root;
    // How long children outlive a broken channel to this launcher.
    absl::Duration orphan_timeout = absl::Seconds(10);
    // Called once for each child that exits after it registered, with the
    // address it registered (with
    // kStdio that may be the launcher of a child on another machine, e.g.
    // srun), on the reaping thread: it must not block or call this
    // launcher. Unset: nothing is told (WaitExit still answers).
    std::function<void(const std::string& name, const std::string& address,
                       const ExitInfo& exit)>
        on_exit;
    // Set by Create: the token every child accepts from this launcher as
    // its parent (role admin; see bootstrap.proto). Children also share a
    // peer token among themselves, which the launcher does not use.
    std::string admin_token;
  };

  // How a child gets its channel to the launcher.
  enum class ChannelKind {
    // One end of a socketpair, inherited as fd kBootstrapChildFd (its
    // number in env kBootstrapFdEnv): hostd's default --parent=env.
    kInheritedFd,
    // Two pipes as the spawned process's stdin and stdout, nothing on argv
    // or in the environment: `hostd --parent=stdio`, spawned directly or
    // through a launcher that carries its stdio, e.g. `srun --unbuffered
    // ... hostd --parent=stdio` (the child then runs on another machine).
    kStdio,
  };

  struct Child {
    std::string name;
    // The spawned process (with kStdio possibly srun, not hostd).
    pid_t pid = 0;
    std::string address;
    // The pid the child registered with: `pid` when it was spawned
    // directly, else its pid on its own machine (only reported).
    pid_t registered_pid = 0;
  };

  static absl::StatusOr<std::unique_ptr<Launcher>> Create(Options options);
  // What calls to this launcher's children present (its admin token).
  const std::string& admin_token() const { return options_.admin_token; }
  ~Launcher();
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  // Spawns `spawn` as child `name` and waits until it registers back over
  // a channel of `channel`'s kind (kStdio: `spawn` must not set stdin_fd or
  // stdout_fd, which the launcher sets).
  absl::StatusOr<Child> Launch(const std::string& name, uint64_t rank,
                               SpawnOptions spawn, absl::Duration timeout,
                               ChannelKind channel = ChannelKind::kInheritedFd);

  // Asks a registered child to stop over its channel.
  absl::Status AskStop(const std::string& name, const std::string& reason,
                       absl::Duration grace);
  // Signals the child's process group.
  absl::Status Signal(const std::string& name, int sig);
  // Waits until the child is reaped; DEADLINE_EXCEEDED if not by timeout.
  absl::StatusOr<ExitInfo> WaitExit(const std::string& name,
                                    absl::Duration timeout);
  // Stops every child still alive: ask, then SIGTERM, then SIGKILL, each
  // after `grace`; returns once all are reaped.
  void StopAll(absl::Duration grace);

 private:
  struct Entry;
  Launcher(Options options, std::unique_ptr<ProcessSupervisor> supervisor,
           std::unique_ptr<Registrar> registrar);
  std::shared_ptr<Entry> Find(const std::string& name);

  const Options options_;
  // Destroyed in reverse: the registrar first (no more call-backs), then the
  // supervisor (kills and reaps what is left).
  std::unique_ptr<ProcessSupervisor> supervisor_;
  std::unique_ptr<Registrar> registrar_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> children_ ABSL_GUARDED_BY(mu_);
};

// Finds a hostmesh binary ("hostd", "procd", "meshctl"), the first
// executable file of: $HOSTMESH_<NAME> (upper case; if set, it must name
// one: INVALID_ARGUMENT otherwise); the Bazel runfiles of
// the running program; beside the running program, and its Bazel-output
// siblings (../<name>/<name>) if it runs from a Bazel output tree; PREFIX/bin
// when this code was loaded from a shared library PREFIX/lib/libhostmesh.so
// (the installed SDK, `make install`); every dir of $PATH; /usr/local/bin
// and /usr/bin. NOT_FOUND lists where it looked; INVALID_ARGUMENT if `name`
// is empty or a path.
absl::StatusOr<std::string> FindBinary(const std::string& name);

}  // namespace mesh

#endif  // HOSTMESH_LIB_LAUNCHER_LAUNCHER_H_
