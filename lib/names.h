// Validation of resource names (procs, actors, meshes) and the derived names
// of mesh members.
#ifndef HOSTMESH_LIB_NAMES_H_
#define HOSTMESH_LIB_NAMES_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mesh {

inline constexpr size_t kMaxNameLength = 128;

// OK if `name` is 1..kMaxNameLength characters of [a-z0-9_.-], starts with a
// letter or digit, and is not "." or "..". Otherwise INVALID_ARGUMENT naming
// `what` (e.g. "proc name") and the offending character or length.
absl::Status ValidateName(absl::string_view name, absl::string_view what);

// The name of rank `rank` of mesh `mesh_name`: "p0" + 3 -> "p0_3".
std::string MemberName(absl::string_view mesh_name, uint64_t rank);

}  // namespace mesh

#endif  // HOSTMESH_LIB_NAMES_H_
