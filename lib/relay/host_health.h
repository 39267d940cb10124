// HostHealthTracker: what one relay stream's owner (a client) knows of the host
// at its other end, as a transport-free state machine. Two events, two bounds:
//
//   kUnknown      nothing heard yet (tracking starts at the first heartbeat;
//                 a host that never answers shows up as its stream failing)
//   kReachable    a heartbeat came on the current stream, and some frame
//                 within the silence bound since
//   kUnreachable  the stream broke, or no frame for the silence bound:
//                 max(unreachable_after, 2 × the host's heartbeat interval).
//                 Nothing is declared dead; the owner reconnects.
//   kLost         unreachable for lost_after, the host came back as another
//                 incarnation (its hostd restarted), or it said it is
//                 shutting down: everything it ran is gone.
//
//   kUnknown ──heartbeat──▶ kReachable ──stream ended / silent──▶ kUnreachable
//   kUnreachable ──heartbeat, same incarnation──▶ kReachable
//   kUnreachable ──lost_after passed──▶ kLost
//   any ──heartbeat of another incarnation──▶ kLost, then kReachable
//   any ──closing heartbeat──▶ kLost
//   kLost ──heartbeat──▶ kReachable
//
// The owner feeds it what its stream shows and the time (a monotonic clock,
// lib/time/clock.h) and gets back the changes, in order. Not thread-safe:
// the owner serializes calls.
#ifndef HOSTMESH_LIB_RELAY_HOST_HEALTH_H_
#define HOSTMESH_LIB_RELAY_HOST_HEALTH_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "hostmesh/host_state.h"

namespace mesh {

// HostState and HostStateName (defined in host_health.cc) are public:
// hostmesh/host_state.h.

// One change of a host's health (HostHealthTracker).
struct HostHealthChange {
  HostState state;
  // Why, naming the host, e.g. "no frame from host h:1 for 2.1s".
  std::string reason;
  // The incarnation it is about (for a restart's kLost, the old one).
  uint64_t incarnation = 0;
};

class HostHealthTracker {
 public:
  struct Options {
    // Silence (no frame at all) that makes a reachable host unreachable.
    absl::Duration unreachable_after = absl::Seconds(2);
    // How long a host stays unreachable before it is lost.
    absl::Duration lost_after = absl::Seconds(30);
  };
  using Change = HostHealthChange;

  HostHealthTracker(std::string host, Options options);

  HostState state() const { return state_; }
  // Why the host is in its state.
  const std::string& reason() const { return reason_; }
  // The incarnation last heard from; 0 before any heartbeat.
  uint64_t incarnation() const { return incarnation_; }
  // The silence that makes this host unreachable (see the file comment).
  absl::Duration silence_bound() const;

  // A heartbeat arrived on the current stream at `now`.
  std::vector<Change> Heartbeat(uint64_t incarnation, absl::Duration interval,
                                absl::Duration now);
  // The host said it is shutting down (a closing heartbeat).
  std::vector<Change> Closing(absl::Duration now);
  // The host is known to be gone for `reason` (e.g. whoever started it saw
  // it end): lost now, unless it is lost already; a heartbeat of the same
  // incarnation no longer makes it reachable (another incarnation does).
  std::vector<Change> Gone(std::string reason, absl::Duration now);
  // The current stream ended with `why`.
  std::vector<Change> StreamEnded(const absl::Status& why, absl::Duration now);
  // Time passed. `last_frame`: when the current stream last read a frame,
  // if there is a current stream.
  std::vector<Change> Check(absl::Duration now,
                            std::optional<absl::Duration> last_frame);

 private:
  // kLost for `reason`, unless it is lost already.
  std::vector<Change> Lost(std::string reason, absl::Duration now);
  void Set(HostState state, std::string reason, absl::Duration now,
           std::vector<Change>* changes);

  const std::string host_;
  const Options options_;
  HostState state_ = HostState::kUnknown;
  std::string reason_;
  uint64_t incarnation_ = 0;
  // Gone was told of incarnation_.
  bool gone_ = false;
  absl::Duration interval_ = absl::ZeroDuration();
  // When the host became unreachable.
  absl::Duration since_ = absl::ZeroDuration();
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_RELAY_HOST_HEALTH_H_
