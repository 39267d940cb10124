#include "lib/relay/host_health.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mesh {

absl::string_view HostStateName(HostState state) {
  switch (state) {
    case HostState::kUnknown:
      return "unknown";
    case HostState::kReachable:
      return "reachable";
    case HostState::kUnreachable:
      return "unreachable";
    case HostState::kLost:
      return "lost";
  }
  return "?";
}

namespace {

std::string Incarnation(uint64_t incarnation) {
  return absl::StrCat(absl::Hex(incarnation, absl::kZeroPad16));
}

// To the millisecond: "2.1s", not "2.100345678s".
std::string Format(absl::Duration duration) {
  return absl::FormatDuration(absl::Trunc(duration, absl::Milliseconds(1)));
}

}  // namespace

HostHealthTracker::HostHealthTracker(std::string host, Options options)
    : host_(std::move(host)), options_(options) {}

absl::Duration HostHealthTracker::silence_bound() const {
  return std::max(options_.unreachable_after, 2 * interval_);
}

void HostHealthTracker::Set(HostState state, std::string reason,
                            absl::Duration now, std::vector<Change>* changes) {
  if (state == HostState::kUnreachable) since_ = now;
  state_ = state;
  reason_ = std::move(reason);
  changes->push_back({state_, reason_, incarnation_});
}

std::vector<HostHealthTracker::Change> HostHealthTracker::Heartbeat(
    uint64_t incarnation, absl::Duration interval, absl::Duration now) {
  std::vector<Change> changes;
  interval_ = std::max(interval, absl::ZeroDuration());
  const std::string every =
      interval_ > absl::ZeroDuration()
          ? absl::StrCat(", heartbeats every ", Format(interval_))
          : "";
  if (state_ != HostState::kUnknown && incarnation != incarnation_) {
    if (state_ != HostState::kLost) {
      Set(HostState::kLost,
          absl::StrCat("host ", host_,
                       " came back as another incarnation (its hostd "
                       "restarted: ",
                       Incarnation(incarnation), ", was ",
                       Incarnation(incarnation_),
                       "): everything it ran is gone"),
          now, &changes);
    }
    incarnation_ = incarnation;
    gone_ = false;
    Set(HostState::kReachable,
        absl::StrCat("host ", host_, " is reachable (incarnation ",
                     Incarnation(incarnation), every, ")"),
        now, &changes);
    return changes;
  }
  // A host known to be gone does not come back as the same incarnation (a
  // heartbeat still on its way, or a hostd outliving its launcher until
  // its orphan timeout).
  if (gone_ && incarnation == incarnation_) return changes;
  switch (state_) {
    case HostState::kReachable:
      break;
    case HostState::kUnknown:
    case HostState::kLost:
      incarnation_ = incarnation;
      Set(HostState::kReachable,
          absl::StrCat("host ", host_, " is reachable (incarnation ",
                       Incarnation(incarnation), every, ")"),
          now, &changes);
      break;
    case HostState::kUnreachable:
      Set(HostState::kReachable,
          absl::StrCat("host ", host_, " is reachable again after ",
                       Format(now - since_), " (same incarnation ",
                       Incarnation(incarnation), every, ")"),
          now, &changes);
      break;
  }
  return changes;
}

std::vector<HostHealthTracker::Change> HostHealthTracker::Closing(
    absl::Duration now) {
  return Lost(absl::StrCat("host ", host_, " shut down"), now);
}

std::vector<HostHealthTracker::Change> HostHealthTracker::Gone(
    std::string reason, absl::Duration now) {
  gone_ = true;
  return Lost(std::move(reason), now);
}

std::vector<HostHealthTracker::Change> HostHealthTracker::Lost(
    std::string reason, absl::Duration now) {
  std::vector<Change> changes;
  if (state_ != HostState::kLost) {
    Set(HostState::kLost, std::move(reason), now, &changes);
  }
  return changes;
}

std::vector<HostHealthTracker::Change> HostHealthTracker::StreamEnded(
    const absl::Status& why, absl::Duration now) {
  std::vector<Change> changes;
  if (state_ == HostState::kReachable) {
    Set(HostState::kUnreachable,
        absl::StrCat("the relay stream to host ", host_, " ended: ",
                     why.ok() ? "the host closed it" : why.ToString()),
        now, &changes);
  }
  return changes;
}

std::vector<HostHealthTracker::Change> HostHealthTracker::Check(
    absl::Duration now, std::optional<absl::Duration> last_frame) {
  std::vector<Change> changes;
  if (state_ == HostState::kReachable && last_frame.has_value() &&
      now - *last_frame >= silence_bound()) {
    Set(HostState::kUnreachable,
        absl::StrCat("no frame from host ", host_, " for ",
                     Format(now - *last_frame), " (unreachable after ",
                     Format(silence_bound()), ")"),
        now, &changes);
  }
  if (state_ == HostState::kUnreachable &&
      now - since_ >= options_.lost_after) {
    Set(HostState::kLost,
        absl::StrCat("host ", host_, " has been unreachable for ",
                     Format(now - since_), " (lost after ",
                     Format(options_.lost_after), "): ", reason_),
        now, &changes);
  }
  return changes;
}

}  // namespace mesh
