#include "lib/process/log_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "lib/process/errno_status.h"

namespace mesh {
namespace {}  // namespace

absl::Status SetModeAndGroup(const std::string& path, int fd, mode_t mode,
                             std::optional<gid_t> group) {
  struct stat st;
  if ((fd >= 0 ? fstat(fd, &st) : stat(path.c_str(), &st)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot stat \"", path, "\""));
  }
  if (group.has_value() && st.st_gid != *group &&
      (fd >= 0 ? fchown(fd, static_cast<uid_t>(-1), *group)
               : chown(path.c_str(), static_cast<uid_t>(-1), *group)) != 0) {
    return ErrnoStatus(
        errno, absl::StrCat("cannot give \"", path, "\" to group ", *group));
  }
  if ((st.st_mode & 07777) != mode &&
      (fd >= 0 ? fchmod(fd, mode) : chmod(path.c_str(), mode)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot chmod \"", path, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> OpenLogFile(const std::string& path, mode_t mode,
                                std::optional<gid_t> group,
                                OpenLogFileOptions options) {
  const int fd = open(path.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW |
                          (options.truncate ? O_TRUNC : 0),
                      mode);
  if (fd < 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot open \"", path, "\""));
  }
  absl::Status set = SetModeAndGroup(path, fd, mode, group);
  if (!set.ok() && options.best_effort) {
    // The group may be one this user is not in: still try the mode.
    if (group.has_value()) {
      SetModeAndGroup(path, fd, mode, std::nullopt).IgnoreError();
    }
    set = absl::OkStatus();
  }
  if (!set.ok()) {
    close(fd);
    return set;
  }
  return fd;
}

}  // namespace mesh
