// Router: where every envelope that enters a host goes. Envelopes come from
// relay streams (clients, other hosts) and from this host's procs; each goes
// to one of
//   - a proc of this host, over its local channel (ProcChannels);
//   - a client, on the relay stream that client opened to this host;
//   - another host, on the relay stream this host opens to it (PeerSender);
//   - the host's own mailbox (the ports where it folds reduced casts).
// A cast (Envelope.targets) is fanned out here: one copy per target proc,
// and with a reducer the replies are folded (lib/mailbox/reduce.h) into one
// reply to the sender. A tree cast (Envelope.forward) is also passed on to
// the hosts below this one, each with its own part of the tree; with a
// reducer, each answers this host's fold with one Reduced for its subtree.
// A child's share of the fold's deadline is shorter (kTreeMargin per
// level), so a host that is slow or gone costs its parent only its own
// subtree's ranks, named, never the whole answer. Envelopes from one sender are
// routed in the order they arrive, so per-sender order holds end to end.
//
// Who may send what (every envelope names its sender, `from`: a proc name,
// "client:<id>" or "host:<host:port>" for a relay stream, "" for the host
// itself):
//   - only this host's procs (and the host itself) reach other hosts: a
//     client or a peer host reaches a host through its own stream to it.
//     The one exception is a tree cast, which this host passes on to the
//     hosts the sender's tree names, dialling them as it dials any peer
//     (its host certificate; a token only over TLS or loopback). The host
//     below trusts this one's word for who sent it (forward_owner, the
//     sender's identity), as peers are already trusted to reach every proc,
//     and holds the cast's targets to that identity's procs;
//   - a client or a peer host reaches only this host's procs (a peer also
//     this host's ports, where its tree folds gather subtrees' answers); a
//     client's reply_to names itself or a proc, a peer's never this host's
//     own mailbox: no client writes into another's mailbox or the host's
//     folds;
//   - a client that is not an admin (its stream was added with an owner)
//     reaches, and names as reply_to, only procs it owns (`owner_of`);
//     PERMISSION_DENIED otherwise;
//   - sizes are bounded: an envelope over `max_envelope_bytes`, a cast over
//     kMaxCastTargets targets or kMaxCastBytes of copies, and more than
//     kMaxFolds folds in flight are RESOURCE_EXHAUSTED.
//
// Thread-safe; never blocks on a proc, a stream or a peer (each has a
// bounded queue). An envelope that cannot be delivered gets an error reply
// to its reply_to naming where it was going and why.
//
// Lifetime: Start() once the host's address is known; Shutdown() before
// destroying the streams' server and the ProcChannels; stream sinks are
// never called after RemoveStream returns.
#ifndef HOSTMESH_HOSTD_ROUTER_H_
#define HOSTMESH_HOSTD_ROUTER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "hostd/proc_channels.h"
#include "lib/event/event_loop.h"
#include "lib/mailbox/mailbox.h"
#include "proto/mailbox.pb.h"

namespace mesh {

// The MailboxLost frame for a proc that ended: its host and name, the reason
// as UNAVAILABLE, and how it ended.
v1::RelayFrame LostFrame(const v1::ProcExit& exit);

class Router {
 public:
  static constexpr int kMaxCastTargets = 65536;
  static constexpr size_t kMaxCastBytes = size_t{1} << 30;
  static constexpr size_t kMaxFolds = 16384;
  static constexpr absl::Duration kMaxFoldTimeout = absl::Minutes(10);
  // A tree cast (Envelope.forward) names at most this many hosts below the
  // receiving one, at most this deep.
  static constexpr int kMaxTreeHosts = 4096;
  static constexpr int kMaxTreeDepth = 16;
  // How much sooner than its parent a host below answers a tree fold: a
  // tenth of the parent's time, at most this.
  static constexpr absl::Duration kTreeMargin = absl::Milliseconds(200);

  // Queues a frame on a relay stream; false if the stream is gone or full.
  using StreamSink = std::function<absl::Status(v1::RelayFrame)>;
  // Sends an envelope to another host (host:port).
  using PeerSender =
      std::function<absl::Status(const std::string& host, v1::Envelope&)>;
  // The identity that owns proc `proc` of this host; NOT_FOUND if none.
  using OwnerLookup =
      std::function<absl::StatusOr<std::string>(const std::string& proc)>;
  // How proc `proc` of this host ended: NOT_FOUND if there is no such proc,
  // nullopt while its current incarnation lives, else its reason.
  using EndLookup = std::function<absl::StatusOr<std::optional<std::string>>(
      const std::string& proc)>;

  // `procs` outlives the router. `max_envelope_bytes`: the largest envelope
  // sent on a relay stream (the gRPC message limit). `owner_of` (may be
  // null: no proc has an owner) is called without the router's lock.
  // `end_of` (may be null: nothing is held, see kHoldFor) is called
  // without the router's locks.
  Router(ProcChannels* procs, PeerSender peers,
         size_t max_envelope_bytes = 4 << 20, OwnerLookup owner_of = nullptr,
         EndLookup end_of = nullptr);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // `host_address`: this host's advertised host:port. Envelopes to it (or
  // with no host) are local. Before Start every envelope is refused.
  void Start(const std::string& host_address);
  // Refuses everything from now on and ends pending folds.
  void Shutdown();

  // Routes one envelope (see the class comment). `from` is the sender's
  // mailbox id: a proc name, a relay stream's sender id, or "".
  void Route(v1::Envelope envelope, const std::string& from);

  // Envelopes routed to procs on this thread while it lives are written
  // to each proc's channel together when it ends (ProcChannels::SendBatch).
  class SendBatch {
   public:
    explicit SendBatch(Router* router) : batch_(router->procs_) {}

   private:
    ProcChannels::SendBatch batch_;
  };

  // The largest envelope sent on a relay stream (the gRPC message limit).
  size_t max_envelope_bytes() const { return max_envelope_bytes_; }

  // Answers `envelope`'s reply_to (if any) with `why`.
  void Bounce(const v1::Envelope& envelope, const absl::Status& why);

  // Envelopes for a proc that cannot take them (its channel is gone) while
  // its end is not reported yet wait, at most kHoldFor and kMaxHeld of
  // them, so that their senders hear how the proc ended (ProcLost answers
  // them with its reason) rather than "channel closed". Once the proc has
  // ended (EndLookup), later ones are answered with that reason at once.
  static constexpr absl::Duration kHoldFor = absl::Seconds(3);
  static constexpr size_t kMaxHeld = 1024;
  static constexpr size_t kMaxHeldBytes = 16 << 20;
  // Envelopes held now (the metrics' queue depth).
  size_t HeldEnvelopes();

  // A relay stream from `sender` ("client:<hex>" or "host:<addr>").
  // `owner`: set for a client (not an admin), whose stream hears only of
  // the procs it owns ending; unset, a stream hears of every proc.
  //
  // One stream per sender: the newest wins. A live stream of the same
  // sender is forgotten at once (its sink is called no more) and its
  // `replaced` is called, under the router's lock, so it must only ask its
  // stream to end. The caller has checked that the sender is the caller's
  // (SenderClaims), so this is a sender coming back before its host saw
  // its old stream end (it was stopped, or a connection died silently),
  // never another identity taking the stream over.
  absl::StatusOr<uint64_t> AddStream(
      const std::string& sender, StreamSink sink,
      std::optional<std::string> owner = std::nullopt,
      std::function<void()> replaced = nullptr);
  void RemoveStream(uint64_t id);

  // A proc of this host is gone (`exit.proc`, reported once by the proc
  // manager, with how it ended): every relay stream that may hear of it
  // (its owner's, admins', peers') gets a MailboxLost (LostFrame), so
  // calls pending on it fail at once, and so do pending folds.
  void ProcLost(const v1::ProcExit& exit);

 private:
  struct Stream {
    std::string sender;
    StreamSink sink;
    std::optional<std::string> owner;
    std::function<void()> replaced;
  };
  struct Fold;

  bool IsLocalHost(const std::string& host) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // OK if `from` (a stream added with `owner`, if any; for a peer's tree
  // cast, its forward_owner) may send `envelope` (see the class comment);
  // `self`: this host's address.
  absl::Status CheckSender(const v1::Envelope& envelope,
                           const std::string& from, bool local,
                           const std::optional<std::string>& owner,
                           const std::string& self) const;
  // OK if `proc` is not a proc of this host or `owner` owns it.
  absl::Status CheckOwner(const std::string& proc,
                          const std::string& owner) const;
  // RESOURCE_EXHAUSTED if `envelope` is over what a relay stream carries.
  absl::Status CheckRelaySize(const v1::Envelope& envelope) const;
  // OK if the cast's copies (its targets, and for a tree cast the hosts
  // below, each named once, none of them `self`) are within the limits.
  absl::Status CheckCast(const v1::Envelope& envelope,
                         const std::string& self) const;
  void RouteLocal(v1::Envelope& envelope);
  // Passes a tree cast on to each host of envelope.forward (see the class
  // comment); with a fold, the copies answer `fold_port` within
  // `timeout_ms`. Each copy that cannot go is answered (Bounce) with its
  // CastHost's correlation.
  void Forward(const v1::Envelope& envelope, const v1::PortRef* fold_port,
               uint32_t timeout_ms);
  // Forwards (see Forward), then hands a copy to each target of this host.
  void FanOut(v1::Envelope& envelope);
  void StartFold(v1::Envelope& envelope);
  // Sends `envelope` to its proc, or holds or bounces it (see kHoldFor).
  void SendToProc(std::string proc, v1::Envelope& envelope);
  // Answers the envelopes held for `proc` with `why` (OK: with the send's
  // own error), if they are hold `generation` (0: whichever).
  void ReleaseHeld(const std::string& proc, const absl::Status& why,
                   uint64_t generation = 0);

  ProcChannels* const procs_;
  const PeerSender peers_;
  const size_t max_envelope_bytes_;
  const OwnerLookup owner_of_;
  const EndLookup end_of_;
  std::atomic<size_t> folds_{0};

  mutable absl::Mutex mu_;
  std::string host_address_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint64_t, Stream> streams_ ABSL_GUARDED_BY(mu_);
  // The current stream of each sender.
  absl::flat_hash_map<std::string, uint64_t> by_sender_ ABSL_GUARDED_BY(mu_);
  uint64_t next_stream_ ABSL_GUARDED_BY(mu_) = 1;

  // The host's own mailbox (id ""), where folds gather replies. Created by
  // Start.
  std::unique_ptr<Mailbox> mailbox_;
  // Fold deadlines.
  std::unique_ptr<EventLoop> loop_;

  // What waits for a proc's end (see kHoldFor).
  absl::Mutex held_mu_;
  struct Held {
    std::vector<v1::Envelope> envelopes;
    size_t bytes = 0;
    absl::Status error;       // the send's own, for the timeout
    uint64_t generation = 0;  // its timer's
  };
  absl::flat_hash_map<std::string, Held> held_ ABSL_GUARDED_BY(held_mu_);
  size_t num_held_ ABSL_GUARDED_BY(held_mu_) = 0;
  size_t held_bytes_ ABSL_GUARDED_BY(held_mu_) = 0;
  uint64_t next_generation_ ABSL_GUARDED_BY(held_mu_) = 1;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_ROUTER_H_
