// RelayService: the mesh.v1.Relay gRPC service (host.proto), a thin adapter
// over the Router. Each Connect stream is one sender's (named in the call's
// "mesh-sender" metadata): the envelopes it writes are routed one by one, in
// order (the next read starts only after the previous envelope was routed);
// what the router sends to that sender is written back on the same stream
// from a bounded FIFO with one write outstanding. A sender needs no port of
// its own. Batches (v1::RelayBatch, lib/relay): a batch the sender wrote is
// routed frame by frame, in order, and its envelopes to each proc leave in
// one write to that proc's channel (Router::SendBatch); frames queued for
// the sender behind the write in flight go back as one batch once it
// announced that it reads them.
//
// Heartbeats: every stream gets a v1::Heartbeat (proto/mailbox.proto) when
// it opens and then every heartbeat_interval, carrying this hostd's
// incarnation (random, chosen when the service is made, i.e. at hostd
// start). The other end tells a silent host from a quiet one, and a
// restarted host from one that came back.
//
// Clients (streams of "client:<id>"): a client's stream counts for its
// owner lease (hostd/owner_leases.h) from when it opens until it ends; a
// stream of a client id whose lease is another identity's is refused
// (PERMISSION_DENIED). Once the router has it, it first gets the
// MailboxLost of each proc leased to that client that ended while it had
// no stream here (hostd/missed_ends.h; a frame that cannot be queued is
// logged). Once a client sent a heartbeat, its stream is cancelled if
// nothing at all arrives on it for max(3 x the interval it announced, 1s)
// (the interval counted at most kMaxClientHeartbeat), so a client that
// froze loses its stream and its lease starts to run; a stream that never
// sent a heartbeat is never judged silent.
//
// Threads: reactions run on gRPC threads and never block. One ticker thread
// for all streams sends the heartbeats, ends silent client streams and runs
// OwnerLeases::Check, every min(heartbeat_interval, kTick).
//
// Shutdown() refuses new streams, sends each open one a closing heartbeat
// as its last frame, gives them a moment to get it out, then cancels the
// rest (they would otherwise hold grpc::Server::Shutdown), and joins the
// ticker; call it before shutting the server down, after the procs were
// stopped, and before the leases or the router go. The destructor calls it.
#ifndef HOSTMESH_HOSTD_RELAY_SERVICE_H_
#define HOSTMESH_HOSTD_RELAY_SERVICE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "hostd/missed_ends.h"
#include "hostd/owner_leases.h"
#include "hostd/router.h"
#include "hostd/sender_claims.h"
#include "lib/auth/server_auth.h"
#include "lib/relay/relay_stream.h"
#include "lib/time/clock.h"
#include "lib/time/sleeper.h"
#include "proto/host.grpc.pb.h"

namespace mesh {

// INVALID_ARGUMENT unless `sender` (the kRelaySenderMetadata of a stream) is
// "client:<id>" or "host:<host:port>" with a bounded, printable id.
absl::Status ValidateSender(const std::string& sender);

namespace internal {
class RelayStreamReactor;
}  // namespace internal

class RelayService final : public v1::Relay::CallbackService {
 public:
  // The ticker's longest sleep: the granularity of silence and lease checks.
  static constexpr absl::Duration kTick = absl::Milliseconds(250);
  // A client stream is silent after 3 of its heartbeat intervals, counted
  // at most this long each, and at least kMinClientSilence.
  static constexpr absl::Duration kMaxClientHeartbeat = absl::Minutes(1);
  static constexpr absl::Duration kMinClientSilence = absl::Seconds(1);

  struct Options {
    // Bytes queued for one stream before frames to it are refused
    // (RESOURCE_EXHAUSTED: the sender is not reading).
    size_t max_queued_bytes = 64 << 20;
    // The largest RelayBatch a stream writes or reads (lib/relay), at most
    // the router's max_envelope_bytes (the gRPC message limit); 0: none.
    size_t max_batch_bytes = kDefaultMaxRelayBatchBytes;
    // How often each stream gets a heartbeat; zero: never (not even the
    // first).
    absl::Duration heartbeat_interval = absl::Milliseconds(500);
    // This host's incarnation; 0: a random one.
    uint64_t incarnation = 0;
    // What a client's stream gets first (see the class comment); null:
    // nothing. Outlives the service.
    MissedEnds* missed_ends = nullptr;
    const MonotonicClock* clock = &MonotonicClock::Real();
  };

  // `router`, `auth`, `claims` and `leases` (may be null: no leases)
  // outlive the service. Streams are authorized by lib/auth: a client (or
  // admin) may open one as "client:<id>", a peer host (or admin) as
  // "host:<address>", each id belonging to the identity that first used it
  // (`claims`, where it is pinned while the stream lives). A client's (not
  // an admin's) stream is added to the router with its identity as owner.
  RelayService(Router* router, const ServerAuth* auth, SenderClaims* claims,
               OwnerLeases* leases, Options options);
  ~RelayService() override;

  grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* Connect(
      grpc::CallbackServerContext* context) override;

  void Shutdown();

  uint64_t incarnation() const { return incarnation_; }

 private:
  friend class internal::RelayStreamReactor;
  bool Add(internal::RelayStreamReactor* stream);
  // Streams call it last (see RelayServerStream::OnStreamDone).
  void Remove(internal::RelayStreamReactor* stream);
  v1::RelayFrame HeartbeatFrame(bool closing) const;
  // The ticker thread (see the class comment).
  void Tick();

  Router* const router_;
  const ServerAuth* const auth_;
  SenderClaims* const claims_;
  OwnerLeases* const leases_;
  const Options options_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<internal::RelayStreamReactor*> streams_
      ABSL_GUARDED_BY(mu_);
  const uint64_t incarnation_;
  // Ends the ticker's sleep (Shutdown).
  Sleeper ticker_stop_;
  std::thread ticker_;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_RELAY_SERVICE_H_
