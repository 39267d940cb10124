// HealthService's and ReflectionGate's own authentication, on a server
// without ServerAuth's metadata processor (insecure credentials), so that
// every call reaches them. Reflection in raw bytes: this binary links gRPC's
// reflection messages (libgrpc++_reflection) and may not compile its own.
#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "grpc/health/v1/health.grpc.pb.h"
#include "hostd/health.h"
#include "lib/auth/credentials.h"
#include "lib/auth/server_auth.h"

namespace mesh {
namespace {

constexpr char kToken[] = "gate-test-token-0123456789";
constexpr char kMethod[] =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

// ServerReflectionRequest{list_services: "*"} (field 7, a string).
grpc::ByteBuffer ListServicesRequest() {
  static const char kBytes[] = {0x3a, 0x01, '*'};
  grpc::Slice slice(kBytes, sizeof(kBytes));
  return grpc::ByteBuffer(&slice, 1);
}

void SetToken(grpc::ClientContext* context, const std::string& token) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(20));
  if (!token.empty()) {
    context->AddMetadata(kAuthorizationMetadata,
                         absl::StrCat(kBearerPrefix, token));
  }
}

struct Answer {
  std::optional<std::string> response;
  grpc::Status status;
};

Answer ListServices(const std::shared_ptr<grpc::Channel>& channel,
                    const std::string& token) {
  grpc::ClientContext context;
  SetToken(&context, token);
  grpc::internal::RpcMethod method(kMethod,
                                   grpc::internal::RpcMethod::BIDI_STREAMING);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
      stream(grpc::internal::ClientReaderWriterFactory<
             grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel.get(), method,
                                                         &context));
  Answer answer;
  stream->Write(ListServicesRequest());
  stream->WritesDone();
  grpc::ByteBuffer response;
  if (stream->Read(&response)) {
    std::vector<grpc::Slice> slices;
    REQUIRE(response.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    answer.response = std::move(bytes);
  }
  while (stream->Read(&response)) {
  }
  answer.status = stream->Finish();
  return answer;
}

// A server with the health service and gated reflection, and no metadata
// processor; one token ("tester", client) is known.
struct Server {
  Server() {
    absl::StatusOr<std::unique_ptr<ServerAuth>> created =
        ServerAuth::Create(ServerAuthOptions(), /*listen_is_loopback=*/true);
    REQUIRE(created.ok());
    auth = *std::move(created);
    auth->AddToken("tester", Role::kClient, kToken);
    health = std::make_unique<HealthService>(
        auth.get(), std::vector<std::string>{"mesh.v1.Host"});
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(health.get());
    builder.SetOption(ReflectionOption());
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(NewReflectionGate(auth.get()));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
    server = builder.BuildAndStart();
    REQUIRE(server != nullptr);
    REQUIRE(port != 0);
    channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                  grpc::InsecureChannelCredentials());
  }
  ~Server() {
    health->Shutdown();
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::seconds(2));
  }

  std::unique_ptr<ServerAuth> auth;
  std::unique_ptr<HealthService> health;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
};

TEST_CASE(
    "the reflection gate refuses a caller without a valid token with "
    "UNAUTHENTICATED and lets a caller with one list the services") {
  Server server;
  Answer allowed = ListServices(server.channel, kToken);
  INFO(allowed.status.error_message());
  CHECK(allowed.status.ok());
  REQUIRE(allowed.response.has_value());
  CHECK(absl::StrContains(*allowed.response, "grpc.health.v1.Health"));

  for (const std::string& token : {std::string(), std::string("wrong-token")}) {
    INFO("token \"" << token << "\"");
    Answer refused = ListServices(server.channel, token);
    CHECK_FALSE(refused.response.has_value());
    CHECK(refused.status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK_THAT(refused.status.error_message(),
               Catch::Contains(token.empty() ? "no credentials" : "token"));
  }
}

TEST_CASE(
    "the health service itself refuses Check and Watch without a valid token "
    "and answers with one") {
  Server server;
  auto stub = grpc::health::v1::Health::NewStub(server.channel);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("mesh.v1.Host");
  for (const std::string& token : {std::string(), std::string("wrong-token")}) {
    INFO("token \"" << token << "\"");
    grpc::ClientContext check;
    SetToken(&check, token);
    grpc::health::v1::HealthCheckResponse response;
    CHECK(stub->Check(&check, request, &response).error_code() ==
          grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext watch;
    SetToken(&watch, token);
    auto reader = stub->Watch(&watch, request);
    CHECK_FALSE(reader->Read(&response));
    CHECK(reader->Finish().error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::ClientContext check;
  SetToken(&check, kToken);
  grpc::health::v1::HealthCheckResponse response;
  REQUIRE(stub->Check(&check, request, &response).ok());
  CHECK(response.status() ==
        grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  server.health->SetServing(true);
  grpc::ClientContext again;
  SetToken(&again, kToken);
  REQUIRE(stub->Check(&again, request, &response).ok());
  CHECK(response.status() == grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_CASE(
    "a health watch ends when its client cancels it and never holds the "
    "server's shutdown") {
  Server server;
  auto stub = grpc::health::v1::Health::NewStub(server.channel);
  grpc::health::v1::HealthCheckRequest request;
  grpc::ClientContext watch;
  SetToken(&watch, kToken);
  auto reader = stub->Watch(&watch, request);
  grpc::health::v1::HealthCheckResponse response;
  REQUIRE(reader->Read(&response));
  CHECK(response.status() ==
        grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  watch.TryCancel();
  CHECK_FALSE(reader->Read(&response));
  CHECK(reader->Finish().error_code() == grpc::StatusCode::CANCELLED);
  // Without health->Shutdown: a watch that outlived its cancel would keep
  // the server's Shutdown waiting for good.
  const auto start = std::chrono::steady_clock::now();
  server.server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::seconds(10));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
}

}  // namespace
}  // namespace mesh
