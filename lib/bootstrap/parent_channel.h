// The register-back handshake, child side (a hostd spawned by a client's
// Launcher; proto/bootstrap.proto).
//
// The child inherits one end of a socketpair from its parent (fd number in
// env kBootstrapFdEnv), or, started through a launcher it shares no
// descriptor with (srun), its stdin and stdout are two pipes the parent
// holds the other ends of. ReadFromEnv() (or ReadFromStdio()) takes the
// channel early in main and reads the parent's BootstrapInfo from it; once
// the child knows its public address,
// Register() sends the RegisterRequest and waits for Accepted. The channel
// then stays open: a StopRequest calls on_stop; EOF (the parent is gone)
// starts the orphan timer, and on_orphaned runs unless the channel is
// destroyed within the orphan timeout. Nothing listens; no gRPC.
//
// Threads: one FrameChannel thread per ParentChannel; callbacks run on it,
// one at a time. Owners: the ParentChannel owns the channel (and the fd
// from Register on). Shutdown: destroying the ParentChannel closes the
// channel (the parent sees a disconnect) and waits for a running callback;
// no callback runs after it returns. It may be destroyed from one of its
// callbacks: then it returns at once and the channel's thread is joined by
// a short-lived helper thread once that callback returns.
#ifndef HOSTMESH_LIB_BOOTSTRAP_PARENT_CHANNEL_H_
#define HOSTMESH_LIB_BOOTSTRAP_PARENT_CHANNEL_H_

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
    // The channel broke and the orphan timeout passed: the child should
    // exit (the parent is gone).
    std::function<void()> on_orphaned;
  };

  // The child's end of its parent's channel, with the parent's first frame
  // already read from it: one socket, or two pipes (read, written). Owns
  // the fd(s) (close-on-exec) until Register takes them; closes them if
  // destroyed first. Move-only.
  class Inherited {
   public:
    Inherited(Inherited&& other) noexcept;
    Inherited& operator=(Inherited&& other) noexcept;
    ~Inherited();

    const v1::BootstrapInfo& info() const { return info_; }

   private:
    friend class ParentChannel;
    Inherited(int fd, int write_fd, v1::BootstrapInfo info);
    void Close();

    int fd_ = -1;
    // The written fd of a pair of pipes; -1 for a socket (fd_ both ways).
    int write_fd_ = -1;
    v1::BootstrapInfo info_;
  };

  // Takes the fd named in env kBootstrapFdEnv, unsets the variable (TakeEnv:
  // FAILED_PRECONDITION once a second thread runs) and reads the BootstrapInfo
  // like ReadFromFd. std::nullopt if the variable is not set (the process
  // was not spawned by a parent). INVALID_ARGUMENT if it is not an fd number.
  static absl::StatusOr<std::optional<Inherited>> ReadFromEnv(
      absl::Duration timeout = absl::Seconds(10));

  // Takes ownership of `fd` (closed on error) and reads the parent's first
  // frame from it, waiting at most `timeout` for it. INVALID_ARGUMENT if `fd`
  // is not a stream socket or the frame is not a BootstrapInfo with a name;
  // FAILED_PRECONDITION (naming both versions) if the parent speaks another
  // protocol version; UNAVAILABLE if the parent closed the channel first;
  // DEADLINE_EXCEEDED if nothing came in time.
  static absl::StatusOr<Inherited> ReadFromFd(
      int fd, absl::Duration timeout = absl::Seconds(10));

  // For a child whose stdin and stdout are the channel (hostd
  // --parent=stdio, e.g. under `srun --unbuffered`, which passes the bytes
  // through as they are). Call it first in main, before any thread starts
  // and before anything is written to stdout: moves fds 0 and 1 to private
  // close-on-exec fds (no child of this process inherits the channel), then
  // points fd 0 at /dev/null and fd 1 at fd 2 (so a stray printf lands in
  // stderr instead of corrupting frames), then reads the BootstrapInfo from
  // the private stdin like ReadFromFd. stdout may also be a terminal,
  // which is put in raw mode (`srun --unbuffered` runs its task's stdout
  // on a pty, whose output processing would turn a frame's 0x0a bytes into
  // 0x0d 0x0a). INVALID_ARGUMENT if stdin is not a pipe or socket, or
  // stdout none of these (a file, /dev/null: not started by a parent);
  // the other errors as ReadFromFd's. Register then works as for a socket;
  // EOF on stdin is the parent gone (the orphan timer starts).
  static absl::StatusOr<Inherited> ReadFromStdio(
      absl::Duration timeout = absl::Seconds(10));

  // Registers this child's public address (host:port) over the channel and
  // keeps it open. The parent's refusal comes back with its code (e.g.
  // INVALID_ARGUMENT for a bad address, FAILED_PRECONDITION for another
  // protocol version); UNAVAILABLE if the channel closed first;
  // DEADLINE_EXCEEDED if the parent did not answer within `timeout`. The fd
  // is closed when this fails.
  static absl::StatusOr<std::unique_ptr<ParentChannel>> Register(
      Inherited inherited, const std::string& address, Callbacks callbacks,
      absl::Duration timeout = absl::Seconds(10));

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
