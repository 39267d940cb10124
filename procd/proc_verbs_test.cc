// ProcRuntime + ProcVerbs + Mailbox in one process, without a transport:
// the test plays the host. It hands requests to ProcVerbs and envelopes to
// the mailbox (Deliver), and the mailbox's outbound loops back into the
// test, which collects what the proc sends to its fake client's ports.
#include "procd/proc_verbs.h"

#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "hostmesh/actor.h"
#include "hostmesh/procd.h"
#include "lib/mailbox/mailbox.h"
#include "procd/proc_runtime.h"
#include "procd/testing.h"
#include "proto/actors.pb.h"
#include "proto/proc.pb.h"
#include "proto/proc_channel.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(30);
constexpr char kHost[] = "h1:7450";
constexpr char kClient[] = "client:t";

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

// What one Handle answered: the response, and how many times `done` ran.
// `done` holds the Answer, so an answer after the test let go of it is
// harmless.
class Answer : public std::enable_shared_from_this<Answer> {
 public:
  ProcVerbs::Done Done() {
    return [self = shared_from_this()](v1::ProcResponse response) {
      absl::MutexLock lock(&self->mu_);
      ++self->calls_;
      self->response_ = std::move(response);
    };
  }
  bool Wait(absl::Duration timeout = kTimeout) {
    absl::MutexLock lock(&mu_);
    auto answered = [this]()
                        ABSL_NO_THREAD_SAFETY_ANALYSIS { return calls_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&answered), timeout);
  }
  v1::ProcResponse response() const {
    absl::MutexLock lock(&mu_);
    return response_;
  }
  int calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  mutable absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  v1::ProcResponse response_ ABSL_GUARDED_BY(mu_);
};

absl::Status ErrorOf(const v1::ProcResponse& response) {
  return absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                      response.error().message());
}

// A proc ("p0", rank 2, host kHost) and a fake client "client:t" whose
// ports collect what the proc sends them.
class Proc {
 public:
  explicit Proc(ProcVerbs::Options options = {}) {
    ActorRegistry registry;
    RegisterBuiltinActors(registry);
    registry.Register<PickyActor>();
    registry.Register("test.gate", [gate = gate_] {
      return std::unique_ptr<Actor>(new testing::GateActor(gate));
    });
    mailbox_ = std::make_unique<Mailbox>(
        kHost, "p0",
        [this](v1::Envelope& envelope) { return client_.Outbound(envelope); });
    runtime_ = std::make_unique<ProcRuntime>(
        ProcRuntime::Options{"p0", 2, std::move(registry)}, mailbox_.get());
    verbs_ = std::make_unique<ProcVerbs>(runtime_.get(), std::move(options));
  }

  ~Proc() {
    gate_->Open();
    runtime_->Shutdown();
    verbs_.reset();
    mailbox_->Shutdown();
    runtime_.reset();
  }

  ProcVerbs& verbs() { return *verbs_; }
  ProcRuntime& runtime() { return *runtime_; }
  Mailbox& mailbox() { return *mailbox_; }
  testing::Gate& gate() { return *gate_; }
  testing::FakeClient& client() { return client_; }

  // Hands `request` to the verbs; the answer arrives in the returned Answer.
  // Requests without an id get a fresh one.
  std::shared_ptr<Answer> Start(v1::ProcRequest request) {
    if (request.id() == 0) request.set_id(next_id_++);
    auto answer = std::make_shared<Answer>();
    verbs_->Handle(std::move(request), answer->Done());
    return answer;
  }

  // Handles `request` and returns its response, checking it came once and
  // with the request's id.
  v1::ProcResponse Call(v1::ProcRequest request) {
    if (request.id() == 0) request.set_id(next_id_++);
    const uint64_t id = request.id();
    std::shared_ptr<Answer> answer = Start(std::move(request));
    REQUIRE(answer->Wait());
    CHECK(answer->calls() == 1);
    v1::ProcResponse response = answer->response();
    CHECK(response.id() == id);
    return response;
  }

  v1::ProcResponse Create(const std::string& name, const std::string& type,
                          uint64_t rank = 0,
                          const v1::PortRef* supervisor = nullptr) {
    v1::ProcRequest request;
    v1::CreateOrUpdateActorRequest* create = request.mutable_create_actor();
    create->set_name(name);
    create->set_type(type);
    create->set_rank(rank);
    if (supervisor != nullptr) *create->mutable_supervisor() = *supervisor;
    return Call(std::move(request));
  }

  v1::ActorState Get(const std::string& name) {
    v1::ProcRequest request;
    request.mutable_get_actor()->set_name(name);
    v1::ProcResponse response = Call(std::move(request));
    INFO(response.error().message());
    REQUIRE(response.has_actor());
    return response.actor();
  }

  v1::ProcResponse Stop(const std::string& name,
                        const std::string& reason = "") {
    v1::ProcRequest request;
    request.mutable_stop_actor()->set_name(name);
    request.mutable_stop_actor()->set_reason(reason);
    return Call(std::move(request));
  }

  static v1::ProcRequest WaitRequest(const std::vector<std::string>& names,
                                     v1::Status min_status,
                                     uint32_t timeout_ms) {
    v1::ProcRequest request;
    v1::WaitActorsRequest* wait = request.mutable_wait_actors();
    for (const std::string& name : names) wait->add_names(name);
    wait->set_min_status(min_status);
    wait->set_timeout_ms(timeout_ms);
    return request;
  }

  v1::WaitActorsResponse Wait(const std::vector<std::string>& names,
                              v1::Status min_status,
                              uint32_t timeout_ms = 30000) {
    v1::ProcResponse response =
        Call(WaitRequest(names, min_status, timeout_ms));
    REQUIRE(response.has_wait_actors());
    return response.wait_actors();
  }

  static v1::ProcRequest CallRequest(const std::string& actor,
                                     const google::protobuf::Message& message,
                                     uint32_t timeout_ms = 0) {
    v1::ProcRequest request;
    v1::CallActorRequest* call = request.mutable_call_actor();
    call->set_actor(actor);
    call->mutable_payload()->PackFrom(message);
    call->set_timeout_ms(timeout_ms);
    return request;
  }

  // CallActor with `message` to `actor`; the reply goes to `reply`.
  absl::Status CallActor(const std::string& actor,
                         const google::protobuf::Message& message,
                         google::protobuf::Message* reply,
                         uint32_t timeout_ms = 0) {
    v1::ProcResponse response = Call(CallRequest(actor, message, timeout_ms));
    if (response.error().code() != 0) return ErrorOf(response);
    if (!response.call_actor().reply().UnpackTo(reply)) {
      return absl::InternalError(absl::StrCat(
          "reply is a ", response.call_actor().reply().type_url()));
    }
    return absl::OkStatus();
  }

  // Delivers `message` to actor `actor` as the host would, from the fake
  // client, and returns the reply.
  v1::Envelope Ask(const std::string& actor,
                   const google::protobuf::Message& message,
                   uint64_t cast_rank = 0) {
    v1::ActorRef ref;
    ref.set_host(kHost);
    ref.set_proc("p0");
    ref.set_actor(actor);
    v1::Envelope envelope = EnvelopeToActor(ref, message);
    envelope.set_cast_rank(cast_rank);
    envelope.set_correlation(1234);
    envelope.set_sender(kClient);
    v1::PortRef port = client_.OpenPort();
    *envelope.mutable_reply_to() = port;
    mailbox_->Deliver(std::move(envelope));
    return client_.WaitEnvelopes(port, 1)[0];
  }

 private:
  // Declared first: the mailbox's outbound reaches them until it is gone.
  testing::FakeClient client_{kClient, kTimeout};
  std::atomic<uint64_t> next_id_{1000};
  const std::shared_ptr<testing::Gate> gate_ =
      std::make_shared<testing::Gate>(kTimeout);

  std::unique_ptr<Mailbox> mailbox_;
  std::unique_ptr<ProcRuntime> runtime_;
  std::unique_ptr<ProcVerbs> verbs_;
};

TEST_CASE("an echo actor answers GetActorId at the client's ports") {
  Proc proc;
  v1::ProcResponse created = proc.Create("a0", "mesh.echo", /*rank=*/3);
  REQUIRE(created.has_actor());
  const v1::ActorState& state = created.actor();
  CHECK(state.name() == "a0");
  CHECK(state.type() == "mesh.echo");
  CHECK(state.generation() >= 1);
  CHECK(state.ref().host() == kHost);
  CHECK(state.ref().proc() == "p0");
  CHECK(state.ref().actor() == "a0");

  v1::WaitActorsResponse running = proc.Wait({"a0"}, v1::RUNNING);
  CHECK_FALSE(running.timed_out());
  REQUIRE(running.actors_size() == 1);
  CHECK(running.actors(0).status() == v1::RUNNING);

  v1::PortRef also = proc.client().OpenPort();
  v1::GetActorId get_id;
  *get_id.mutable_port() = also;
  v1::Envelope reply = proc.Ask("a0", get_id, /*cast_rank=*/5);
  CHECK(reply.correlation() == 1234);
  CHECK(reply.sender() == "p0@h1:7450");
  absl::StatusOr<v1::ActorIdReply> id = UnpackPayload<v1::ActorIdReply>(reply);
  REQUIRE(id.ok());
  CHECK(id->id().actor() == "a0");
  CHECK(id->id().proc() == "p0");
  CHECK(id->id().host() == kHost);
  CHECK(id->rank() == 3);
  CHECK(id->cast_rank() == 5);
  CHECK(id->pid() == getpid());

  v1::Envelope copy = proc.client().WaitEnvelopes(also, 1)[0];
  CHECK(UnpackPayload<v1::ActorIdReply>(copy)->id().actor() == "a0");
}

TEST_CASE("an unregistered actor type is INVALID_ARGUMENT naming the type") {
  Proc proc;
  absl::Status status = ErrorOf(proc.Create("a0", "no.such.type"));
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "no.such.type"));
}

TEST_CASE("a bad actor name is INVALID_ARGUMENT") {
  Proc proc;
  absl::Status status = ErrorOf(proc.Create("../a0", "mesh.echo"));
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "actor name"));
}

TEST_CASE("creating the same actor twice gives the same actor") {
  Proc proc;
  v1::ProcResponse first = proc.Create("a0", "mesh.counter", 1);
  v1::ProcResponse second = proc.Create("a0", "mesh.counter", 1);
  REQUIRE(first.has_actor());
  REQUIRE(second.has_actor());
  CHECK(first.actor().created_at().seconds() ==
        second.actor().created_at().seconds());
  CHECK(first.actor().created_at().nanos() ==
        second.actor().created_at().nanos());

  v1::ProcRequest list;
  list.mutable_list_actors();
  CHECK(proc.Call(list).list_actors().actors_size() == 1);

  SECTION("and the same name with another type is FAILED_PRECONDITION") {
    absl::Status status = ErrorOf(proc.Create("a0", "mesh.echo", 1));
    CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(absl::StrContains(status.message(), "a0"));
  }
  SECTION("and the same name with another rank is FAILED_PRECONDITION") {
    absl::Status status = ErrorOf(proc.Create("a0", "mesh.counter", 7));
    CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("a counter counts and replies with its rank") {
  Proc proc;
  REQUIRE(proc.Create("c0", "mesh.counter", /*rank=*/4).has_actor());
  v1::Increment by_two;
  by_two.set_by(2);
  proc.Ask("c0", by_two);
  absl::StatusOr<v1::Count> count =
      UnpackPayload<v1::Count>(proc.Ask("c0", by_two));
  REQUIRE(count.ok());
  CHECK(count->value() == 4);
  CHECK(count->rank() == 4);
  CHECK(UnpackPayload<v1::Count>(proc.Ask("c0", v1::GetCount()))->value() == 4);
}

TEST_CASE("a failing handler fails the actor and tells its supervisor") {
  Proc proc;
  v1::PortRef supervisor = proc.client().OpenPort();
  REQUIRE(proc.Create("a0", "mesh.echo", 0, &supervisor).has_actor());

  v1::Fail fail;
  fail.set_why("test says so");
  v1::Envelope reply = proc.Ask("a0", fail);
  CHECK(reply.correlation() == 1234);
  absl::Status error = UnpackPayload<v1::Echo>(reply).status();
  CHECK(error.code() == absl::StatusCode::kInternal);
  CHECK(absl::StrContains(error.message(), "test says so"));

  v1::Envelope event_envelope = proc.client().WaitEnvelopes(supervisor, 1)[0];
  absl::StatusOr<v1::SupervisionEvent> event =
      UnpackPayload<v1::SupervisionEvent>(event_envelope);
  REQUIRE(event.ok());
  CHECK(event->actor().name() == "a0");
  CHECK(event->actor().status() == v1::FAILED);
  CHECK(absl::StrContains(event->actor().reason(), "test says so"));
  CHECK(proc.Get("a0").status() == v1::FAILED);

  SECTION("and later messages get FAILED_PRECONDITION naming it and why") {
    v1::Echo echo;
    echo.set_text("still there?");
    absl::Status refused =
        UnpackPayload<v1::Echo>(proc.Ask("a0", echo)).status();
    CHECK(refused.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(absl::StrContains(refused.message(), "a0"));
    CHECK(absl::StrContains(refused.message(), "test says so"));
  }
  SECTION("and stopping it leaves it FAILED") {
    v1::ProcResponse stopped = proc.Stop("a0");
    REQUIRE(stopped.has_actor());
    CHECK(stopped.actor().status() == v1::FAILED);
  }
}

TEST_CASE(
    "a message without a handler is refused naming the type; the actor keeps "
    "running") {
  Proc proc;
  REQUIRE(proc.Create("a0", "mesh.echo").has_actor());
  absl::Status error =
      UnpackPayload<v1::Count>(proc.Ask("a0", v1::GetCount())).status();
  CHECK(error.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(error.message(), "mesh.v1.GetCount"));
  CHECK(absl::StrContains(error.message(), "mesh.echo"));
  CHECK(UnpackPayload<v1::ActorIdReply>(proc.Ask("a0", v1::GetActorId())).ok());
}

TEST_CASE("an actor whose Init fails is FAILED") {
  Proc proc;
  v1::ProcRequest request;
  v1::CreateOrUpdateActorRequest* create = request.mutable_create_actor();
  create->set_name("picky");
  create->set_type("test.picky");
  v1::Fail fail;
  fail.set_why("bad params");
  create->mutable_params()->PackFrom(fail);
  REQUIRE(proc.Call(request).has_actor());
  v1::WaitActorsResponse failed = proc.Wait({"picky"}, v1::FAILED);
  REQUIRE(failed.actors_size() == 1);
  CHECK(failed.actors(0).status() == v1::FAILED);
  CHECK(absl::StrContains(failed.actors(0).reason(), "bad params"));
}

TEST_CASE("stopping an actor is idempotent and tells its supervisor") {
  Proc proc;
  v1::PortRef supervisor = proc.client().OpenPort();
  REQUIRE(proc.Create("a0", "mesh.echo", 0, &supervisor).has_actor());
  v1::ProcResponse stopped = proc.Stop("a0", "test is done");
  REQUIRE(stopped.has_actor());
  CHECK(stopped.actor().status() == v1::STOPPED);
  stopped = proc.Stop("a0", "test is done");
  REQUIRE(stopped.has_actor());
  CHECK(stopped.actor().status() == v1::STOPPED);

  absl::StatusOr<v1::SupervisionEvent> event =
      UnpackPayload<v1::SupervisionEvent>(
          proc.client().WaitEnvelopes(supervisor, 1)[0]);
  REQUIRE(event.ok());
  CHECK(event->actor().status() == v1::STOPPED);
  CHECK(event->actor().reason() == "test is done");

  CHECK(UnpackPayload<v1::Echo>(proc.Ask("a0", v1::Echo())).status().code() ==
        absl::StatusCode::kFailedPrecondition);

  CHECK(ErrorOf(proc.Stop("nobody")).code() == absl::StatusCode::kNotFound);
  v1::ProcRequest get;
  get.mutable_get_actor()->set_name("nobody");
  CHECK(ErrorOf(proc.Call(get)).code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a message to an unknown actor gets NOT_FOUND") {
  Proc proc;
  absl::Status error =
      UnpackPayload<v1::Echo>(proc.Ask("ghost", v1::Echo())).status();
  CHECK(error.code() == absl::StatusCode::kNotFound);
  CHECK(absl::StrContains(error.message(), "ghost"));
}

TEST_CASE("WaitActors answers when the awaited actor appears") {
  Proc proc;
  // Whether the wait is registered before or after the create, it must
  // answer RUNNING without waiting out its timeout.
  std::shared_ptr<Answer> waiting =
      proc.Start(Proc::WaitRequest({"late"}, v1::RUNNING, 60000));
  REQUIRE(proc.Create("late", "mesh.echo").has_actor());
  REQUIRE(waiting->Wait());
  v1::ProcResponse response = waiting->response();
  REQUIRE(response.has_wait_actors());
  CHECK_FALSE(response.wait_actors().timed_out());
  REQUIRE(response.wait_actors().actors_size() == 1);
  CHECK(response.wait_actors().actors(0).status() == v1::RUNNING);
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
  REQUIRE(proc.Create("a0", "mesh.echo").has_actor());
  constexpr int kCount = 2000;
  v1::ActorRef a0;
  a0.set_host(kHost);
  a0.set_proc("p0");
  a0.set_actor("a0");
  for (int i = 1; i <= kCount; ++i) {
    v1::Seq seq;
    seq.set_n(i);
    v1::Envelope envelope = EnvelopeToActor(a0, seq);
    envelope.set_sender(kClient);
    proc.mailbox().Deliver(std::move(envelope));
  }
  absl::StatusOr<v1::SeqReport> report =
      UnpackPayload<v1::SeqReport>(proc.Ask("a0", v1::GetSeqReport()));
  REQUIRE(report.ok());
  CHECK(report->received() == kCount);
  CHECK(report->out_of_order() == 0);
  REQUIRE(report->last_by_sender_size() == 1);
  CHECK(report->last_by_sender().at(kClient) == kCount);
}

TEST_CASE("StopAll stops every actor and the proc refuses new ones") {
  Proc proc;
  REQUIRE(proc.Create("a0", "mesh.echo").has_actor());
  REQUIRE(proc.Create("a1", "mesh.counter").has_actor());
  v1::ProcRequest stop_all;
  stop_all.mutable_stop_all()->set_reason("test");
  v1::ProcResponse stopped = proc.Call(stop_all);
  REQUIRE(stopped.stop_all().stopped_size() == 2);
  for (const v1::ActorState& actor : stopped.stop_all().stopped()) {
    CHECK(actor.status() == v1::STOPPED);
  }
  CHECK(ErrorOf(proc.Create("a2", "mesh.echo")).code() ==
        absl::StatusCode::kFailedPrecondition);
  // The same request as an existing actor still answers with it.
  v1::ProcResponse again = proc.Create("a0", "mesh.echo");
  REQUIRE(again.has_actor());
  CHECK(again.actor().status() == v1::STOPPED);
}

TEST_CASE("StopAll with exit_proc asks the proc to exit once it answered") {
  auto answered = std::make_shared<Answer>();
  absl::Notification exit_requested;
  bool answered_first = false;
  ProcVerbs::Options options;
  options.on_exit_requested = [&] {
    answered_first = answered->calls() == 1;
    exit_requested.Notify();
  };
  Proc proc(std::move(options));
  REQUIRE(proc.Create("a0", "mesh.echo").has_actor());
  v1::ProcRequest request;
  request.set_id(7);
  request.mutable_stop_all()->set_exit_proc(true);
  proc.verbs().Handle(request, answered->Done());
  REQUIRE(exit_requested.WaitForNotificationWithTimeout(kTimeout));
  CHECK(answered_first);
  CHECK(answered->response().id() == 7);
  CHECK(answered->response().stop_all().stopped_size() == 1);
}

TEST_CASE(
    "StopAll tells each actor's supervisor, unless the proc ends with it: "
    "then its host reports the proc's end for all of them") {
  Proc proc;
  v1::PortRef supervisor = proc.client().OpenPort();
  REQUIRE(proc.Create("a0", "mesh.echo", 0, &supervisor).has_actor());
  v1::ProcRequest stop_all;
  stop_all.mutable_stop_all()->set_reason("tidy up");
  REQUIRE(proc.Call(stop_all).stop_all().stopped_size() == 1);
  absl::StatusOr<v1::SupervisionEvent> event =
      UnpackPayload<v1::SupervisionEvent>(
          proc.client().WaitEnvelopes(supervisor, 1)[0]);
  REQUIRE(event.ok());
  CHECK(event->actor().status() == v1::STOPPED);

  Proc ending;
  v1::PortRef quiet = ending.client().OpenPort();
  REQUIRE(ending.Create("a0", "mesh.echo", 0, &quiet).has_actor());
  stop_all.mutable_stop_all()->set_exit_proc(true);
  REQUIRE(ending.Call(stop_all).stop_all().stopped_size() == 1);
  absl::SleepFor(absl::Milliseconds(200));
  CHECK(ending.client().Sent(quiet).empty());
}

TEST_CASE("GetProcInfo describes the proc") {
  Proc proc;
  REQUIRE(proc.Create("a0", "mesh.echo").has_actor());
  v1::ProcRequest request;
  request.mutable_get_info();
  v1::ProcInfo info = proc.Call(request).info();
  CHECK(info.name() == "p0");
  CHECK(info.rank() == 2);
  CHECK(info.host() == kHost);
  CHECK(info.pid() == getpid());
  CHECK(info.num_actors() == 1);
  std::vector<std::string> types(info.actor_types().begin(),
                                 info.actor_types().end());
  CHECK(types == std::vector<std::string>{"mesh.counter", "mesh.echo",
                                          "test.gate", "test.picky"});
}

TEST_CASE("a request without a verb is INVALID_ARGUMENT") {
  Proc proc;
  v1::ProcRequest request;
  request.set_id(42);
  v1::ProcResponse response = proc.Call(request);
  CHECK(ErrorOf(response).code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(response.error().message(), "42"));
}

TEST_CASE(
    "CallActor delivers through the proc's mailbox and answers the reply") {
  Proc proc;
  REQUIRE(proc.Create("a0", "mesh.echo", /*rank=*/3).has_actor());
  v1::Echo echo;
  echo.set_text("hi");
  v1::Echo echoed;
  absl::Status status = proc.CallActor("a0", echo, &echoed);
  INFO(status.message());
  REQUIRE(status.ok());
  CHECK(echoed.text() == "hi");

  v1::ActorIdReply id;
  REQUIRE(proc.CallActor("a0", v1::GetActorId(), &id).ok());
  CHECK(id.id().actor() == "a0");
  CHECK(id.id().proc() == "p0");
  CHECK(id.id().host() == kHost);
  CHECK(id.rank() == 3);

  // The messages came from the proc's own mailbox: one sender, in order.
  for (int i = 1; i <= 3; ++i) {
    v1::Seq seq;
    seq.set_n(i);
    v1::SeqReport report;
    REQUIRE(proc.CallActor("a0", seq, &report).ok());
  }
  v1::SeqReport report;
  REQUIRE(proc.CallActor("a0", v1::GetSeqReport(), &report).ok());
  CHECK(report.received() == 3);
  CHECK(report.out_of_order() == 0);
  REQUIRE(report.last_by_sender_size() == 1);
  CHECK(report.last_by_sender().begin()->first == "p0@h1:7450");
  CHECK(proc.verbs().pending() == 0);
}

TEST_CASE(
    "CallActor to an unknown actor is NOT_FOUND, bad requests "
    "INVALID_ARGUMENT") {
  Proc proc;
  v1::Echo reply;
  absl::Status unknown = proc.CallActor("ghost", v1::Echo(), &reply);
  CHECK(unknown.code() == absl::StatusCode::kNotFound);
  CHECK(absl::StrContains(unknown.message(), "ghost"));

  absl::Status bad_name = proc.CallActor("../a0", v1::Echo(), &reply);
  CHECK(bad_name.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(bad_name.message(), "actor name"));

  v1::ProcRequest no_payload;
  no_payload.mutable_call_actor()->set_actor("a0");
  v1::ProcResponse empty = proc.Call(no_payload);
  CHECK(ErrorOf(empty).code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(empty.error().message(), "payload"));
}

TEST_CASE("CallActor answers an actor's error replies with their status") {
  Proc proc;
  REQUIRE(proc.Create("a0", "mesh.echo").has_actor());
  v1::Fail fail;
  fail.set_why("test says so");
  v1::Fail unused;
  absl::Status failed = proc.CallActor("a0", fail, &unused);
  CHECK(failed.code() == absl::StatusCode::kInternal);
  CHECK(absl::StrContains(failed.message(), "test says so"));

  v1::Echo echo;
  absl::Status refused = proc.CallActor("a0", echo, &echo);
  CHECK(refused.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(refused.message(), "has failed"));

  REQUIRE(proc.Create("c0", "mesh.counter").has_actor());
  absl::Status unhandled = proc.CallActor("c0", echo, &echo);
  CHECK(unhandled.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(unhandled.message(), "mesh.v1.Echo"));
  // A message the actor does not handle is refused; the actor keeps running.
  v1::Count count;
  CHECK(proc.CallActor("c0", v1::GetCount(), &count).ok());
}

TEST_CASE("CallActor gives up at its timeout with DEADLINE_EXCEEDED") {
  Proc proc;
  REQUIRE(proc.Create("gate", "test.gate").has_actor());
  v1::Echo echo;
  echo.set_text("first");
  absl::Status late = proc.CallActor("gate", echo, &echo, /*timeout_ms=*/20);
  CHECK(late.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(absl::StrContains(late.message(), "did not reply within 20ms"));

  // The late reply goes to a closed port; the next call gets its own.
  proc.gate().Open();
  echo.set_text("second");
  v1::Echo echoed;
  REQUIRE(proc.CallActor("gate", echo, &echoed).ok());
  CHECK(echoed.text() == "second");
}

TEST_CASE("a cancelled WaitActors is dropped unanswered") {
  Proc proc;
  v1::ProcRequest request = Proc::WaitRequest({"w"}, v1::RUNNING, 60000);
  request.set_id(11);
  std::shared_ptr<Answer> dropped = proc.Start(request);
  CHECK(proc.verbs().pending() == 1);
  proc.verbs().Cancel(11);
  CHECK(proc.verbs().pending() == 0);
  // What would have answered it does not.
  REQUIRE(proc.Create("w", "mesh.echo").has_actor());
  CHECK(proc.Wait({"w"}, v1::RUNNING).actors(0).status() == v1::RUNNING);
  CHECK(dropped->calls() == 0);
  // Cancelling what is not pending does nothing.
  proc.verbs().Cancel(11);
  proc.verbs().Cancel(12345);
}

TEST_CASE("a cancelled CallActor is dropped and its late reply goes nowhere") {
  Proc proc;
  REQUIRE(proc.Create("gate", "test.gate").has_actor());
  v1::Echo echo;
  echo.set_text("first");
  v1::ProcRequest request = Proc::CallRequest("gate", echo, 60000);
  request.set_id(21);
  std::shared_ptr<Answer> dropped = proc.Start(request);
  REQUIRE(proc.gate().entered.WaitForNotificationWithTimeout(kTimeout));
  proc.verbs().Cancel(21);
  CHECK(proc.verbs().pending() == 0);
  proc.gate().Open();
  // The actor answers in order: once the second reply is in, the first one
  // came and went.
  echo.set_text("second");
  v1::Echo echoed;
  REQUIRE(proc.CallActor("gate", echo, &echoed).ok());
  CHECK(echoed.text() == "second");
  CHECK(dropped->calls() == 0);
}

TEST_CASE("a second waiting request with a pending id is ALREADY_EXISTS") {
  Proc proc;
  v1::ProcRequest request = Proc::WaitRequest({"w"}, v1::RUNNING, 60000);
  request.set_id(5);
  std::shared_ptr<Answer> first = proc.Start(request);
  v1::ProcResponse second = proc.Call(request);
  CHECK(ErrorOf(second).code() == absl::StatusCode::kAlreadyExists);
  CHECK(first->calls() == 0);
  proc.verbs().Cancel(5);
}

TEST_CASE("waiting requests beyond the limit are RESOURCE_EXHAUSTED") {
  ProcVerbs::Options options;
  options.max_pending = 1;
  Proc proc(std::move(options));
  std::shared_ptr<Answer> first =
      proc.Start(Proc::WaitRequest({"w"}, v1::RUNNING, 60000));
  v1::ProcResponse second =
      proc.Call(Proc::WaitRequest({"w"}, v1::RUNNING, 60000));
  CHECK(ErrorOf(second).code() == absl::StatusCode::kResourceExhausted);
  // Verbs that do not wait are still served.
  v1::ProcRequest list;
  list.mutable_list_actors();
  CHECK(proc.Call(list).error().code() == 0);
}

TEST_CASE("a proc shutting down ends pending waits and new CallActors") {
  Proc proc;
  REQUIRE(proc.Create("gate", "test.gate").has_actor());
  std::shared_ptr<Answer> waiting =
      proc.Start(Proc::WaitRequest({"never"}, v1::RUNNING, 60000));
  std::shared_ptr<Answer> calling =
      proc.Start(Proc::CallRequest("gate", v1::Echo(), 60000));
  REQUIRE(proc.gate().entered.WaitForNotificationWithTimeout(kTimeout));
  std::thread shutdown([&] { proc.runtime().Shutdown(); });
  proc.gate().Open();
  shutdown.join();

  REQUIRE(waiting->Wait());
  CHECK(ErrorOf(waiting->response()).code() == absl::StatusCode::kUnavailable);
  // The call's reply raced the shutdown; either way it did not wait it out.
  REQUIRE(calling->Wait());
  absl::Status call = ErrorOf(calling->response());
  INFO(call.message());
  CHECK((call.ok() || call.code() == absl::StatusCode::kUnavailable));
  CHECK(proc.verbs().pending() == 0);

  v1::Echo echo;
  CHECK(proc.CallActor("gate", echo, &echo).code() ==
        absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace mesh
