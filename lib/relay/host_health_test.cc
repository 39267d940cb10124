// HostHealthTracker's state machine, driven by a fake clock: runs in
// milliseconds.
#include "lib/relay/host_health.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "lib/time/clock.h"

namespace mesh {
namespace {

constexpr uint64_t kFirst = 0x1111;
constexpr uint64_t kSecond = 0x2222;
const absl::Duration kInterval = absl::Milliseconds(500);

HostHealthTracker::Options TestOptions() {
  HostHealthTracker::Options options;
  options.unreachable_after = absl::Seconds(2);
  options.lost_after = absl::Seconds(30);
  return options;
}

std::vector<HostState> States(
    const std::vector<HostHealthTracker::Change>& changes) {
  std::vector<HostState> states;
  for (const HostHealthTracker::Change& change : changes) {
    states.push_back(change.state);
  }
  return states;
}

// A host heard from at `clock`'s now, through one stream whose last frame
// the test moves along.
struct Fixture {
  FakeClock clock;
  HostHealthTracker health{"h:1", TestOptions()};
  absl::Duration last_frame = clock.Now();

  std::vector<HostHealthTracker::Change> Beat(uint64_t incarnation = kFirst) {
    last_frame = clock.Now();
    return health.Heartbeat(incarnation, kInterval, clock.Now());
  }
  std::vector<HostHealthTracker::Change> Check() {
    return health.Check(clock.Now(), last_frame);
  }
};

TEST_CASE("a host is unknown until its first heartbeat makes it reachable") {
  Fixture f;
  CHECK(f.health.state() == HostState::kUnknown);
  f.clock.Advance(absl::Minutes(5));
  CHECK(f.Check().empty());  // silence means nothing before a heartbeat
  auto changes = f.Beat();
  REQUIRE(States(changes) == std::vector{HostState::kReachable});
  CHECK(absl::StrContains(changes[0].reason, "host h:1 is reachable"));
  CHECK(f.health.incarnation() == kFirst);
  CHECK(f.Beat().empty());  // the same incarnation again changes nothing
}

TEST_CASE(
    "a silent host is unreachable after the bound, and back with a "
    "heartbeat of the same incarnation") {
  Fixture f;
  f.Beat();
  for (int i = 0; i < 10; ++i) {  // heartbeats on time: nothing happens
    f.clock.Advance(kInterval);
    CHECK(f.Beat().empty());
    CHECK(f.Check().empty());
  }
  f.clock.Advance(absl::Milliseconds(1999));
  CHECK(f.Check().empty());
  f.clock.Advance(absl::Milliseconds(1));
  auto changes = f.Check();
  REQUIRE(States(changes) == std::vector{HostState::kUnreachable});
  CHECK(changes[0].reason ==
        "no frame from host h:1 for 2s (unreachable "
        "after 2s)");
  CHECK(f.health.state() == HostState::kUnreachable);
  f.clock.Advance(absl::Seconds(5));
  CHECK(f.Check().empty());  // still within the grace
  changes = f.Beat();
  REQUIRE(States(changes) == std::vector{HostState::kReachable});
  CHECK(changes[0].reason ==
        "host h:1 is reachable again after 5s (same incarnation "
        "0000000000001111, heartbeats every 500ms)");
}

TEST_CASE("a broken stream makes a reachable host unreachable at once") {
  Fixture f;
  f.Beat();
  auto changes = f.health.StreamEnded(absl::UnavailableError("socket closed"),
                                      f.clock.Now());
  REQUIRE(States(changes) == std::vector{HostState::kUnreachable});
  CHECK(absl::StrContains(changes[0].reason,
                          "the relay stream to host h:1 ended: UNAVAILABLE: "
                          "socket closed"));
  // Reconnect attempts that fail change nothing.
  CHECK(f.health.StreamEnded(absl::UnavailableError("refused"), f.clock.Now())
            .empty());
  CHECK(f.health.state() == HostState::kUnreachable);
}

TEST_CASE("an unreachable host is lost once the grace has passed") {
  Fixture f;
  f.Beat();
  f.health.StreamEnded(absl::UnavailableError("reset"), f.clock.Now());
  f.clock.Advance(absl::Seconds(29));
  CHECK(f.health.Check(f.clock.Now(), std::nullopt).empty());
  f.clock.Advance(absl::Seconds(1));
  auto changes = f.health.Check(f.clock.Now(), std::nullopt);
  REQUIRE(States(changes) == std::vector{HostState::kLost});
  CHECK(absl::StrContains(changes[0].reason,
                          "host h:1 has been unreachable for 30s (lost after "
                          "30s): the relay stream to host h:1 ended"));
  CHECK(f.health.Check(f.clock.Now() + absl::Hours(1), std::nullopt).empty());
  // A lost host that answers again is reachable (what it ran stays lost).
  CHECK(States(f.Beat()) == std::vector{HostState::kReachable});
}

TEST_CASE("silence past the grace is unreachable first, then lost") {
  Fixture f;
  f.Beat();
  f.clock.Advance(absl::Seconds(2));
  CHECK(States(f.Check()) == std::vector{HostState::kUnreachable});
  f.clock.Advance(absl::Seconds(30));
  CHECK(States(f.Check()) == std::vector{HostState::kLost});
}

TEST_CASE(
    "a host that comes back as another incarnation is lost, then "
    "reachable") {
  Fixture f;
  f.Beat(kFirst);
  f.health.StreamEnded(absl::UnavailableError("reset"), f.clock.Now());
  f.clock.Advance(absl::Seconds(1));  // well within the grace
  auto changes = f.Beat(kSecond);
  REQUIRE(States(changes) ==
          (std::vector{HostState::kLost, HostState::kReachable}));
  CHECK(changes[0].reason ==
        "host h:1 came back as another incarnation (its hostd restarted: "
        "0000000000002222, was 0000000000001111): everything it ran is gone");
  CHECK(changes[0].incarnation == kFirst);
  CHECK(changes[1].incarnation == kSecond);
  CHECK(f.health.incarnation() == kSecond);

  SECTION("even without the stream having broken first") {
    CHECK(States(f.Beat(kFirst)) ==
          (std::vector{HostState::kLost, HostState::kReachable}));
  }
}

TEST_CASE("a host that says it is closing is lost at once") {
  Fixture f;
  f.Beat();
  auto changes = f.health.Closing(f.clock.Now());
  REQUIRE(States(changes) == std::vector{HostState::kLost});
  CHECK(changes[0].reason == "host h:1 shut down");
  CHECK(f.health.StreamEnded(absl::OkStatus(), f.clock.Now()).empty());
  CHECK(f.health.Closing(f.clock.Now()).empty());
}

TEST_CASE(
    "a host known to be gone stays lost to its own late heartbeats, and "
    "another incarnation of it is reachable") {
  Fixture f;
  f.Beat();
  auto changes = f.health.Gone("its srun ended", f.clock.Now());
  REQUIRE(States(changes) == std::vector{HostState::kLost});
  CHECK(changes[0].reason == "its srun ended");
  // A heartbeat of the same incarnation still on its way changes nothing.
  f.clock.Advance(absl::Milliseconds(10));
  CHECK(f.Beat().empty());
  CHECK(f.health.state() == HostState::kLost);
  // A new hostd at that address is.
  CHECK(States(f.Beat(kSecond)) == std::vector{HostState::kReachable});
}

TEST_CASE("the silence bound is at least two heartbeat intervals") {
  Fixture f;
  f.health.Heartbeat(kFirst, absl::Seconds(3), f.clock.Now());
  CHECK(f.health.silence_bound() == absl::Seconds(6));
  f.clock.Advance(absl::Seconds(5));
  CHECK(f.Check().empty());
  f.clock.Advance(absl::Seconds(1));
  CHECK(States(f.Check()) == std::vector{HostState::kUnreachable});
}

TEST_CASE("host states have names") {
  CHECK(HostStateName(HostState::kUnknown) == "unknown");
  CHECK(HostStateName(HostState::kReachable) == "reachable");
  CHECK(HostStateName(HostState::kUnreachable) == "unreachable");
  CHECK(HostStateName(HostState::kLost) == "lost");
}

}  // namespace
}  // namespace mesh
