// RelayService: the mesh.v1.Relay gRPC service (host.proto), a thin adapter
// over the Router. Each Connect stream is one sender's (named in the call's
// "mesh-sender" metadata): the envelopes it writes are routed one by one, in
// order (the next read starts only after the previous envelope was routed);
// what the router sends to that sender is written back on the same stream
// from a bounded FIFO with one write outstanding. A sender needs no port of
// its own.
//
// Thread-safe; reactions never block. Shutdown() cancels every open stream
// (they would otherwise hold grpc::Server::Shutdown) and refuses new ones;
// call it before shutting the server down.
#ifndef HOSTMESH_HOSTD_RELAY_SERVICE_H_
#define HOSTMESH_HOSTD_RELAY_SERVICE_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "hostd/router.h"
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
  struct Options {
    // Bytes queued for one stream before frames to it are refused
    // (RESOURCE_EXHAUSTED: the sender is not reading).
    size_t max_queued_bytes = 64 << 20;
  };

  // `router` outlives the service.
  RelayService(Router* router, Options options);
  ~RelayService() override;

  grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* Connect(
      grpc::CallbackServerContext* context) override;

  void Shutdown();

 private:
  friend class internal::RelayStreamReactor;
  bool Add(internal::RelayStreamReactor* stream);
  // Streams call it last (see RelayServerStream::OnStreamDone).
  void Remove(internal::RelayStreamReactor* stream);

  Router* const router_;
  const Options options_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<internal::RelayStreamReactor*> streams_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_RELAY_SERVICE_H_
