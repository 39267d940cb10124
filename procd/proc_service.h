// The mesh.v1.Proc gRPC service: a thin adapter over ProcRuntime.
#ifndef HOSTMESH_PROCD_PROC_SERVICE_H_
#define HOSTMESH_PROCD_PROC_SERVICE_H_

#include <functional>

#include "absl/time/time.h"
#include "procd/proc_runtime.h"
#include "proto/proc.grpc.pb.h"

namespace mesh {

// Serves the Proc API from a ProcRuntime (not owned; must outlive the
// server). Waiting verbs (WaitActors, CallActor, and StopActor/StopAll, which
// answer once the actors reached STOPPED or `stop_wait` passed) wait
// server-side without blocking a gRPC thread. Thread-safe.
class ProcService final : public v1::Proc::CallbackService {
 public:
  struct Options {
    // How long StopActor/StopAll wait for actors to finish stopping before
    // answering with their current (possibly STOPPING) states.
    absl::Duration stop_wait = absl::Seconds(10);
    // Called (on a gRPC thread; must not block) once the reply to a StopAll
    // with exit_proc has been sent.
    std::function<void()> on_exit_requested;
  };

  ProcService(ProcRuntime* runtime, Options options);

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
  // Sends the payload through the runtime's mailbox to the actor, with a
  // one-shot port of that mailbox as reply_to, and answers with the reply,
  // at the timeout, or when the runtime shuts down, whichever comes first.
  grpc::ServerUnaryReactor* CallActor(grpc::CallbackServerContext* context,
                                      const v1::CallActorRequest* request,
                                      v1::CallActorResponse* response) override;

 private:
  ProcRuntime* const runtime_;
  const Options options_;
};

}  // namespace mesh

#endif  // HOSTMESH_PROCD_PROC_SERVICE_H_
