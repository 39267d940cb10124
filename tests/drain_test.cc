// DrainHost end to end on real hostds: a drained host refuses new procs
// naming the drain and keeps the ones it has, says NOT_SERVING to health
// checks, stops its procs with stop (staying up), accepts again once
// undrained, is still drained after a restart, and only an admin drains.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "grpc/health/v1/health.grpc.pb.h"
#include "lib/auth/credentials.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/restartable_host.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using testing::Context;
using testing::RestartableHost;
using testing::TestHost;

// TestHost's own identity (the launcher that started it).
constexpr char kParent[] = "hostd:parent";
constexpr char kClientToken[] = "client-token-for-the-drain-test-0123";

// The host's health ("": the whole host) as a health checker sees it.
HealthCheckResponse::ServingStatus HealthOf(
    const std::shared_ptr<grpc::Channel>& channel,
    const std::string& service = "") {
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::Status status =
      Health::NewStub(channel)->Check(Context().get(), request, &response);
  if (!status.ok()) return HealthCheckResponse::UNKNOWN;
  return response.status();
}

grpc::Status Drain(v1::Host::Stub& stub, v1::DrainHostRequest request,
                   v1::DrainHostResponse* response) {
  return stub.DrainHost(Context(absl::Seconds(60)).get(), request, response);
}

v1::DrainHostRequest DrainRequest(const std::string& reason) {
  v1::DrainHostRequest request;
  request.set_reason(reason);
  return request;
}

v1::DrainHostRequest Undrain() {
  v1::DrainHostRequest request;
  request.set_undrain(true);
  return request;
}

TEST_CASE(
    "a drained host refuses a new proc naming the drain, keeps its procs and "
    "accepts again once undrained") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  std::ofstream(tokens) << "carol client " << kClientToken << "\n";
  REQUIRE(chmod(tokens.c_str(), 0600) == 0);
  auto host = TestHost::Start({"--tokens-file=" + tokens});
  REQUIRE(host != nullptr);
  v1::ProcState kept;
  REQUIRE(host->Create("kept", 0, v1::ProcSpec(), &kept).ok());
  v1::WaitProcsResponse waited = host->Wait({"kept"}, v1::RUNNING);
  REQUIRE(waited.procs_size() == 1);
  REQUIRE(waited.procs(0).status() == v1::RUNNING);
  const int kept_pid = waited.procs(0).pid();
  REQUIRE(HealthOf(host->channel()) == HealthCheckResponse::SERVING);

  // Only an admin drains.
  ClientCredentials carol;
  carol.token = kClientToken;
  auto as_carol = v1::Host::NewStub(NewAuthedChannel(host->address(), carol));
  v1::DrainHostResponse refused;
  grpc::Status by_client =
      Drain(*as_carol, DrainRequest("not mine to drain"), &refused);
  CHECK(by_client.error_code() == grpc::StatusCode::PERMISSION_DENIED);

  v1::DrainHostResponse drained;
  grpc::Status drain =
      Drain(host->stub(), DrainRequest("kernel upgrade"), &drained);
  INFO(drain.error_message());
  REQUIRE(drain.ok());
  CHECK(drained.drain().draining());
  CHECK(drained.drain().by() == kParent);
  CHECK(drained.drain().reason() == "kernel upgrade");
  CHECK(drained.drain().has_since());
  CHECK(drained.stopped_size() == 0);

  // A new name is refused, with who drained the host, since when and why.
  v1::ProcState state;
  grpc::Status fresh = host->Create("fresh", 1, v1::ProcSpec(), &state);
  CHECK(fresh.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(fresh.error_message(),
             Catch::Contains("host " + host->address() + " is draining") &&
                 Catch::Contains(std::string("by ") + kParent) &&
                 Catch::Contains("since ") &&
                 Catch::Contains("kernel upgrade") &&
                 Catch::Contains("\"fresh\" not created"));
  // So is a client's.
  v1::CreateOrUpdateProcRequest carols;
  carols.set_name("carols");
  grpc::Status by_carol =
      as_carol->CreateOrUpdateProc(Context().get(), carols, &state);
  CHECK(by_carol.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  // The same request for a proc the host has still answers: that proc.
  v1::ProcState again;
  grpc::Status same = host->Create("kept", 0, v1::ProcSpec(), &again);
  INFO(same.error_message());
  CHECK(same.ok());
  CHECK(again.status() == v1::RUNNING);
  CHECK(again.pid() == kept_pid);

  v1::HostInfo info;
  REQUIRE(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
  CHECK(info.drain().draining());
  CHECK(info.drain().reason() == "kernel upgrade");
  CHECK(info.num_procs() == 1);
  CHECK(HealthOf(host->channel()) == HealthCheckResponse::NOT_SERVING);
  CHECK(HealthOf(host->channel(), "mesh.v1.Host") ==
        HealthCheckResponse::NOT_SERVING);

  // A second drain keeps the first one's record.
  v1::DrainHostResponse twice;
  REQUIRE(Drain(host->stub(), DrainRequest("another reason"), &twice).ok());
  CHECK(twice.drain().reason() == "kernel upgrade");
  CHECK(twice.drain().since().seconds() == drained.drain().since().seconds());

  // stop and undrain together make no sense.
  v1::DrainHostRequest both = Undrain();
  both.set_stop(true);
  v1::DrainHostResponse unused;
  CHECK(Drain(host->stub(), both, &unused).error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);

  v1::DrainHostResponse undrained;
  REQUIRE(Drain(host->stub(), Undrain(), &undrained).ok());
  CHECK_FALSE(undrained.drain().draining());
  CHECK(HealthOf(host->channel()) == HealthCheckResponse::SERVING);
  grpc::Status accepted = host->Create("fresh", 1, v1::ProcSpec(), &state);
  INFO(accepted.error_message());
  CHECK(accepted.ok());
  REQUIRE(host->Get("kept", &state).ok());
  CHECK(state.status() == v1::RUNNING);
  CHECK(state.pid() == kept_pid);
}

TEST_CASE(
    "drain with stop stops every proc after the grace and hostd stays up and "
    "answers") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  // Ignores stop and SIGTERM: only SIGKILL, after two graces, ends it.
  v1::ProcSpec stubborn;
  stubborn.set_command(testing::BinaryPath("stubborn_proc"));
  v1::ProcState state;
  REQUIRE(host->Create("stubborn", 0, stubborn, &state).ok());
  REQUIRE(host->Create("polite", 1, v1::ProcSpec(), &state).ok());
  v1::WaitProcsResponse waited =
      host->Wait({"stubborn", "polite"}, v1::RUNNING);
  REQUIRE(waited.procs_size() == 2);
  for (const v1::ProcState& proc : waited.procs()) {
    INFO(proc.DebugString());
    REQUIRE(proc.status() == v1::RUNNING);
  }

  v1::DrainHostRequest request = DrainRequest("retiring this machine");
  request.set_stop(true);
  request.set_grace_ms(1000);
  const absl::Time asked = absl::Now();
  v1::DrainHostResponse response;
  grpc::Status drain = Drain(host->stub(), request, &response);
  const absl::Duration took = absl::Now() - asked;
  INFO(drain.error_message());
  REQUIRE(drain.ok());
  WARN(
      "DrainHost with stop (grace 1 s, one proc ignoring stop and SIGTERM) "
      "answered after "
      << absl::FormatDuration(took));
  // Asked, then SIGTERM after 1 s, then SIGKILL after another.
  CHECK(took >= absl::Milliseconds(1900));
  CHECK(took < absl::Seconds(20));
  CHECK(response.drain().draining());
  REQUIRE(response.stopped_size() == 2);
  for (const v1::ProcState& proc : response.stopped()) {
    INFO(proc.DebugString());
    CHECK(proc.status() == v1::STOPPED);
    CHECK_THAT(proc.reason(), Catch::Contains("retiring this machine"));
    CHECK(proc.stopped_by() ==
          (proc.name() == "stubborn" ? "SIGKILL" : "exited"));
  }

  // hostd stays up, drained, and answers.
  CHECK(testing::IsAlive(host->pid()));
  v1::HostInfo info;
  REQUIRE(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
  CHECK(info.pid() == host->pid());
  CHECK(info.num_procs() == 0);
  CHECK(info.drain().draining());
  CHECK_FALSE(info.shutting_down());
  CHECK(host->Create("late", 2, v1::ProcSpec(), &state).error_code() ==
        grpc::StatusCode::FAILED_PRECONDITION);
  v1::DrainHostResponse undrained;
  REQUIRE(Drain(host->stub(), Undrain(), &undrained).ok());
  REQUIRE(host->Create("late", 2, v1::ProcSpec(), &state).ok());
  waited = host->Wait({"late"}, v1::RUNNING);
  REQUIRE(waited.procs_size() == 1);
  CHECK(waited.procs(0).status() == v1::RUNNING);
}

TEST_CASE(
    "a drain survives a hostd killed with SIGKILL and a restart, and an "
    "undrain does too") {
  RestartableHost::Options options;
  options.cgroup = false;
  auto host = RestartableHost::Create(options);
  REQUIRE(host->Start().ok());
  v1::DrainHostResponse drained;
  REQUIRE(Drain(host->stub(), DrainRequest("disk replacement"), &drained).ok());
  // Killed right after the answer: the drain was on disk before it.
  REQUIRE(host->Kill9().ok());
  absl::Status restarted = host->Restart();
  INFO(restarted.message());
  REQUIRE(restarted.ok());
  v1::HostInfo info;
  REQUIRE(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
  CHECK(info.drain().draining());
  CHECK(info.drain().reason() == "disk replacement");
  CHECK(info.drain().by() == drained.drain().by());
  CHECK(info.drain().since().seconds() == drained.drain().since().seconds());
  CHECK(HealthOf(host->channel()) == HealthCheckResponse::NOT_SERVING);
  v1::ProcState state;
  grpc::Status refused = host->Create("after", 0, v1::ProcSpec(), &state);
  CHECK(refused.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(refused.error_message(), Catch::Contains("disk replacement"));
  CHECK_THAT(host->HostdLog(), Catch::Contains("the host is drained"));

  v1::DrainHostResponse undrained;
  REQUIRE(Drain(host->stub(), Undrain(), &undrained).ok());
  // The restart systemd does (SIGUSR2: procs kept).
  REQUIRE(host->Signal(SIGUSR2).ok());
  REQUIRE(host->WaitExit().ok());
  REQUIRE(host->Restart().ok());
  REQUIRE(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
  CHECK_FALSE(info.drain().draining());
  CHECK(HealthOf(host->channel()) == HealthCheckResponse::SERVING);
  grpc::Status accepted = host->Create("after", 0, v1::ProcSpec(), &state);
  INFO(accepted.error_message());
  CHECK(accepted.ok());
}

}  // namespace
}  // namespace mesh
