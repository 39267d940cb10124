// OwnerLeases against a fake clock, in milliseconds: no process, no stream.
#include "hostd/owner_leases.h"

#include <google/protobuf/util/time_util.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "catch2/catch.hpp"
#include "lib/relay/clock.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;

// Leases of 500ms on a fake clock, recording every stop asked for.
struct Leases {
  explicit Leases(absl::Duration lease = absl::Milliseconds(500))
      : leases({lease, &clock},
               [this](const std::string& proc, const std::string& reason) {
                 absl::MutexLock lock(&mu);
                 stops.emplace_back(proc, reason);
               }) {}

  std::vector<std::string> stopped() {
    absl::MutexLock lock(&mu);
    std::vector<std::string> procs;
    for (const auto& [proc, reason] : stops) procs.push_back(proc);
    return procs;
  }
  // Advances the clock and checks, as hostd's heartbeat thread does.
  void After(absl::Duration elapsed) {
    clock.Advance(elapsed);
    leases.Check();
  }

  FakeClock clock;
  absl::Mutex mu;
  std::vector<std::pair<std::string, std::string>> stops ABSL_GUARDED_BY(mu);
  OwnerLeases leases;
};

using Procs = std::vector<std::string>;

TEST_CASE(
    "a client's procs are stopped once it has had no stream for the lease, "
    "naming the client, its identity and the flag") {
  Leases t;
  t.leases.StreamOpened("client:a", "alice");
  t.leases.ProcStarted("client:a", "alice", "p_0");
  t.leases.ProcStarted("client:a", "alice", "p_1");
  t.After(absl::Hours(1));  // Connected: no lease runs.
  CHECK(t.stopped().empty());

  t.leases.StreamEnded("client:a");
  t.After(absl::Milliseconds(499));
  CHECK(t.stopped().empty());
  t.After(absl::Milliseconds(1));
  CHECK(t.stopped() == Procs{"p_0", "p_1"});
  absl::MutexLock lock(&t.mu);
  CHECK(t.stops[0].second ==
        "owner client:a (alice) vanished: no relay stream for 500ms "
        "(--owner-lease)");
}

TEST_CASE("a stream of the same client before expiry re-owns its procs") {
  Leases t;
  t.leases.StreamOpened("client:a", "alice");
  t.leases.ProcStarted("client:a", "alice", "p_0");
  t.leases.StreamEnded("client:a");
  t.After(absl::Milliseconds(400));
  t.leases.StreamOpened("client:a", "alice");
  t.After(absl::Seconds(10));
  CHECK(t.stopped().empty());
  // Gone again: the lease starts over from then.
  t.leases.StreamEnded("client:a");
  t.After(absl::Milliseconds(400));
  CHECK(t.stopped().empty());
  t.After(absl::Milliseconds(100));
  CHECK(t.stopped() == Procs{"p_0"});
}

TEST_CASE("a proc created before any stream has its client's lease running") {
  Leases t;
  t.leases.ProcStarted("client:early", "alice", "p_0");
  t.After(absl::Milliseconds(300));
  t.leases.ProcStarted("client:early", "alice", "p_1");
  t.After(absl::Milliseconds(200));
  // From the first proc on, not from the last.
  CHECK(t.stopped() == Procs{"p_0", "p_1"});

  // One that opens its stream in time keeps them.
  t.leases.ProcStarted("client:late", "bob", "q_0");
  t.After(absl::Milliseconds(100));
  t.leases.StreamOpened("client:late", "bob");
  t.After(absl::Seconds(5));
  CHECK(t.stopped() == Procs{"p_0", "p_1"});
}

TEST_CASE("each proc is asked to stop once, however often leases are checked") {
  Leases t;
  t.leases.ProcStarted("client:a", "alice", "p_0");
  for (int i = 0; i < 10; ++i) t.After(absl::Seconds(1));
  CHECK(t.stopped() == Procs{"p_0"});
  // A proc started later by the still vanished client is stopped too.
  t.leases.ProcStarted("client:a", "alice", "p_1");
  CHECK(t.stopped() == Procs{"p_0", "p_1"});
}

TEST_CASE(
    "procs that ended are not stopped, and other clients are unaffected") {
  Leases t;
  t.leases.StreamOpened("client:a", "alice");
  t.leases.StreamOpened("client:b", "bob");
  t.leases.ProcStarted("client:a", "alice", "p_0");
  t.leases.ProcStarted("client:a", "alice", "p_1");
  t.leases.ProcStarted("client:b", "bob", "q_0");
  t.leases.ProcEnded("client:a", "p_0");
  t.leases.StreamEnded("client:a");
  t.After(absl::Seconds(1));
  CHECK(t.stopped() == Procs{"p_1"});
}

TEST_CASE("a zero lease stops a vanished client's procs at once") {
  Leases t(absl::ZeroDuration());
  t.leases.StreamOpened("client:a", "alice");
  t.leases.ProcStarted("client:a", "alice", "p_0");
  CHECK(t.stopped().empty());
  t.leases.StreamEnded("client:a");
  CHECK(t.stopped() == Procs{"p_0"});
}

TEST_CASE(
    "the list shows each client's state and expiry; a record goes once it "
    "holds no proc and has no stream") {
  Leases t;
  t.leases.StreamOpened("client:a", "alice");
  t.leases.ProcStarted("client:a", "alice", "p_0");
  t.leases.ProcStarted("client:b", "bob", "q_0");
  std::vector<v1::OwnerLease> all = t.leases.List();
  REQUIRE(all.size() == 2);
  CHECK(all[0].client() == "client:a");
  CHECK(all[0].identity() == "alice");
  CHECK(all[0].connected());
  CHECK(all[0].procs_size() == 1);
  CHECK_FALSE(all[0].has_expires_at());
  CHECK(all[0].lease_ms() == 500);
  CHECK(all[1].client() == "client:b");
  CHECK_FALSE(all[1].connected());
  REQUIRE(all[1].has_expires_at());
  CHECK(TimeUtil::DurationToMilliseconds(all[1].expires_at() -
                                         all[1].vanished_at()) == 500);
  // A client sees only its identity's.
  std::vector<v1::OwnerLease> bobs = t.leases.List("bob");
  REQUIRE(bobs.size() == 1);
  CHECK(bobs[0].client() == "client:b");

  t.leases.ProcEnded("client:b", "q_0");
  t.leases.ProcEnded("client:a", "p_0");
  CHECK(t.leases.List().size() == 1);  // client:a still has its stream
  t.leases.StreamEnded("client:a");
  CHECK(t.leases.List().empty());
  // Unknown clients and procs change nothing.
  t.leases.StreamEnded("client:nobody");
  t.leases.ProcEnded("client:nobody", "x");
  CHECK(t.leases.List().empty());
}

}  // namespace
}  // namespace mesh
