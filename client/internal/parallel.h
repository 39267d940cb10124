// Parallel unary RPCs for the client: one call per target, all in flight at
// once on gRPC's callback API, answered in target order. Internal.
#ifndef HOSTMESH_CLIENT_INTERNAL_PARALLEL_H_
#define HOSTMESH_CLIENT_INTERNAL_PARALLEL_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/time/time.h"
#include "lib/grpc_status.h"

namespace mesh::internal {

// Calls `start(stub, context, request, response, callback)` for every
// (channel, request) pair — e.g. `stub->async()->GetProcState(...)` — each
// with `timeout` as its deadline, and returns the results in order.
template <typename Service, typename Response, typename Request, typename Start>
std::vector<absl::StatusOr<Response>> ParallelUnary(
    const std::vector<std::shared_ptr<grpc::Channel>>& channels,
    const std::vector<Request>& requests, absl::Duration timeout, Start start) {
  struct Call {
    std::unique_ptr<typename Service::Stub> stub;
    grpc::ClientContext context;
    Response response;
    grpc::Status status;
  };
  const size_t n = requests.size();
  std::vector<std::unique_ptr<Call>> calls(n);
  absl::BlockingCounter pending(static_cast<int>(n));
  auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout);
  for (size_t i = 0; i < n; ++i) {
    calls[i] = std::make_unique<Call>();
    Call* call = calls[i].get();
    call->stub = Service::NewStub(channels[i]);
    call->context.set_deadline(deadline);
    start(call->stub.get(), &call->context, &requests[i], &call->response,
          [call, &pending](grpc::Status status) {
            call->status = std::move(status);
            pending.DecrementCount();
          });
  }
  pending.Wait();
  std::vector<absl::StatusOr<Response>> results;
  results.reserve(n);
  for (auto& call : calls) {
    if (call->status.ok()) {
      results.push_back(std::move(call->response));
    } else {
      results.push_back(FromGrpcStatus(call->status));
    }
  }
  return results;
}

}  // namespace mesh::internal

#endif  // HOSTMESH_CLIENT_INTERNAL_PARALLEL_H_
