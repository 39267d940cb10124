#include "lib/testing/sockets.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace mesh::testing {
namespace {

// Inodes of the sockets among `pid`'s open descriptors.
std::set<std::string> SocketInodes(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code error;
  std::filesystem::path dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    std::string target = std::filesystem::read_symlink(entry.path(), error);
    if (error || target.rfind("socket:[", 0) != 0) continue;
    inodes.insert(target.substr(8, target.size() - 9));
  }
  return inodes;
}

}  // namespace

std::vector<std::string> ListeningSockets(pid_t pid) {
  std::vector<std::string> found;
  std::set<std::string> inodes = SocketInodes(pid);
  if (inodes.empty()) return found;
  const std::string net = "/proc/" + std::to_string(pid) + "/net/";
  // tcp/udp: "sl local rem st ... uid timeout inode"; LISTEN is st 0A, and a
  // bound UDP socket (st 07) receives from anyone.
  for (const char* family : {"tcp", "tcp6", "udp", "udp6"}) {
    std::ifstream in(net + family);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, state, queues, timer, retr, uid, timeout,
          inode;
      fields >> sl >> local >> remote >> state >> queues >> timer >> retr >>
          uid >> timeout >> inode;
      bool listening = family[0] == 't' ? state == "0A" : state == "07";
      if (listening && inodes.count(inode) > 0) {
        found.push_back(std::string(family) + " " + local);
      }
    }
  }
  // unix: "Num RefCount Protocol Flags Type St Inode [Path]"; a listening
  // socket has __SO_ACCEPTCON (0x10000) in Flags.
  std::ifstream in(net + "unix");
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string num, refs, protocol, flags, type, state, inode, path;
    fields >> num >> refs >> protocol >> flags >> type >> state >> inode >>
        path;
    if ((std::stoul(flags, nullptr, 16) & 0x10000) && inodes.count(inode) > 0) {
      found.push_back("unix " + (path.empty() ? std::string("@") : path));
    }
  }
  return found;
}

std::string ClosedLoopbackAddress() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) abort();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    abort();
  }
  close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

}  // namespace mesh::testing
