#include "bench/tcp_sent.h"

// The kernel's struct tcp_info (glibc's <netinet/tcp.h> lacks the newer
// counters); this file includes nothing that pulls in glibc's.
#include <arpa/inet.h>
#include <dirent.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace mesh::bench {

TcpSent TcpSentTo(const std::set<std::string>& peers) {
  TcpSent sent;
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return sent;
  while (dirent* entry = readdir(fds)) {
    char* end = nullptr;
    long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(fds)) continue;
    struct stat info;
    if (fstat(static_cast<int>(fd), &info) != 0 || !S_ISSOCK(info.st_mode)) {
      continue;
    }
    sockaddr_storage peer = {};
    socklen_t length = sizeof(peer);
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer),
                    &length) != 0) {
      continue;
    }
    // IPv4, or IPv4 mapped into IPv6 (gRPC's dual-stack sockets).
    in_addr ip = {};
    uint16_t port = 0;
    if (peer.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&peer);
      ip = v4->sin_addr;
      port = ntohs(v4->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&peer);
      if (!IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) continue;
      std::memcpy(&ip, &v6->sin6_addr.s6_addr[12], sizeof(ip));
      port = ntohs(v6->sin6_port);
    } else {
      continue;
    }
    char address[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &ip, address, sizeof(address));
    std::string name = std::string(address) + ":" + std::to_string(port);
    if (peers.count(name) == 0) continue;
    tcp_info tcp = {};
    socklen_t size = sizeof(tcp);
    if (getsockopt(static_cast<int>(fd), IPPROTO_TCP, TCP_INFO, &tcp, &size) !=
        0) {
      continue;
    }
    sent.data_segments += tcp.tcpi_data_segs_out;
    sent.bytes += tcp.tcpi_bytes_sent;
    ++sent.sockets;
  }
  closedir(fds);
  return sent;
}

}  // namespace mesh::bench
