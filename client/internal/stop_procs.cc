#include "client/internal/stop_procs.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/internal/parallel.h"
#include "proto/host.grpc.pb.h"

namespace mesh::internal {

absl::Status StopProcs(Client& client, const std::vector<ProcOnHost>& procs,
                       const std::string& reason, absl::Duration grace) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<v1::StopProcRequest> requests(procs.size());
  for (size_t i = 0; i < procs.size(); ++i) {
    channels.push_back(client.Channel(procs[i].host_address));
    requests[i].set_name(procs[i].proc);
    requests[i].set_reason(reason);
    requests[i].set_grace_ms(absl::ToInt64Milliseconds(grace));
  }
  // Ask, SIGTERM after a grace, SIGKILL after another: three graces at most.
  auto stopped = ParallelUnary<v1::Host, v1::ProcState>(
      channels, requests, grace * 3 + absl::Seconds(10),
      [](auto* stub, auto* context, auto* request, auto* response, auto done) {
        stub->async()->StopProc(context, request, response, std::move(done));
      });
  std::vector<std::string> failures;
  for (size_t i = 0; i < stopped.size(); ++i) {
    if (!stopped[i].ok() &&
        stopped[i].status().code() != absl::StatusCode::kNotFound) {
      failures.push_back(absl::StrFormat("proc %s on host %s: %s",
                                         procs[i].proc, procs[i].host_address,
                                         stopped[i].status().message()));
    }
  }
  if (failures.empty()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("could not stop ", absl::StrJoin(failures, "; ")));
}

}  // namespace mesh::internal
