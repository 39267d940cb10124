#include "lib/event/event_loop.h"

#include <vector>

#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"

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
  absl::Time now = absl::Now();
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
  CHECK(absl::Now() - now >= absl::Milliseconds(80));
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

}  // namespace
}  // namespace mesh
