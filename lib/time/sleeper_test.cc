#include "lib/time/sleeper.h"

#include <thread>

#include "absl/time/clock.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("a sleeper sleeps its whole timeout when nobody stops it") {
  Sleeper sleeper;
  const absl::Time start = absl::Now();
  CHECK_FALSE(sleeper.SleepFor(absl::Milliseconds(50)));
  CHECK(absl::Now() - start >= absl::Milliseconds(45));
  CHECK_FALSE(sleeper.stopped());
}

TEST_CASE("Stop wakes a sleeper at once, and later sleeps do not sleep") {
  Sleeper sleeper;
  const absl::Time start = absl::Now();
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(20));
    sleeper.Stop();
  });
  CHECK(sleeper.SleepFor(absl::Hours(1)));
  stopper.join();
  CHECK(absl::Now() - start < absl::Seconds(30));
  CHECK(sleeper.SleepFor(absl::Hours(1)));
  CHECK(sleeper.stopped());
}

TEST_CASE("a zero or negative timeout returns at once") {
  Sleeper sleeper;
  CHECK_FALSE(sleeper.SleepFor(absl::ZeroDuration()));
  CHECK_FALSE(sleeper.SleepFor(-absl::Seconds(1)));
  CHECK_FALSE(sleeper.SleepFor(-absl::InfiniteDuration()));
}

}  // namespace
}  // namespace mesh
