// Protobuf messages of types this C++ code has no descriptor for: a message
// of type "a.B" that is nothing but the bytes it was parsed from. Python
// hands messages over as (full type name, serialization); as a
// ForeignMessage they serialize to those very bytes, and Any::PackFrom names
// them right, so no generated C++ code is needed for the user's types. Used
// by the extension (hostmesh_module.cc) and by procd_py's Python actors.
#ifndef HOSTMESH_PYTHON_FOREIGN_TYPES_H_
#define HOSTMESH_PYTHON_FOREIGN_TYPES_H_

#include <google/protobuf/message.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace mesh::python {

// A message of type `type_name` (a full protobuf name, e.g. "demo.Step")
// whose fields are all unknown fields: it serializes to `bytes`.
// INVALID_ARGUMENT if `type_name` is not a message type name or `bytes` is
// not a serialized protobuf message. Thread-safe; each type is described
// once (in a descriptor pool of its own, so "a.B" and "a.B.C" never clash)
// and kept for the process's life.
absl::StatusOr<std::unique_ptr<google::protobuf::Message>> ParseForeign(
    const std::string& type_name, const std::string& bytes);

}  // namespace mesh::python

#endif  // HOSTMESH_PYTHON_FOREIGN_TYPES_H_
