// absl <-> gRPC status: the codes are the same numbers; these keep the
// message. Only for code that links gRPC (a proc links none).
#ifndef HOSTMESH_LIB_GRPC_STATUS_H_
#define HOSTMESH_LIB_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace mesh {

// The same code and message, cut to kMaxErrorMessageBytes (lib/names.h)
// before gRPC percent-encodes it into the grpc-message header.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace mesh

#endif  // HOSTMESH_LIB_GRPC_STATUS_H_
