// What a request's timeout_ms of 0 means, for every server that takes one
// (hostd's verbs, and a proc's as relayed to it); proto/host.proto and
// proto/proc.proto say the same.
#ifndef HOSTMESH_LIB_VERB_TIMEOUTS_H_
#define HOSTMESH_LIB_VERB_TIMEOUTS_H_

#include <cstdint>

#include "absl/time/time.h"

namespace mesh {

// WaitProcs, WaitActors.
inline constexpr absl::Duration kDefaultWaitTimeout = absl::Seconds(30);
// CallActor: how long to wait for the actor's reply.
inline constexpr absl::Duration kDefaultCallTimeout = absl::Seconds(10);

// timeout_ms as a duration, 0 meaning `verb_default`.
inline absl::Duration TimeoutOr(uint32_t timeout_ms,
                                absl::Duration verb_default) {
  return timeout_ms == 0 ? verb_default : absl::Milliseconds(timeout_ms);
}

}  // namespace mesh

#endif  // HOSTMESH_LIB_VERB_TIMEOUTS_H_
