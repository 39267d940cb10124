// ProcChannels: hostd's end of the local channel to each proc
// (proto/proc_channel.proto, version 2). For each proc about to be spawned,
// Expect() makes a socketpair, writes the Welcome into it and hands back the
// end the child inherits. Handshake: the proc's Hello (with our protocol
// version) makes a fresh secret and calls on_hello with its verifier; once
// the manager has stored the verifier durably it calls accept(), which sends
// Accepted{secret}; the proc's Ready then registers it (on_registered). A
// proc that lost its channel (e.g. hostd restarted) dials the rejoin socket
// (Listen) and presents Rejoin{name, incarnation, pid, secret}; the manager
// answers through AcceptRejoin (Rejoined{next secret}, then Ready registers
// it as above) or RefuseRejoin. A registered channel, spawned or rejoined,
// carries everything between the proc and the world by the proc's name: the
// stop request, the relayed actor verbs (Request), mailbox traffic
// (SendEnvelope in; envelopes the proc sends go to the EnvelopeSink).
//
// Threads: one FrameChannel thread per channel reads its frames and runs
// that proc's callbacks (on_hello, on_registered, on_refused,
// on_disconnected, the RejoinHandler for a rejoin connection), one at a
// time; request deadlines, rejoin first-frame deadlines and drain cuts run
// on an own EventLoop; Listen starts one accept thread (poll on the socket
// and a wakeup eventfd). Every call is thread-safe, may be made from any
// callback, and never blocks on a proc (a proc that does not read fills its
// channel's bounded queue, then sends fail with RESOURCE_EXHAUSTED).
//
// Owners: the channels own every FrameChannel, the listening socket (and
// its path, unlinked by the destructor if still ours) and the secrets,
// which are sent once and never logged or kept (only their SHA-256
// verifiers leave this class). The caller owns each Ticket's child_fd.
//
// Promises: per child, on_hello runs at most once, then on_registered at
// most once (only after accept(), or AcceptRejoin, and the proc's Ready),
// then on_disconnected at most once (only for a registered child, unless it
// was forgotten). accept() and every AcceptRejoin/RefuseRejoin are no-ops
// once the channel closed. The RejoinHandler runs at most once per
// connection; the manager answers it exactly once (or the connection closes
// first). Every Request's callback runs exactly once (the response,
// DEADLINE_EXCEEDED at its deadline, CANCELLED by Cancel, UNAVAILABLE when
// the proc's channel closes or on destruction).
//
// Lifetime: Start() before the first Expect() or Listen(). The destructor
// stops the accept thread, closes every channel (joining their threads) and
// answers every pending request; it must not run from a callback. accept()
// closures may outlive the ProcChannels (they then do nothing); no other
// method may be called after destruction starts.
#ifndef HOSTMESH_HOSTD_PROC_CHANNELS_H_
#define HOSTMESH_HOSTD_PROC_CHANNELS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/channel/frame_channel.h"
#include "lib/channel/proc_channel.h"
#include "lib/event/event_loop.h"
#include "proto/proc_channel.pb.h"

namespace mesh {

class ProcChannels {
 public:
  struct Options {
    // How long a proc whose channel broke lives on (sent in the Welcome).
    absl::Duration orphan_timeout = absl::Seconds(30);
    // Largest frame either way (sent in the Welcome, so the proc applies
    // it too): FrameBytesFor(the control message cap). A larger incoming
    // frame ends its channel; sending one is INVALID_ARGUMENT, both naming
    // the cap.
    size_t max_frame_bytes = kDefaultMaxFrameBytes;
    // Bytes queued for a proc that is not reading before sends to it are
    // RESOURCE_EXHAUSTED (the router answers the envelope's port; nothing
    // waits).
    size_t max_pending_bytes = 64 << 20;
    // After a registered proc's process is gone (Forget), how long its
    // channel may take to deliver its last frames and EOF before it is cut.
    absl::Duration drain_timeout = absl::Seconds(2);
    // A connection to the rejoin socket whose first frame (a Rejoin) has
    // not arrived after this is closed.
    absl::Duration rejoin_first_frame_timeout = absl::Seconds(5);
    // At most this many rejoin connections wait for their answer (their
    // Rejoin, then the manager's AcceptRejoin/RefuseRejoin); one more is
    // closed as soon as it is accepted.
    size_t max_waiting_rejoins = 64;
  };

  // The secret a proc is accepted with is 32 random bytes; its verifier is
  // the raw SHA-256 of it (lib/auth/sha256.h), 32 bytes.
  static constexpr size_t kSecretBytes = 32;

  struct ChildCallbacks {
    // The proc said Hello with our protocol version (`pid` as it says). The
    // channels made a fresh secret; `verifier` is its SHA-256. The manager
    // stores the verifier durably, then calls `accept` (from any thread, at
    // most once; later calls and calls after the channel closed do
    // nothing), which sends Accepted{secret}. Not called for a rejoin.
    // Unset: accepted at once.
    std::function<void(pid_t pid, std::string verifier,
                       std::function<void()> accept)>
        on_hello;
    // The proc answered Ready: it knows it was accepted (RUNNING). `pid`
    // is the Hello's, or for a rejoin the connection's peer pid
    // (SO_PEERCRED). From here on the proc is reachable by name.
    std::function<void(pid_t pid)> on_registered;
    // The proc's Hello was refused (e.g. another protocol version); it has
    // been told why and its channel is closed.
    std::function<void(const std::string& why)> on_refused;
    // A registered proc's channel closed (the proc exited, was killed, or
    // closed it).
    std::function<void()> on_disconnected;
  };

  // An expected child: `child_fd` is the socket end it inherits as
  // kChannelChildFd (the caller closes it after spawning).
  struct Ticket {
    uint64_t id = 0;
    int child_fd = -1;
  };

  // A proc asks to rejoin (see Listen).
  struct RejoinRequest {
    // The connection: answer with AcceptRejoin(id, ...) or RefuseRejoin(id,
    // ...); once accepted it is the proc's channel id (Forget, SendStop).
    uint64_t id = 0;
    // What the proc presented; its secret is cleared.
    v1::Rejoin rejoin;
    // SHA-256 of the secret the proc presented (compare with the stored
    // verifier).
    std::string presented_verifier;
    // SHA-256 of the secret AcceptRejoin will hand out (store it durably
    // before accepting).
    std::string next_verifier;
    // The connecting process as the kernel says (SO_PEERCRED).
    pid_t peer_pid = 0;
    uid_t peer_uid = 0;
  };
  using RejoinHandler = std::function<void(RejoinRequest request)>;

  // Envelopes a registered proc sends (to anywhere), in the order sent.
  using EnvelopeSink =
      std::function<void(const std::string& proc, v1::Envelope)>;
  using ResponseCallback =
      std::function<void(absl::StatusOr<v1::ProcResponse>)>;

  explicit ProcChannels(Options options);
  ~ProcChannels();
  ProcChannels(const ProcChannels&) = delete;
  ProcChannels& operator=(const ProcChannels&) = delete;

  // `host_address`: this hostd's advertised host:port (the procs' host).
  void Start(std::string host_address, EnvelopeSink on_envelope);

  // Serves the rejoin socket at `socket_path` (made absolute; a stale
  // socket there is unlinked; anything else there is FAILED_PRECONDITION):
  // bound with permissions `mode` (ListenUnix). Welcomes
  // sent from now on name it. Each connection's first frame must be a
  // Rejoin within Options.rejoin_first_frame_timeout, else it is closed; a
  // Rejoin of another protocol version is refused naming both versions.
  // For a Rejoin the channels make the next secret and run `handler` on the
  // connection's thread. FAILED_PRECONDITION if already listening.
  absl::Status Listen(const std::string& socket_path, mode_t mode,
                      RejoinHandler handler);

  // Accepts rejoin `id` as proc `name` (rank `rank`): sends Rejoined{next
  // secret, host}; on the proc's Ready, callbacks.on_registered(peer pid)
  // and from then on it is `name`'s channel exactly like a spawned one.
  // Does nothing if `id` is not a rejoin waiting for its answer (e.g. it
  // closed meanwhile).
  void AcceptRejoin(uint64_t id, const std::string& name, uint64_t rank,
                    ChildCallbacks callbacks);
  // Refuses rejoin `id`: sends Refused{reason} and closes. Does nothing if
  // `id` is not a rejoin waiting for its answer.
  void RefuseRejoin(uint64_t id, const std::string& reason);

  // `incarnation`: which spawn of `name` this is (sent in the Welcome; the
  // proc presents it again when it rejoins).
  absl::StatusOr<Ticket> Expect(const std::string& name, uint64_t rank,
                                uint64_t incarnation, ChildCallbacks callbacks);
  // Forgets child `id` (its process is gone): no ChildCallbacks of it start
  // after Forget returns (one already running may finish). A registered
  // child's channel first delivers what the proc sent before it went (its
  // last replies) and then closes as usual (pending requests answered); it
  // is cut after Options.drain_timeout. `on_drained` (optional) runs once
  // that is done: at once on this thread if the channel is closed already
  // (or the child never registered), else on the channel's or the
  // deadline's thread. It does not run if the ProcChannels is destroyed
  // first. The caller reports the proc gone from there, after its last
  // replies.
  void Forget(uint64_t id, std::function<void()> on_drained = nullptr);
  // Asks a registered child to stop gracefully. FAILED_PRECONDITION if it
  // has not registered or its channel is closed; NOT_FOUND if unknown.
  absl::Status SendStop(uint64_t id, const std::string& reason,
                        absl::Duration grace);

  // Delivers `envelope` (moved from on success) to the registered proc
  // `proc`. NOT_FOUND if no such proc is registered here; UNAVAILABLE if
  // its channel closed; RESOURCE_EXHAUSTED if it is not reading. Inside a
  // SendBatch of this thread the frame is only queued (same answers).
  absl::Status SendEnvelope(const std::string& proc, v1::Envelope& envelope);

  // ProcChannels' own record of a channel (proc_channels.cc).
 private:
  struct Child;

 public:
  // While one lives, SendEnvelope on this thread (to these channels) only
  // queues each frame, in order; at its end each channel written to gets
  // one write of all its frames (FrameChannel::Queue, WriteQueued). For a
  // caller routing several envelopes in a row, e.g. a relay batch. Must
  // not outlive the channels; an inner one (nested, or of other channels)
  // does nothing.
  class SendBatch {
   public:
    explicit SendBatch(ProcChannels* channels);
    ~SendBatch();
    SendBatch(const SendBatch&) = delete;
    SendBatch& operator=(const SendBatch&) = delete;

   private:
    friend class ProcChannels;
    ProcChannels* const channels_;
    const bool active_;
    // The channels written to (each once), kept alive until written.
    std::vector<std::shared_ptr<Child>> touched_;
  };

  // Relays an actor verb to registered proc `proc`; `done` runs exactly once
  // (see the class comment), possibly before Request returns. Returns the
  // request id (for Cancel).
  uint64_t Request(const std::string& proc, v1::ProcRequest request,
                   absl::Time deadline, ResponseCallback done);
  // The caller is gone: answers request `id` with CANCELLED (if still
  // pending) and tells the proc to drop it.
  void Cancel(uint64_t id);
  // Requests relayed and not yet answered.
  size_t PendingRequests() const;

 private:
  // What accept() closures hold: lets them outlive this object.
  struct Alive {
    absl::Mutex mu;
    ProcChannels* self ABSL_GUARDED_BY(mu) = nullptr;
  };
  struct Pending {
    std::string proc;
    ResponseCallback done;
    EventLoop::TimerId timer = 0;
  };

  // Wraps `fd` in a FrameChannel for `child` (whose id is set) and adds it
  // to children_; the channel's callbacks wait until it is in place.
  absl::Status Attach(const std::shared_ptr<Child>& child, int fd,
                      std::string channel_name);
  void OnFrame(uint64_t id, std::string_view frame);
  // Tells `proc` to drop request `id` (best effort).
  void SendCancel(const std::string& proc, uint64_t id);
  void OnClosed(uint64_t id, const absl::Status& status);
  void OnHello(uint64_t id, const v1::Hello& hello);
  // accept() of child `id`.
  void Accept(uint64_t id);
  void OnReady(uint64_t id);
  void OnRejoin(uint64_t id, v1::Rejoin rejoin);
  // Closes and forgets rejoin connection `id` at once (logging `why`),
  // after sending `refused` if set; only while it waits for its Rejoin, or
  // (unless `only_before_rejoin`) for its answer.
  void Drop(uint64_t id, bool only_before_rejoin, const std::string& why,
            std::optional<v1::HostFrame> refused = std::nullopt);
  // `child` stops waiting for its rejoin answer (if it was).
  void LeaveWaitingLocked(Child& child) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A response on channel `id`: only a registered proc's answer to a
  // request that was sent to it counts.
  void OnResponse(uint64_t id, v1::ProcResponse response);
  // The accept thread.
  void AcceptLoop();
  void AddRejoinConnection(int fd);
  // Removes and returns the pending requests of `proc`.
  std::vector<ResponseCallback> TakePendingLocked(const std::string& proc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(uint64_t request_id, absl::StatusOr<v1::ProcResponse> result);

  // Counts a channel callback under way (the destructor waits for none).
  class InCallback {
   public:
    explicit InCallback(ProcChannels* channels);
    ~InCallback();

   private:
    ProcChannels* const channels_;
  };
  // Takes a closed channel whose child is gone; it is destroyed on the loop
  // (BuryAll), or by the destructor once the loop is gone.
  void Bury(std::unique_ptr<FrameChannel> channel);
  void BuryAll();

  const Options options_;
  std::unique_ptr<EventLoop> loop_;
  const std::shared_ptr<Alive> alive_;

  // Closed channels waiting to be destroyed. Its own lock: a child may go
  // (and bury its channel) while mu_ is held.
  absl::Mutex graveyard_mu_;
  std::vector<std::unique_ptr<FrameChannel>> graveyard_
      ABSL_GUARDED_BY(graveyard_mu_);
  bool bury_posted_ ABSL_GUARDED_BY(graveyard_mu_) = false;
  bool loop_closed_ ABSL_GUARDED_BY(graveyard_mu_) = false;

  mutable absl::Mutex mu_;
  std::string host_address_ ABSL_GUARDED_BY(mu_);
  EnvelopeSink on_envelope_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<Child>> children_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Registered procs by name (the current incarnation).
  absl::flat_hash_map<std::string, std::shared_ptr<Child>> by_name_
      ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_ ABSL_GUARDED_BY(mu_) = 1;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  // Channel callbacks running now (InCallback).
  int active_callbacks_ ABSL_GUARDED_BY(mu_) = 0;
  // The rejoin socket (Listen): its absolute path ("" until Listen).
  std::string rejoin_socket_ ABSL_GUARDED_BY(mu_);
  RejoinHandler on_rejoin_ ABSL_GUARDED_BY(mu_);
  bool listening_ ABSL_GUARDED_BY(mu_) = false;
  // Rejoin connections not answered yet (waiting for their Rejoin or for
  // AcceptRejoin/RefuseRejoin).
  size_t waiting_rejoins_ ABSL_GUARDED_BY(mu_) = 0;

  // Set by Listen, then read by the accept thread and the destructor only.
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  // The bound socket's identity, to unlink only our own at the end.
  dev_t socket_dev_ = 0;
  ino_t socket_ino_ = 0;
  std::string socket_path_;
  std::thread accept_thread_;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_PROC_CHANNELS_H_
