// A host's health as a client sees it (hostmesh/client.h explains the
// states and their bounds; HostEvent carries them).
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOST_STATE_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOST_STATE_H_

#include "absl/strings/string_view.h"

namespace mesh {

//   kUnknown      nothing heard from the host yet
//   kReachable    it sends heartbeats on the client's stream
//   kUnreachable  its stream broke or went silent: nothing declared dead
//   kLost         everything it ran is gone (unreachable for too long,
//                 restarted, or shut down)
enum class HostState { kUnknown, kReachable, kUnreachable, kLost };

// "unknown", "reachable", "unreachable", "lost".
absl::string_view HostStateName(HostState state);

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOST_STATE_H_
