// ProcRuntime + ProcService + Mailbox in one process, on a real gRPC server
// on 127.0.0.1:0, driven by a client with its own mailbox.
#include "procd/proc_service.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "hostmesh/actor.h"
#include "hostmesh/procd.h"
#include "lib/mailbox/mailbox.h"
#include "lib/mailbox/testing.h"
#include "procd/proc_runtime.h"
#include "proto/actors.pb.h"
#include "proto/proc.grpc.pb.h"

namespace mesh {
namespace {

using testing::Inbox;
using testing::MailboxNode;
using testing::Request;

// Fails its Init when params hold a Fail message.
class PickyActor : public Actor {
 public:
  static constexpr char kTypeName[] = "test.picky";
  absl::Status Init(const google::protobuf::Any& params,
                    ActorContext&) override {
    v1::Fail fail;
    if (params.UnpackTo(&fail)) return absl::InvalidArgumentError(fail.why());
    return absl::OkStatus();
  }
};

// Takes its time over Echo, for CallActor's timeout.
class SlowActor : public Actor {
 public:
  static constexpr char kTypeName[] = "test.slow";
  SlowActor() {
    Handle<v1::Echo, v1::Echo>(
        [](const v1::Echo& echo, ActorContext&) -> absl::StatusOr<v1::Echo> {
          absl::SleepFor(absl::Milliseconds(300));
          return echo;
        });
  }
};

// A proc ("p0", rank 2) served in-process, and a client mailbox.
class Proc {
 public:
  Proc() {
    ActorRegistry registry;
    RegisterBuiltinActors(registry);
    registry.Register<PickyActor>();
    registry.Register<SlowActor>();
    mailbox_ = std::make_unique<Mailbox>("p0");
    runtime_ = std::make_unique<ProcRuntime>(
        ProcRuntime::Options{"p0", 2, std::move(registry)}, mailbox_.get());
    service_ =
        std::make_unique<ProcService>(runtime_.get(), ProcService::Options{});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    builder.RegisterService(mailbox_->service());
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
    mailbox_->set_address(address_);
    stub_ = v1::Proc::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
    client_ = std::make_unique<MailboxNode>("client");
    REQUIRE(client_->ok());
  }

  ~Proc() {
    client_->Stop();
    runtime_->Shutdown();
    mailbox_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
  }

  v1::Proc::Stub& stub() { return *stub_; }
  ProcRuntime& runtime() { return *runtime_; }
  const std::string& address() const { return address_; }
  Mailbox& client() { return client_->mailbox(); }

  // A fresh context with a generous deadline.
  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(30));
    return context;
  }

  grpc::Status Create(const std::string& name, const std::string& type,
                      v1::ActorState* state, uint64_t rank = 0,
                      const v1::PortRef* supervisor = nullptr) {
    v1::CreateOrUpdateActorRequest request;
    request.set_name(name);
    request.set_type(type);
    request.set_rank(rank);
    if (supervisor != nullptr) *request.mutable_supervisor() = *supervisor;
    return stub_->CreateOrUpdateActor(Context().get(), request, state);
  }

  v1::WaitActorsResponse Wait(std::vector<std::string> names,
                              v1::Status min_status,
                              uint32_t timeout_ms = 30000) {
    v1::WaitActorsRequest request;
    for (const std::string& name : names) request.add_names(name);
    request.set_min_status(min_status);
    request.set_timeout_ms(timeout_ms);
    v1::WaitActorsResponse response;
    grpc::Status status =
        stub_->WaitActors(Context().get(), request, &response);
    REQUIRE(status.ok());
    return response;
  }

  // CallActor with `message` to `actor`; the reply goes to `reply`.
  grpc::Status Call(const std::string& actor,
                    const google::protobuf::Message& message,
                    google::protobuf::Message* reply, uint32_t timeout_ms = 0) {
    v1::CallActorRequest request;
    request.set_actor(actor);
    request.mutable_payload()->PackFrom(message);
    request.set_timeout_ms(timeout_ms);
    v1::CallActorResponse response;
    grpc::Status status = stub_->CallActor(Context().get(), request, &response);
    if (status.ok() && !response.reply().UnpackTo(reply)) {
      return grpc::Status(
          grpc::StatusCode::INTERNAL,
          absl::StrCat("reply is a ", response.reply().type_url()));
    }
    return status;
  }

  // Sends `message` to actor `actor` from the client; returns the reply.
  absl::StatusOr<v1::Envelope> Ask(const std::string& actor,
                                   const google::protobuf::Message& message,
                                   uint64_t cast_rank = 0) {
    v1::Envelope envelope = EnvelopeToActor(actor, message);
    envelope.set_cast_rank(cast_rank);
    envelope.set_correlation(1234);
    return Request(client(), address_, std::move(envelope));
  }

 private:
  std::unique_ptr<Mailbox> mailbox_;
  std::unique_ptr<ProcRuntime> runtime_;
  std::unique_ptr<ProcService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<v1::Proc::Stub> stub_;
  std::unique_ptr<MailboxNode> client_;
};

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

TEST_CASE("an echo actor answers GetActorId at the client's ports") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state, /*rank=*/3).ok());
  CHECK(state.name() == "a0");
  CHECK(state.type() == "mesh.echo");
  CHECK(state.generation() >= 1);
  CHECK(state.ref().address() == proc.address());
  CHECK(state.ref().proc() == "p0");

  v1::WaitActorsResponse running = proc.Wait({"a0"}, v1::RUNNING);
  CHECK_FALSE(running.timed_out());
  REQUIRE(running.actors_size() == 1);
  CHECK(running.actors(0).status() == v1::RUNNING);

  Inbox also;
  v1::PortRef also_port = proc.client().OpenPort(also.Handler());
  v1::GetActorId get_id;
  *get_id.mutable_port() = also_port;
  absl::StatusOr<v1::Envelope> reply = proc.Ask("a0", get_id, /*cast_rank=*/5);
  REQUIRE(reply.ok());
  CHECK(reply->correlation() == 1234);
  absl::StatusOr<v1::ActorIdReply> id = UnpackPayload<v1::ActorIdReply>(*reply);
  REQUIRE(id.ok());
  CHECK(id->id().actor() == "a0");
  CHECK(id->id().proc() == "p0");
  CHECK(id->id().address() == proc.address());
  CHECK(id->rank() == 3);
  CHECK(id->cast_rank() == 5);
  CHECK(id->pid() == getpid());

  REQUIRE(also.WaitFor(1));
  CHECK(UnpackPayload<v1::ActorIdReply>(also.envelopes()[0])->id().actor() ==
        "a0");
}

TEST_CASE("an unregistered actor type is INVALID_ARGUMENT naming the type") {
  Proc proc;
  v1::ActorState state;
  grpc::Status status = proc.Create("a0", "no.such.type", &state);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(Contains(status.error_message(), "no.such.type"));
}

TEST_CASE("a bad actor name is INVALID_ARGUMENT") {
  Proc proc;
  v1::ActorState state;
  grpc::Status status = proc.Create("../a0", "mesh.echo", &state);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(Contains(status.error_message(), "actor name"));
}

TEST_CASE("creating the same actor twice gives the same actor") {
  Proc proc;
  v1::ActorState first;
  v1::ActorState second;
  REQUIRE(proc.Create("a0", "mesh.counter", &first, 1).ok());
  REQUIRE(proc.Create("a0", "mesh.counter", &second, 1).ok());
  CHECK(first.created_at().seconds() == second.created_at().seconds());
  CHECK(first.created_at().nanos() == second.created_at().nanos());

  v1::ListActorsResponse list;
  REQUIRE(proc.stub()
              .ListActors(proc.Context().get(), v1::ListActorsRequest(), &list)
              .ok());
  CHECK(list.actors_size() == 1);

  SECTION("and the same name with another type is FAILED_PRECONDITION") {
    v1::ActorState state;
    grpc::Status status = proc.Create("a0", "mesh.echo", &state, 1);
    CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK(Contains(status.error_message(), "a0"));
  }
  SECTION("and the same name with another rank is FAILED_PRECONDITION") {
    v1::ActorState state;
    grpc::Status status = proc.Create("a0", "mesh.counter", &state, 7);
    CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  }
}

TEST_CASE("a counter counts and replies with its rank") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("c0", "mesh.counter", &state, /*rank=*/4).ok());
  v1::Increment by_two;
  by_two.set_by(2);
  REQUIRE(proc.Ask("c0", by_two).ok());
  absl::StatusOr<v1::Envelope> reply = proc.Ask("c0", by_two);
  REQUIRE(reply.ok());
  absl::StatusOr<v1::Count> count = UnpackPayload<v1::Count>(*reply);
  REQUIRE(count.ok());
  CHECK(count->value() == 4);
  CHECK(count->rank() == 4);
  CHECK(UnpackPayload<v1::Count>(*proc.Ask("c0", v1::GetCount()))->value() ==
        4);
}

TEST_CASE("a failing handler fails the actor and tells its supervisor") {
  Proc proc;
  Inbox supervision;
  v1::PortRef supervisor = proc.client().OpenPort(supervision.Handler());
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state, 0, &supervisor).ok());

  v1::Fail fail;
  fail.set_why("test says so");
  absl::StatusOr<v1::Envelope> reply = proc.Ask("a0", fail);
  REQUIRE(reply.ok());
  CHECK(reply->correlation() == 1234);
  absl::Status error = UnpackPayload<v1::Echo>(*reply).status();
  CHECK(error.code() == absl::StatusCode::kInternal);
  CHECK(Contains(error.message(), "test says so"));

  REQUIRE(supervision.WaitFor(1));
  absl::StatusOr<v1::SupervisionEvent> event =
      UnpackPayload<v1::SupervisionEvent>(supervision.envelopes()[0]);
  REQUIRE(event.ok());
  CHECK(event->actor().name() == "a0");
  CHECK(event->actor().status() == v1::FAILED);
  CHECK(Contains(event->actor().reason(), "test says so"));

  v1::GetActorStateRequest get;
  get.set_name("a0");
  REQUIRE(proc.stub().GetActorState(proc.Context().get(), get, &state).ok());
  CHECK(state.status() == v1::FAILED);

  SECTION("and later messages get FAILED_PRECONDITION naming it and why") {
    v1::Echo echo;
    echo.set_text("still there?");
    absl::StatusOr<v1::Envelope> later = proc.Ask("a0", echo);
    REQUIRE(later.ok());
    absl::Status refused = UnpackPayload<v1::Echo>(*later).status();
    CHECK(refused.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(Contains(refused.message(), "a0"));
    CHECK(Contains(refused.message(), "test says so"));
  }
  SECTION("and stopping it leaves it FAILED") {
    v1::StopActorRequest stop;
    stop.set_name("a0");
    REQUIRE(proc.stub().StopActor(proc.Context().get(), stop, &state).ok());
    CHECK(state.status() == v1::FAILED);
  }
}

TEST_CASE(
    "a message without a handler is refused naming the type; the actor keeps "
    "running") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state).ok());
  absl::StatusOr<v1::Envelope> reply = proc.Ask("a0", v1::GetCount());
  REQUIRE(reply.ok());
  absl::Status error = UnpackPayload<v1::Count>(*reply).status();
  CHECK(error.code() == absl::StatusCode::kInvalidArgument);
  CHECK(Contains(error.message(), "mesh.v1.GetCount"));
  CHECK(Contains(error.message(), "mesh.echo"));
  absl::StatusOr<v1::Envelope> still = proc.Ask("a0", v1::GetActorId());
  REQUIRE(still.ok());
  CHECK(UnpackPayload<v1::ActorIdReply>(*still).ok());
}

TEST_CASE("an actor whose Init fails is FAILED") {
  Proc proc;
  v1::CreateOrUpdateActorRequest request;
  request.set_name("picky");
  request.set_type("test.picky");
  v1::Fail fail;
  fail.set_why("bad params");
  request.mutable_params()->PackFrom(fail);
  v1::ActorState state;
  REQUIRE(proc.stub()
              .CreateOrUpdateActor(proc.Context().get(), request, &state)
              .ok());
  v1::WaitActorsResponse failed = proc.Wait({"picky"}, v1::FAILED);
  REQUIRE(failed.actors_size() == 1);
  CHECK(failed.actors(0).status() == v1::FAILED);
  CHECK(Contains(failed.actors(0).reason(), "bad params"));
}

TEST_CASE("stopping an actor is idempotent and tells its supervisor") {
  Proc proc;
  Inbox supervision;
  v1::PortRef supervisor = proc.client().OpenPort(supervision.Handler());
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state, 0, &supervisor).ok());
  v1::StopActorRequest stop;
  stop.set_name("a0");
  stop.set_reason("test is done");
  REQUIRE(proc.stub().StopActor(proc.Context().get(), stop, &state).ok());
  CHECK(state.status() == v1::STOPPED);
  REQUIRE(proc.stub().StopActor(proc.Context().get(), stop, &state).ok());
  CHECK(state.status() == v1::STOPPED);

  REQUIRE(supervision.WaitFor(1));
  absl::StatusOr<v1::SupervisionEvent> event =
      UnpackPayload<v1::SupervisionEvent>(supervision.envelopes()[0]);
  REQUIRE(event.ok());
  CHECK(event->actor().status() == v1::STOPPED);
  CHECK(event->actor().reason() == "test is done");

  absl::StatusOr<v1::Envelope> reply = proc.Ask("a0", v1::Echo());
  REQUIRE(reply.ok());
  CHECK(UnpackPayload<v1::Echo>(*reply).status().code() ==
        absl::StatusCode::kFailedPrecondition);

  v1::StopActorRequest unknown;
  unknown.set_name("nobody");
  CHECK(proc.stub()
            .StopActor(proc.Context().get(), unknown, &state)
            .error_code() == grpc::StatusCode::NOT_FOUND);
  v1::GetActorStateRequest get;
  get.set_name("nobody");
  CHECK(proc.stub()
            .GetActorState(proc.Context().get(), get, &state)
            .error_code() == grpc::StatusCode::NOT_FOUND);
}

TEST_CASE("a message to an unknown actor gets NOT_FOUND") {
  Proc proc;
  absl::StatusOr<v1::Envelope> reply = proc.Ask("ghost", v1::Echo());
  REQUIRE(reply.ok());
  absl::Status error = UnpackPayload<v1::Echo>(*reply).status();
  CHECK(error.code() == absl::StatusCode::kNotFound);
  CHECK(Contains(error.message(), "ghost"));
}

TEST_CASE("WaitActors answers when the awaited actor appears") {
  Proc proc;
  v1::WaitActorsResponse response;
  std::thread waiter([&] {
    response = proc.Wait({"late"}, v1::RUNNING, /*timeout_ms=*/60000);
  });
  // Whether the wait starts before or after the create, it must answer
  // RUNNING without waiting out its timeout.
  v1::ActorState state;
  REQUIRE(proc.Create("late", "mesh.echo", &state).ok());
  waiter.join();
  CHECK_FALSE(response.timed_out());
  REQUIRE(response.actors_size() == 1);
  CHECK(response.actors(0).status() == v1::RUNNING);
}

TEST_CASE("WaitActors gives up at its timeout and says so") {
  Proc proc;
  v1::WaitActorsResponse response =
      proc.Wait({"never"}, v1::RUNNING, /*timeout_ms=*/100);
  CHECK(response.timed_out());
  REQUIRE(response.actors_size() == 1);
  CHECK(response.actors(0).status() == v1::NOT_EXIST);
}

TEST_CASE("messages from one sender reach an actor in order") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state).ok());
  constexpr int kCount = 2000;
  for (int i = 1; i <= kCount; ++i) {
    v1::Seq seq;
    seq.set_n(i);
    proc.client().Send(proc.address(), EnvelopeToActor("a0", seq));
  }
  absl::StatusOr<v1::Envelope> reply = proc.Ask("a0", v1::GetSeqReport());
  REQUIRE(reply.ok());
  absl::StatusOr<v1::SeqReport> report = UnpackPayload<v1::SeqReport>(*reply);
  REQUIRE(report.ok());
  CHECK(report->received() == kCount);
  CHECK(report->out_of_order() == 0);
  REQUIRE(report->last_by_sender_size() == 1);
  CHECK(report->last_by_sender().begin()->second == kCount);
}

TEST_CASE("StopAll stops every actor and the proc refuses new ones") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state).ok());
  REQUIRE(proc.Create("a1", "mesh.counter", &state).ok());
  v1::StopAllRequest stop_all;
  stop_all.set_reason("test");
  v1::StopAllResponse stopped;
  REQUIRE(proc.stub().StopAll(proc.Context().get(), stop_all, &stopped).ok());
  REQUIRE(stopped.stopped_size() == 2);
  for (const v1::ActorState& actor : stopped.stopped()) {
    CHECK(actor.status() == v1::STOPPED);
  }
  grpc::Status status = proc.Create("a2", "mesh.echo", &state);
  CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  // The same request as an existing actor still answers with it.
  REQUIRE(proc.Create("a0", "mesh.echo", &state).ok());
  CHECK(state.status() == v1::STOPPED);
}

TEST_CASE("GetProcInfo describes the proc") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state).ok());
  v1::ProcInfo info;
  REQUIRE(
      proc.stub()
          .GetProcInfo(proc.Context().get(), v1::GetProcInfoRequest(), &info)
          .ok());
  CHECK(info.name() == "p0");
  CHECK(info.rank() == 2);
  CHECK(info.address() == proc.address());
  CHECK(info.pid() == getpid());
  CHECK(info.num_actors() == 1);
  std::vector<std::string> types(info.actor_types().begin(),
                                 info.actor_types().end());
  CHECK(types == std::vector<std::string>{"mesh.counter", "mesh.echo",
                                          "test.picky", "test.slow"});
}

TEST_CASE(
    "CallActor delivers through the proc's mailbox and answers the reply") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state, /*rank=*/3).ok());
  v1::Echo echo;
  echo.set_text("hi");
  v1::Echo echoed;
  grpc::Status status = proc.Call("a0", echo, &echoed);
  INFO(status.error_message());
  REQUIRE(status.ok());
  CHECK(echoed.text() == "hi");

  v1::ActorIdReply id;
  REQUIRE(proc.Call("a0", v1::GetActorId(), &id).ok());
  CHECK(id.id().actor() == "a0");
  CHECK(id.id().proc() == "p0");
  CHECK(id.rank() == 3);

  // The messages came from the proc's own mailbox: one sender, in order.
  for (int i = 1; i <= 3; ++i) {
    v1::Seq seq;
    seq.set_n(i);
    v1::SeqReport report;
    REQUIRE(proc.Call("a0", seq, &report).ok());
  }
  v1::SeqReport report;
  REQUIRE(proc.Call("a0", v1::GetSeqReport(), &report).ok());
  CHECK(report.received() == 3);
  CHECK(report.out_of_order() == 0);
  REQUIRE(report.last_by_sender_size() == 1);
  CHECK(Contains(report.last_by_sender().begin()->first, proc.address()));
}

TEST_CASE(
    "CallActor to an unknown actor is NOT_FOUND, bad requests "
    "INVALID_ARGUMENT") {
  Proc proc;
  v1::Echo reply;
  grpc::Status unknown = proc.Call("ghost", v1::Echo(), &reply);
  CHECK(unknown.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(Contains(unknown.error_message(), "ghost"));

  grpc::Status bad_name = proc.Call("../a0", v1::Echo(), &reply);
  CHECK(bad_name.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(Contains(bad_name.error_message(), "actor name"));

  v1::CallActorRequest no_payload;
  no_payload.set_actor("a0");
  v1::CallActorResponse response;
  grpc::Status empty =
      proc.stub().CallActor(proc.Context().get(), no_payload, &response);
  CHECK(empty.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(Contains(empty.error_message(), "payload"));
}

TEST_CASE("CallActor answers an actor's error replies with their status") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("a0", "mesh.echo", &state).ok());
  v1::Fail fail;
  fail.set_why("test says so");
  v1::Fail unused;
  grpc::Status failed = proc.Call("a0", fail, &unused);
  CHECK(failed.error_code() == grpc::StatusCode::INTERNAL);
  CHECK(Contains(failed.error_message(), "test says so"));

  v1::Echo echo;
  grpc::Status refused = proc.Call("a0", echo, &echo);
  CHECK(refused.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(Contains(refused.error_message(), "has failed"));

  REQUIRE(proc.Create("c0", "mesh.counter", &state).ok());
  grpc::Status unhandled = proc.Call("c0", echo, &echo);
  CHECK(unhandled.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(Contains(unhandled.error_message(), "mesh.v1.Echo"));
  // A message the actor does not handle is refused; the actor keeps running.
  v1::Count count;
  CHECK(proc.Call("c0", v1::GetCount(), &count).ok());
}

TEST_CASE("CallActor gives up at its timeout with DEADLINE_EXCEEDED") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("slow", "test.slow", &state).ok());
  v1::Echo echo;
  echo.set_text("first");
  grpc::Status late = proc.Call("slow", echo, &echo, /*timeout_ms=*/20);
  CHECK(late.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK(Contains(late.error_message(), "did not reply within 20ms"));

  // The late reply goes to a closed port; the next call gets its own.
  echo.set_text("second");
  v1::Echo echoed;
  REQUIRE(proc.Call("slow", echo, &echoed).ok());
  CHECK(echoed.text() == "second");
}

TEST_CASE("a proc shutting down ends pending and new CallActors") {
  Proc proc;
  v1::ActorState state;
  REQUIRE(proc.Create("slow", "test.slow", &state).ok());
  REQUIRE(proc.Wait({"slow"}, v1::RUNNING).actors(0).status() == v1::RUNNING);
  grpc::Status pending;
  absl::Time start = absl::Now();
  std::thread caller([&] {
    v1::Echo echo;
    pending = proc.Call("slow", echo, &echo, /*timeout_ms=*/30000);
  });
  absl::SleepFor(absl::Milliseconds(50));
  proc.runtime().Shutdown();
  caller.join();
  // The reply raced the shutdown; either way the call did not wait it out.
  INFO(pending.error_message());
  CHECK((pending.ok() ||
         pending.error_code() == grpc::StatusCode::UNAVAILABLE ||
         pending.error_code() == grpc::StatusCode::FAILED_PRECONDITION));
  CHECK(absl::Now() - start < absl::Seconds(10));

  v1::Echo echo;
  grpc::Status after = proc.Call("slow", echo, &echo);
  CHECK(after.error_code() == grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace mesh
