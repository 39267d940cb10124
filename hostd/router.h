// Router: where every envelope that enters a host goes. Envelopes come from
// relay streams (clients, other hosts) and from this host's procs; each goes
// to one of
//   - a proc of this host, over its local channel (ProcChannels);
//   - a client, on the relay stream that client opened to this host;
//   - another host, on the relay stream this host opens to it (PeerSender);
//   - the host's own mailbox (the ports where it folds reduced casts).
// A cast (Envelope.targets) is fanned out here: one copy per target proc,
// and with a reducer the replies are folded (lib/mailbox/reduce.h) into one
// reply to the sender. Envelopes from one sender are routed in the order
// they arrive, so per-sender order holds end to end.
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

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "hostd/proc_channels.h"
#include "lib/event/event_loop.h"
#include "lib/mailbox/mailbox.h"
#include "proto/mailbox.pb.h"

namespace mesh {

class Router {
 public:
  // Queues a frame on a relay stream; false if the stream is gone or full.
  using StreamSink = std::function<absl::Status(v1::RelayFrame)>;
  // Sends an envelope to another host (host:port).
  using PeerSender =
      std::function<absl::Status(const std::string& host, v1::Envelope&)>;

  // `procs` outlives the router.
  Router(ProcChannels* procs, PeerSender peers);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // `host_address`: this host's advertised host:port. Envelopes to it (or
  // with no host) are local. Before Start every envelope is refused.
  void Start(const std::string& host_address);
  // Refuses everything from now on and ends pending folds.
  void Shutdown();

  // Routes one envelope (see the class comment). `from` names the sender
  // (a relay stream's sender id, or a proc name) for logs.
  void Route(v1::Envelope envelope, const std::string& from);

  // A relay stream from `sender` ("client:<hex>" or "host:<addr>"). A newer
  // stream of the same sender replaces the older one as its route.
  uint64_t AddStream(const std::string& sender, StreamSink sink);
  void RemoveStream(uint64_t id);

  // Proc `proc` of this host is gone: every relay stream is told (so calls
  // pending on it fail at once), and so are pending folds.
  void ProcLost(const std::string& proc, const absl::Status& why);

 private:
  struct Stream {
    std::string sender;
    StreamSink sink;
  };
  struct Fold;

  bool IsLocalHost(const std::string& host) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void RouteLocal(v1::Envelope& envelope);
  void FanOut(v1::Envelope& envelope);
  void StartFold(v1::Envelope& envelope);
  // Sends the error reply for an envelope that cannot go.
  void Refuse(const v1::Envelope& envelope, const absl::Status& why);

  ProcChannels* const procs_;
  const PeerSender peers_;

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
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_ROUTER_H_
