// meshctl watch and meshctl host drain against a real hostd: the watch (the
// real binary, as an operator runs it) prints the snapshot as a table, then
// one timestamped line per change, and exits 0 when the host shuts down, on
// Ctrl-C, and after --for; -o json is one object per line. host drain
// refuses new procs, --stop stops them, --undrain accepts again.
#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/supervisor.h"
#include "meshctl/meshctl.h"
#include "tests/testing/meshctl_run.h"
#include "tests/testing/restartable_host.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;
using testing::TestHost;

using Result = testing::MeshctlResult;

// meshctl as the test host's admin (tests/testing/meshctl_run.h).
Result Meshctl(const testing::TestHost& host, std::vector<std::string> args) {
  return testing::RunMeshctlAs(host, std::move(args));
}

// The meshctl binary running `watch` against `host`, its stdout in a file.
class WatchProcess {
 public:
  WatchProcess(const TestHost& host, std::vector<std::string> args) {
    auto supervisor = ProcessSupervisor::Create();
    REQUIRE(supervisor.ok());
    supervisor_ = *std::move(supervisor);
    SpawnOptions spawn;
    spawn.path = testing::BinaryPath("meshctl");
    spawn.args = {"--host", host.address(), "--token-file", host.token_file()};
    spawn.args.insert(spawn.args.end(), args.begin(), args.end());
    spawn.log_dir = dir_.path();
    absl::StatusOr<pid_t> pid =
        supervisor_->Spawn(spawn, [this](const ExitInfo& exit) {
          exit_ = exit;
          exited_.Notify();
        });
    REQUIRE(pid.ok());
    pid_ = *pid;
  }
  ~WatchProcess() {
    if (!exited_.HasBeenNotified()) {
      supervisor_->SignalGroup(pid_, SIGKILL).IgnoreError();
      exited_.WaitForNotification();
    }
  }

  std::string Out() const {
    return testing::ReadText(dir_.path() + "/stdout.log");
  }
  // Waits (reading its output every 20 ms) until it printed `text`.
  bool WaitFor(const std::string& text,
               absl::Duration timeout = absl::Seconds(30)) const {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (Out().find(text) != std::string::npos) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  void Signal(int sig) { supervisor_->SignalGroup(pid_, sig).IgnoreError(); }
  std::optional<ExitInfo> Exit(absl::Duration timeout = absl::Seconds(30)) {
    if (!exited_.WaitForNotificationWithTimeout(timeout)) return std::nullopt;
    return exit_;
  }

 private:
  testing::TempDir dir_;
  std::unique_ptr<ProcessSupervisor> supervisor_;
  pid_t pid_ = 0;
  absl::Notification exited_;
  ExitInfo exit_;
};

TEST_CASE(
    "meshctl watch prints the procs then a timestamped line per change, and "
    "exits 0 when the host shuts down") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("early", 0, v1::ProcSpec(), &state).ok());
  REQUIRE(host->Wait({"early"}, v1::RUNNING).procs(0).status() == v1::RUNNING);
  WatchProcess watch(*host, {"watch"});
  INFO(watch.Out());
  REQUIRE(watch.WaitFor("early"));

  Result spawn = Meshctl(*host, {"proc", "spawn", "w1"});
  INFO(spawn.out << spawn.err);
  REQUIRE(spawn.code == 0);
  REQUIRE(watch.WaitFor(absl::StrFormat("%-12s %s", "RUNNING", "registered")));
  Result stop = Meshctl(*host, {"proc", "stop", "w1", "--grace", "1s"});
  REQUIRE(stop.code == 0);

  Result drain = Meshctl(*host, {"host", "drain", "--reason", "kernel update"});
  INFO(drain.out << drain.err);
  REQUIRE(drain.code == 0);
  CHECK_THAT(drain.out, Catch::Contains("drained: new procs are refused") &&
                            Catch::Contains("kernel update"));
  Result refused = Meshctl(*host, {"proc", "spawn", "w2"});
  CHECK(refused.code == 1);
  CHECK_THAT(refused.err, Catch::Contains("FAILED_PRECONDITION") &&
                              Catch::Contains("is draining"));
  Result undrain = Meshctl(*host, {"host", "drain", "--undrain"});
  INFO(undrain.out << undrain.err);
  REQUIRE(undrain.code == 0);
  CHECK_THAT(undrain.out, Catch::Contains("undrained"));
  REQUIRE(watch.WaitFor("undrained by"));

  Result shutdown =
      Meshctl(*host, {"host", "shutdown", "--grace", "1s", "--stay-down"});
  REQUIRE(shutdown.code == 0);
  std::optional<ExitInfo> exit = watch.Exit();
  REQUIRE(exit.has_value());
  CHECK(exit->exit_code == std::optional<int>(0));
  const std::string out = watch.Out();
  CHECK_THAT(out, Catch::Contains("NAME") && Catch::Contains("early") &&
                      Catch::Contains("ended the watch"));
  // One line per change, each with its time, in order.
  const std::regex line(
      R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  (\w+) +(\S+)(?: +(\S+))?.*)");
  std::vector<std::string> seen;
  for (absl::string_view text : absl::StrSplit(out, '\n')) {
    std::smatch match;
    std::string copy(text);
    if (std::regex_match(copy, match, line)) {
      seen.push_back(match[1].str() + " " + match[2].str() + " " +
                     match[3].str());
    }
  }
  const std::vector<std::string> expected = {
      "created w1 INITIALIZING", "changed w1 RUNNING",
      "changed w1 STOPPING",     "changed w1 STOPPED",
      "host drained by",         "host undrained by",
      "host shutting down:",     "changed early STOPPING",
      "changed early STOPPED"};
  CHECK(seen == expected);
  REQUIRE(host->WaitExit().ok());
}

TEST_CASE(
    "meshctl watch with -o json prints one object per line and exits 0 on "
    "Ctrl-C") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  WatchProcess watch(*host, {"-o", "json", "watch"});
  INFO(watch.Out());
  REQUIRE(watch.WaitFor("SNAPSHOT"));
  v1::ProcState state;
  REQUIRE(host->Create("j1", 0, v1::ProcSpec(), &state).ok());
  REQUIRE(watch.WaitFor("RUNNING"));
  watch.Signal(SIGINT);
  std::optional<ExitInfo> exit = watch.Exit();
  REQUIRE(exit.has_value());
  CHECK(exit->exit_code == std::optional<int>(0));
  std::vector<v1::HostEvent> events;
  for (absl::string_view text :
       absl::StrSplit(watch.Out(), '\n', absl::SkipEmpty())) {
    v1::HostEvent event;
    INFO(text);
    REQUIRE(
        google::protobuf::util::JsonStringToMessage(std::string(text), &event)
            .ok());
    events.push_back(event);
  }
  REQUIRE(events.size() >= 3);
  CHECK(events[0].kind() == v1::HostEvent::SNAPSHOT);
  CHECK(events[1].kind() == v1::HostEvent::PROC_CREATED);
  CHECK(events[1].proc().name() == "j1");
  CHECK(events.back().proc().status() == v1::RUNNING);
}

TEST_CASE("meshctl watch --for ends the watch after its time with exit 0") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  const absl::Time start = absl::Now();
  Result watch = Meshctl(*host, {"watch", "--for", "1500ms"});
  const absl::Duration took = absl::Now() - start;
  INFO(watch.out << watch.err);
  CHECK(watch.code == 0);
  CHECK(took >= absl::Milliseconds(1500));
  CHECK(took < absl::Seconds(15));
  CHECK_THAT(watch.out, Catch::Contains("host " + host->address()));
  CHECK(Meshctl(*host, {"watch", "--for", "soon"}).code == 2);
}

TEST_CASE(
    "meshctl host drain --stop stops the procs after the grace and the host "
    "stays up") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  REQUIRE(Meshctl(*host, {"proc", "spawn", "d", "--count", "2"}).code == 0);
  CHECK(Meshctl(*host, {"host", "drain", "--grace", "1s"}).code == 2);
  CHECK(Meshctl(*host, {"host", "drain", "--undrain", "--stop"}).code == 2);
  Result drain = Meshctl(*host, {"host", "drain", "--stop", "--grace", "1s",
                                 "--reason", "retire"});
  INFO(drain.out << drain.err);
  REQUIRE(drain.code == 0);
  CHECK_THAT(drain.out, Catch::Contains("d_0") && Catch::Contains("d_1") &&
                            Catch::Contains("STOPPED"));
  Result json = Meshctl(*host, {"-o", "json", "host", "drain"});
  REQUIRE(json.code == 0);
  v1::DrainHostResponse response;
  REQUIRE(
      google::protobuf::util::JsonStringToMessage(json.out, &response).ok());
  CHECK(response.drain().draining());
  CHECK(response.drain().reason() == "retire");
  v1::HostInfo info;
  REQUIRE(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
  CHECK(info.num_procs() == 0);
  CHECK(info.drain().draining());
}

}  // namespace
}  // namespace mesh
