// Status macros for code that calls the hostmesh API: every fallible call
// returns absl::Status or absl::StatusOr<T>, and Debian's Abseil (20220623)
// has no macros of its own. Defined once, here; hostmesh's own code uses
// them too (lib/status.h spells them without the prefix).
//
//   absl::Status Run() {
//     HOSTMESH_ASSIGN_OR_RETURN(mesh::HostMesh hosts, mesh::HostMesh::Local());
//     HOSTMESH_RETURN_IF_ERROR(hosts.Shutdown());
//     return absl::OkStatus();
//   }
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_STATUS_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define HOSTMESH_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::absl::Status hostmesh_status_ = (expr);            \
    if (!hostmesh_status_.ok()) return hostmesh_status_; \
  } while (0)

// `HOSTMESH_ASSIGN_OR_RETURN(auto x, F())` assigns the value of an
// absl::StatusOr to `x` (a declaration or an lvalue), or returns its error
// from the enclosing function. `lhs` may not contain an unparenthesized
// comma; expands to more than one statement (no braceless `if` around it).
#define HOSTMESH_ASSIGN_OR_RETURN(lhs, expr) \
  HOSTMESH_ASSIGN_OR_RETURN_IMPL_(           \
      HOSTMESH_STATUS_CONCAT_(hostmesh_statusor_, __LINE__), lhs, expr)

// Implementation details of the macros above.
#define HOSTMESH_STATUS_CONCAT_INNER_(a, b) a##b
#define HOSTMESH_STATUS_CONCAT_(a, b) HOSTMESH_STATUS_CONCAT_INNER_(a, b)
#define HOSTMESH_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return std::move(tmp).status();        \
  lhs = std::move(tmp).value()

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_STATUS_H_
