// A proc from another release: it speaks proc channel protocol version 999.
// It says Hello with that version, prints what the host answers (a Refused
// naming both versions) to stderr, and exits 1 when the host closes.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "proto/proc_channel.pb.h"

namespace {

bool ReadFull(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = read(fd, p, size);
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadFrame(int fd, std::string* frame) {
  unsigned char header[4];
  if (!ReadFull(fd, header, 4)) return false;
  uint32_t size = header[0] | header[1] << 8 | header[2] << 16 |
                  static_cast<uint32_t>(header[3]) << 24;
  if (size > (1u << 20)) return false;
  frame->resize(size);
  return ReadFull(fd, frame->data(), size);
}

bool WriteFrame(int fd, const std::string& frame) {
  uint32_t size = static_cast<uint32_t>(frame.size());
  unsigned char header[4] = {static_cast<unsigned char>(size),
                             static_cast<unsigned char>(size >> 8),
                             static_cast<unsigned char>(size >> 16),
                             static_cast<unsigned char>(size >> 24)};
  std::string out(reinterpret_cast<char*>(header), 4);
  out += frame;
  return write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size());
}

}  // namespace

int main() {
  const char* fd_env = getenv("HOSTMESH_CHANNEL_FD");
  if (fd_env == nullptr) return 2;
  int fd = atoi(fd_env);
  std::string frame;
  if (!ReadFrame(fd, &frame)) return 3;
  mesh::v1::ProcFrame hello;
  hello.mutable_hello()->set_protocol_version(999);
  hello.mutable_hello()->set_pid(getpid());
  if (!WriteFrame(fd, hello.SerializeAsString())) return 4;
  while (ReadFrame(fd, &frame)) {
    mesh::v1::HostFrame answer;
    if (answer.ParseFromString(frame) && answer.has_refused()) {
      fprintf(stderr, "refused: %s\n", answer.refused().reason().c_str());
    }
  }
  return 1;
}
