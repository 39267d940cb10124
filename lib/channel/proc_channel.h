// What both ends of the proc <-> host local channel agree on besides the
// frames (proto/proc_channel.proto): how the proc finds its end.
#ifndef HOSTMESH_LIB_CHANNEL_PROC_CHANNEL_H_
#define HOSTMESH_LIB_CHANNEL_PROC_CHANNEL_H_

namespace mesh {

// The environment variable naming the channel's fd in the proc, and the fd
// number hostd gives it.
inline constexpr char kChannelFdEnv[] = "HOSTMESH_CHANNEL_FD";
inline constexpr int kChannelChildFd = 3;

}  // namespace mesh

#endif  // HOSTMESH_LIB_CHANNEL_PROC_CHANNEL_H_
