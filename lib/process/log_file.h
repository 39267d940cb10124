// Log files and directories with exactly the mode and group asked for,
// whatever the umask or what they had before: the supervisor's
// <log_dir>/{stdout,stderr}.log and procd's procd.log beside them.
#ifndef HOSTMESH_LIB_PROCESS_LOG_FILE_H_
#define HOSTMESH_LIB_PROCESS_LOG_FILE_H_

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mesh {

// Gives a directory or file (by path) or an open file (fd >= 0) exactly
// `mode` and, if set, `group`. Group first: chown may clear mode bits. No
// setgid bit is ever set (systemd's RestrictSUIDSGID= would refuse it).
absl::Status SetModeAndGroup(const std::string& path, int fd, mode_t mode,
                             std::optional<gid_t> group);

struct OpenLogFileOptions {
  // Empty the file if it exists (rather than append to it).
  bool truncate = false;
  // A mode or group that cannot be set (a group this process's user is not
  // in) leaves the file as it was rather than failing the open.
  bool best_effort = false;
};

// Opens `path` for appending (creating it; never through a symlink;
// close-on-exec) with exactly `mode` and `group` (see SetModeAndGroup),
// also if it existed. Returns the descriptor; on failure none stays open.
absl::StatusOr<int> OpenLogFile(const std::string& path, mode_t mode,
                                std::optional<gid_t> group,
                                OpenLogFileOptions options = {});

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_LOG_FILE_H_
