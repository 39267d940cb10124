// OwnerLeases against a fake clock, in milliseconds: no process, no stream.
#include "hostd/owner_leases.h"

#include <google/protobuf/util/time_util.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "catch2/catch.hpp"
#include "hostd/sender_claims.h"
#include "lib/time/clock.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;

// Leases of 500ms on a fake clock, recording every stop asked for.
struct Leases {
  explicit Leases(absl::Duration lease = absl::Milliseconds(500))
      : leases({lease, &clock, &claims},
               [this](const std::string& proc, uint64_t incarnation,
                      const std::string& reason) {
                 absl::MutexLock lock(&mu);
                 stops.emplace_back(proc, incarnation, reason);
               }) {}

  std::vector<std::string> stopped() {
    absl::MutexLock lock(&mu);
    std::vector<std::string> procs;
    for (const auto& [proc, incarnation, reason] : stops) {
      procs.push_back(proc);
    }
    return procs;
  }
  std::string reason(size_t i) {
    absl::MutexLock lock(&mu);
    return std::get<2>(stops.at(i));
  }
  // Advances the clock and checks, as hostd's heartbeat thread does.
  void After(absl::Duration elapsed) {
    clock.Advance(elapsed);
    leases.Check();
  }
  void Open(const std::string& client, const std::string& identity) {
    REQUIRE(leases.StreamOpened(client, identity).ok());
  }
  void Start(const std::string& client, const std::string& identity,
             const std::string& proc, uint64_t incarnation = 1) {
    REQUIRE(leases.ProcStarted(client, identity, proc, incarnation).ok());
  }

  FakeClock clock;
  SenderClaims claims;
  absl::Mutex mu;
  std::vector<std::tuple<std::string, uint64_t, std::string>> stops
      ABSL_GUARDED_BY(mu);
  OwnerLeases leases;
};

using Procs = std::vector<std::string>;

TEST_CASE(
    "a client's procs are stopped once it has had no stream for the lease, "
    "naming the client, its identity and the flag") {
  Leases t;
  t.Open("client:a", "alice");
  t.Start("client:a", "alice", "p_0");
  t.Start("client:a", "alice", "p_1");
  t.After(absl::Hours(1));  // Connected: no lease runs.
  CHECK(t.stopped().empty());

  t.leases.StreamEnded("client:a");
  t.After(absl::Milliseconds(499));
  CHECK(t.stopped().empty());
  t.After(absl::Milliseconds(1));
  CHECK(t.stopped() == Procs{"p_0", "p_1"});
  CHECK(t.reason(0) ==
        "owner client:a (alice) vanished: no relay stream for 500ms "
        "(--owner-lease)");
}

TEST_CASE("a stream of the same client before expiry re-owns its procs") {
  Leases t;
  t.Open("client:a", "alice");
  t.Start("client:a", "alice", "p_0");
  t.leases.StreamEnded("client:a");
  t.After(absl::Milliseconds(400));
  t.Open("client:a", "alice");
  t.After(absl::Seconds(10));
  CHECK(t.stopped().empty());
  // Gone again: the lease starts over from then.
  t.leases.StreamEnded("client:a");
  t.After(absl::Milliseconds(400));
  CHECK(t.stopped().empty());
  t.After(absl::Milliseconds(100));
  CHECK(t.stopped() == Procs{"p_0"});
}

TEST_CASE(
    "a client that has not had a stream yet gets at least 5s for its first "
    "one, counted from its first proc") {
  Leases t;
  t.Start("client:early", "alice", "p_0");
  t.After(absl::Seconds(3));
  t.Start("client:early", "alice", "p_1");
  t.After(absl::Milliseconds(1999));
  CHECK(t.stopped().empty());
  std::vector<v1::OwnerLease> listed = t.leases.List();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].lease_ms() == 5000);
  t.After(absl::Milliseconds(1));
  // From the first proc on, not from the last.
  CHECK(t.stopped() == Procs{"p_0", "p_1"});
  CHECK(t.reason(0) ==
        "owner client:early (alice) vanished: no relay stream for 5s "
        "(--owner-lease 500ms, at least 5s for a client's first stream)");

  // One that opens its stream in time keeps them; once it had one, the
  // lease is --owner-lease again.
  t.Start("client:late", "bob", "q_0");
  t.After(absl::Seconds(4));
  t.Open("client:late", "bob");
  t.After(absl::Seconds(10));
  CHECK(t.stopped() == Procs{"p_0", "p_1"});
  t.leases.StreamEnded("client:late");
  t.After(absl::Milliseconds(500));
  CHECK(t.stopped() == Procs{"p_0", "p_1", "q_0"});
}

TEST_CASE(
    "a zero lease does not stop the procs a client creates before its first "
    "stream, and stops them at once once it had one") {
  Leases t(absl::ZeroDuration());
  t.Start("client:a", "alice", "p_0");
  t.After(absl::Milliseconds(100));
  CHECK(t.stopped().empty());
  t.Open("client:a", "alice");
  CHECK(t.stopped().empty());
  t.leases.StreamEnded("client:a");
  CHECK(t.stopped() == Procs{"p_0"});
}

TEST_CASE("each proc is asked to stop once, however often leases are checked") {
  Leases t;
  t.Start("client:a", "alice", "p_0");
  for (int i = 0; i < 10; ++i) t.After(absl::Seconds(1));
  CHECK(t.stopped() == Procs{"p_0"});
  // A proc started later by the still vanished client is stopped too.
  t.Start("client:a", "alice", "p_1");
  CHECK(t.stopped() == Procs{"p_0", "p_1"});
}

TEST_CASE(
    "procs that ended are not stopped, and other clients are unaffected") {
  Leases t;
  t.Open("client:a", "alice");
  t.Open("client:b", "bob");
  t.Start("client:a", "alice", "p_0");
  t.Start("client:a", "alice", "p_1");
  t.Start("client:b", "bob", "q_0");
  t.leases.ProcEnded("client:a", "p_0", 1);
  t.leases.StreamEnded("client:a");
  t.After(absl::Seconds(1));
  CHECK(t.stopped() == Procs{"p_1"});
}

TEST_CASE(
    "the end of an old incarnation reported after the start of a new one "
    "leaves the new one leased, and it is stopped as that incarnation") {
  Leases t;
  t.Open("client:a", "alice");
  t.Start("client:a", "alice", "p", /*incarnation=*/1);
  // The client stopped p, got the answer and created p again at once: the
  // new incarnation's start overtakes the old one's end.
  t.Start("client:a", "alice", "p", /*incarnation=*/2);
  t.leases.ProcEnded("client:a", "p", /*incarnation=*/1);
  std::vector<v1::OwnerLease> listed = t.leases.List();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].procs_size() == 1);
  // A stale start changes nothing either.
  t.Start("client:a", "alice", "p", /*incarnation=*/1);

  t.leases.StreamEnded("client:a");
  t.After(absl::Milliseconds(500));
  REQUIRE(t.stopped() == Procs{"p"});
  {
    absl::MutexLock lock(&t.mu);
    CHECK(std::get<1>(t.stops[0]) == 2);
  }
  // Its end (of that incarnation) lets the record go.
  t.leases.ProcEnded("client:a", "p", /*incarnation=*/2);
  CHECK(t.leases.List().empty());
}

TEST_CASE(
    "a stream or proc of a client id under another identity than its "
    "record's is refused, and the id stays pinned while it has a record") {
  Leases t;
  t.Open("client:a", "alice");
  t.Start("client:a", "alice", "p_0");
  CHECK(t.claims.pinned("client:a"));
  absl::Status stream = t.leases.StreamOpened("client:a", "mallory");
  CHECK(stream.code() == absl::StatusCode::kPermissionDenied);
  CHECK(stream.message() ==
        "client \"client:a\" belongs to another identity than mallory (whose "
        "lease it holds here)");
  CHECK(t.leases.ProcStarted("client:a", "mallory", "m_0", 7).code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK(t.leases.MayHold("client:a", "mallory").code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK(t.leases.MayHold("client:a", "alice").ok());
  std::vector<v1::OwnerLease> listed = t.leases.List();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].identity() == "alice");
  CHECK(listed[0].procs_size() == 1);
  // Mallory's refused stream did not count: alice's ending starts the lease.
  t.leases.StreamEnded("client:a");
  t.After(absl::Milliseconds(500));
  CHECK(t.stopped() == Procs{"p_0"});
  // Once the record is gone, so is the pin.
  t.leases.ProcEnded("client:a", "p_0", 1);
  CHECK(t.leases.List().empty());
  CHECK_FALSE(t.claims.pinned("client:a"));
}

TEST_CASE(
    "the list shows each client's state and expiry; a record goes once it "
    "holds no proc and has no stream") {
  Leases t;
  t.Open("client:a", "alice");
  t.Start("client:a", "alice", "p_0");
  t.Open("client:b", "bob");
  t.Start("client:b", "bob", "q_0");
  t.leases.StreamEnded("client:b");
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

  t.leases.ProcEnded("client:b", "q_0", 1);
  t.leases.ProcEnded("client:a", "p_0", 1);
  CHECK(t.leases.List().size() == 1);  // client:a still has its stream
  t.leases.StreamEnded("client:a");
  CHECK(t.leases.List().empty());
  // Unknown clients and procs change nothing.
  t.leases.StreamEnded("client:nobody");
  t.leases.ProcEnded("client:nobody", "x", 1);
  CHECK(t.leases.List().empty());
}

}  // namespace
}  // namespace mesh
