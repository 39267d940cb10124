// A daemon never crashes on what a client sends: random and malformed
// requests to a real hostd and a real procd each get an answer (usually
// INVALID_ARGUMENT or NOT_FOUND), and both keep serving afterwards.
#include <random>
#include <string>

#include "catch2/catch.hpp"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;

// Random bytes, sometimes empty, sometimes long, any byte value.
std::string RandomBytes(std::mt19937& rng) {
  static const size_t kSizes[] = {0, 1, 5, 40, 129, 300, 5000};
  size_t size = kSizes[rng() % 7];
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(rng() % 256);
  return bytes;
}

TEST_CASE("hostd answers random requests and keeps serving") {
  auto host = testing::TestHost::Start({"--registration-timeout=2s"});
  REQUIRE(host != nullptr);
  std::mt19937 rng(20261122);
  int answered = 0;
  for (int i = 0; i < 200; ++i) {
    v1::CreateOrUpdateProcRequest create;
    create.set_name(RandomBytes(rng));
    create.set_rank(rng());
    create.mutable_spec()->set_command(rng() % 2 ? RandomBytes(rng)
                                                 : "/" + RandomBytes(rng));
    for (int a = rng() % 3; a > 0; --a) {
      create.mutable_spec()->add_args(RandomBytes(rng));
    }
    (*create.mutable_spec()->mutable_env())[RandomBytes(rng)] =
        RandomBytes(rng);
    v1::ProcState state;
    grpc::Status status =
        host->stub().CreateOrUpdateProc(Context().get(), create, &state);
    answered += status.error_code() != grpc::StatusCode::UNAVAILABLE;

    v1::StopProcRequest stop;
    stop.set_name(RandomBytes(rng));
    stop.set_grace_ms(rng() % 100);
    status = host->stub().StopProc(Context().get(), stop, &state);
    answered += status.error_code() != grpc::StatusCode::UNAVAILABLE;

    v1::WaitProcsRequest wait;
    wait.add_names(RandomBytes(rng));
    wait.set_min_status(static_cast<v1::Status>(rng() % 7));
    wait.set_timeout_ms(rng() % 20);
    v1::WaitProcsResponse waited;
    status = host->stub().WaitProcs(Context().get(), wait, &waited);
    answered += status.error_code() != grpc::StatusCode::UNAVAILABLE;
  }
  CHECK(answered == 600);
  v1::HostInfo info;
  REQUIRE(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
  CHECK(testing::IsAlive(host->pid()));
}

TEST_CASE(
    "a host and its proc answer random actor requests and relayed envelopes "
    "and keep serving") {
  auto host = testing::TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState proc;
  REQUIRE(host->Create("target", 0, {}, &proc).ok());
  v1::WaitProcsResponse waited = host->Wait({"target"}, v1::RUNNING);
  REQUIRE(waited.procs(0).status() == v1::RUNNING);
  // The proc is reached only through its host.
  auto channel = host->channel();
  auto stub = v1::Proc::NewStub(channel);
  v1::CreateOrUpdateActorRequest echo;
  echo.set_proc("target");
  echo.set_name("a0");
  echo.set_type("mesh.echo");
  v1::ActorState actor;
  REQUIRE(stub->CreateOrUpdateActor(Context().get(), echo, &actor).ok());

  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    v1::CreateOrUpdateActorRequest create;
    create.set_proc(rng() % 4 ? "target" : RandomBytes(rng));
    create.set_name(RandomBytes(rng));
    create.set_type(rng() % 2 ? "mesh.echo" : RandomBytes(rng));
    create.mutable_params()->set_type_url(RandomBytes(rng));
    create.mutable_params()->set_value(RandomBytes(rng));
    stub->CreateOrUpdateActor(Context().get(), create, &actor);

    v1::CallActorRequest call;
    call.set_proc(rng() % 4 ? "target" : RandomBytes(rng));
    call.set_actor(rng() % 2 ? "a0" : RandomBytes(rng));
    call.mutable_payload()->set_type_url(
        rng() % 2 ? "type.googleapis.com/mesh.v1.Echo" : RandomBytes(rng));
    call.mutable_payload()->set_value(RandomBytes(rng));
    call.set_timeout_ms(200);
    v1::CallActorResponse reply;
    stub->CallActor(Context().get(), call, &reply);
  }
  // Raw envelopes onto a relay stream: random destinations, casts with
  // random targets and reducers, random reply ports.
  {
    auto relay = v1::Relay::NewStub(channel);
    auto context = Context();
    context->AddMetadata("mesh-sender", "client:fuzz");
    auto stream = relay->Connect(context.get());
    for (int i = 0; i < 300; ++i) {
      v1::Envelope envelope;
      // Other hosts only on loopback: nothing leaves this machine.
      envelope.set_to_host(rng() % 4 ? "" : "127.0.0.1:1");
      envelope.set_to_mailbox(rng() % 2 ? "target" : RandomBytes(rng));
      if (rng() % 2) {
        envelope.set_actor(rng() % 2 ? "a0" : RandomBytes(rng));
      } else {
        envelope.set_port(rng());
      }
      if (rng() % 3 == 0) {
        for (int t = rng() % 5; t > 0; --t) {
          v1::CastTarget* target = envelope.add_targets();
          target->set_proc(rng() % 2 ? "target" : RandomBytes(rng));
          target->set_actor(rng() % 2 ? "a0" : RandomBytes(rng));
          target->set_cast_rank(rng() % 8);
        }
        envelope.set_reduce(static_cast<v1::Reduce>(rng() % 9));
        envelope.set_reduce_field(RandomBytes(rng));
        envelope.set_reduce_timeout_ms(rng() % 300);
      }
      envelope.mutable_payload()->set_type_url(
          rng() % 2 ? "type.googleapis.com/mesh.v1.Echo" : RandomBytes(rng));
      envelope.mutable_payload()->set_value(RandomBytes(rng));
      envelope.mutable_reply_to()->set_host(rng() % 2 ? "" : "127.0.0.1:1");
      envelope.mutable_reply_to()->set_mailbox(rng() % 2 ? "client:fuzz"
                                                         : RandomBytes(rng));
      v1::RelayFrame frame;
      *frame.mutable_envelope() = std::move(envelope);
      if (!stream->Write(frame)) break;
    }
    stream->WritesDone();
    v1::RelayFrame answer;
    while (stream->Read(&answer)) {
    }
    stream->Finish().ok();
  }
  // Still alive, still serving, and the actor still answers.
  v1::GetProcInfoRequest info_request;
  info_request.set_proc("target");
  v1::ProcInfo info;
  REQUIRE(stub->GetProcInfo(Context().get(), info_request, &info).ok());
  v1::CallActorRequest call;
  call.set_proc("target");
  call.set_actor("a0");
  v1::Echo hello;
  hello.set_text("still here");
  call.mutable_payload()->PackFrom(hello);
  v1::CallActorResponse reply;
  grpc::Status called = stub->CallActor(Context().get(), call, &reply);
  INFO(called.error_message());
  REQUIRE(called.ok());
  v1::Echo echoed;
  REQUIRE(reply.reply().UnpackTo(&echoed));
  CHECK(echoed.text() == "still here");
  v1::ProcState state;
  REQUIRE(host->Get("target", &state).ok());
  CHECK(state.status() == v1::RUNNING);
}

}  // namespace
}  // namespace mesh
