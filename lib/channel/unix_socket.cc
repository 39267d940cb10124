#include "lib/channel/unix_socket.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace mesh {
namespace {

absl::StatusOr<sockaddr_un> AddressOf(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Unix socket path \"", path, "\" is ", path.size(),
        " bytes; it must have 1 to ", sizeof(address.sun_path) - 1));
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

// A new stream socket.
absl::StatusOr<int> NewSocket() {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket(AF_UNIX)");
  return fd;
}

}  // namespace

absl::StatusOr<int> DialUnix(const std::string& path) {
  absl::StatusOr<sockaddr_un> address = AddressOf(path);
  if (!address.ok()) return address.status();
  absl::StatusOr<int> fd = NewSocket();
  if (!fd.ok()) return fd;
  if (connect(*fd, reinterpret_cast<const sockaddr*>(&*address),
              sizeof(*address)) != 0) {
    const int error = errno;
    close(*fd);
    return absl::ErrnoToStatus(error, absl::StrCat("connect to ", path));
  }
  return fd;
}

absl::StatusOr<int> ListenUnix(const std::string& path, mode_t mode) {
  absl::StatusOr<sockaddr_un> address = AddressOf(path);
  if (!address.ok()) return address.status();
  absl::StatusOr<int> fd = NewSocket();
  if (!fd.ok()) return fd;
  if (bind(*fd, reinterpret_cast<const sockaddr*>(&*address),
           sizeof(*address)) != 0) {
    const int error = errno;
    close(*fd);
    return absl::ErrnoToStatus(error, absl::StrCat("bind ", path));
  }
  const char* step = chmod(path.c_str(), mode) != 0 ? "chmod"
                     : listen(*fd, SOMAXCONN) != 0  ? "listen on"
                                                    : nullptr;
  if (step != nullptr) {
    const int error = errno;
    close(*fd);
    unlink(path.c_str());
    return absl::ErrnoToStatus(error, absl::StrCat(step, " ", path));
  }
  return fd;
}

}  // namespace mesh
