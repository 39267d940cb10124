// HostLink: the proc's side of its local channel to the hostd that spawned
// it (proc_channel.proto, protocol v2). Everything between a proc and the
// world goes through it: the handshake, hostd's stop request, the relayed
// actor verbs and mailbox envelopes; and, when hostd goes away after it
// accepted the proc, redialling hostd's rejoin socket until a (restarted)
// hostd re-adopts the proc or the orphan timeout passes.
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
#include "lib/time/clock.h"
#include "lib/time/sleeper.h"
#include "proto/proc_channel.pb.h"

namespace mesh {

// Start-up: ChannelFdFromEnv (first thing in main), Connect (waits for the
// Welcome and checks its version), build what the callbacks reach (mailbox,
// runtime, verbs), then Start (installs the callbacks, sends Hello).
//
// The connection's life (one state at a time, under dispatch_mu_):
//   unaccepted   Start sent Hello on the spawn channel; frames are
//                dispatched. Accepted{secret}: the link keeps the secret,
//                answers Ready -> accepted. The channel closes first: the
//                proc was never accepted, hostd will not re-adopt it ->
//                ended, on_not_accepted at once (no orphan wait).
//   accepted     frames flow. The channel closes (or breaks, or carries a
//                frame that does not parse) -> reconnecting; the orphan
//                deadline is that moment plus the orphan timeout.
//   reconnecting nothing is dispatched and every Send* fails UNAVAILABLE
//                ("hostd is gone; reconnecting to <socket>"); nothing is
//                queued for later. The link thread dials
//                Welcome.rejoin_socket (AF_UNIX stream, the same framing) at
//                once, then after jittered backoffs (20 ms doubling to 1 s);
//                on each connection its first frame is Rejoin{version, name,
//                incarnation, pid, secret, actor_types}. Rejoined{secret}:
//                the new secret replaces the old one, Ready goes out ->
//                accepted again on the new connection, with the same
//                callbacks. Refused -> ended, on_refused. No answer within
//                rejoin_answer_timeout, or the connection closes: close it
//                and redial. The deadline passes (also with no rejoin
//                socket: then nothing is dialled) -> ended, on_orphaned.
//   ended        refused, orphaned or never accepted: nothing redials, every
//                Send* fails UNAVAILABLE.
// Frames sent before a connection broke that the socket had not taken yet
// are lost with it (hostd then saw the channel close).
//
// Threads: each connection's channel has one thread that reads and flushes
// its socket; the frame callbacks (on_envelope, on_request, on_cancel,
// on_stop, on_refused) run on the current connection's thread, one at a
// time, in frame order (the frames that came between Connect and Start are
// handed over by Start, on the caller's thread, before any later one), and
// connections never overlap: a new one is dialled only after the last one
// ended. on_not_accepted runs on the spawn channel's thread (or in Start,
// if the channel closed before it). The first time an accepted connection
// ends, the link starts its own thread ("link thread"), which redials and
// calls on_orphaned; it then lives, idle, until the destructor. The Send*
// methods and Flush are thread-safe, never block (except Flush) and may be
// called from the callbacks.
//
// Owner: procd's main owns the link; the link owns each connection's fd and
// the secret (held in memory only, never logged; wiped when replaced).
// Shutdown order: stop what sends (the runtime), Flush so the last answers
// go out, then destroy the link (it stops the link thread and closes the
// connection: hostd sees EOF, and no callback runs after the destructor
// returns) before destroying what the callbacks reach.
class HostLink {
 public:
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
    // hostd refused the proc (`reason` says why) and closes the channel: on
    // the spawn channel, or as its answer to a Rejoin. The proc should stop
    // (exit code 1).
    std::function<void(const std::string& reason)> on_refused;
    // The spawn channel closed before hostd accepted this proc: nobody will
    // re-adopt it, so it should end at once (exit code 1). `reason` says so.
    // Unset: on_refused gets the reason instead.
    std::function<void(const std::string& reason)> on_not_accepted;
    // The connection to hostd ended and no hostd re-adopted the proc within
    // the orphan timeout: hostd is gone.
    std::function<void()> on_orphaned;
  };

  struct StartOptions {
    // The actor types the proc offers, for its Hello and Rejoin.
    std::vector<std::string> actor_types;
    // Overrides the Welcome's orphan_timeout_ms if set.
    std::optional<absl::Duration> orphan_timeout;
    // How long a rejoin connection waits for hostd's Rejoined or Refused
    // before it is closed and redialled.
    absl::Duration rejoin_answer_timeout = absl::Seconds(5);
  };

  // Reads the fd named by env HOSTMESH_CHANNEL_FD and unsets the variable
  // (TakeEnv: FAILED_PRECONDITION once a second thread runs).
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

  // Stops the link thread, closes the connection and joins its thread. Must
  // not be called from a callback, nor while another thread is in Flush.
  ~HostLink();
  HostLink(const HostLink&) = delete;
  HostLink& operator=(const HostLink&) = delete;

  // hostd's Welcome: the proc's name, rank, incarnation and host, the
  // orphan timeout, the rejoin socket.
  const v1::Welcome& welcome() const { return welcome_; }

  // Installs the callbacks, sends Hello{version, pid, actor_types}, then
  // hands the callbacks the frames that came since Connect. Call once.
  void Start(Callbacks callbacks, StartOptions options);

  // The mailbox's Outbound: takes the envelope (moving from it) and returns
  // OK, or leaves it alone and returns why it cannot go: UNAVAILABLE while
  // reconnecting or once ended, RESOURCE_EXHAUSTED when hostd is not
  // keeping up.
  absl::Status SendEnvelope(v1::Envelope& envelope);
  // Sends the answer to a relayed verb; fails like SendEnvelope.
  absl::Status SendResponse(v1::ProcResponse response);

  // Waits until everything sent so far on the current connection was
  // written to the socket, or `timeout` passed; false on timeout or when
  // there is no open connection.
  bool Flush(absl::Duration timeout);

 private:
  enum class Phase { kUnaccepted, kAccepted, kReconnecting, kEnded };

  HostLink() = default;

  absl::Status SendFrame(const v1::ProcFrame& frame);
  // Wraps `fd` in a channel whose callbacks name connection `id`.
  absl::StatusOr<std::shared_ptr<FrameChannel>> MakeChannel(int fd, uint64_t id,
                                                            std::string name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // The channels' callbacks, for connection `id` (stale ones are ignored).
  void OnFrame(uint64_t id, std::string_view bytes);
  void OnClosed(uint64_t id, const absl::Status& status);
  // A frame on the spawn channel before Start, or on an accepted
  // connection.
  void OnLiveFrameLocked(v1::HostFrame frame)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // hostd's frame cap (from a Welcome or Rejoined; 0: keep the one there
  // is), on this connection and the later ones.
  absl::Status TakeFrameCapLocked(uint64_t max_frame_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // The first frame on a rejoin connection: Rejoined or Refused.
  void OnRejoinAnswerLocked(v1::HostFrame frame)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // Hands one frame to its callback. After Start.
  void DispatchLocked(v1::HostFrame frame)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // `frame` holds an Accepted (its secret is taken and wiped).
  void OnAcceptedLocked(v1::HostFrame& frame)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // Closes the current connection on a protocol error, then handles its end.
  void EndOnErrorLocked(const absl::Status& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // The current connection ended (closed by hostd, broken, or closed here):
  // moves to the next phase. After Start only.
  void OnConnectionEndedLocked(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // Ends the link for good; what Send* returns from now on.
  void EndLocked(absl::Status why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // Sets what Send* uses: `live` (null: none) and the error otherwise.
  void SetLive(std::shared_ptr<FrameChannel> live, absl::Status down);

  // The link thread: waits for an outage, redials, ends at the destructor.
  void RunLink();
  // One outage, from reconnecting to accepted or ended (or destroying_).
  void ReconnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  // One dial and Rejoin; returns when it was answered, failed or timed out.
  void TryRejoinLocked(absl::Duration deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dispatch_mu_);
  v1::ProcFrame RejoinFrameLocked() const
      ABSL_SHARED_LOCKS_REQUIRED(dispatch_mu_);
  // Deletes channels whose last reference was dropped (never on their own
  // thread: see MakeChannel).
  void BuryChannels();

  // Frames that may come between the Welcome and Start.
  static constexpr size_t kMaxEarlyFrames = 1024;

  // Set by Connect before the link is returned, then read-only.
  v1::Welcome welcome_;

  // Serializes the frame callbacks (the channels' threads and Start's
  // hand-over) and guards the connection state. Taken before send_mu_,
  // never after it.
  absl::Mutex dispatch_mu_;
  Phase phase_ ABSL_GUARDED_BY(dispatch_mu_) = Phase::kUnaccepted;
  // The current connection (the spawn channel, a rejoin connection, or
  // none) and its id; frames and ends of other ids are stale.
  std::shared_ptr<FrameChannel> conn_ ABSL_GUARDED_BY(dispatch_mu_);
  uint64_t conn_id_ ABSL_GUARDED_BY(dispatch_mu_) = 0;
  uint64_t next_conn_id_ ABSL_GUARDED_BY(dispatch_mu_) = 1;
  // Connect's handshake: the Welcome or why there is none.
  std::optional<v1::Welcome> got_welcome_ ABSL_GUARDED_BY(dispatch_mu_);
  // Every connection's frame cap: kDefaultMaxFrameBytes, then the
  // Welcome's max_frame_bytes.
  size_t max_frame_bytes_ ABSL_GUARDED_BY(dispatch_mu_) = kDefaultMaxFrameBytes;
  std::optional<absl::Status> handshake_error_ ABSL_GUARDED_BY(dispatch_mu_);
  bool started_ ABSL_GUARDED_BY(dispatch_mu_) = false;
  // The spawn channel ended before Start (Start handles it).
  std::optional<absl::Status> ended_before_start_ ABSL_GUARDED_BY(dispatch_mu_);
  Callbacks callbacks_ ABSL_GUARDED_BY(dispatch_mu_);
  std::vector<std::string> actor_types_ ABSL_GUARDED_BY(dispatch_mu_);
  absl::Duration orphan_timeout_ ABSL_GUARDED_BY(dispatch_mu_);
  absl::Duration rejoin_answer_timeout_ ABSL_GUARDED_BY(dispatch_mu_);
  // Frames between the Welcome and Start, at most kMaxEarlyFrames.
  std::deque<v1::HostFrame> early_ ABSL_GUARDED_BY(dispatch_mu_);
  // From Accepted or the last Rejoined. Never logged.
  std::string secret_ ABSL_GUARDED_BY(dispatch_mu_);
  // When the current outage began (reconnecting).
  // Ends the reconnect backoff's sleep (the destructor).
  Sleeper destroy_wake_;
  // On MonotonicClock::Real(), as every deadline here.
  absl::Duration outage_start_ ABSL_GUARDED_BY(dispatch_mu_);
  // A rejoin connection sent Rejoin and waits for the answer.
  bool rejoin_waiting_ ABSL_GUARDED_BY(dispatch_mu_) = false;
  bool destroying_ ABSL_GUARDED_BY(dispatch_mu_) = false;
  // Started at the first outage; joined by the destructor.
  std::thread link_thread_ ABSL_GUARDED_BY(dispatch_mu_);

  // What Send* and Flush use. Never blocks for long: Send* hold it only to
  // queue a frame.
  absl::Mutex send_mu_ ABSL_ACQUIRED_AFTER(dispatch_mu_);
  // The connection frames go out on (spawn channel, or an accepted rejoin
  // connection); null while reconnecting or ended.
  std::shared_ptr<FrameChannel> live_ ABSL_GUARDED_BY(send_mu_);
  // What Send* returns while live_ is null, or when live_ turned out
  // closed.
  absl::Status down_ ABSL_GUARDED_BY(send_mu_);

  // Channels no longer referenced, deleted by BuryChannels (the link thread
  // or the destructor): a channel must not be destroyed on its own thread,
  // which may hold the last reference.
  absl::Mutex grave_mu_;
  std::vector<FrameChannel*> graveyard_ ABSL_GUARDED_BY(grave_mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_PROCD_HOST_LINK_H_
