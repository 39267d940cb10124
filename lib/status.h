// Status helpers shared by every component. The status macros are the
// public hostmesh/status.h's (Debian's Abseil 20220623 has none).
#ifndef HOSTMESH_LIB_STATUS_H_
#define HOSTMESH_LIB_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hostmesh/status.h"
#include "proto/resource.pb.h"

// The status macros without their prefix, for hostmesh's own code: the one
// implementation is the public header's.
#define RETURN_IF_ERROR(expr) HOSTMESH_RETURN_IF_ERROR(expr)
#define ASSIGN_OR_RETURN(lhs, expr) HOSTMESH_ASSIGN_OR_RETURN(lhs, expr)

namespace mesh {

// A status carried inside a message (mesh.v1.Error) and back; the message
// cut to kMaxErrorMessageBytes (lib/names.h) on the way in.
v1::Error ToErrorProto(const absl::Status& status);
absl::Status FromErrorProto(const v1::Error& error);

// True if `message` (an Envelope, a ProcResponse, ...) carries an error
// (an `error` field with a non-zero code).
template <typename Message>
bool CarriesError(const Message& message) {
  return message.has_error() && message.error().code() != 0;
}

// Prefixes the message of a non-OK status with `context: `.
absl::Status Annotate(const absl::Status& status, const std::string& context);

}  // namespace mesh

#endif  // HOSTMESH_LIB_STATUS_H_
