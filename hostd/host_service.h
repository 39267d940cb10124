// HostService: the mesh.v1.Host gRPC service, a thin adapter over
// ProcManager. Every method answers through a callback reactor and never
// blocks a gRPC thread; a WaitProcs whose caller cancels (or goes away) ends
// then, CANCELLED, and the manager drops its wait (nothing is held until
// the wait's own timeout). ShutdownHost's answer is sent before the host is
// told to exit (through ShutdownHooks::answered). Thread-safe.
//
// Authorization (lib/auth): every call names its caller. A client acts on
// the procs it owns (creating one makes it the owner; ListProcs shows only
// its own; WatchHost the same); an admin on everything, and only an admin
// may ShutdownHost or DrainHost; a peer may only ask GetHostInfo. Every
// state-changing verb is logged with the caller's identity.
//
// Leases: a CreateOrUpdateProc naming a `client` (the caller's relay id)
// makes that client the proc's lease holder (hostd/owner_leases.h); the id
// must belong to the caller's identity by the rule of relay streams
// (SenderClaims), and is claimed only once the request passed validation
// and the run policy (a refused request claims nothing), pinned until the
// create is answered (the lease pins it from then on). StopProc and
// ShutdownHost pass the caller's identity: a proc's end is `requested`
// only if its owner asked. ListOwners shows the leases: an admin all, a
// client its identity's.
#ifndef HOSTMESH_HOSTD_HOST_SERVICE_H_
#define HOSTMESH_HOSTD_HOST_SERVICE_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostd/owner_leases.h"
#include "hostd/proc_channels.h"
#include "hostd/proc_logs.h"
#include "hostd/proc_manager.h"
#include "hostd/sender_claims.h"
#include "lib/auth/server_auth.h"
#include "proto/host.grpc.pb.h"

namespace mesh {

// hostd's exit status after an admin's ShutdownHost without stay_down:
// EX_TEMPFAIL, which deploy/hostd.service restarts (RestartForceExitStatus=)
// and counts as a clean exit (SuccessExitStatus=). With stay_down: 0.
inline constexpr int kShutdownRestartExitCode = 75;

class HostService final : public v1::Host::CallbackService {
 public:
  struct Info {
    std::string address;
    std::string state_dir;
    int max_procs = 0;
    absl::Duration stop_grace = absl::Seconds(5);
  };

  // What an admin's ShutdownHost tells hostd, each once per call (either
  // may be empty).
  struct ShutdownHooks {
    // Asked, before any proc is stopped (systemd hears STOPPING=1).
    std::function<void(const v1::ShutdownHostRequest&)> started;
    // The answer has been handed to gRPC: hostd may exit (with the status
    // the request's stay_down asks for).
    std::function<void(const v1::ShutdownHostRequest&)> answered;
    // A DrainHost changed the drain (or may have): hostd's health follows
    // ProcManager::drain().
    std::function<void()> drain_changed;
  };

  // `manager`, `channels`, `auth`, `claims` and `leases` outlive the
  // service.
  HostService(ProcManager* manager, const ProcChannels* channels,
              const ServerAuth* auth, SenderClaims* claims, OwnerLeases* leases,
              Info info, ShutdownHooks on_shutdown);

  // The advertised address, known once the server has bound its port.
  void set_address(const std::string& address);
  // Where StreamLogs reads (outlives the service); unset: UNIMPLEMENTED.
  void set_proc_logs(ProcLogs* logs) { proc_logs_ = logs; }

  grpc::ServerUnaryReactor* CreateOrUpdateProc(
      grpc::CallbackServerContext* context,
      const v1::CreateOrUpdateProcRequest* request,
      v1::ProcState* response) override;
  grpc::ServerUnaryReactor* GetProcState(grpc::CallbackServerContext* context,
                                         const v1::GetProcStateRequest* request,
                                         v1::ProcState* response) override;
  grpc::ServerUnaryReactor* StopProc(grpc::CallbackServerContext* context,
                                     const v1::StopProcRequest* request,
                                     v1::ProcState* response) override;
  grpc::ServerUnaryReactor* ListProcs(grpc::CallbackServerContext* context,
                                      const v1::ListProcsRequest* request,
                                      v1::ListProcsResponse* response) override;
  grpc::ServerUnaryReactor* WaitProcs(grpc::CallbackServerContext* context,
                                      const v1::WaitProcsRequest* request,
                                      v1::WaitProcsResponse* response) override;
  grpc::ServerUnaryReactor* ShutdownHost(
      grpc::CallbackServerContext* context,
      const v1::ShutdownHostRequest* request,
      v1::ShutdownHostResponse* response) override;
  grpc::ServerUnaryReactor* GetHostInfo(grpc::CallbackServerContext* context,
                                        const v1::GetHostInfoRequest* request,
                                        v1::HostInfo* response) override;
  grpc::ServerUnaryReactor* ListOwners(
      grpc::CallbackServerContext* context,
      const v1::ListOwnersRequest* request,
      v1::ListOwnersResponse* response) override;
  // Procs' output (hostd/proc_logs.h), one chunk in flight at a time (gRPC
  // flow control: nothing queues for a slow reader), for the procs the
  // caller may see (as GetProcState / ListProcs). Ends when the caller
  // cancels (CANCELLED), when every file is sent (OK; following: once each
  // proc ended), or when hostd stops (UNAVAILABLE); RESOURCE_EXHAUSTED past
  // --max-log-streams.
  grpc::ServerWriteReactor<v1::LogChunk>* StreamLogs(
      grpc::CallbackServerContext* context,
      const v1::StreamLogsRequest* request) override;
  // Admin only. Answers once the drain is durable (with stop: once every
  // proc is stopped).
  grpc::ServerUnaryReactor* DrainHost(grpc::CallbackServerContext* context,
                                      const v1::DrainHostRequest* request,
                                      v1::DrainHostResponse* response) override;
  // A snapshot, then every change (hostd/host_watch.h), of the procs the
  // caller may see (as ListProcs). Ends when the caller cancels (CANCELLED)
  // or the host goes away (OK, after what was queued); RESOURCE_EXHAUSTED
  // past the cap on watchers.
  grpc::ServerWriteReactor<v1::HostEvent>* WatchHost(
      grpc::CallbackServerContext* context,
      const v1::WatchHostRequest* request) override;

 private:
  class WatchCall;

  // HostInfo's fields the service knows (all but num_procs, drain and
  // shutting_down, which come from the manager).
  void FillHostInfo(v1::HostInfo* info);
  // The caller of `context` if it may run `verb` (one of `roles`, or
  // admin); otherwise finishes `reactor` with the refusal.
  std::optional<Principal> Admit(grpc::CallbackServerContext* context,
                                 grpc::ServerUnaryReactor* reactor,
                                 absl::string_view verb,
                                 std::initializer_list<Role> roles);
  // Whether `caller` may act on existing proc `name` (absent: yes).
  absl::Status MayActOn(const Principal& caller, absl::string_view verb,
                        const std::string& name);

  ProcManager* const manager_;
  const ProcChannels* const channels_;
  const ServerAuth* const auth_;
  SenderClaims* const claims_;
  OwnerLeases* const leases_;
  absl::Mutex mu_;
  Info info_ ABSL_GUARDED_BY(mu_);
  const absl::Time started_at_;
  const ShutdownHooks on_shutdown_;
  ProcLogs* proc_logs_ = nullptr;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_HOST_SERVICE_H_
