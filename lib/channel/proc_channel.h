// What both ends of the proc <-> host local channel agree on besides the
// frames (proto/proc_channel.proto): how the proc finds its end.
#ifndef HOSTMESH_LIB_CHANNEL_PROC_CHANNEL_H_
#define HOSTMESH_LIB_CHANNEL_PROC_CHANNEL_H_

#include <cstddef>

namespace mesh {

// The environment variable naming the channel's fd in the proc, and the fd
// number hostd gives it.
inline constexpr char kChannelFdEnv[] = "HOSTMESH_CHANNEL_FD";
inline constexpr int kChannelChildFd = 3;

// The control-message cap (hostd --max-message-bytes): a gRPC request or
// reply of this size is accepted and relayed.
inline constexpr size_t kDefaultMaxMessageBytes = 4 << 20;
// The frame cap for control messages of at most `max_message_bytes`: room
// for a frame's own wrapping (HostFrame/ProcFrame, a request's id) around
// one of the cap's size. hostd sends it in the Welcome.
inline constexpr size_t FrameBytesFor(size_t max_message_bytes) {
  return max_message_bytes + 4096;
}
// Either end's frame cap until told otherwise.
inline constexpr size_t kDefaultMaxFrameBytes =
    FrameBytesFor(kDefaultMaxMessageBytes);

}  // namespace mesh

#endif  // HOSTMESH_LIB_CHANNEL_PROC_CHANNEL_H_
