// The register-back handshake, parent side.
//
// A parent (hostd for its procds; a client for the hostds it spawns) runs a
// Registrar: a private gRPC server on a Unix socket in a 0700 runtime dir.
// For each child it is about to spawn it calls Expect(), which mints a
// one-time secret and writes a BootstrapInfo into a pipe whose read end the
// child inherits (fd number passed in env HOSTMESH_BOOTSTRAP_FD; the secret
// is never on argv or in the environment). The child calls Register with the
// secret and its address; the response stream stays open as the parent
// channel. A wrong, unknown or replayed secret is PERMISSION_DENIED.
//
// Thread-safe. Callbacks run on gRPC threads and must not block. Per child:
// callbacks never overlap, on_registered runs at most once and before
// on_disconnected, which runs at most once. A request with the right secret
// but a bad address or pid is INVALID_ARGUMENT and does not use the secret.
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

// Name of the environment variable holding the inherited fd's number.
inline constexpr char kBootstrapFdEnv[] = "HOSTMESH_BOOTSTRAP_FD";
// The fd number the child gets the BootstrapInfo pipe on.
inline constexpr int kBootstrapChildFd = 3;

class Registrar {
 public:
  struct Options {
    // Created with mode 0700 if missing; the socket lives inside it.
    std::string runtime_dir;
    // Host part children should advertise (copied into BootstrapInfo).
    std::string advertise_host = "127.0.0.1";
    // How long a child whose parent channel broke lives on.
    absl::Duration orphan_timeout = absl::Seconds(30);
  };

  struct ChildCallbacks {
    // The child registered (exactly once): its public address and pid.
    std::function<void(const std::string& address, pid_t pid)> on_registered;
    // The child's channel closed after it registered (child gone or its
    // channel broke).
    std::function<void()> on_disconnected;
  };

  // An expected child. read_fd is the pipe end for the child to inherit as
  // kBootstrapChildFd; the caller closes it after spawning.
  struct Ticket {
    uint64_t id = 0;
    int read_fd = -1;
  };

  static absl::StatusOr<std::unique_ptr<Registrar>> Create(Options options);
  // Shuts the server down and closes every channel, forgetting every child
  // (no on_disconnected for them); waits for running callbacks. Must not be
  // called from a callback.
  ~Registrar();
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;

  const std::string& socket_path() const;

  // Mints a one-time secret for child `name` of `rank`.
  absl::StatusOr<Ticket> Expect(const std::string& name, uint64_t rank,
                                ChildCallbacks callbacks);

  // Forgets child `id`: its secret is no longer accepted and its channel, if
  // open, is closed. No callback runs after Forget returns: it waits for a
  // running callback of that child, unless called from that callback (which
  // is allowed). Two callbacks that Forget each other's child deadlock.
  void Forget(uint64_t id);

  // Asks a registered child to stop gracefully, over its channel.
  // FAILED_PRECONDITION if it has not registered or its channel is closed;
  // NOT_FOUND if `id` is unknown (or forgotten).
  absl::Status SendStop(uint64_t id, const std::string& reason,
                        absl::Duration grace);

 private:
  class Impl;
  explicit Registrar(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_BOOTSTRAP_REGISTRAR_H_
