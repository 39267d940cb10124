#include "lib/event/event_loop.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "lib/time/clock.h"

namespace mesh {
namespace {

TEST_CASE("posted work runs in the order posted") {
  EventLoop loop;
  std::vector<int> order;
  absl::Notification done;
  for (int i = 0; i < 100; ++i) loop.Post([&order, i] { order.push_back(i); });
  loop.Post([&done] { done.Notify(); });
  REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(order[i] == i);
}

TEST_CASE("timers run by deadline and cancelled timers never run") {
  EventLoop loop;
  std::vector<int> order;
  absl::Notification done;
  const absl::Time started = absl::Now();
  const absl::Duration now = loop.clock().Now();
  loop.PostAt(now + absl::Milliseconds(60), [&] { order.push_back(3); });
  EventLoop::TimerId cancelled =
      loop.PostAt(now + absl::Milliseconds(40), [&] { order.push_back(99); });
  loop.PostAt(now + absl::Milliseconds(20), [&] { order.push_back(2); });
  loop.Post([&] { order.push_back(1); });
  loop.PostAt(now + absl::Milliseconds(80), [&] { done.Notify(); });
  CHECK(loop.Cancel(cancelled));
  CHECK_FALSE(loop.Cancel(cancelled));
  REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(order == std::vector<int>{1, 2, 3});
  CHECK(absl::Now() - started >= absl::Milliseconds(80));
}

TEST_CASE("work can post more work and cancel timers from the loop thread") {
  EventLoop loop;
  absl::Notification done;
  loop.Post([&] {
    CHECK(loop.InLoopThread());
    EventLoop::TimerId id = loop.PostAfter(absl::Hours(1), [] {});
    CHECK(loop.Cancel(id));
    loop.Post([&] { done.Notify(); });
  });
  REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK_FALSE(loop.InLoopThread());
}

TEST_CASE(
    "on a fake clock a timer runs once the clock is advanced past its "
    "deadline, in deadline order, and never by itself") {
  FakeClock clock;
  EventLoop loop(clock);
  std::atomic<int> ran{0};
  std::vector<int> order;  // written on the loop thread only
  loop.PostAfter(absl::Seconds(20), [&] {
    order.push_back(20);
    ++ran;
  });
  loop.PostAfter(absl::Seconds(10), [&] {
    order.push_back(10);
    ++ran;
  });
  loop.PostAfter(absl::Hours(1), [&] { ++ran; });
  loop.RunDue();
  absl::SleepFor(absl::Milliseconds(20));  // real time moves nothing
  CHECK(ran == 0);
  clock.Advance(absl::Seconds(9));
  loop.RunDue();
  CHECK(ran == 0);
  clock.Advance(absl::Seconds(1));
  loop.RunDue();
  CHECK(ran == 1);
  clock.Advance(absl::Seconds(30));
  loop.RunDue();
  CHECK(ran == 2);
  CHECK(order == std::vector<int>{10, 20});
}

TEST_CASE("a loop asleep on a fake clock wakes when the clock is advanced") {
  FakeClock clock;
  EventLoop loop(clock);
  absl::Notification done;
  loop.PostAfter(absl::Minutes(5), [&] { done.Notify(); });
  // Let the loop go to sleep on the deadline first.
  absl::SleepFor(absl::Milliseconds(20));
  clock.Advance(absl::Minutes(5));
  // No RunDue: the Advance alone must wake the sleeping loop.
  CHECK(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

}  // namespace
}  // namespace mesh
