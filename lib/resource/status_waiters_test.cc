#include "lib/resource/status_waiters.h"

#include <map>

#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "lib/time/clock.h"
#include "proto/host.pb.h"

namespace mesh {
namespace {

// A tiny owner: procs by name under a mutex, as hostd keeps them.
struct Owner {
  explicit Owner(const MonotonicClock& clock = MonotonicClock::Real())
      : loop(clock) {}

  absl::Mutex mu;
  std::map<std::string, v1::Status> statuses ABSL_GUARDED_BY(mu);
  EventLoop loop;
  StatusWaiters<v1::ProcState> waiters{
      "proc", &mu, &loop,
      [this](const std::string& name)
          ABSL_NO_THREAD_SAFETY_ANALYSIS -> std::optional<v1::ProcState> {
            auto it = statuses.find(name);
            if (it == statuses.end()) return std::nullopt;
            v1::ProcState state;
            state.set_name(name);
            state.set_status(it->second);
            return state;
          },
      nullptr};

  void Set(const std::string& name, v1::Status status) {
    Deferred deferred;
    {
      absl::MutexLock lock(&mu);
      statuses[name] = status;
      waiters.Check(deferred);
    }
    RunDeferred(deferred);
  }

  // Adds a wait whose answer lands in `out` and notifies `done`.
  void Wait(std::vector<std::string> names, v1::Status min, absl::Duration in,
            StatusWaitResult<v1::ProcState>* out, absl::Notification* done) {
    Deferred deferred;
    {
      absl::MutexLock lock(&mu);
      waiters.Add(
          std::move(names), min, in,
          [out, done](absl::StatusOr<StatusWaitResult<v1::ProcState>> result) {
            *out = *result;
            done->Notify();
          },
          deferred);
    }
    RunDeferred(deferred);
  }
};

TEST_CASE("a wait is answered when every name reaches the status") {
  Owner owner;
  StatusWaitResult<v1::ProcState> result;
  absl::Notification done;
  owner.Wait({"a", "b"}, v1::RUNNING, absl::Hours(1), &result, &done);
  owner.Set("a", v1::RUNNING);
  CHECK_FALSE(done.HasBeenNotified());
  owner.Set("b", v1::FAILED);  // past RUNNING counts: it never comes back
  REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK_FALSE(result.timed_out);
  REQUIRE(result.states.size() == 2);
  CHECK(result.states[1].status() == v1::FAILED);
}

TEST_CASE(
    "a wait already satisfied is answered at once; one that is not times out "
    "with the states") {
  Owner owner;
  owner.Set("a", v1::RUNNING);
  StatusWaitResult<v1::ProcState> now, later;
  absl::Notification now_done, later_done;
  owner.Wait({"a"}, v1::RUNNING, absl::Hours(1), &now, &now_done);
  CHECK(now_done.HasBeenNotified());
  owner.Wait({"a", "missing"}, v1::RUNNING, absl::Milliseconds(50), &later,
             &later_done);
  REQUIRE(later_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(later.timed_out);
  CHECK(later.states[1].status() == v1::NOT_EXIST);
}

TEST_CASE(
    "a wait times out on the owner's monotonic clock, not a moment before its "
    "timeout and then without anything else happening") {
  FakeClock clock;
  Owner owner(clock);
  StatusWaitResult<v1::ProcState> result;
  absl::Notification done;
  owner.Wait({"a"}, v1::RUNNING, absl::Seconds(30), &result, &done);
  clock.Advance(absl::Seconds(30) - absl::Nanoseconds(1));
  owner.loop.RunDue();
  CHECK_FALSE(done.HasBeenNotified());
  clock.Advance(absl::Nanoseconds(1));
  REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(result.timed_out);
  CHECK(result.states[0].status() == v1::NOT_EXIST);
}

TEST_CASE("Close ends pending waits and answers later ones at once") {
  Owner owner;
  std::vector<absl::Status> got;
  auto record = [&](absl::StatusOr<StatusWaitResult<v1::ProcState>> result) {
    got.push_back(result.status());
  };
  Deferred deferred;
  {
    absl::MutexLock lock(&owner.mu);
    owner.waiters.Add({"x"}, v1::RUNNING, absl::Hours(1), record, deferred);
    owner.waiters.Close(absl::UnavailableError("shutting down"), deferred);
    CHECK(owner.waiters.pending() == 0);
    owner.waiters.Add({"y"}, v1::RUNNING, absl::Hours(1), record, deferred);
    CHECK(owner.waiters.pending() == 0);
  }
  RunDeferred(deferred);
  REQUIRE(got.size() == 2);
  CHECK(got[0].code() == absl::StatusCode::kUnavailable);
  CHECK(got[1].code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("Close without an error answers with the states as they are") {
  Owner owner;
  StatusWaitResult<v1::ProcState> pending, later;
  absl::Notification pending_done, later_done;
  owner.Wait({"x"}, v1::RUNNING, absl::Hours(1), &pending, &pending_done);
  Deferred deferred;
  {
    absl::MutexLock lock(&owner.mu);
    owner.waiters.Close(absl::OkStatus(), deferred);
  }
  RunDeferred(deferred);
  REQUIRE(pending_done.HasBeenNotified());
  CHECK(pending.timed_out);
  owner.Wait({"x"}, v1::RUNNING, absl::Hours(1), &later, &later_done);
  REQUIRE(later_done.HasBeenNotified());
  CHECK(later.timed_out);
  CHECK(later.states[0].status() == v1::NOT_EXIST);
  CHECK(later.states[0].reason() == "no proc named \"x\"");
}

}  // namespace
}  // namespace mesh
