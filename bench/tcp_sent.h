// What this process has sent on its TCP connections to some peers, from
// the kernel's per-socket counters (TCP_INFO): B8 counts what the client
// puts on the wire per cast.
#ifndef HOSTMESH_BENCH_TCP_SENT_H_
#define HOSTMESH_BENCH_TCP_SENT_H_

#include <cstdint>
#include <set>
#include <string>

namespace mesh::bench {

struct TcpSent {
  // Segments that carried data (tcpi_data_segs_out), and bytes.
  uint64_t data_segments = 0;
  uint64_t bytes = 0;
  // How many of this process's sockets were counted.
  int sockets = 0;
};

// Sums over this process's TCP sockets whose peer is one of `peers`
// ("a.b.c.d:port"; IPv4, also mapped into IPv6).
TcpSent TcpSentTo(const std::set<std::string>& peers);

}  // namespace mesh::bench

#endif  // HOSTMESH_BENCH_TCP_SENT_H_
