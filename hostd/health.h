// hostd's health service and server reflection, both for authenticated
// callers only.
//
// HealthService is grpc.health.v1.Health (Debian's grpc-proto), written here
// rather than gRPC's built-in one so that each call is authenticated like
// every other call to hostd (ServerAuth; any role may ask). One state holds
// for the whole host ("") and for each service hostd names: NOT_SERVING
// until hostd is ready (procs of an earlier hostd taken over, listening),
// SERVING while it serves (NOT_SERVING while drained), NOT_SERVING for good
// once it shuts down. Check
// answers the state (NOT_FOUND for a service it does not know); Watch sends
// the state at once and then each change (SERVICE_UNKNOWN for a service it
// does not know), and ends when its client cancels or at Shutdown.
//
// Reflection: gRPC's own reflection service (grpc.reflection.v1alpha), added
// to a ServerBuilder by ReflectionOption, with ReflectionGate in front of it.
// ServerAuth's metadata processor already refuses any call without an
// identity before any handler; the gate checks the same again for the
// reflection service, which has no handler of ours to call Authenticate.
#ifndef HOSTMESH_HOSTD_HEALTH_H_
#define HOSTMESH_HOSTD_HEALTH_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "lib/auth/server_auth.h"

namespace mesh {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // `services`: the service names Check and Watch know besides "" (the
  // whole host), e.g. "mesh.v1.Host". Starts NOT_SERVING.
  HealthService(const ServerAuth* auth, std::vector<std::string> services);
  // After the server (which ends every Watch) is gone.
  ~HealthService() override;

  // SERVING or NOT_SERVING, for "" and every service; each Watch hears of a
  // change. No effect after Shutdown.
  void SetServing(bool serving);
  // A drained host (DrainHost) is NOT_SERVING whatever SetServing said,
  // until it is undrained.
  void SetDraining(bool draining);
  // NOT_SERVING for good: each Watch is sent it and then ended (OK); a
  // Watch opened later gets it and ends at once. Before the server's own
  // Shutdown, so that watchers hear it; it waits for nothing (a watcher
  // that reads nothing more is cancelled by the server's Shutdown deadline).
  void Shutdown();

  grpc::ServerUnaryReactor* Check(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request,
      grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class Watcher;

  // The state of `service` ("" or a known name; SERVICE_UNKNOWN otherwise).
  ServingStatus StatusOfLocked(const std::string& service) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells every watcher the current state; `end`: then ends them.
  void NotifyLocked(bool end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(Watcher* watcher);

  const ServerAuth* const auth_;
  const std::set<std::string> services_;
  absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Open Watch calls; each removes itself when done (OnDone). At most
  // kMaxWatches: more are RESOURCE_EXHAUSTED.
  static constexpr size_t kMaxWatches = 256;
  std::set<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
};

// Adds gRPC's server reflection to a ServerBuilder (builder.SetOption). Put
// NewReflectionGate among the builder's interceptor creators with it.
std::unique_ptr<grpc::ServerBuilderOption> ReflectionOption();

// A server interceptor factory that refuses, with UNAUTHENTICATED, a call to
// a /grpc.reflection.* method whose caller `auth` does not authenticate,
// before the reflection service reads its request. Other calls are not
// intercepted (the factory makes no interceptor for them).
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewReflectionGate(const ServerAuth* auth);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_HEALTH_H_
