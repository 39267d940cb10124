#include "lib/process/signals.h"

#include <signal.h>
#include <unistd.h>

#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("signals have their usual names") {
  CHECK(SignalName(SIGKILL) == "SIGKILL");
  CHECK(SignalName(SIGTERM) == "SIGTERM");
  CHECK(SignalName(SIGSEGV) == "SIGSEGV");
}

TEST_CASE("SIGTERM reaches the stop-signal thread, not a handler") {
  StopSignals::Block();
  absl::Notification got;
  std::string name;
  {
    StopSignals signals([&](const std::string& n) {
      name = n;
      got.Notify();
    });
    REQUIRE(kill(getpid(), SIGTERM) == 0);  // would kill us if not taken
    REQUIRE(got.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }  // the signal thread ends here
  CHECK(name == "SIGTERM");
}

}  // namespace
}  // namespace mesh
