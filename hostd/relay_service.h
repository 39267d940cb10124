// RelayService: the mesh.v1.Relay gRPC service (host.proto), a thin adapter
// over the Router. Each Connect stream is one sender's (named in the call's
// "mesh-sender" metadata): the envelopes it writes are routed one by one, in
// order (the next read starts only after the previous envelope was routed);
// what the router sends to that sender is written back on the same stream
// from a bounded FIFO with one write outstanding. A sender needs no port of
// its own.
//
// Heartbeats: every stream gets a v1::Heartbeat (proto/mailbox.proto) when
// it opens and then every heartbeat_interval, from one thread for all
// streams, carrying this hostd's incarnation (random, chosen when the
// service is made, i.e. at hostd start). The other end tells a silent host
// from a quiet one, and a restarted host from one that came back.
//
// Thread-safe; reactions never block. Shutdown() refuses new streams, sends
// each open one a closing heartbeat as its last frame, gives them a moment
// to get it out, then cancels the rest (they would otherwise hold
// grpc::Server::Shutdown); call it before shutting the server down, after
// the procs were stopped. The destructor calls it.
#ifndef HOSTMESH_HOSTD_RELAY_SERVICE_H_
#define HOSTMESH_HOSTD_RELAY_SERVICE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "hostd/router.h"
#include "lib/auth/server_auth.h"
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
  static constexpr size_t kMaxSenderClaims = 65536;

  struct Options {
    // Bytes queued for one stream before frames to it are refused
    // (RESOURCE_EXHAUSTED: the sender is not reading).
    size_t max_queued_bytes = 64 << 20;
    // How often each stream gets a heartbeat; zero: never (not even the
    // first).
    absl::Duration heartbeat_interval = absl::Milliseconds(500);
    // This host's incarnation; 0: a random one.
    uint64_t incarnation = 0;
  };

  // `router` outlives the service.
  // Streams are authorized by lib/auth: a client (or admin) may open one as
  // "client:<id>", a peer host (or admin) as "host:<address>". A client's
  // stream is added to the router with its identity as owner.
  RelayService(Router* router, const ServerAuth* auth, Options options);
  ~RelayService() override;

  grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* Connect(
      grpc::CallbackServerContext* context) override;

  void Shutdown();

  uint64_t incarnation() const { return incarnation_; }

 private:
  friend class internal::RelayStreamReactor;
  bool Add(internal::RelayStreamReactor* stream);
  // A sender id ("client:<id>", "host:<addr>") belongs to the first
  // identity that streamed as it: another is PERMISSION_DENIED, so no one
  // takes over a client's replies while its stream reconnects. The last
  // kMaxSenderClaims ids are remembered.
  absl::Status ClaimSender(const std::string& sender,
                           const std::string& identity);
  // Streams call it last (see RelayServerStream::OnStreamDone).
  void Remove(internal::RelayStreamReactor* stream);
  v1::RelayFrame HeartbeatFrame(bool closing) const;
  // The heartbeat thread: one heartbeat to every stream per interval.
  void SendHeartbeats();

  Router* const router_;
  const ServerAuth* const auth_;
  const Options options_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<internal::RelayStreamReactor*> streams_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> sender_claims_
      ABSL_GUARDED_BY(mu_);
  std::deque<std::string> claim_order_ ABSL_GUARDED_BY(mu_);
  const uint64_t incarnation_;
  std::thread heartbeats_;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_RELAY_SERVICE_H_
