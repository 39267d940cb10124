// The client's side of the relay: Client, and ActorMesh's Cast, Call and
// Reduce, against fake hosts (in-process Relay servers that answer for
// their procs' actors). hostd's real routing is tested in tests/.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "client/testing/host_events.h"
#include "client/testing/supervision_events.h"
#include "hostmesh/hostmesh.h"
#include "lib/mailbox/mailbox.h"
#include "lib/mailbox/reduce.h"
#include "lib/relay/relay_server_stream.h"
#include "lib/relay/relay_stream.h"
#include "lib/status.h"
#include "lib/testing/sockets.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"

namespace mesh {
namespace {

using testing::HostEvents;
using testing::NewHealthClient;
using testing::SupervisionEvents;

constexpr absl::Duration kWait = absl::Seconds(30);

// A host's Relay service that answers for its procs' actors itself: each
// cast target gets an Echo reply naming it ("<proc>/<actor>#<rank>"), a
// reduced cast one Reduced, folded here. Procs in `gone` are reported lost
// (MailboxLost) instead, procs in `silent` never answer; a `mute` host
// answers nothing, a `breaking` host cancels the stream that brought an
// envelope. Thread-safe.
class FakeHost final : public v1::Relay::CallbackService {
 public:
  FakeHost() {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  ~FakeHost() {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }

  const std::string& address() const { return address_; }

  void SetGone(std::set<std::string> procs) {
    absl::MutexLock lock(&mu_);
    gone_ = std::move(procs);
  }
  void SetSilent(std::set<std::string> procs) {
    absl::MutexLock lock(&mu_);
    silent_ = std::move(procs);
  }
  void SetMute(bool mute) {
    absl::MutexLock lock(&mu_);
    mute_ = mute;
  }
  void SetBreaking(bool breaking) {
    absl::MutexLock lock(&mu_);
    breaking_ = breaking;
  }
  // Refuses every cast as a whole, as hostd does for one over its limits.
  void SetRefusing(bool refusing) {
    absl::MutexLock lock(&mu_);
    refusing_ = refusing;
  }
  std::vector<std::string> senders() {
    absl::MutexLock lock(&mu_);
    return senders_;
  }
  std::vector<v1::Envelope> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  bool WaitStreams(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return senders_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }
  bool WaitReceived(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return received_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }
  // Writes `frame` on every open stream.
  void Push(const v1::RelayFrame& frame) {
    absl::MutexLock lock(&mu_);
    for (Stream* stream : streams_) stream->Write({frame});
  }
  // Cancels every open stream, as a hostd that died would end them.
  void CancelStreams() {
    absl::MutexLock lock(&mu_);
    for (Stream* stream : streams_) stream->Cancel();
  }

 private:
  class Stream final : public RelayServerStream {
   public:
    Stream(FakeHost* host, grpc::CallbackServerContext* context)
        : RelayServerStream(context), host_(host) {}

    void Write(std::vector<v1::RelayFrame> frames) {
      for (auto& frame : frames) {
        RelayServerStream::Write(std::move(frame)).IgnoreError();
      }
    }

   private:
    void OnFrame(v1::RelayFrame& frame) override {
      if (frame.has_heartbeat()) {
        host_->CountHeartbeat(frame.heartbeat());
        return;
      }
      std::vector<v1::RelayFrame> answers;
      if (host_->Answer(frame.envelope(), &answers)) {
        Cancel();
      } else {
        Write(std::move(answers));
      }
    }
    void OnStreamDone() override { host_->Remove(this); }

    FakeHost* const host_;
  };

  grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* Connect(
      grpc::CallbackServerContext* context) override {
    absl::MutexLock lock(&mu_);
    senders_.push_back(RelayServerStream::SenderOf(*context));
    auto* stream = new Stream(this, context);
    streams_.insert(stream);
    stream->StartReading();
    return stream;
  }

  void Remove(Stream* stream) {
    absl::MutexLock lock(&mu_);
    streams_.erase(stream);
  }

  void CountHeartbeat(const v1::Heartbeat& heartbeat) {
    absl::MutexLock lock(&mu_);
    ++heartbeats_;
    last_heartbeat_ = heartbeat;
  }

 public:
  // Waits for `n` heartbeats from clients; the last one.
  std::optional<v1::Heartbeat> WaitHeartbeats(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return heartbeats_ >= n;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&enough), kWait)) {
      return std::nullopt;
    }
    return last_heartbeat_;
  }

 private:
  // The frames that answer `envelope`; true to break the stream instead.
  bool Answer(const v1::Envelope& envelope,
              std::vector<v1::RelayFrame>* answers) {
    absl::MutexLock lock(&mu_);
    received_.push_back(envelope);
    if (breaking_) return true;
    if (mute_ || !envelope.has_reply_to()) return false;
    if (refusing_) {
      v1::Envelope refusal;
      AddressTo(envelope.reply_to(), &refusal);
      refusal.set_correlation(envelope.correlation());
      *refusal.mutable_error() =
          ToErrorProto(absl::ResourceExhaustedError("a cast over the limit"));
      answers->emplace_back().mutable_envelope()->Swap(&refusal);
      return false;
    }
    std::vector<uint64_t> ranks;
    for (const v1::CastTarget& target : envelope.targets()) {
      ranks.push_back(target.cast_rank());
    }
    ReplyFold fold(envelope.reduce(), envelope.reduce_field(), ranks);
    for (const v1::CastTarget& target : envelope.targets()) {
      if (gone_.count(target.proc()) > 0) {
        v1::RelayFrame lost;
        lost.mutable_lost()->set_host(address_);
        lost.mutable_lost()->set_mailbox(target.proc());
        *lost.mutable_lost()->mutable_reason() = ToErrorProto(
            absl::UnavailableError(absl::StrCat(target.proc(), " exited")));
        answers->push_back(lost);
        fold.Fail(target.cast_rank(), absl::UnavailableError("gone"));
        continue;
      }
      if (silent_.count(target.proc()) > 0) continue;
      v1::Echo echo;
      echo.set_text(absl::StrCat(target.proc(), "/", target.actor(), "#",
                                 target.cast_rank()));
      v1::Envelope reply = EnvelopeToPort(envelope.reply_to(), echo);
      reply.set_correlation(target.cast_rank());
      if (envelope.reduce() == v1::REDUCE_NONE) {
        answers->emplace_back().mutable_envelope()->Swap(&reply);
      } else {
        fold.Add(std::move(reply));
      }
    }
    if (envelope.reduce() != v1::REDUCE_NONE) {
      v1::Reduced reduced = std::move(fold).Finish(
          absl::DeadlineExceededError("did not reply in time"));
      v1::Envelope reply = EnvelopeToPort(envelope.reply_to(), reduced);
      answers->emplace_back().mutable_envelope()->Swap(&reply);
    }
    return false;
  }

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  absl::Mutex mu_;
  std::set<Stream*> streams_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> senders_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Envelope> received_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> gone_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> silent_ ABSL_GUARDED_BY(mu_);
  bool mute_ ABSL_GUARDED_BY(mu_) = false;
  bool breaking_ ABSL_GUARDED_BY(mu_) = false;
  bool refusing_ ABSL_GUARDED_BY(mu_) = false;
  size_t heartbeats_ ABSL_GUARDED_BY(mu_) = 0;
  v1::Heartbeat last_heartbeat_ ABSL_GUARDED_BY(mu_);
};

std::shared_ptr<Client> NewClient() {
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create();
  REQUIRE(client.ok());
  return *client;
}

// An actor mesh "a" over procs p0..p{n-1}, rank i on hosts[i % hosts.size()].
ActorMesh MeshOn(std::shared_ptr<Client> client,
                 const std::vector<std::string>& hosts, size_t n) {
  std::vector<v1::ActorRef> refs;
  for (size_t rank = 0; rank < n; ++rank) {
    v1::ActorRef& ref = refs.emplace_back();
    ref.set_host(hosts[rank % hosts.size()]);
    ref.set_proc(absl::StrCat("p", rank));
    ref.set_actor("a");
    ref.set_rank(rank);
  }
  return ActorMesh(std::move(client), "a", "mesh.echo", Extent({{"procs", n}}),
                   std::move(refs));
}

// A 127.0.0.1 address nothing listens on.
std::string ClosedAddress() { return testing::ClosedLoopbackAddress(); }

TEST_CASE("a client's mailbox is client:<16 hex> and its ports have no host") {
  std::shared_ptr<Client> client = NewClient();
  CHECK(client->id().size() == 7 + 16);
  CHECK(absl::StartsWith(client->id(), "client:"));
  CHECK(client->id() != NewClient()->id());
  Port<v1::Echo> port = client->OpenPort<v1::Echo>();
  CHECK(port.ref().host().empty());
  CHECK(port.ref().mailbox() == client->id());
  CHECK(client->supervisor_port().mailbox() == client->id());
  CHECK(client->Connect("").code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Connect opens one relay stream that names the client") {
  FakeHost host;
  std::shared_ptr<Client> client = NewClient();
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(host.WaitStreams(1));
  CHECK(host.senders() == std::vector<std::string>{client->id()});

  SECTION("and the host reaches the client's ports over it") {
    Port<v1::Echo> port = client->OpenPort<v1::Echo>();
    v1::Echo echo;
    echo.set_text("from the host");
    v1::RelayFrame frame;
    *frame.mutable_envelope() = EnvelopeToPort(port.ref(), echo);
    host.Push(frame);
    absl::StatusOr<v1::Echo> got = port.Recv(kWait);
    REQUIRE(got.ok());
    CHECK(got->text() == "from the host");
  }
  SECTION("supervision events reach the handler") {
    absl::Mutex mu;
    std::string failed;
    client->OnSupervisionEvent([&](const v1::SupervisionEvent& event) {
      absl::MutexLock lock(&mu);
      failed = event.actor().name();
    });
    v1::SupervisionEvent event;
    event.mutable_actor()->set_name("a0");
    event.mutable_actor()->set_status(v1::FAILED);
    v1::RelayFrame frame;
    *frame.mutable_envelope() =
        EnvelopeToPort(client->supervisor_port(), event);
    host.Push(frame);
    absl::MutexLock lock(&mu);
    auto got = [&]() { return !failed.empty(); };
    REQUIRE(mu.AwaitWithTimeout(absl::Condition(&got), kWait));
    CHECK(failed == "a0");
  }
}

TEST_CASE("Cast sends one envelope per host listing that host's ranks") {
  FakeHost h0;
  FakeHost h1;
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {h0.address(), h1.address()}, 4);
  v1::Echo echo;
  echo.set_text("hi");
  REQUIRE(mesh.Cast(echo).ok());
  REQUIRE(h0.WaitReceived(1));
  REQUIRE(h1.WaitReceived(1));
  v1::Envelope to_h1 = h1.received()[0];
  CHECK(to_h1.to_host() == h1.address());
  CHECK(to_h1.to_mailbox().empty());
  CHECK(to_h1.dest_case() == v1::Envelope::DEST_NOT_SET);
  CHECK_FALSE(to_h1.has_reply_to());
  CHECK(to_h1.sender() == client->id());
  REQUIRE(to_h1.targets_size() == 2);
  CHECK(to_h1.targets(0).proc() == "p1");
  CHECK(to_h1.targets(0).actor() == "a");
  CHECK(to_h1.targets(0).cast_rank() == 1);
  CHECK(to_h1.targets(1).proc() == "p3");
  CHECK(to_h1.targets(1).cast_rank() == 3);
  CHECK(h0.received().size() == 1);

  SECTION("a slice casts with view ranks") {
    absl::StatusOr<ActorMesh> tail = mesh.Slice("procs", 2, 4);
    REQUIRE(tail.ok());
    REQUIRE(tail->Cast(echo).ok());
    REQUIRE(h1.WaitReceived(2));
    v1::Envelope sliced = h1.received()[1];
    REQUIRE(sliced.targets_size() == 1);
    CHECK(sliced.targets(0).proc() == "p3");
    CHECK(sliced.targets(0).cast_rank() == 1);
  }
}

TEST_CASE("Call gathers one reply per rank, in rank order") {
  FakeHost h0;
  FakeHost h1;
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {h0.address(), h1.address()}, 5);
  auto replies = mesh.Call<v1::Echo>(v1::Echo(), kWait);
  REQUIRE(replies.size() == 5);
  for (size_t rank = 0; rank < 5; ++rank) {
    INFO(rank);
    REQUIRE(replies[rank].ok());
    CHECK(replies[rank]->text() == absl::StrCat("p", rank, "/a#", rank));
  }
  // One stream per host, however many calls.
  mesh.Call<v1::Echo>(v1::Echo(), kWait);
  CHECK(h0.senders().size() == 1);
  CHECK(h1.senders().size() == 1);
}

TEST_CASE("a proc that is gone fails its ranks at once, naming them") {
  FakeHost host;
  host.SetGone({"p1"});
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {host.address()}, 3);
  // Far longer than the test may take: the loss must be what ends it.
  auto replies = mesh.Call<v1::Echo>(v1::Echo(), absl::Hours(1));
  REQUIRE(replies.size() == 3);
  CHECK(replies[0].ok());
  CHECK(replies[2].ok());
  absl::Status gone = replies[1].status();
  CHECK(gone.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(gone.message()) ==
        absl::StrCat("rank 1 (actor p1/a on host ", host.address(),
                     ") cannot answer: p1 exited"));
}

TEST_CASE(
    "a host that refuses a whole cast fails every rank on that host at once") {
  FakeHost h0;
  FakeHost h1;
  h1.SetRefusing(true);
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {h0.address(), h1.address()}, 4);
  auto replies = mesh.Call<v1::Echo>(v1::Echo(), absl::Hours(1));
  REQUIRE(replies.size() == 4);
  for (size_t rank = 0; rank < 4; ++rank) {
    INFO(rank);
    if (rank % 2 == 0) {
      CHECK(replies[rank].ok());  // on h0
    } else {
      CHECK(replies[rank].status().code() ==
            absl::StatusCode::kResourceExhausted);
    }
  }
}

TEST_CASE("a rank that does not answer fails with DEADLINE_EXCEEDED") {
  FakeHost host;
  host.SetSilent({"p0"});
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {host.address()}, 2);
  auto replies = mesh.Call<v1::Echo>(v1::Echo(), absl::Milliseconds(300));
  CHECK(replies[1].ok());
  CHECK(replies[0].status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(std::string(replies[0].status().message()) ==
        absl::StrCat("rank 0 (actor p0/a on host ", host.address(),
                     ") did not reply within 300ms"));
}

TEST_CASE(
    "a broken host stream fails that host's ranks; the next send "
    "reopens it") {
  FakeHost good;
  FakeHost bad;
  bad.SetBreaking(true);
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {good.address(), bad.address()}, 4);
  auto replies = mesh.Call<v1::Echo>(v1::Echo(), absl::Hours(1));
  CHECK(replies[0].ok());
  CHECK(replies[2].ok());
  for (size_t rank : {1, 3}) {
    INFO(rank);
    CHECK(replies[rank].status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(
        std::string(replies[rank].status().message()),
        Catch::Contains(absl::StrCat("on host ", bad.address(),
                                     ") cannot answer: relay stream to host ",
                                     bad.address(), " ended")));
  }

  bad.SetBreaking(false);
  // The stream that broke may still be on its way out; then a send fails
  // once more (UNAVAILABLE) and the following one opens a new stream.
  bool all_ok = false;
  for (int attempt = 0; attempt < 50 && !all_ok; ++attempt) {
    auto again = mesh.Call<v1::Echo>(v1::Echo(), kWait);
    all_ok = true;
    for (const auto& reply : again) all_ok = all_ok && reply.ok();
  }
  CHECK(all_ok);
  CHECK(bad.senders().size() >= 2);
}

TEST_CASE("ranks on a host nobody listens on fail with UNAVAILABLE") {
  FakeHost good;
  std::string nowhere = ClosedAddress();
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {good.address(), nowhere}, 2);
  auto replies = mesh.Call<v1::Echo>(v1::Echo(), absl::Hours(1));
  CHECK(replies[0].ok());
  CHECK(replies[1].status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(replies[1].status().message()),
             Catch::Contains(nowhere));
}

TEST_CASE("Reduce combines one answer per host") {
  FakeHost h0;
  FakeHost h1;
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {h0.address(), h1.address()}, 5);

  SECTION("COUNT counts every rank that replied") {
    absl::StatusOr<v1::Reduced> count =
        mesh.Reduce(v1::Echo(), v1::REDUCE_COUNT, kWait);
    REQUIRE(count.ok());
    CHECK(count->ok() == 5);
    CHECK(count->failed() == 0);
    CHECK(count->value() == 5);
    // Each host got one envelope for its ranks, with the fold asked for.
    REQUIRE(h1.received().size() == 1);
    CHECK(h1.received()[0].reduce() == v1::REDUCE_COUNT);
    CHECK(h1.received()[0].targets_size() == 2);
    CHECK(h1.received()[0].reduce_timeout_ms() == 30000);
  }
  SECTION("COLLECT keeps every reply in rank order") {
    absl::StatusOr<v1::Reduced> all =
        mesh.Reduce(v1::Echo(), v1::REDUCE_COLLECT, kWait);
    REQUIRE(all.ok());
    REQUIRE(all->replies_size() == 5);
    for (int rank = 0; rank < 5; ++rank) {
      CHECK(all->replies(rank).correlation() == static_cast<uint64_t>(rank));
      CHECK(UnpackPayload<v1::Echo>(all->replies(rank))->text() ==
            absl::StrCat("p", rank, "/a#", rank));
    }
  }
  SECTION("a proc that is gone counts as failed, with the host's error") {
    h1.SetGone({"p3"});
    absl::StatusOr<v1::Reduced> count =
        mesh.Reduce(v1::Echo(), v1::REDUCE_COUNT, kWait);
    REQUIRE(count.ok());
    CHECK(count->ok() == 4);
    CHECK(count->failed() == 1);
    CHECK(count->first_error_rank() == 3);
  }
  SECTION("a host that does not answer fails all its ranks") {
    h1.SetMute(true);
    absl::StatusOr<v1::Reduced> count =
        mesh.Reduce(v1::Echo(), v1::REDUCE_COUNT, absl::Milliseconds(100));
    REQUIRE(count.ok());
    CHECK(count->ok() == 3);
    CHECK(count->failed() == 2);
    CHECK(count->first_error_rank() == 1);
    absl::Status first = FromErrorProto(count->first_error());
    CHECK(first.code() == absl::StatusCode::kDeadlineExceeded);
    CHECK(std::string(first.message()) ==
          absl::StrCat("rank 1 (actor p1/a on host ", h1.address(), "): host ",
                       h1.address(), " did not answer within 1.1s"));
  }
  SECTION("REDUCE_NONE and unknown folds are INVALID_ARGUMENT") {
    CHECK(mesh.Reduce(v1::Echo(), v1::REDUCE_NONE).status().code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(
        mesh.Reduce(v1::Echo(), static_cast<v1::Reduce>(99)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  }
}

// Pushes heartbeats to every open stream of a host, as hostd does, every
// `interval` while not paused.
class Heartbeats {
 public:
  Heartbeats(FakeHost& host, absl::Duration interval)
      : host_(host), interval_(interval), thread_([this] { Run(); }) {}
  ~Heartbeats() {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    thread_.join();
  }
  void Pause(bool paused) {
    absl::MutexLock lock(&mu_);
    paused_ = paused;
  }
  void SetIncarnation(uint64_t incarnation) {
    absl::MutexLock lock(&mu_);
    incarnation_ = incarnation;
  }

 private:
  void Run() {
    absl::MutexLock lock(&mu_);
    while (!mu_.AwaitWithTimeout(absl::Condition(&done_), interval_)) {
      if (paused_) continue;
      v1::RelayFrame frame;
      frame.mutable_heartbeat()->set_incarnation(incarnation_);
      frame.mutable_heartbeat()->set_interval_ms(
          absl::ToInt64Milliseconds(interval_));
      host_.Push(frame);
    }
  }

  FakeHost& host_;
  const absl::Duration interval_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t incarnation_ ABSL_GUARDED_BY(mu_) = 1;
  std::thread thread_;
};

// Short bounds, so that a test takes well under a second per event.
constexpr absl::Duration kBeat = absl::Milliseconds(50);
constexpr absl::Duration kUnreachableAfter = absl::Milliseconds(300);

TEST_CASE("host health options are checked") {
  Client::Options options;
  options.unreachable_after = absl::ZeroDuration();
  CHECK(Client::Create(options).status().code() ==
        absl::StatusCode::kInvalidArgument);
  options.unreachable_after = absl::Seconds(1);
  options.lost_after = -absl::Seconds(1);
  CHECK(Client::Create(options).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a host is unknown until its first heartbeat, then reachable") {
  FakeHost host;
  HostEvents events;
  std::shared_ptr<Client> client =
      NewHealthClient(events, kUnreachableAfter, absl::Seconds(30));
  CHECK(client->HostHealth(host.address()).state == HostState::kUnknown);
  Heartbeats beats(host, kBeat);
  REQUIRE(client->Connect(host.address()).ok());
  std::optional<HostEvent> event = events.Next();
  REQUIRE(event.has_value());
  CHECK(event->host == host.address());
  CHECK(event->state == HostState::kReachable);
  CHECK(event->previous == HostState::kUnknown);
  CHECK(event->incarnation == 1);
  CHECK(client->HostHealth(host.address()).state == HostState::kReachable);
}

TEST_CASE(
    "a silent host is unreachable within the bound: calls to it fail at "
    "once naming it, and it is reachable again when heartbeats resume") {
  FakeHost host;
  HostEvents events;
  std::shared_ptr<Client> client =
      NewHealthClient(events, kUnreachableAfter, absl::Seconds(30));
  Heartbeats beats(host, kBeat);
  ActorMesh mesh = MeshOn(client, {host.address()}, 2);
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(events.Next()->state == HostState::kReachable);
  REQUIRE(mesh.Call<v1::Echo>(v1::Echo(), kWait)[0].ok());

  beats.Pause(true);
  absl::Time paused = absl::Now();
  std::optional<HostEvent> event = events.Next();
  REQUIRE(event.has_value());
  absl::Duration detected = absl::Now() - paused;
  CHECK(event->state == HostState::kUnreachable);
  CHECK(event->procs.empty());  // nothing is declared lost
  CHECK_THAT(event->reason, Catch::Contains(absl::StrCat("no frame from host ",
                                                         host.address())));
  // The bound, a tick and a beat, with room for a loaded machine.
  CHECK(detected >= kUnreachableAfter - kBeat);
  CHECK(detected < 5 * kUnreachableAfter);
  WARN("unreachable detected after " << absl::FormatDuration(detected));

  absl::Time start = absl::Now();
  auto replies = mesh.Call<v1::Echo>(v1::Echo(), absl::Hours(1));
  CHECK(absl::Now() - start < absl::Seconds(1));
  for (const auto& reply : replies) {
    CHECK(reply.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(reply.status().message()),
               Catch::Contains(
                   absl::StrCat("host ", host.address(), " is unreachable")));
  }
  CHECK(client->HostHealth(host.address()).state == HostState::kUnreachable);

  beats.Pause(false);
  event = events.Next();
  REQUIRE(event.has_value());
  CHECK(event->state == HostState::kReachable);
  CHECK(event->previous == HostState::kUnreachable);
  CHECK_THAT(event->reason, Catch::Contains("reachable again"));
  auto again = mesh.Call<v1::Echo>(v1::Echo(), kWait);
  CHECK(again[0].ok());
  CHECK(again[1].ok());
}

TEST_CASE(
    "a host unreachable past lost_after is lost, with the procs this client "
    "has there") {
  FakeHost host;
  HostEvents events;
  std::shared_ptr<Client> client =
      NewHealthClient(events, kUnreachableAfter, absl::Milliseconds(400));
  Heartbeats beats(host, kBeat);
  client->TrackProc(host.address(), "p0");
  client->TrackProc(host.address(), "p1");
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(events.Next()->state == HostState::kReachable);
  CHECK(client->HostHealth(host.address()).procs ==
        (std::vector<std::string>{"p0", "p1"}));

  beats.Pause(true);
  host.CancelStreams();  // the stream breaks: unreachable at once
  std::optional<HostEvent> event = events.Next();
  REQUIRE(event.has_value());
  CHECK(event->state == HostState::kUnreachable);
  CHECK_THAT(event->reason,
             Catch::Contains(absl::StrCat("relay stream to host ",
                                          host.address(), " ended")));
  absl::Time unreachable = absl::Now();
  event = events.Next();
  REQUIRE(event.has_value());
  CHECK(event->state == HostState::kLost);
  CHECK(event->procs == (std::vector<std::string>{"p0", "p1"}));
  CHECK_THAT(event->reason, Catch::Contains("lost after 400ms"));
  absl::Duration grace = absl::Now() - unreachable;
  CHECK(grace >= absl::Milliseconds(350));
  CHECK(grace < absl::Seconds(2));
  CHECK(client->HostHealth(host.address()).state == HostState::kLost);
  CHECK(client->HostHealth(host.address()).procs.empty());
}

TEST_CASE(
    "a host that comes back as another incarnation within the grace is "
    "lost, then reachable") {
  FakeHost host;
  HostEvents events;
  std::shared_ptr<Client> client =
      NewHealthClient(events, kUnreachableAfter, absl::Seconds(30));
  Heartbeats beats(host, kBeat);
  client->TrackProc(host.address(), "p0");
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(events.Next()->state == HostState::kReachable);

  SECTION("a restart") {
    beats.SetIncarnation(2);
    host.CancelStreams();
    CHECK(events.Next()->state == HostState::kUnreachable);
    std::optional<HostEvent> event = events.Next();
    REQUIRE(event.has_value());
    CHECK(event->state == HostState::kLost);
    CHECK(event->procs == std::vector<std::string>{"p0"});
    CHECK_THAT(event->reason, Catch::Contains("another incarnation"));
    CHECK(event->incarnation == 1);
    event = events.Next();
    REQUIRE(event.has_value());
    CHECK(event->state == HostState::kReachable);
    CHECK(event->incarnation == 2);
  }
  SECTION("a reconnect to the same incarnation loses nothing") {
    host.CancelStreams();
    CHECK(events.Next()->state == HostState::kUnreachable);
    std::optional<HostEvent> event = events.Next();
    REQUIRE(event.has_value());
    CHECK(event->state == HostState::kReachable);
    CHECK(client->HostHealth(host.address()).procs ==
          std::vector<std::string>{"p0"});
  }
  SECTION("a host that shuts down is lost without reconnecting") {
    beats.Pause(true);
    v1::RelayFrame closing;
    closing.mutable_heartbeat()->set_incarnation(1);
    closing.mutable_heartbeat()->set_closing(true);
    host.Push(closing);
    std::optional<HostEvent> event = events.Next();
    REQUIRE(event.has_value());
    CHECK(event->state == HostState::kLost);
    CHECK_THAT(event->reason, Catch::Contains("shut down"));
    host.CancelStreams();
    CHECK_FALSE(events.Next(absl::Milliseconds(500)).has_value());
    CHECK(host.senders().size() == 1);  // no reconnect

    // A call opens a stream again; one that gets no answer fails within
    // the bound, not at the call's deadline.
    host.SetMute(true);
    ActorMesh mesh = MeshOn(client, {host.address()}, 1);
    absl::Time start = absl::Now();
    auto replies = mesh.Call<v1::Echo>(v1::Echo(), absl::Hours(1));
    CHECK(absl::Now() - start < 5 * kUnreachableAfter);
    CHECK(replies[0].status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(
        std::string(replies[0].status().message()),
        Catch::Contains(absl::StrCat("host ", host.address(), " is lost: host ",
                                     host.address(), " shut down")));
    CHECK(host.senders().size() == 2);
  }
}

TEST_CASE("a host that is gone fails a Reduce's ranks on it at once") {
  FakeHost good;
  std::string nowhere = ClosedAddress();
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {good.address(), nowhere}, 4);
  absl::StatusOr<v1::Reduced> count =
      mesh.Reduce(v1::Echo(), v1::REDUCE_COUNT, absl::Hours(1));
  REQUIRE(count.ok());
  CHECK(count->ok() == 2);
  CHECK(count->failed() == 2);
  CHECK(FromErrorProto(count->first_error()).code() ==
        absl::StatusCode::kUnavailable);
}

// Supervision: what a client makes of procs' and actors' ends.

// The frame a host sends when proc `proc` was killed by SIGKILL (or, if
// `requested`, stopped when asked).
v1::RelayFrame ProcLost(const std::string& host, const std::string& proc,
                        bool requested = false) {
  v1::RelayFrame frame;
  v1::MailboxLost* lost = frame.mutable_lost();
  lost->set_host(host);
  lost->set_mailbox(proc);
  v1::ProcExit* exit = lost->mutable_exit();
  exit->set_proc(proc);
  exit->set_host(host);
  exit->set_pid(4242);
  exit->set_requested(requested);
  if (requested) {
    exit->set_status(v1::STOPPED);
    exit->set_exit_code(0);
    exit->set_stopped_by("exited");
    exit->set_reason(
        absl::StrCat("proc \"", proc, "\" stopped: exited with code 0"));
  } else {
    exit->set_status(v1::FAILED);
    exit->set_term_signal(9);
    exit->set_stopped_by("SIGKILL");
    exit->add_stderr_lines("out of cheese");
    exit->set_reason(absl::StrCat("proc \"", proc,
                                  "\" (pid 4242) was killed by SIGKILL "
                                  "(stderr: \"out of cheese\")"));
  }
  *lost->mutable_reason() =
      ToErrorProto(absl::UnavailableError(exit->reason()));
  return frame;
}

// Waits (briefly) until `mesh` is poisoned; its status.
absl::Status WaitPoisoned(const ActorMesh& mesh) {
  absl::Time deadline = absl::Now() + kWait;
  while (mesh.status().ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  return mesh.status();
}

TEST_CASE(
    "a proc's end becomes one event per actor for the mesh's handler, with "
    "its signal and stderr, once") {
  FakeHost host;
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {host.address()}, 3);
  SupervisionEvents events;
  mesh.OnSupervisionEvent(events.Handler());
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(host.WaitStreams(1));
  host.Push(ProcLost(host.address(), "p1"));
  host.Push(ProcLost(host.address(), "p1"));  // a duplicate: dropped
  std::vector<v1::SupervisionEvent> got = events.WaitFor(1);
  REQUIRE(got.size() == 1);
  const v1::SupervisionEvent& event = got[0];
  CHECK(event.cause() == v1::SupervisionEvent::PROC_ENDED);
  CHECK(event.failure());
  CHECK(event.mesh() == "a");
  CHECK(event.rank() == 1);
  CHECK(event.actor().status() == v1::FAILED);
  CHECK(event.actor().ref().proc() == "p1");
  CHECK(event.proc_exit().term_signal() == 9);
  CHECK(event.proc_exit().stderr_lines(0) == "out of cheese");
  CHECK(event.message() ==
        "actor p1/a (rank 1 of actor mesh a) failed: proc \"p1\" (pid 4242) "
        "was killed by SIGKILL (stderr: \"out of cheese\")");
  // Handled: the mesh works on; rank 1's calls fail with the proc's cause.
  CHECK(mesh.status().ok());
  // A second frame after the first one was handled is not a second event.
  host.Push(ProcLost(host.address(), "p1"));
  absl::SleepFor(absl::Milliseconds(100));
  CHECK(events.All().size() == 1);
}

TEST_CASE(
    "an unhandled failure poisons the mesh: every later Cast, Call and Reduce "
    "on it or its slices returns the failure") {
  FakeHost host;
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {host.address()}, 3);
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(host.WaitStreams(1));
  REQUIRE(mesh.Call<v1::Echo>(v1::Echo(), kWait)[2].ok());
  host.Push(ProcLost(host.address(), "p2"));
  absl::Status poisoned = WaitPoisoned(mesh);
  CHECK(poisoned.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(poisoned.message()) ==
        "actor mesh \"a\" is poisoned by an unhandled failure: actor p2/a "
        "(rank 2 of actor mesh a) failed: proc \"p2\" (pid 4242) was killed "
        "by SIGKILL (stderr: \"out of cheese\")");
  std::optional<v1::SupervisionEvent> event = SupervisionEventOf(poisoned);
  REQUIRE(event.has_value());
  CHECK(event->rank() == 2);
  CHECK(event->proc_exit().term_signal() == 9);

  const size_t received = host.received().size();
  for (const auto& reply : mesh.Call<v1::Echo>(v1::Echo(), kWait)) {
    CHECK(reply.status() == poisoned);
  }
  CHECK(mesh.Cast(v1::Echo()) == poisoned);
  CHECK(mesh.Reduce(v1::Echo(), v1::REDUCE_COUNT).status() == poisoned);
  absl::StatusOr<ActorMesh> first = mesh.Slice("procs", 0);
  REQUIRE(first.ok());
  CHECK(first->Cast(v1::Echo()) == poisoned);
  // Nothing was sent.
  CHECK(host.received().size() == received);
}

TEST_CASE("a stop that was asked for is an event but no failure") {
  FakeHost host;
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {host.address()}, 2);
  SupervisionEvents all;
  client->OnSupervisionEvent(all.Handler());
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(host.WaitStreams(1));
  host.Push(ProcLost(host.address(), "p0", /*requested=*/true));
  std::vector<v1::SupervisionEvent> got = all.WaitFor(1);
  REQUIRE(got.size() == 1);
  CHECK_FALSE(got[0].failure());
  CHECK(got[0].actor().status() == v1::STOPPED);
  CHECK(got[0].message() ==
        "actor p0/a (rank 0 of actor mesh a) stopped: proc \"p0\" stopped: "
        "exited with code 0");
  // No handler on the mesh, but the client-wide one took it; no failure.
  CHECK(mesh.status().ok());
}

TEST_CASE(
    "an actor's own failure reaches its mesh's handler naming its mesh and "
    "rank") {
  FakeHost host;
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {host.address()}, 3);
  SupervisionEvents events;
  mesh.OnSupervisionEvent(events.Handler());
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(host.WaitStreams(1));
  v1::SupervisionEvent from_proc;
  v1::ActorState* actor = from_proc.mutable_actor();
  actor->set_name("a");
  actor->set_rank(2);
  actor->set_status(v1::FAILED);
  actor->set_reason("INTERNAL: asked to fail: test");
  actor->mutable_ref()->set_host(host.address());
  actor->mutable_ref()->set_proc("p2");
  actor->mutable_ref()->set_actor("a");
  v1::RelayFrame frame;
  *frame.mutable_envelope() =
      EnvelopeToPort(client->supervisor_port(), from_proc);
  frame.mutable_envelope()->set_to_mailbox(client->id());
  // Hosts stamp the sender; only the actor's own proc speaks for it.
  frame.mutable_envelope()->set_sender(absl::StrCat("p1@", host.address()));
  host.Push(frame);  // dropped: p1 is not p2
  absl::SleepFor(absl::Milliseconds(200));
  CHECK(events.All().empty());
  frame.mutable_envelope()->set_sender(absl::StrCat("p2@", host.address()));
  host.Push(frame);
  std::vector<v1::SupervisionEvent> got = events.WaitFor(1);
  REQUIRE(got.size() == 1);
  CHECK(got[0].cause() == v1::SupervisionEvent::ACTOR_ENDED);
  CHECK(got[0].failure());
  CHECK(got[0].rank() == 2);
  CHECK(got[0].message() ==
        "actor p2/a (rank 2 of actor mesh a) failed: INTERNAL: asked to fail: "
        "test");
}

TEST_CASE(
    "a watched port fails at once with the mesh's failure, after what was "
    "queued") {
  FakeHost host;
  std::shared_ptr<Client> client = NewClient();
  ActorMesh mesh = MeshOn(client, {host.address()}, 2);
  mesh.OnSupervisionEvent([](const v1::SupervisionEvent&) {});
  Port<v1::Echo> port = client->OpenPort<v1::Echo>();
  port.Watch(mesh);
  REQUIRE(client->Connect(host.address()).ok());
  REQUIRE(host.WaitStreams(1));
  v1::Echo queued;
  queued.set_text("first");
  v1::RelayFrame frame;
  *frame.mutable_envelope() = EnvelopeToPort(port.ref(), queued);
  frame.mutable_envelope()->set_to_mailbox(client->id());
  host.Push(frame);
  host.Push(ProcLost(host.address(), "p0"));
  absl::StatusOr<v1::Echo> first = port.Recv(kWait);
  REQUIRE(first.ok());
  CHECK(first->text() == "first");
  absl::Time start = absl::Now();
  absl::StatusOr<v1::Echo> failed = port.Recv(absl::Hours(1));
  CHECK(absl::Now() - start < kWait);
  CHECK(failed.status().code() == absl::StatusCode::kUnavailable);
  CHECK(absl::StrContains(failed.status().message(), "killed by SIGKILL"));
  REQUIRE(SupervisionEventOf(failed.status()).has_value());
  // A port watched after the failure fails at once too.
  OncePort<v1::Echo> late = client->OpenOncePort<v1::Echo>();
  late.Watch(mesh);
  CHECK(late.Recv(absl::Hours(1)).status().code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE("a client sends heartbeats on its relay streams") {
  FakeHost host;
  Client::Options options;
  options.heartbeat_interval = absl::Milliseconds(20);
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  REQUIRE(client.ok());
  REQUIRE((*client)->Connect(host.address()).ok());
  std::optional<v1::Heartbeat> beat = host.WaitHeartbeats(5);
  REQUIRE(beat.has_value());
  CHECK(beat->interval_ms() == 20);
  CHECK(beat->incarnation() == 0);
  options.heartbeat_interval = absl::ZeroDuration();
  CHECK(Client::Create(options).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mesh
