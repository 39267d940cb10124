// One mapping from an errno of a process or file setup step (spawn, open,
// chmod, ...) to an Abseil status whose message names the step. Unlike
// absl::ErrnoToStatus, what the caller cannot fix by retrying (a missing
// file, a denied path, a bad binary) is NOT_FOUND or FAILED_PRECONDITION,
// and exhausted descriptors or memory RESOURCE_EXHAUSTED.
#ifndef HOSTMESH_LIB_PROCESS_ERRNO_STATUS_H_
#define HOSTMESH_LIB_PROCESS_ERRNO_STATUS_H_

#include <string>

#include "absl/status/status.h"

namespace mesh {

// "<what>: <strerror(err)>" with a code for `err`.
absl::Status ErrnoStatus(int err, const std::string& what);

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_ERRNO_STATUS_H_
