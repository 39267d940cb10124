#include "lib/process/env.h"

#include <cstdlib>
#include <thread>

#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

constexpr char kName[] = "HOSTMESH_ENV_TEST_VARIABLE";

TEST_CASE(
    "TakeEnv returns a variable and removes it while the process has one "
    "thread") {
  setenv(kName, "42", 1);
  absl::StatusOr<std::optional<std::string>> taken = TakeEnv(kName);
  REQUIRE(taken.ok());
  CHECK(*taken == std::optional<std::string>("42"));
  CHECK(std::getenv(kName) == nullptr);
  absl::StatusOr<std::optional<std::string>> again = TakeEnv(kName);
  REQUIRE(again.ok());
  CHECK_FALSE(again->has_value());
}

TEST_CASE(
    "TakeEnv refuses, changing nothing, once a second thread runs, and says "
    "it must be taken before threads start") {
  setenv(kName, "7", 1);
  absl::Notification release;
  std::thread other([&release] { release.WaitForNotification(); });
  absl::StatusOr<std::optional<std::string>> taken = TakeEnv(kName);
  release.Notify();
  other.join();
  CHECK(absl::IsFailedPrecondition(taken.status()));
  CHECK_THAT(std::string(taken.status().message()),
             Catch::Contains("before any thread starts"));
  REQUIRE(std::getenv(kName) != nullptr);
  CHECK(std::string(std::getenv(kName)) == "7");
  unsetenv(kName);
}

}  // namespace
}  // namespace mesh
