// HostLink: the proc's side of its local channel to the hostd that spawned
// it (proc_channel.proto). Everything between a proc and the world goes
// through it: the handshake, hostd's stop request, the relayed actor verbs
// and mailbox envelopes.
#ifndef HOSTMESH_PROCD_HOST_LINK_H_
#define HOSTMESH_PROCD_HOST_LINK_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/channel/frame_channel.h"
#include "lib/channel/proc_channel.h"
#include "proto/proc_channel.pb.h"

namespace mesh {

// Start-up: ChannelFdFromEnv (first thing in main), Connect (waits for the
// Welcome and checks its version), build what the callbacks reach (mailbox,
// runtime, verbs), then Start (installs the callbacks, sends Hello).
//
// Threads: the channel's one thread reads and flushes the socket; every
// callback runs on it, one at a time, in frame order (the frames that came
// between Connect and Start are handed over by Start, on the caller's
// thread, before any later one). A channel that closes by itself starts a
// second thread that waits out the orphan timeout and calls on_orphaned.
// The Send* methods and Flush are thread-safe, never block (except Flush)
// and may be called from the callbacks.
//
// Owner: procd's main owns the link; the link owns the channel's fd.
// Shutdown order: stop what sends (the runtime), Flush so the last answers
// go out, then destroy the link (it closes the channel: hostd sees EOF, and
// no callback runs after the destructor returns) before destroying what the
// callbacks reach.
class HostLink {
 public:
  // The environment variable naming the channel's fd in a spawned proc.

  struct Callbacks {
    // An envelope for this proc's mailbox (Mailbox::Deliver).
    std::function<void(v1::Envelope envelope)> on_envelope;
    // A relayed actor verb; its answer goes back with SendResponse.
    std::function<void(v1::ProcRequest request)> on_request;
    // The caller of request `id` is gone (ProcVerbs::Cancel).
    std::function<void(uint64_t id)> on_cancel;
    // hostd asks the proc to stop within `grace` (zero: not said).
    std::function<void(const std::string& reason, absl::Duration grace)>
        on_stop;
    // hostd refused the proc (`reason` says why) and closes the channel.
    std::function<void(const std::string& reason)> on_refused;
    // The channel closed and did not come back within the orphan timeout:
    // hostd is gone. (Nothing redials today, so every closed channel ends
    // here once the timeout passed.)
    std::function<void()> on_orphaned;
  };

  struct StartOptions {
    // The actor types the proc offers, for its Hello.
    std::vector<std::string> actor_types;
    // Overrides the Welcome's orphan_timeout_ms if set.
    std::optional<absl::Duration> orphan_timeout;
  };

  // Reads the fd named by env HOSTMESH_CHANNEL_FD and unsets the variable
  // (call it before any thread starts: setenv/unsetenv are not thread-safe).
  // std::nullopt if it is not set; INVALID_ARGUMENT if it is not a number or
  // names no open fd.
  static absl::StatusOr<std::optional<int>> ChannelFdFromEnv();

  // Takes `fd` (closed on error too), waits up to `timeout` for hostd's
  // Welcome and checks its protocol version. On a mismatch it sends a Hello
  // with this proc's version (so hostd can report both) and returns
  // FAILED_PRECONDITION naming both versions. Also fails if the channel
  // closes first (UNAVAILABLE), no Welcome comes in time
  // (DEADLINE_EXCEEDED), hostd refuses (FAILED_PRECONDITION with its
  // reason) or its first frame is not a Welcome (INVALID_ARGUMENT).
  static absl::StatusOr<std::unique_ptr<HostLink>> Connect(
      int fd, absl::Duration timeout);

  // Closes the channel and joins its threads. Must not be called from a
  // callback.
  ~HostLink();
  HostLink(const HostLink&) = delete;
  HostLink& operator=(const HostLink&) = delete;

  // hostd's Welcome: the proc's name, rank and host, the orphan timeout.
  const v1::Welcome& welcome() const { return welcome_; }

  // Installs the callbacks, sends Hello{version, pid, actor_types}, then
  // hands the callbacks the frames that came since Connect. Call once.
  void Start(Callbacks callbacks, StartOptions options);

  // The mailbox's Outbound: takes the envelope (moving from it) and returns
  // OK, or leaves it alone and returns why it cannot go (the channel is
  // closed, or hostd is not keeping up: RESOURCE_EXHAUSTED).
  absl::Status SendEnvelope(v1::Envelope& envelope);
  // Sends the answer to a relayed verb.
  absl::Status SendResponse(v1::ProcResponse response);

  // Waits until everything sent so far was written to the socket, or
  // `timeout` passed; false on timeout or a closed channel.
  bool Flush(absl::Duration timeout);

 private:
  HostLink() = default;

  absl::Status SendFrame(const v1::ProcFrame& frame);
  // The channel's callbacks.
  void OnFrame(std::string_view bytes);
  void OnClosed(const absl::Status& status);
  // Hands one frame to its callback. Called with dispatch_mu_ held, after
  // Start.
  void DispatchLocked(v1::HostFrame frame)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // Ends the channel on a protocol error (a frame that does not parse, too
  // many frames before Start).
  void EndOnErrorLocked(const absl::Status& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // The channel ended: starts the orphan wait unless hostd refused us. After
  // Start only.
  void OnEndedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  void WaitOrphaned(absl::Duration timeout, std::function<void()> on_orphaned);

  // Frames that may come between the Welcome and Start.
  static constexpr size_t kMaxEarlyFrames = 1024;

  std::unique_ptr<FrameChannel> channel_;
  // Set by Connect before the link is returned, then read-only.
  v1::Welcome welcome_;

  // Serializes the callbacks (the channel thread's and Start's hand-over)
  // and guards the handshake.
  absl::Mutex dispatch_mu_;
  // The channel, for the callbacks to close it on a protocol error; null
  // until Connect set channel_.
  FrameChannel* channel_for_callbacks_ ABSL_GUARDED_BY(dispatch_mu_) = nullptr;
  std::optional<v1::Welcome> got_welcome_ ABSL_GUARDED_BY(dispatch_mu_);
  std::optional<absl::Status> handshake_error_ ABSL_GUARDED_BY(dispatch_mu_);
  bool started_ ABSL_GUARDED_BY(dispatch_mu_) = false;
  bool ended_ ABSL_GUARDED_BY(dispatch_mu_) = false;
  bool refused_ ABSL_GUARDED_BY(dispatch_mu_) = false;
  Callbacks callbacks_ ABSL_GUARDED_BY(dispatch_mu_);
  absl::Duration orphan_timeout_ ABSL_GUARDED_BY(dispatch_mu_);
  // Frames between the Welcome and Start, at most kMaxEarlyFrames.
  std::deque<v1::HostFrame> early_ ABSL_GUARDED_BY(dispatch_mu_);
  // Waits out the orphan timeout once the channel ended; joined by the
  // destructor.
  std::thread orphan_thread_ ABSL_GUARDED_BY(dispatch_mu_);

  // Ends the orphan wait early.
  absl::Mutex orphan_mu_;
  bool destroying_ ABSL_GUARDED_BY(orphan_mu_) = false;
};

}  // namespace mesh

#endif  // HOSTMESH_PROCD_HOST_LINK_H_
