// TakeEnv: how a process takes a variable its parent left for it alone (an
// inherited fd's number) out of its environment, so its own children never
// inherit it.
#ifndef HOSTMESH_LIB_PROCESS_ENV_H_
#define HOSTMESH_LIB_PROCESS_ENV_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace mesh {

// The value of environment variable `name` (nullopt if unset), removed from
// the environment. setenv/unsetenv are not thread-safe (a getenv on another
// thread may read freed memory), so while the process has more than one
// thread this changes nothing and returns FAILED_PRECONDITION: call it first
// in main, before any thread (glog's, gRPC's) starts.
absl::StatusOr<std::optional<std::string>> TakeEnv(const char* name);

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_ENV_H_
