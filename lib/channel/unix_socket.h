// Unix stream sockets named by a path (a proc's rejoin socket in its host's
// runtime dir): the one place that builds their address. Every descriptor is
// close-on-exec and non-blocking; errors name the path. Thread-safe.
#ifndef HOSTMESH_LIB_CHANNEL_UNIX_SOCKET_H_
#define HOSTMESH_LIB_CHANNEL_UNIX_SOCKET_H_

#include <sys/stat.h>

#include <string>

#include "absl/status/statusor.h"

namespace mesh {

// A stream socket connected to `path`. A Unix socket connects at once or
// fails (ENOENT, ECONNREFUSED; EAGAIN when the listener's backlog is
// full): the call never blocks.
absl::StatusOr<int> DialUnix(const std::string& path);

// A stream socket bound at `path` (which must not exist), given `mode`,
// and listening. On an error nothing is left at `path`.
absl::StatusOr<int> ListenUnix(const std::string& path, mode_t mode);

}  // namespace mesh

#endif  // HOSTMESH_LIB_CHANNEL_UNIX_SOCKET_H_
