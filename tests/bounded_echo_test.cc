// Bounded echoes (issue 7): what a client sends comes back in an error or a
// reason as a short quote with its full length, never whole, and a call with
// a huge string leaves the connection working for the calls after it.
#include <string>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "lib/names.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;

// Far below gRPC's 8 KB metadata limit, and what a person can read.
constexpr size_t kBounded = 4 * kMaxEchoBytes + 300;

// The connection still answers: a host verb and, if `proc` is set, a proc
// verb relayed through the host.
void CheckStillServing(testing::TestHost& host, v1::Proc::Stub* proc) {
  v1::HostInfo info;
  CHECK(host.stub().GetHostInfo(Context().get(), {}, &info).ok());
  if (proc != nullptr) {
    v1::GetProcInfoRequest request;
    request.set_proc("target");
    v1::ProcInfo proc_info;
    grpc::Status status =
        proc->GetProcInfo(Context().get(), request, &proc_info);
    CHECK(status.ok());
    CHECK(proc_info.name() == "target");
  }
}

TEST_CASE(
    "a 60 KB spec.command comes back as a bounded quote and the host keeps "
    "serving") {
  const std::string relative(60000, 'a');
  const std::string absolute = "/" + std::string(59999, 'a');
  SECTION("relative: INVALID_ARGUMENT") {
    auto host = testing::TestHost::Start();
    REQUIRE(host != nullptr);
    v1::ProcSpec spec;
    spec.set_command(relative);
    v1::ProcState state;
    grpc::Status status = host->Create("p0", 0, spec, &state);
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(status.error_message().size() < kBounded);
    CHECK(absl::StrContains(status.error_message(), "(60000 bytes)"));
    CheckStillServing(*host, nullptr);
  }
  SECTION("absolute, refused by the command policy") {
    auto host = testing::TestHost::Start({}, /*allow_any_command=*/false);
    REQUIRE(host != nullptr);
    v1::ProcSpec spec;
    spec.set_command(absolute);
    v1::ProcState state;
    grpc::Status status = host->Create("p0", 0, spec, &state);
    CHECK_FALSE(status.ok());
    CHECK(status.error_message().size() < kBounded);
    CHECK(absl::StrContains(status.error_message(), "(60000 bytes)"));
    CheckStillServing(*host, nullptr);
  }
  SECTION("absolute, allowed, failing to start: a bounded reason") {
    auto host = testing::TestHost::Start();
    REQUIRE(host != nullptr);
    v1::ProcSpec spec;
    spec.set_command(absolute);
    v1::ProcState state;
    grpc::Status status = host->Create("p0", 0, spec, &state);
    if (status.ok()) {
      v1::WaitProcsResponse waited = host->Wait({"p0"}, v1::STOPPED);
      REQUIRE(waited.procs_size() == 1);
      CHECK(waited.procs(0).status() == v1::FAILED);
      INFO(waited.procs(0).reason().substr(0, 300));
      CHECK(waited.procs(0).reason().size() <
            kMaxEchoBytes + kMaxReasonBytes + 200);
      CHECK(absl::StrContains(waited.procs(0).reason(), "(60000 bytes)"));
    } else {
      CHECK(status.error_message().size() < kBounded);
    }
    CheckStillServing(*host, nullptr);
  }
}

TEST_CASE("a 20 KB env key and a 60 KB stop reason come back bounded") {
  auto host = testing::TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcSpec spec;
  (*spec.mutable_env())[std::string(20000, 'K') + "-"] = "v";
  v1::ProcState state;
  grpc::Status status = host->Create("p0", 0, spec, &state);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(status.error_message().size() < kBounded);
  CHECK(absl::StrContains(status.error_message(), "(20001 bytes)"));

  REQUIRE(host->Create("target", 0, {}, &state).ok());
  REQUIRE(host->Wait({"target"}, v1::RUNNING).procs(0).status() == v1::RUNNING);
  v1::StopProcRequest stop;
  stop.set_name("target");
  stop.set_reason(std::string(60000, 'r'));
  stop.set_grace_ms(2000);
  status = host->stub().StopProc(Context().get(), stop, &state);
  REQUIRE(status.ok());
  // The answer is the final state; on the way the reason was kept bounded.
  CHECK(state.reason().size() < kMaxReasonBytes + 100);
  CheckStillServing(*host, nullptr);
}

TEST_CASE(
    "a 20 KB actor name, type or message type comes back bounded and the "
    "connection keeps working") {
  auto host = testing::TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("target", 0, {}, &state).ok());
  REQUIRE(host->Wait({"target"}, v1::RUNNING).procs(0).status() == v1::RUNNING);
  // The same channel (one connection) as the host's stub.
  auto proc = v1::Proc::NewStub(host->channel());
  const std::string long_name(20000, 'n');
  v1::ActorState actor;

  v1::GetActorStateRequest get;
  get.set_proc("target");
  get.set_name(long_name);
  grpc::Status status = proc->GetActorState(Context().get(), get, &actor);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(status.error_message().size() < kBounded);
  CheckStillServing(*host, proc.get());

  v1::StopActorRequest stop;
  stop.set_proc("target");
  stop.set_name(long_name);
  status = proc->StopActor(Context().get(), stop, &actor);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(status.error_message().size() < kBounded);
  CheckStillServing(*host, proc.get());

  v1::CreateOrUpdateActorRequest create;
  create.set_proc("target");
  create.set_name(long_name);
  create.set_type("mesh.echo");
  status = proc->CreateOrUpdateActor(Context().get(), create, &actor);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(status.error_message().size() < kBounded);

  create.set_name("a0");
  create.set_type(std::string(20000, 't'));
  status = proc->CreateOrUpdateActor(Context().get(), create, &actor);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  // The message lists the registered types besides the bounded quote.
  CHECK(status.error_message().size() < kBounded + 500);
  CHECK(absl::StrContains(status.error_message(), "(20000 bytes)"));
  CheckStillServing(*host, proc.get());

  v1::CallActorRequest call;
  call.set_proc("target");
  call.set_actor(long_name);
  v1::Echo echo;
  echo.set_text("hi");
  call.mutable_payload()->PackFrom(echo);
  v1::CallActorResponse reply;
  status = proc->CallActor(Context().get(), call, &reply);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(status.error_message().size() < kBounded);

  create.set_type("mesh.echo");
  REQUIRE(proc->CreateOrUpdateActor(Context().get(), create, &actor).ok());
  call.set_actor("a0");
  call.mutable_payload()->set_type_url("type.googleapis.com/" +
                                       std::string(20000, 'm'));
  status = proc->CallActor(Context().get(), call, &reply);
  CHECK_FALSE(status.ok());
  CHECK(status.error_message().size() < kBounded);
  CHECK(absl::StrContains(status.error_message(), "bytes)"));
  CheckStillServing(*host, proc.get());

  // And the actor still answers.
  call.mutable_payload()->PackFrom(echo);
  status = proc->CallActor(Context().get(), call, &reply);
  REQUIRE(status.ok());
  v1::Echo answer;
  REQUIRE(reply.reply().UnpackTo(&answer));
  CHECK(answer.text() == "hi");

  // A stop reason is kept (and shown in the final state) bounded.
  stop.set_name("a0");
  stop.set_reason(std::string(60000, 'r'));
  REQUIRE(proc->StopActor(Context().get(), stop, &actor).ok());
  CHECK(actor.status() == v1::STOPPED);
  CHECK(actor.reason().size() < kMaxReasonBytes + 100);
  CHECK(absl::StrContains(actor.reason(), "(60000 bytes)"));
  CheckStillServing(*host, proc.get());
}

}  // namespace
}  // namespace mesh
