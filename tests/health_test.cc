// hostd's gRPC health service (grpc.health.v1) and server reflection
// (grpc.reflection.v1alpha), end to end on real hostds with stubs compiled
// from Debian's grpc-proto: both answer authenticated callers only, and a
// Watch hears NOT_SERVING as soon as a shutdown starts, then ends.
#include <signal.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "lib/auth/credentials.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using grpc::reflection::v1alpha::ServerReflection;
using grpc::reflection::v1alpha::ServerReflectionRequest;
using grpc::reflection::v1alpha::ServerReflectionResponse;
using testing::Context;
using testing::TestHost;

ClientCredentials Token(const std::string& token) {
  ClientCredentials credentials;
  credentials.token = token;
  return credentials;
}

// Check(`service`) over `channel`: the status, and the state if OK.
std::pair<grpc::Status, HealthCheckResponse::ServingStatus> Check(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::Status status =
      Health::NewStub(channel)->Check(Context().get(), request, &response);
  return {status, response.status()};
}

// What one reflection request gets over `channel`: the response (if any)
// and the call's final status.
struct Reflected {
  std::optional<ServerReflectionResponse> response;
  grpc::Status status;
};

Reflected Reflect(const std::shared_ptr<grpc::Channel>& channel,
                  const ServerReflectionRequest& request) {
  auto stub = ServerReflection::NewStub(channel);
  auto context = Context();
  auto stream = stub->ServerReflectionInfo(context.get());
  Reflected reflected;
  stream->Write(request);
  stream->WritesDone();
  ServerReflectionResponse response;
  if (stream->Read(&response)) reflected.response = std::move(response);
  while (stream->Read(&response)) {
  }
  reflected.status = stream->Finish();
  return reflected;
}

ServerReflectionRequest ListServices() {
  ServerReflectionRequest request;
  request.set_list_services("*");
  return request;
}

// The states a Watch of `service` on `channel` sees until it ends, and how
// it ends; `on_first` runs once the first state is in.
struct Watched {
  std::vector<HealthCheckResponse::ServingStatus> states;
  // When each state came.
  std::vector<absl::Time> times;
  grpc::Status status;
};

Watched WatchUntilEnd(const std::shared_ptr<grpc::Channel>& channel,
                      const std::string& service,
                      const std::function<void()>& on_first) {
  auto stub = Health::NewStub(channel);
  auto context = Context(absl::Seconds(60));
  HealthCheckRequest request;
  request.set_service(service);
  auto reader = stub->Watch(context.get(), request);
  Watched watched;
  HealthCheckResponse response;
  while (reader->Read(&response)) {
    watched.states.push_back(response.status());
    watched.times.push_back(absl::Now());
    if (watched.states.size() == 1) on_first();
  }
  watched.status = reader->Finish();
  return watched;
}

TEST_CASE(
    "hostd answers health checks for the host and each of its services to "
    "authenticated callers and refuses anyone else") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  for (const char* service :
       {"", "mesh.v1.Host", "mesh.v1.Proc", "mesh.v1.Relay"}) {
    INFO("service \"" << service << "\"");
    auto [status, state] = Check(host->channel(), service);
    INFO(status.error_message());
    REQUIRE(status.ok());
    CHECK(state == HealthCheckResponse::SERVING);
  }
  auto [unknown, unused] = Check(host->channel(), "mesh.v1.Nope");
  CHECK(unknown.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK_THAT(unknown.error_message(), Catch::Contains("mesh.v1.Nope") &&
                                          Catch::Contains("mesh.v1.Host"));

  // As `grpcurl -plaintext -H "authorization: Bearer <token>"` (README):
  // no local credentials on the client side, the token as plain metadata.
  {
    auto plain = grpc::CreateChannel(host->address(),
                                     grpc::InsecureChannelCredentials());
    auto context = Context();
    context->AddMetadata(kAuthorizationMetadata,
                         kBearerPrefix + host->credentials().token);
    HealthCheckResponse response;
    grpc::Status status =
        Health::NewStub(plain)->Check(context.get(), {}, &response);
    INFO(status.error_message());
    CHECK(status.ok());
    CHECK(response.status() == HealthCheckResponse::SERVING);
  }

  auto anonymous = NewAuthedChannel(host->address(), ClientCredentials());
  auto forged = NewAuthedChannel(host->address(), Token("not-a-token-0123456"));
  for (const auto& channel : {anonymous, forged}) {
    auto [status, state] = Check(channel, "");
    CHECK(status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    Watched watched = WatchUntilEnd(channel, "", [] {});
    CHECK(watched.states.empty());
    CHECK(watched.status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
}

TEST_CASE(
    "a health watch sees SERVING then NOT_SERVING when hostd gets SIGTERM "
    "and then ends") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  absl::Time signalled;
  Watched watched = WatchUntilEnd(host->channel(), "mesh.v1.Host", [&] {
    signalled = absl::Now();
    kill(host->pid(), SIGTERM);
  });
  INFO(watched.status.error_message());
  CHECK(watched.status.ok());
  REQUIRE(watched.states.size() == 2);
  CHECK(watched.states[0] == HealthCheckResponse::SERVING);
  CHECK(watched.states[1] == HealthCheckResponse::NOT_SERVING);
  WARN("NOT_SERVING came " << absl::FormatDuration(watched.times[1] - signalled)
                           << " after SIGTERM");
  CHECK(watched.times[1] - signalled < absl::Seconds(10));
  absl::StatusOr<ExitInfo> exit = host->WaitExit();
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == std::optional<int>(0));
}

TEST_CASE(
    "hostd says NOT_SERVING as soon as ShutdownHost starts, while its procs "
    "are still stopping") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  // Ignores stop and SIGTERM: the shutdown waits out its graces for it.
  v1::ProcSpec stubborn;
  stubborn.set_command(testing::BinaryPath("stubborn_proc"));
  v1::ProcState created;
  REQUIRE(host->Create("stubborn", 0, stubborn, &created).ok());
  v1::WaitProcsResponse waited = host->Wait({"stubborn"}, v1::RUNNING);
  REQUIRE(waited.procs_size() == 1);
  INFO(waited.procs(0).DebugString());
  REQUIRE(waited.procs(0).status() == v1::RUNNING);
  auto [before, serving] = Check(host->channel(), "");
  REQUIRE(before.ok());
  REQUIRE(serving == HealthCheckResponse::SERVING);

  grpc::Status shutdown_status;
  absl::Time answered;
  std::thread shutdown;
  Watched watched = WatchUntilEnd(host->channel(), "", [&] {
    shutdown = std::thread([&] {
      v1::ShutdownHostRequest request;
      request.set_grace_ms(1500);
      request.set_stay_down(true);
      v1::ShutdownHostResponse response;
      shutdown_status = host->stub().ShutdownHost(
          Context(absl::Seconds(30)).get(), request, &response);
      answered = absl::Now();
    });
  });
  // The watch ended at once, with the shutdown: the host still answers.
  auto [during, state] = Check(host->channel(), "");
  const absl::Time checked = absl::Now();
  shutdown.join();
  INFO(shutdown_status.error_message());
  REQUIRE(shutdown_status.ok());
  REQUIRE(watched.times.size() == 2);
  WARN("NOT_SERVING came " << absl::FormatDuration(answered - watched.times[1])
                           << " before ShutdownHost's answer");
  CHECK(watched.times[1] < answered);
  CHECK(checked < answered);
  CHECK(watched.status.ok());
  REQUIRE(watched.states.size() == 2);
  CHECK(watched.states[0] == HealthCheckResponse::SERVING);
  CHECK(watched.states[1] == HealthCheckResponse::NOT_SERVING);
  INFO(during.error_message());
  REQUIRE(during.ok());
  CHECK(state == HealthCheckResponse::NOT_SERVING);
  REQUIRE(host->WaitExit().ok());
}

TEST_CASE(
    "hostd's server reflection lists and describes its services to "
    "authenticated callers and refuses anyone else") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  Reflected listed = Reflect(host->channel(), ListServices());
  INFO(listed.status.error_message());
  REQUIRE(listed.status.ok());
  REQUIRE(listed.response.has_value());
  std::vector<std::string> names;
  for (const auto& service :
       listed.response->list_services_response().service()) {
    names.push_back(service.name());
  }
  CHECK_THAT(names,
             Catch::VectorContains(std::string("mesh.v1.Host")) &&
                 Catch::VectorContains(std::string("mesh.v1.Proc")) &&
                 Catch::VectorContains(std::string("mesh.v1.Relay")) &&
                 Catch::VectorContains(std::string("grpc.health.v1.Health")));

  ServerReflectionRequest describe;
  describe.set_file_containing_symbol("mesh.v1.Host");
  Reflected described = Reflect(host->channel(), describe);
  REQUIRE(described.status.ok());
  REQUIRE(described.response.has_value());
  const auto& files =
      described.response->file_descriptor_response().file_descriptor_proto();
  REQUIRE(files.size() >= 1);
  google::protobuf::FileDescriptorProto file;
  REQUIRE(file.ParseFromString(files[0]));
  CHECK(file.name() == "proto/host.proto");
  REQUIRE(file.service_size() >= 1);
  CHECK(file.service(0).name() == "Host");

  auto anonymous = NewAuthedChannel(host->address(), ClientCredentials());
  auto forged = NewAuthedChannel(host->address(), Token("not-a-token-0123456"));
  for (const auto& channel : {anonymous, forged}) {
    Reflected refused = Reflect(channel, ListServices());
    CHECK_FALSE(refused.response.has_value());
    CHECK(refused.status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
}

}  // namespace
}  // namespace mesh
