// Reasons a person can use (issue 11), end to end with a real hostd and a
// proc of tests/testdata/trouble_procd: procd's own log lines go to
// <log_dir>/procd.log, not to the proc's stderr, so a proc that fails is
// explained by the lines its user's code wrote to stderr, even when procd
// logged a lot after them.
#include <sys/stat.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "lib/process/testing.h"
#include "proto/host.grpc.pb.h"
#include "proto/proc.pb.h"
#include "tests/testdata/trouble.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::BinaryPath;
using testing::ReadFile;
using testing::TestHost;
using testing::WithClient;

// The glog prefix of procd's own lines ("I1202 16:05:19.123456  1234 ").
bool HasGlogInfoLine(const std::string& text) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.size() > 6 && line[0] == 'I' && absl::ascii_isdigit(line[1]) &&
        absl::StrContains(line, "] ")) {
      return true;
    }
  }
  return false;
}

TEST_CASE(
    "a proc whose actor wrote the cause to stderr and exited 3 is FAILED "
    "with that line in its reason, and procd's own lines are in procd.log") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  std::shared_ptr<Client> client = testing::NewClient(host->credentials());
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach({host->address()}, WithClient(client));
  REQUIRE(hosts.ok());
  v1::ProcSpec spec;
  spec.set_command(BinaryPath("trouble_procd"));
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("model", 1, spec);
  REQUIRE(procs.ok());
  const std::string proc = "model_0";

  absl::StatusOr<ActorMesh> loader = procs->Spawn("loader", "test.trouble");
  REQUIRE(loader.ok());
  const std::string cause =
      "cannot open /data/model.bin: No such file or directory";
  test::Say say;
  say.set_text(cause);
  auto said = loader->Call<test::Said>(say);
  REQUIRE(said.size() == 1);
  REQUIRE(said[0].ok());
  // procd logs a line per actor it creates: 60 of them after the cause were
  // more than the 4 KiB stderr tail hostd keeps, when they went to stderr.
  for (int i = 0; i < 60; ++i) {
    REQUIRE(
        procs
            ->Spawn(absl::StrCat("helper_with_a_long_name_", i), "test.trouble")
            .ok());
  }
  test::Crash crash;
  crash.set_how(test::Crash::EXIT_CODE);
  crash.set_code(3);
  auto crashed = loader->Call<test::Crashed>(crash, absl::Seconds(30));
  REQUIRE(crashed.size() == 1);
  CHECK_FALSE(crashed[0].ok());

  v1::WaitProcsResponse waited = host->Wait({proc}, v1::STOPPED);
  REQUIRE_FALSE(waited.timed_out());
  REQUIRE(waited.procs_size() == 1);
  const v1::ProcState& state = waited.procs(0);
  INFO(state.DebugString());
  CHECK(state.status() == v1::FAILED);
  CHECK(state.exit_code() == 3);
  CHECK_THAT(state.reason(),
             Catch::Contains("exited with code 3") &&
                 Catch::Contains(absl::StrCat("\"", cause, "\"")));
  CHECK_FALSE(absl::StrContains(state.reason(), "created actor"));
  CHECK_FALSE(absl::StrContains(state.reason(), "serving through hostd"));
  CHECK_FALSE(HasGlogInfoLine(state.stderr_tail()));

  // The proc's stderr holds what its actor wrote, and none of procd's lines;
  // procd.log beside it holds those.
  REQUIRE_FALSE(state.log_dir().empty());
  const std::string err = ReadFile(state.log_dir() + "/stderr.log");
  CHECK(absl::StrContains(err, cause));
  CHECK_FALSE(HasGlogInfoLine(err));
  const std::string log = ReadFile(state.log_dir() + "/procd.log");
  INFO(log.substr(0, 2000));
  CHECK(HasGlogInfoLine(log));
  CHECK(absl::StrContains(log, "procd model_0 (rank 0) serving through hostd"));
  CHECK(absl::StrContains(log, "created actor helper_with_a_long_name_59"));
  CHECK_FALSE(absl::StrContains(log, cause));
  struct stat err_stat, log_stat;
  REQUIRE(stat((state.log_dir() + "/stderr.log").c_str(), &err_stat) == 0);
  REQUIRE(stat((state.log_dir() + "/procd.log").c_str(), &log_stat) == 0);
  CHECK(log_stat.st_mode == err_stat.st_mode);
  CHECK(log_stat.st_gid == err_stat.st_gid);

  CHECK(hosts->Shutdown().ok());
}

}  // namespace
}  // namespace mesh
