// A daemon never crashes on what a client sends: random and malformed
// requests to a real hostd and a real procd each get an answer (usually
// INVALID_ARGUMENT or NOT_FOUND), and both keep serving afterwards.
#include <random>
#include <string>

#include "catch2/catch.hpp"
#include "proto/actors.pb.h"
#include "proto/mailbox.grpc.pb.h"
#include "proto/proc.grpc.pb.h"
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
    "procd answers random actor requests and envelopes and keeps serving") {
  auto host = testing::TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState proc;
  REQUIRE(host->Create("target", 0, {}, &proc).ok());
  v1::WaitProcsResponse waited = host->Wait({"target"}, v1::RUNNING);
  REQUIRE(waited.procs(0).status() == v1::RUNNING);
  const std::string address = waited.procs(0).address();
  auto channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::Proc::NewStub(channel);
  v1::CreateOrUpdateActorRequest echo;
  echo.set_name("a0");
  echo.set_type("mesh.echo");
  v1::ActorState actor;
  REQUIRE(stub->CreateOrUpdateActor(Context().get(), echo, &actor).ok());

  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    v1::CreateOrUpdateActorRequest create;
    create.set_name(RandomBytes(rng));
    create.set_type(rng() % 2 ? "mesh.echo" : RandomBytes(rng));
    create.mutable_params()->set_type_url(RandomBytes(rng));
    create.mutable_params()->set_value(RandomBytes(rng));
    stub->CreateOrUpdateActor(Context().get(), create, &actor);

    v1::CallActorRequest call;
    call.set_actor(rng() % 2 ? "a0" : RandomBytes(rng));
    call.mutable_payload()->set_type_url(
        rng() % 2 ? "type.googleapis.com/mesh.v1.Echo" : RandomBytes(rng));
    call.mutable_payload()->set_value(RandomBytes(rng));
    call.set_timeout_ms(200);
    v1::CallActorResponse reply;
    stub->CallActor(Context().get(), call, &reply);
  }
  // Raw envelopes straight onto the mailbox stream.
  {
    auto mailbox = v1::Mailbox::NewStub(channel);
    auto context = Context();
    auto stream = mailbox->Deliver(context.get());
    for (int i = 0; i < 200; ++i) {
      v1::Envelope envelope;
      if (rng() % 2) {
        envelope.set_actor(rng() % 2 ? "a0" : RandomBytes(rng));
      } else {
        envelope.set_port(rng());
      }
      envelope.mutable_payload()->set_type_url(RandomBytes(rng));
      envelope.mutable_payload()->set_value(RandomBytes(rng));
      envelope.mutable_reply_to()->set_address(rng() % 2 ? "127.0.0.1:1"
                                                         : RandomBytes(rng));
      if (!stream->Write(envelope)) break;
    }
    stream->WritesDone();
    context->TryCancel();
    stream->Finish().ok();
  }
  // Still alive, still serving, and the actor still answers.
  v1::ProcInfo info;
  REQUIRE(stub->GetProcInfo(Context().get(), {}, &info).ok());
  v1::CallActorRequest call;
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
