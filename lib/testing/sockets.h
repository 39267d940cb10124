// Which sockets a process listens on, read from /proc (no netlink needed):
// the socket inodes among /proc/<pid>/fd matched against the LISTEN entries
// of /proc/<pid>/net/{tcp,tcp6,udp,udp6,unix}. Test-only.
#ifndef HOSTMESH_LIB_TESTING_SOCKETS_H_
#define HOSTMESH_LIB_TESTING_SOCKETS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace mesh::testing {

// One line per listening socket of `pid`, e.g. "tcp 0100007F:9C41" or
// "unix /run/x.sock" (an abstract or unnamed unix socket shows as "unix @").
// Empty if it listens on nothing (or is gone).
std::vector<std::string> ListeningSockets(pid_t pid);

// "127.0.0.1:<port>" of a port that was free a moment ago and that nothing
// listens on (for "the peer is unreachable" tests; stays on loopback).
std::string ClosedLoopbackAddress();

}  // namespace mesh::testing

#endif  // HOSTMESH_LIB_TESTING_SOCKETS_H_
