// The register-back handshake, parent side (proto/bootstrap.proto).
//
// A parent (a client that spawns hostds) runs a Registrar. It listens on
// nothing: for each child it is about to spawn it calls Expect(), which makes
// a socketpair, writes the BootstrapInfo into it and hands back the end the
// child inherits (as fd kBootstrapChildFd, its number in env
// kBootstrapFdEnv). Holding that end is the child's only credential: no
// secret, no socket path. The child sends one RegisterRequest with its
// address; the socketpair then stays open as the parent channel.
//
// ExpectOnPipes() is the same over two pipes, for a child that shares no
// descriptor with the parent but its stdin and stdout: hostd --parent=stdio
// started through `srun --unbuffered` on another machine, whose stdin and
// stdout srun carries. The spawner gives the child (srun) the two ends as
// its stdin and stdout; holding them is the credential, as holding the
// socketpair's end is. The pid such a child registers with is a pid on
// its own machine: reported, never compared with the spawned process's.
//
// Threads: one FrameChannel thread per expected child reads its frames and
// runs that child's callbacks. Every method is thread-safe and never blocks
// on a child. Per child: callbacks never overlap, on_registered runs at most
// once and before on_disconnected, which runs at most once (and only after
// on_registered). A RegisterRequest with a bad address or pid is refused
// (INVALID_ARGUMENT) and the child may try again; one of another protocol
// version is refused (FAILED_PRECONDITION, naming both versions); a second
// one after the child registered is refused (ALREADY_EXISTS) and the first
// registration stands.
//
// Shutdown order: the destructor closes every channel (children see EOF and
// start their orphan timers), forgetting every child (no on_disconnected),
// and joins the channel threads; it must not run from a callback.
#ifndef HOSTMESH_LIB_BOOTSTRAP_REGISTRAR_H_
#define HOSTMESH_LIB_BOOTSTRAP_REGISTRAR_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mesh {

// Name of the environment variable holding the inherited channel's fd number.
inline constexpr char kBootstrapFdEnv[] = "HOSTMESH_PARENT_FD";
// The fd number the child gets its end of the channel on.
inline constexpr int kBootstrapChildFd = 3;

class Registrar {
 public:
  struct Options {
    // How long a child whose parent channel broke lives on (sent in the
    // BootstrapInfo).
    absl::Duration orphan_timeout = absl::Seconds(30);
    // Sent to every child in its BootstrapInfo (see bootstrap.proto).
    std::string admin_token;
    std::string peer_token;
  };

  struct ChildCallbacks {
    // The child registered (exactly once): its public address and the pid
    // it says it has (over pipes, possibly on another machine).
    std::function<void(const std::string& address, pid_t pid)> on_registered;
    // The child's channel closed after it registered (child gone or its
    // channel broke).
    std::function<void()> on_disconnected;
  };

  // An expected child. child_fd is the socket end for the child to inherit
  // as kBootstrapChildFd; it is close-on-exec (a spawner's dup2 onto the
  // child's fd clears that) and the caller closes it after spawning.
  struct Ticket {
    uint64_t id = 0;
    int child_fd = -1;
  };

  // INVALID_ARGUMENT for a negative orphan timeout.
  static absl::StatusOr<std::unique_ptr<Registrar>> Create(Options options);
  // Closes every channel, forgetting every child (no on_disconnected for
  // them); waits for running callbacks. Must not be called from a callback.
  ~Registrar();
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;

  // Opens the channel for child `name` of `rank` and writes its
  // BootstrapInfo. INVALID_ARGUMENT for an empty name; the errno's code if
  // the socketpair cannot be made.
  absl::StatusOr<Ticket> Expect(const std::string& name, uint64_t rank,
                                ChildCallbacks callbacks);

  // An expected child on two pipes: child_stdin is the read end of the pipe
  // the parent writes (the BootstrapInfo is in it already), child_stdout
  // the write end of the one it reads. Both close-on-exec (a spawner's
  // dup2 onto 0 and 1 clears that); the caller closes both after spawning,
  // so that the child's end of either pipe is the only one left (its exit
  // is then EOF here, and Forget is EOF on its stdin).
  struct PipeTicket {
    uint64_t id = 0;
    int child_stdin = -1;
    int child_stdout = -1;
  };
  // Like Expect, over two pipes (see the class comment). Forget, SendStop
  // and the callbacks work alike. The errno's code if a pipe cannot be made.
  absl::StatusOr<PipeTicket> ExpectOnPipes(const std::string& name,
                                           uint64_t rank,
                                           ChildCallbacks callbacks);

  // Forgets child `id`: its channel is closed (the child sees EOF, also one
  // that has not registered yet). No callback runs after Forget returns: it
  // waits for a running callback of that child, unless called from that
  // callback (which is allowed). Two callbacks that Forget each other's
  // child deadlock. Unknown ids are ignored.
  void Forget(uint64_t id);

  // Asks a registered child to stop gracefully, over its channel.
  // FAILED_PRECONDITION if it has not registered or its channel is closed;
  // NOT_FOUND if `id` is unknown (or forgotten); RESOURCE_EXHAUSTED if the
  // child does not read its channel.
  absl::Status SendStop(uint64_t id, const std::string& reason,
                        absl::Duration grace);

 private:
  class Impl;
  explicit Registrar(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_BOOTSTRAP_REGISTRAR_H_
