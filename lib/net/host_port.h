// host:port, the one helper for the whole tree: IPv6 hosts in brackets
// ("[::1]:7450"), ports 1..65535 (0 where a listener picks its own).
#ifndef HOSTMESH_LIB_NET_HOST_PORT_H_
#define HOSTMESH_LIB_NET_HOST_PORT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mesh {

struct HostPort {
  // Without brackets: "::1", "127.0.0.1", "node7".
  std::string host;
  int port = 0;
};

// Parses "host:port" (IPv6 in brackets). INVALID_ARGUMENT naming `what` and
// the address if it is not one; a port of 0 only with `allow_port_zero`.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address,
                                       absl::string_view what,
                                       bool allow_port_zero = false);

// "host:port", bracketing an IPv6 host.
std::string JoinHostPort(absl::string_view host, int port);

}  // namespace mesh

#endif  // HOSTMESH_LIB_NET_HOST_PORT_H_
