// The register-back handshake, child side (procd under hostd; hostd under a
// client that spawned it).
//
// Thread-safe. Callbacks run on the channel's own thread, one at a time.
#ifndef HOSTMESH_LIB_BOOTSTRAP_PARENT_CHANNEL_H_
#define HOSTMESH_LIB_BOOTSTRAP_PARENT_CHANNEL_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/bootstrap.pb.h"

namespace mesh {

class ParentChannel {
 public:
  struct Callbacks {
    // The parent asked for a graceful stop.
    std::function<void(const std::string& reason, absl::Duration grace)>
        on_stop;
    // The channel broke and was not re-established within the orphan
    // timeout: the child should exit (the parent is gone).
    std::function<void()> on_orphaned;
  };

  // Reads the BootstrapInfo from the fd named in env HOSTMESH_BOOTSTRAP_FD,
  // then closes that fd and unsets the variable. std::nullopt if the
  // variable is not set (the process was not spawned by a parent).
  static absl::StatusOr<std::optional<v1::BootstrapInfo>> ReadFromEnv();

  // Reads a BootstrapInfo from `fd` to EOF and closes `fd` (also on error).
  // INVALID_ARGUMENT if it is malformed or lacks socket, name or secret.
  static absl::StatusOr<v1::BootstrapInfo> ReadFromFd(int fd);

  // Registers with the parent (secret + this child's public address) and
  // keeps the channel open. Fails if the parent rejects the secret or does
  // not answer within `timeout`.
  static absl::StatusOr<std::unique_ptr<ParentChannel>> Register(
      const v1::BootstrapInfo& info, const std::string& address,
      Callbacks callbacks, absl::Duration timeout = absl::Seconds(10));

  // Closes the channel (the parent sees a disconnect). Waits for a running
  // callback; no callback runs after it returns. May be called from a
  // callback: then it returns at once and the thread ends after it.
  ~ParentChannel();
  ParentChannel(const ParentChannel&) = delete;
  ParentChannel& operator=(const ParentChannel&) = delete;

 private:
  class Impl;
  explicit ParentChannel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_BOOTSTRAP_PARENT_CHANNEL_H_
