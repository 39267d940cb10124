// absl <-> gRPC status: the codes are the same numbers; these keep the
// message. And how long a server-side wait may take within its call's
// deadline. Only for code that links gRPC (a proc links none).
#ifndef HOSTMESH_LIB_GRPC_STATUS_H_
#define HOSTMESH_LIB_GRPC_STATUS_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace mesh {

// The same code and message, cut to kMaxErrorMessageBytes (lib/names.h)
// before gRPC percent-encodes it into the grpc-message header.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// How long a wait asked to take `asked` may take so that its answer (the
// states, "timed out") reaches the caller before the call's own deadline:
// min(asked, time left - a margin of a tenth of it, 50 ms to 1 s), at
// least 1 ms. The call's deadline is read
// once off the wall clock (gRPC gives no other); the wait itself then runs
// on a monotonic clock.
absl::Duration WaitBudget(const grpc::ServerContextBase& context,
                          absl::Duration asked);

}  // namespace mesh

#endif  // HOSTMESH_LIB_GRPC_STATUS_H_
