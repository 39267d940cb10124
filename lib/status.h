// Status helpers shared by every component. Debian's Abseil (20220623) has
// no status macros, so they are defined once here.
#ifndef HOSTMESH_LIB_STATUS_H_
#define HOSTMESH_LIB_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/resource.pb.h"

#define MESH_STATUS_CONCAT_INNER_(a, b) a##b
#define MESH_STATUS_CONCAT_(a, b) MESH_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status mesh_status_ = (expr);        \
    if (!mesh_status_.ok()) return mesh_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())` assigns the value of an absl::StatusOr or
// returns its error from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, expr)                                          \
  MESH_ASSIGN_OR_RETURN_IMPL_(MESH_STATUS_CONCAT_(mesh_statusor_, __LINE__), \
                              lhs, expr)
#define MESH_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return std::move(tmp).status();    \
  lhs = std::move(tmp).value()

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
