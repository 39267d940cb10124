#include "lib/process/errno_status.h"

#include <errno.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace mesh {

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case ENOEXEC:
    case EISDIR:
    case ELOOP:
    case ETXTBSY:
    case ENAMETOOLONG:
      return absl::FailedPreconditionError(message);
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOSPC:
      return absl::ResourceExhaustedError(message);
    case EAGAIN:
      return absl::UnavailableError(message);
    case EINVAL:
    case EBADF:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace mesh
