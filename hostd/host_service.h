// HostService: the mesh.v1.Host gRPC service, a thin adapter over
// ProcManager. Every method answers through a callback reactor and never
// blocks a gRPC thread. ShutdownHost's answer is sent before the host is
// told to exit (through `on_shutdown`). Thread-safe.
#ifndef HOSTMESH_HOSTD_HOST_SERVICE_H_
#define HOSTMESH_HOSTD_HOST_SERVICE_H_

#include <functional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostd/proc_manager.h"
#include "proto/host.grpc.pb.h"

namespace mesh {

class HostService final : public v1::Host::CallbackService {
 public:
  struct Info {
    std::string address;
    std::string state_dir;
    int max_procs = 0;
    absl::Duration stop_grace = absl::Seconds(5);
  };

  // `manager` outlives the service. `on_shutdown` runs once, after the
  // ShutdownHost answer has been handed to gRPC.
  HostService(ProcManager* manager, Info info,
              std::function<void()> on_shutdown);

  // The advertised address, known once the server has bound its port.
  void set_address(const std::string& address);

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

 private:
  ProcManager* const manager_;
  absl::Mutex mu_;
  Info info_ ABSL_GUARDED_BY(mu_);
  const absl::Time started_at_;
  std::function<void()> on_shutdown_;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_HOST_SERVICE_H_
