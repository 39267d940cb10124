#include "lib/launcher/launcher.h"

#include <stdlib.h>

#include <filesystem>

#include "catch2/catch.hpp"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

TEST_CASE(
    "a failed launch leaves nothing behind: the name can be launched again") {
  testing::TempDir dir;
  {
    Launcher::Options options;
    options.runtime_dir = dir.path() + "/run";
    auto launcher = Launcher::Create(options);
    REQUIRE(launcher.ok());
    SpawnOptions missing;
    missing.path = "/no/such/hostd";
    absl::StatusOr<Launcher::Child> first =
        (*launcher)->Launch("h", 0, missing, absl::Seconds(5));
    CHECK(first.status().code() == absl::StatusCode::kNotFound);
    // Not ALREADY_EXISTS: the failed launch was forgotten.
    absl::StatusOr<Launcher::Child> again =
        (*launcher)->Launch("h", 0, missing, absl::Seconds(5));
    CHECK(again.status().code() == absl::StatusCode::kNotFound);
    // No entry is left for StopAll to wait on.
    CHECK((*launcher)->Signal("h", 9).code() == absl::StatusCode::kNotFound);
  }
}

TEST_CASE("a child that exits before registering is reported with its exit") {
  testing::TempDir dir;
  {
    Launcher::Options options;
    options.runtime_dir = dir.path() + "/run";
    auto launcher = Launcher::Create(options);
    REQUIRE(launcher.ok());
    SpawnOptions quits;
    quits.path = "/bin/sh";
    quits.args = {"-c", "echo no luck >&2; exit 4"};
    absl::StatusOr<Launcher::Child> child =
        (*launcher)->Launch("q", 0, quits, absl::Seconds(30));
    CHECK(child.status().code() == absl::StatusCode::kUnavailable);
    CHECK(child.status().message().find("exited with code 4") !=
          absl::string_view::npos);
    CHECK(child.status().message().find("no luck") != absl::string_view::npos);
  }
}

}  // namespace
}  // namespace mesh
