// ProcRuntime's bounds, with a Mailbox and no transport: only live actors
// count against the limit, an actor's thread ends with the actor, finished
// actors leave a bounded history, a full actor queue refuses without
// blocking the deliverer, and deadlines run on the runtime's clock.
#include "procd/proc_runtime.h"

#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
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
#include "lib/process/process_identity.h"
#include "lib/process/testing.h"
#include "lib/time/clock.h"
#include "procd/testing.h"
#include "proto/actors.pb.h"
#include "proto/proc.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(30);
constexpr char kHost[] = "h1:7450";
constexpr char kClient[] = "client:t";

// This process's threads and memory (the project's /proc/<pid>/stat reader).
ProcStat Self() {
  absl::StatusOr<ProcStat> stat = ReadProcStat(getpid());
  REQUIRE(stat.ok());
  return *stat;
}

bool Eventually(const std::function<bool()>& done) {
  return testing::Eventually(done, kTimeout);
}

// A runtime for proc "p0" on kHost whose mailbox hands what it sends to the
// fake client kClient to per-port lists.
class Runtime {
 public:
  explicit Runtime(ProcRuntime::Options options = {}) {
    ActorRegistry registry;
    RegisterBuiltinActors(registry);
    registry.Register("test.gate", [gate = gate_] {
      return std::unique_ptr<Actor>(new testing::GateActor(gate));
    });
    options.proc_name = "p0";
    options.registry = std::move(registry);
    mailbox_ = std::make_unique<Mailbox>(
        kHost, "p0",
        [this](v1::Envelope& envelope) { return client_.Outbound(envelope); });
    runtime_ =
        std::make_unique<ProcRuntime>(std::move(options), mailbox_.get());
  }

  ~Runtime() {
    if (!gate_->open.HasBeenNotified()) gate_->open.Notify();
    runtime_->Shutdown();
    mailbox_->Shutdown();
    runtime_.reset();
  }

  ProcRuntime& runtime() { return *runtime_; }
  Mailbox& mailbox() { return *mailbox_; }
  testing::Gate& gate() { return *gate_; }
  testing::FakeClient& client() { return client_; }

  absl::StatusOr<v1::ActorState> Create(
      const std::string& name, const std::string& type,
      const v1::PortRef* supervisor = nullptr) {
    v1::CreateOrUpdateActorRequest request;
    request.set_name(name);
    request.set_type(type);
    if (supervisor != nullptr) *request.mutable_supervisor() = *supervisor;
    return runtime_->CreateOrUpdateActor(request);
  }

  // Waits for `names` to reach `min_status`; the response.
  absl::StatusOr<v1::WaitActorsResponse> Wait(std::vector<std::string> names,
                                              v1::Status min_status) {
    absl::Mutex mu;
    std::optional<absl::StatusOr<v1::WaitActorsResponse>> got;
    runtime_->WaitActors(std::move(names), min_status, kTimeout,
                         [&](absl::StatusOr<v1::WaitActorsResponse> response) {
                           absl::MutexLock lock(&mu);
                           got = std::move(response);
                         });
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](std::optional<absl::StatusOr<v1::WaitActorsResponse>>* got) {
          return got->has_value();
        },
        &got));
    return **std::move(got);
  }

  // An envelope from the fake client to `actor` carrying `message`, its
  // reply_to `reply_to` if set.
  static v1::Envelope ToActor(const std::string& actor,
                              const google::protobuf::Message& message,
                              const v1::PortRef* reply_to = nullptr) {
    v1::ActorRef ref;
    ref.set_host(kHost);
    ref.set_proc("p0");
    ref.set_actor(actor);
    v1::Envelope envelope = EnvelopeToActor(ref, message);
    envelope.set_sender(kClient);
    if (reply_to != nullptr) *envelope.mutable_reply_to() = *reply_to;
    return envelope;
  }

 private:
  // Declared first: the mailbox's outbound reaches it until it is gone.
  testing::FakeClient client_{kClient, kTimeout};
  const std::shared_ptr<testing::Gate> gate_ =
      std::make_shared<testing::Gate>(kTimeout);
  std::unique_ptr<Mailbox> mailbox_;
  std::unique_ptr<ProcRuntime> runtime_;
};

absl::Status ErrorOf(const v1::Envelope& reply) {
  return UnpackPayload<v1::Echo>(reply).status();
}

TEST_CASE(
    "2,000 actor spawn and stop cycles leave live actors, threads and RSS "
    "flat") {
  Runtime proc;
  constexpr int kCycles = 2000;
  constexpr int kWarmup = 200;
  int64_t threads_before = 0;
  ProcStat before;
  size_t max_live = 0;
  for (int i = 0; i < kCycles; ++i) {
    if (i == kWarmup) {
      REQUIRE(Eventually([&] { return proc.runtime().live_actors() == 0; }));
      before = Self();
      threads_before = before.num_threads;
    }
    const std::string name = absl::StrCat("a", i);
    absl::StatusOr<v1::ActorState> created = proc.Create(name, "mesh.echo");
    INFO("cycle " << i << ": " << created.status());
    REQUIRE(created.ok());
    max_live = std::max(max_live, proc.runtime().live_actors());
    // Every other actor fails (its handler says so) instead of stopping:
    // its thread must end too.
    if (i % 2 == 0) {
      REQUIRE(proc.runtime().StopActor(name, "cycle").ok());
    } else {
      v1::Fail fail;
      fail.set_why("cycle");
      proc.mailbox().Deliver(Runtime::ToActor(name, fail));
    }
    absl::StatusOr<v1::WaitActorsResponse> ended =
        proc.Wait({name}, v1::STOPPED);
    REQUIRE(ended.ok());
    REQUIRE_FALSE(ended->timed_out());
  }
  // Joined on the runtime's loop thread, shortly after each actor ended.
  const bool threads_back = testing::Eventually(
      [&] { return Self().num_threads <= threads_before + 2; },
      absl::Seconds(10));
  const ProcStat after = Self();
  const int64_t page = sysconf(_SC_PAGESIZE);
  const int64_t rss_before = before.resident_pages * page;
  const int64_t rss_after = after.resident_pages * page;
  WARN("threads " << threads_before << " -> " << after.num_threads << ", RSS "
                  << rss_before / 1024 << " KiB -> " << rss_after / 1024
                  << " KiB, virtual " << before.virtual_bytes / (1 << 20)
                  << " MiB -> " << after.virtual_bytes / (1 << 20)
                  << " MiB, live at most " << max_live);
  CHECK(proc.runtime().live_actors() == 0);
  CHECK(max_live <= 1);
  CHECK(threads_back);
  // Each actor thread not joined would keep its stack (8 MiB virtual, some
  // of it resident) and each actor not forgotten its cell; 1,800 of them
  // would be far over these.
  // (AddressSanitizer keeps freed memory in quarantine, so there only the
  // virtual bound and LeakSanitizer speak.)
#ifndef __SANITIZE_ADDRESS__
  CHECK(rss_after <= rss_before + (16 << 20));
#endif
  CHECK(after.virtual_bytes <= before.virtual_bytes + (512 << 20));
  // The history is bounded: the last 256 finished actors.
  CHECK(Eventually([&] { return proc.runtime().ListActors().size() == 256; }));
  CHECK(proc.runtime().GetActorState("a0").status().code() ==
        absl::StatusCode::kNotFound);
  CHECK(proc.runtime().GetActorState(absl::StrCat("a", kCycles - 1)).ok());
}

TEST_CASE("only live actors count against the proc's limit") {
  ProcRuntime::Options options;
  options.max_actors = 3;
  options.max_finished_actors = 2;
  Runtime proc(options);
  for (const char* name : {"a0", "a1", "a2"}) {
    REQUIRE(proc.Create(name, "mesh.echo").ok());
  }
  absl::StatusOr<v1::ActorState> refused = proc.Create("a3", "mesh.echo");
  CHECK(refused.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(absl::StrContains(refused.status().message(),
                          "has 3 live actors, its limit"));
  CHECK(proc.runtime().GetProcInfo().num_actors() == 3);

  REQUIRE(proc.runtime().StopActor("a0", "room").ok());
  REQUIRE(proc.Wait({"a0"}, v1::STOPPED).ok());
  REQUIRE(proc.Create("a3", "mesh.echo").ok());
  CHECK(proc.runtime().GetProcInfo().num_actors() == 3);

  SECTION("the oldest finished actor is forgotten; its name is free again") {
    for (const char* name : {"a1", "a2"}) {
      REQUIRE(proc.runtime().StopActor(name, "done").ok());
      REQUIRE(proc.Wait({name}, v1::STOPPED).ok());
    }
    // Finished: a0, a1, a2; two are kept.
    CHECK(proc.runtime().GetActorState("a0").status().code() ==
          absl::StatusCode::kNotFound);
    CHECK(proc.runtime().GetActorState("a1")->status() == v1::STOPPED);
    CHECK(proc.runtime().GetActorState("a2")->status() == v1::STOPPED);
    CHECK(proc.runtime().ListActors().size() == 3);
    absl::StatusOr<v1::ActorState> again = proc.Create("a0", "mesh.echo");
    REQUIRE(again.ok());
    CHECK(again->status() != v1::STOPPED);
    CHECK(again->generation() <= 2);
  }
}

TEST_CASE(
    "a full actor queue refuses with RESOURCE_EXHAUSTED and the other actors "
    "keep answering") {
  ProcRuntime::Options options;
  options.max_queued_messages = 4;
  Runtime proc(options);
  v1::PortRef supervisor = proc.client().OpenPort();
  supervisor.set_port(1000);  // a port of the fake client: the sender
  REQUIRE(proc.Create("slow", "test.gate", &supervisor).ok());
  REQUIRE(proc.Create("fast", "mesh.echo").ok());

  v1::PortRef replies = proc.client().OpenPort();
  v1::Echo echo;
  echo.set_text("hi");
  // One in the handler, four queued.
  proc.mailbox().Deliver(Runtime::ToActor("slow", echo, &replies));
  REQUIRE(proc.gate().entered.WaitForNotificationWithTimeout(kTimeout));
  for (int i = 0; i < 4; ++i) {
    proc.mailbox().Deliver(Runtime::ToActor("slow", echo, &replies));
  }
  CHECK(proc.client().Sent(replies).empty());

  // The fifth waiting one is refused at once, on the deliverer's thread.
  v1::PortRef refused_port = proc.client().OpenPort();
  proc.mailbox().Deliver(Runtime::ToActor("slow", echo, &refused_port));
  std::vector<v1::Envelope> refused = proc.client().Sent(refused_port);
  REQUIRE(refused.size() == 1);
  CHECK(ErrorOf(refused[0]).code() == absl::StatusCode::kResourceExhausted);
  CHECK(ErrorOf(refused[0]).message() ==
        "actor \"slow\" on proc \"p0\" has 4 queued messages, its limit");

  // Without a reply_to its sender, the supervisor, hears it once.
  proc.mailbox().Deliver(Runtime::ToActor("slow", echo));
  proc.mailbox().Deliver(Runtime::ToActor("slow", echo));
  std::vector<v1::Envelope> told = proc.client().Sent(supervisor);
  REQUIRE(told.size() == 1);
  absl::StatusOr<v1::SupervisionEvent> event =
      UnpackPayload<v1::SupervisionEvent>(told[0]);
  REQUIRE(event.ok());
  CHECK(event->cause() == v1::SupervisionEvent::MESSAGE_REFUSED);
  CHECK(event->actor().name() == "slow");
  CHECK(event->actor().status() == v1::RUNNING);
  CHECK(absl::StrContains(event->message(), "has 4 queued messages"));

  // Another actor answers meanwhile.
  v1::PortRef fast_replies = proc.client().OpenPort();
  proc.mailbox().Deliver(Runtime::ToActor("fast", echo, &fast_replies));
  CHECK(UnpackPayload<v1::Echo>(proc.client().WaitEnvelopes(fast_replies, 1)[0])
            ->text() == "hi");

  // Once the actor catches up, the queued ones are answered.
  proc.gate().open.Notify();
  for (const v1::Envelope& reply : proc.client().WaitEnvelopes(replies, 5)) {
    CHECK(UnpackPayload<v1::Echo>(reply).ok());
  }
  CHECK(proc.client().Sent(supervisor).size() == 1);
}

TEST_CASE(
    "an actor's state shows the handler it runs now, since when, and the "
    "messages waiting behind it") {
  Runtime proc;
  REQUIRE(proc.Create("slow", "test.gate").ok());
  absl::StatusOr<v1::ActorState> idle = proc.runtime().GetActorState("slow");
  REQUIRE(idle.ok());
  CHECK(idle->queue_depth() == 0);
  CHECK(idle->current_handler().empty());
  CHECK_FALSE(idle->has_current_handler_since());
  CHECK(idle->last_handler().empty());

  v1::PortRef replies = proc.client().OpenPort();
  v1::Echo echo;
  echo.set_text("hi");
  const absl::Time before = absl::Now();
  proc.mailbox().Deliver(Runtime::ToActor("slow", echo, &replies));
  REQUIRE(proc.gate().entered.WaitForNotificationWithTimeout(kTimeout));
  for (int i = 0; i < 3; ++i) {
    proc.mailbox().Deliver(Runtime::ToActor("slow", echo, &replies));
  }
  absl::StatusOr<v1::ActorState> stuck = proc.runtime().GetActorState("slow");
  REQUIRE(stuck.ok());
  CHECK(stuck->current_handler() == "mesh.v1.Echo");
  REQUIRE(stuck->has_current_handler_since());
  const absl::Time since = absl::FromUnixNanos(
      google::protobuf::util::TimeUtil::TimestampToNanoseconds(
          stuck->current_handler_since()));
  CHECK(since >= before - absl::Milliseconds(1));
  CHECK(since <= absl::Now());
  CHECK(stuck->queue_depth() == 3);
  CHECK(stuck->messages_handled() == 0);
  // The same in a list.
  std::vector<v1::ActorState> listed = proc.runtime().ListActors();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].queue_depth() == 3);

  proc.gate().Open();
  proc.client().WaitEnvelopes(replies, 4);
  CHECK(Eventually([&] {
    absl::StatusOr<v1::ActorState> done = proc.runtime().GetActorState("slow");
    return done.ok() && done->messages_handled() == 4 &&
           done->queue_depth() == 0 && done->current_handler().empty() &&
           !done->has_current_handler_since() &&
           done->last_handler() == "mesh.v1.Echo";
  }));
}

TEST_CASE(
    "an actor's last handler shows how long it ran on the runtime's "
    "clock") {
  FakeClock clock;
  ProcRuntime::Options options;
  options.clock = &clock;
  Runtime proc(options);
  REQUIRE(proc.Create("slow", "test.gate").ok());
  v1::PortRef replies = proc.client().OpenPort();
  proc.mailbox().Deliver(Runtime::ToActor("slow", v1::Echo(), &replies));
  REQUIRE(proc.gate().entered.WaitForNotificationWithTimeout(kTimeout));
  clock.Advance(absl::Milliseconds(250));
  proc.gate().Open();
  proc.client().WaitEnvelopes(replies, 1);
  CHECK(Eventually([&] {
    absl::StatusOr<v1::ActorState> done = proc.runtime().GetActorState("slow");
    return done.ok() && done->last_handler() == "mesh.v1.Echo" &&
           done->last_handler_micros() == 250000 &&
           done->current_handler().empty();
  }));
}

TEST_CASE("waits and timers run on the runtime's clock") {
  FakeClock clock;
  ProcRuntime::Options options;
  options.clock = &clock;
  Runtime proc(options);
  absl::Mutex mu;
  std::optional<v1::WaitActorsResponse> waited;
  std::optional<absl::Status> fired;
  proc.runtime().WaitActors(
      {"never"}, v1::RUNNING, absl::Hours(1),
      [&](absl::StatusOr<v1::WaitActorsResponse> response) {
        absl::MutexLock lock(&mu);
        waited = response.ok() ? *response : v1::WaitActorsResponse();
      });
  proc.runtime().After(absl::Minutes(90), [&](absl::Status status) {
    absl::MutexLock lock(&mu);
    fired = status;
  });
  auto answered = [&] {
    absl::MutexLock lock(&mu);
    return waited.has_value();
  };
  auto timer_fired = [&] {
    absl::MutexLock lock(&mu);
    return fired.has_value();
  };
  // Real time passing moves nothing; the clock does.
  absl::SleepFor(absl::Milliseconds(50));
  clock.Advance(absl::Minutes(59));
  absl::SleepFor(absl::Milliseconds(50));
  CHECK_FALSE(answered());
  clock.Advance(absl::Minutes(1));
  REQUIRE(Eventually(answered));
  {
    absl::MutexLock lock(&mu);
    CHECK(waited->timed_out());
    REQUIRE(waited->actors_size() == 1);
    CHECK(waited->actors(0).status() == v1::NOT_EXIST);
  }
  CHECK_FALSE(timer_fired());
  clock.Advance(absl::Minutes(30));
  REQUIRE(Eventually(timer_fired));
  absl::MutexLock lock(&mu);
  CHECK(fired->ok());
}

TEST_CASE("a message to a badly named actor is INVALID_ARGUMENT") {
  Runtime proc;
  v1::PortRef port = proc.client().OpenPort();
  proc.mailbox().Deliver(Runtime::ToActor("Not A Name", v1::Echo(), &port));
  absl::Status error = ErrorOf(proc.client().WaitEnvelopes(port, 1)[0]);
  CHECK(error.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(error.message(), "actor name"));
}

}  // namespace
}  // namespace mesh
