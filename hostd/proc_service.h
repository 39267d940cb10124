// ProcService: the mesh.v1.Proc gRPC service (host.proto) served by hostd
// for every proc of this host. Each call names its proc; the request is
// relayed over that proc's local channel (ProcChannels::Request) and the
// proc's response becomes the call's answer. A thin adapter: no reaction
// blocks, a call the client cancels is cancelled at the proc too, and every
// relayed request is bounded by the call's deadline (or a default).
//
// Errors before relaying: a bad proc name INVALID_ARGUMENT; an unknown proc
// NOT_FOUND; a proc still starting UNAVAILABLE; a stopped or failed one
// FAILED_PRECONDITION with its status and reason. Thread-safe.
#ifndef HOSTMESH_HOSTD_PROC_SERVICE_H_
#define HOSTMESH_HOSTD_PROC_SERVICE_H_

#include "hostd/proc_channels.h"
#include "hostd/proc_manager.h"
#include "lib/auth/server_auth.h"
#include "proto/host.grpc.pb.h"

namespace mesh {

class ProcService final : public v1::Proc::CallbackService {
 public:
  // `manager` and `channels` outlive the service.
  // Callers are authorized like HostService's: a client acts on the procs
  // it owns, an admin on all, a peer on none.
  ProcService(ProcManager* manager, ProcChannels* channels,
              const ServerAuth* auth);

  grpc::ServerUnaryReactor* CreateOrUpdateActor(
      grpc::CallbackServerContext* context,
      const v1::CreateOrUpdateActorRequest* request,
      v1::ActorState* response) override;
  grpc::ServerUnaryReactor* GetActorState(
      grpc::CallbackServerContext* context,
      const v1::GetActorStateRequest* request,
      v1::ActorState* response) override;
  grpc::ServerUnaryReactor* StopActor(grpc::CallbackServerContext* context,
                                      const v1::StopActorRequest* request,
                                      v1::ActorState* response) override;
  grpc::ServerUnaryReactor* StopAll(grpc::CallbackServerContext* context,
                                    const v1::StopAllRequest* request,
                                    v1::StopAllResponse* response) override;
  grpc::ServerUnaryReactor* ListActors(
      grpc::CallbackServerContext* context,
      const v1::ListActorsRequest* request,
      v1::ListActorsResponse* response) override;
  grpc::ServerUnaryReactor* WaitActors(
      grpc::CallbackServerContext* context,
      const v1::WaitActorsRequest* request,
      v1::WaitActorsResponse* response) override;
  grpc::ServerUnaryReactor* GetProcInfo(grpc::CallbackServerContext* context,
                                        const v1::GetProcInfoRequest* request,
                                        v1::ProcInfo* response) override;
  grpc::ServerUnaryReactor* CallActor(grpc::CallbackServerContext* context,
                                      const v1::CallActorRequest* request,
                                      v1::CallActorResponse* response) override;

 private:
  // Relays `request` to its proc as ProcRequest field `put`, and answers
  // with ProcResponse field `take` (checked with `has`). `wait` is how long
  // the proc itself may take (the request's own timeout).
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Relay(grpc::CallbackServerContext* context,
                                  const Request& request,
                                  Request* (v1::ProcRequest::*put)(),
                                  bool (v1::ProcResponse::*has)() const,
                                  Response* (v1::ProcResponse::*take)(),
                                  absl::Duration wait, Response* response);

  ProcManager* const manager_;
  ProcChannels* const channels_;
  const ServerAuth* const auth_;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_PROC_SERVICE_H_
