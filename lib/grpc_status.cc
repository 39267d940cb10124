#include "lib/grpc_status.h"

#include <algorithm>
#include <string>

#include "lib/names.h"

namespace mesh {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      BoundText(status.message(), kMaxErrorMessageBytes));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::Duration WaitBudget(const grpc::ServerContextBase& context,
                          absl::Duration asked) {
  const absl::Duration left =
      absl::FromChrono(context.deadline()) - absl::Now();
  // Room for the answer's way back (a relayed one goes through a proc and
  // back): a tenth of the time left, between 50 ms and 1 s.
  const absl::Duration margin =
      std::clamp(left / 10, absl::Milliseconds(50), absl::Seconds(1));
  return std::max(std::min(asked, left - margin), absl::Milliseconds(1));
}

}  // namespace mesh
