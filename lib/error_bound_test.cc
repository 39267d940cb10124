// The last line of defence of bounded echoes: a whole error message leaving
// a daemon, in a message (ToErrorProto) or as a gRPC status (ToGrpcStatus),
// is cut to kMaxErrorMessageBytes.
#include <string>

#include "catch2/catch.hpp"
#include "lib/grpc_status.h"
#include "lib/names.h"
#include "lib/status.h"

namespace mesh {
namespace {

TEST_CASE("a short error crosses to a message and to gRPC unchanged") {
  absl::Status status = absl::NotFoundError("no proc named \"p0\"");
  CHECK(FromErrorProto(ToErrorProto(status)) == status);
  grpc::Status grpc = ToGrpcStatus(status);
  CHECK(grpc.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(grpc.error_message() == "no proc named \"p0\"");
  CHECK(FromGrpcStatus(grpc) == status);
}

TEST_CASE("a huge error is cut to the bound with its full length noted") {
  absl::Status status =
      absl::InvalidArgumentError("bad: " + std::string(60000, 'x'));
  v1::Error error = ToErrorProto(status);
  CHECK(error.code() == static_cast<int>(absl::StatusCode::kInvalidArgument));
  CHECK(error.message().size() < kMaxErrorMessageBytes + 32);
  CHECK(error.message().find("(60005 bytes)") != std::string::npos);
  grpc::Status grpc = ToGrpcStatus(status);
  CHECK(grpc.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(grpc.error_message().size() < kMaxErrorMessageBytes + 32);
  CHECK(grpc.error_message().rfind("bad: xxx", 0) == 0);
}

}  // namespace
}  // namespace mesh
