// Strict configuration end to end: the real hostd binary refuses a config
// file key or a flag it does not know (exit 2, naming the key and the one
// meant) and starts nothing; a SIGHUP with such a config is refused while
// hostd runs on with its old one; --version and --print-config; meshctl's
// unknown commands and version.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/supervisor.h"
#include "lib/process/testing.h"
#include "lib/testing/temp_dir.h"
#include "lib/version.h"
#include "meshctl/meshctl.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using Catch::Contains;
using testing::Context;
using testing::Shell;
using testing::TestHost;

void WriteLines(const std::string& path,
                const std::vector<std::string>& lines) {
  std::ofstream(path) << absl::StrJoin(lines, "\n") << "\n";
}

// hostd run to its exit with `args`, its stdout (and stderr) kept in
// `log_dir`.
ExitInfo RunHostd(std::vector<std::string> args, const std::string& log_dir) {
  SpawnOptions spawn;
  spawn.path = testing::BinaryPath("hostd");
  spawn.args = std::move(args);
  spawn.log_dir = log_dir;
  return testing::RunToExit(std::move(spawn));
}

// A config in a temp dir whose state and runtime dirs (not yet made) are in
// the same dir: hostd made them iff it started.
class HostdConfig {
 public:
  const std::string& path() const { return path_; }
  std::string state_dir() const { return dir_.path() + "/state"; }
  std::string runtime_dir() const { return dir_.path() + "/run"; }
  std::string logs() const { return dir_.path() + "/logs"; }
  // The dirs and loopback listen on lines 1-3, then `lines` (line 4 on).
  void Write(const std::vector<std::string>& lines) {
    std::vector<std::string> all = {"listen = \"127.0.0.1:0\"",
                                    "state-dir = \"" + state_dir() + "\"",
                                    "runtime-dir = \"" + runtime_dir() + "\""};
    all.insert(all.end(), lines.begin(), lines.end());
    WriteLines(path_, all);
  }

 private:
  testing::TempDir dir_;
  std::string path_ = dir_.path() + "/hostd.conf";
};

TEST_CASE(
    "hostd with a config key it does not know exits 2 naming the key, the "
    "file, the line and the key meant, and starts nothing") {
  HostdConfig config;
  config.Write({"# limits", "lisen = \"127.0.0.1:7450\"", "max_procs = 3"});
  ExitInfo exit = RunHostd({"--config", config.path()}, config.logs());
  INFO(exit.stderr_tail);
  CHECK(exit.exit_code == std::optional<int>(2));
  CHECK_THAT(
      exit.stderr_tail,
      Contains(absl::StrCat("hostd: unknown key \"lisen\" in ", config.path(),
                            " line 5; did you mean \"listen\"?\n")) &&
          Contains(absl::StrCat("hostd: unknown key \"max_procs\" in ",
                                config.path(),
                                " line 6; did you mean "
                                "\"max-procs\"?\n")));
  CHECK_FALSE(testing::PathExists(config.state_dir()));
  CHECK_FALSE(testing::PathExists(config.runtime_dir()));
}

TEST_CASE(
    "hostd with a misspelt flag exits 2 naming the flag meant, and starts "
    "nothing") {
  HostdConfig config;
  config.Write({});
  ExitInfo exit =
      RunHostd({"--config", config.path(), "--max-prcos=3"}, config.logs());
  INFO(exit.stderr_tail);
  CHECK(exit.exit_code == std::optional<int>(2));
  CHECK_THAT(exit.stderr_tail,
             Contains("hostd: unknown flag \"--max-prcos\"; did you mean "
                      "\"--max-procs\"?"));
  CHECK_FALSE(testing::PathExists(config.state_dir()));
}

TEST_CASE(
    "hostd --version and --print-config print to stdout and exit 0 without "
    "starting") {
  HostdConfig config;
  config.Write({"max-procs = 3"});
  ExitInfo version = RunHostd({"--version"}, config.logs() + "/version");
  CHECK(version.exit_code == std::optional<int>(0));
  CHECK(testing::ReadFile(config.logs() + "/version/stdout.log") ==
        absl::StrCat("hostd ", kHostmeshVersion, "\n"));

  ExitInfo print =
      RunHostd({"--config", config.path(), "--stop-grace=2s", "--print-config"},
               config.logs() + "/print");
  CHECK(print.exit_code == std::optional<int>(0));
  const std::string printed =
      testing::ReadFile(config.logs() + "/print/stdout.log");
  INFO(printed << print.stderr_tail);
  CHECK_THAT(printed, Contains(absl::StrCat("# config file: ", config.path())));
  CHECK_THAT(printed, Contains("max-procs = 3 ") &&
                          Contains(absl::StrCat("# ", config.path(), ":4")));
  CHECK_THAT(printed, Contains("stop-grace = \"2s\""));
  CHECK_THAT(printed, Contains("# command line"));
  CHECK_FALSE(testing::PathExists(config.state_dir()));
}

TEST_CASE(
    "a SIGHUP with an unknown key in the config is refused and hostd keeps "
    "serving with its old config; once fixed, a SIGHUP applies it") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/hostd.conf";
  WriteLines(path, {"allow-command = [\"/bin/true\"]"});
  auto host = TestHost::Start({"--config=" + path},
                              /*allow_any_command=*/false);
  REQUIRE(host != nullptr);
  int attempt = 0;
  // A /bin/sh proc: refused until a reload allows /bin/sh.
  auto create_code = [&host, &attempt] {
    v1::ProcState state;
    return host
        ->Create(absl::StrCat("sh", attempt++), 0, Shell("exit 0"), &state)
        .error_code();
  };
  REQUIRE(create_code() == grpc::StatusCode::PERMISSION_DENIED);

  WriteLines(path, {"allow-command = [\"/bin/true\", \"/bin/sh\"]",
                    "lisen = \"127.0.0.1:7450\""});
  REQUIRE(kill(host->pid(), SIGHUP) == 0);
  // The reload ran and was refused, naming the key.
  CHECK(testing::Eventually(
      [&] {
        const std::string log = host->HostdLog();
        return absl::StrContains(log, "reload: refused") &&
               absl::StrContains(log, "\"lisen\"");
      },
      absl::Seconds(30)));
  v1::HostInfo info;
  REQUIRE(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
  CHECK(info.pid() == host->pid());
  CHECK(info.version() == kHostmeshVersion);
  CHECK(create_code() == grpc::StatusCode::PERMISSION_DENIED);

  WriteLines(path, {"allow-command = [\"/bin/true\", \"/bin/sh\"]"});
  REQUIRE(kill(host->pid(), SIGHUP) == 0);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  grpc::StatusCode code = create_code();
  while (code == grpc::StatusCode::PERMISSION_DENIED &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    code = create_code();
  }
  CHECK(code == grpc::StatusCode::OK);
}

// meshctl run in-process.
struct Meshctl {
  int code = 0;
  std::string out;
  std::string err;
};
Meshctl RunCtl(std::vector<std::string> args) {
  args.insert(args.begin(), "meshctl");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  std::ostringstream out, err;
  Meshctl run;
  run.code =
      mesh::RunMeshctl(static_cast<int>(argv.size()), argv.data(), out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

TEST_CASE(
    "meshctl names an unknown command with the one meant, at the top and in "
    "each command group, and exits 2") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"prc", "list"}, "meshctl: unknown command 'prc', did you mean 'proc'?"},
      {{"hots", "status"},
       "meshctl: unknown command 'hots', did you mean 'host'?"},
      {{"proc", "lsit"},
       "meshctl: unknown command 'lsit' for 'meshctl proc', did you mean "
       "'list'?"},
      {{"host", "stauts"},
       "meshctl: unknown command 'stauts' for 'meshctl host', did you mean "
       "'status'?"},
      {{"actor", "sned", "p0", "a"},
       "meshctl: unknown command 'sned' for 'meshctl actor', did you mean "
       "'send'?"},
      {{"owner", "lst"},
       "meshctl: unknown command 'lst' for 'meshctl owner', did you mean "
       "'list'?"},
      {{"proc"}, "meshctl: 'meshctl proc' needs a command: "},
  };
  for (const auto& [args, error] : cases) {
    INFO(absl::StrJoin(args, " "));
    Meshctl run = RunCtl(args);
    CHECK(run.code == 2);
    CHECK_THAT(run.err, Contains(error));
    CHECK(run.out.empty());
  }
  // A word near no command (`bogus` is 2 edits from `logs`): the list.
  Meshctl bogus = RunCtl({"frobnicate"});
  CHECK(bogus.code == 2);
  CHECK_THAT(bogus.err, Contains("meshctl: unknown command 'frobnicate'") &&
                            Contains("host") && Contains("proc") &&
                            Contains("version"));
}

TEST_CASE("meshctl version and --version print meshctl's version") {
  for (const char* args : {"version", "--version"}) {
    INFO(args);
    Meshctl run = RunCtl({args});
    CHECK(run.code == 0);
    CHECK(run.out == absl::StrCat("meshctl ", kHostmeshVersion, "\n"));
    CHECK(run.err.empty());
  }
}

}  // namespace
}  // namespace mesh
