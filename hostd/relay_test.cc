// hostd's relay in-process: ProcChannels and the Router against fake procs
// (the test speaks the proc side of the local channel itself) and fake relay
// streams. Fast, and no process is started.
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "hostd/proc_channels.h"
#include "hostd/router.h"
#include "lib/channel/frame_channel.h"
#include "lib/mailbox/mailbox.h"
#include "lib/status.h"
#include "lib/testing/collected.h"
#include "proto/actors.pb.h"

namespace mesh {
namespace {

constexpr char kHost[] = "127.0.0.1:7450";

using testing::Collected;

// The proc side of one channel, played by the test: answers the Welcome
// with Hello, echoes actor envelopes back to their reply_to (a Count with
// the cast rank as value) and answers every request with a ProcInfo. Its
// channel's thread makes no Catch2 assertion (they are not thread-safe):
// what went wrong there is in errors(), checked by ~Relay.
class FakeProc {
 public:
  FakeProc(int fd, uint32_t version = v1::PROC_CHANNEL_VERSION_CURRENT)
      : version_(version) {
    FrameChannel::Callbacks callbacks;
    callbacks.on_frame = [this](std::string_view bytes) {
      ready_.WaitForNotification();  // channel_ is set
      v1::HostFrame frame;
      if (!frame.ParseFromArray(bytes.data(), bytes.size())) {
        errors_.Add("a frame from the host does not parse");
        return;
      }
      OnFrame(frame);
    };
    auto channel = FrameChannel::Create(fd, {}, std::move(callbacks));
    REQUIRE(channel.ok());
    channel_ = *std::move(channel);
    ready_.Notify();
  }

  void Close() { channel_->Close(); }
  Collected<v1::HostFrame>& received() { return received_; }
  Collected<std::string>& errors() { return errors_; }
  // Stops answering envelopes (they are still recorded).
  void set_silent(bool silent) { silent_ = silent; }

 private:
  void OnFrame(const v1::HostFrame& frame) {
    received_.Add(frame);
    v1::ProcFrame out;
    if (frame.has_welcome()) {
      name_ = frame.welcome().name();
      out.mutable_hello()->set_protocol_version(version_);
      out.mutable_hello()->set_pid(getpid());
    } else if (frame.has_accepted()) {
      out.mutable_ready();
    } else if (frame.has_request()) {
      out.mutable_response()->set_id(frame.request().id());
      if (frame.request().has_wait_actors()) return;  // answers never
      out.mutable_response()->mutable_info()->set_name(name_);
    } else if (frame.has_envelope() && frame.envelope().has_reply_to()) {
      if (silent_) return;
      v1::Count count;
      count.set_value(static_cast<int64_t>(frame.envelope().cast_rank()));
      v1::Envelope reply = EnvelopeToPort(frame.envelope().reply_to(), count);
      reply.set_correlation(frame.envelope().correlation());
      *out.mutable_envelope() = std::move(reply);
    } else {
      return;
    }
    if (absl::Status sent = channel_->Send(out); !sent.ok()) {
      errors_.Add(std::string(sent.message()));
    }
  }

  const uint32_t version_;
  std::string name_;
  std::atomic<bool> silent_{false};
  Collected<v1::HostFrame> received_;
  Collected<std::string> errors_;
  absl::Notification ready_;
  std::unique_ptr<FrameChannel> channel_;
};

// A host's relay core with fake procs p0..p{n-1} and one fake client
// stream "client:t".
struct Relay {
  explicit Relay(int procs, Router::EndLookup end_of = nullptr,
                 Router::OwnerLookup owner_of = nullptr) {
    channels = std::make_unique<ProcChannels>(ProcChannels::Options());
    // What it sends to other hosts is recorded as (host, envelope).
    Router::PeerSender peers = [this](const std::string& host,
                                      v1::Envelope& envelope) {
      peer_sends.Add({host, envelope});
      return absl::OkStatus();
    };
    router = std::make_unique<Router>(channels.get(), std::move(peers), 4 << 20,
                                      std::move(owner_of), std::move(end_of));
    channels->Start(kHost,
                    [this](const std::string& proc, v1::Envelope envelope) {
                      router->Route(std::move(envelope), proc);
                    });
    router->Start(kHost);
    stream = *router->AddStream("client:t", [this](v1::RelayFrame frame) {
      client.Add(std::move(frame));
      return absl::OkStatus();
    });
    for (int i = 0; i < procs; ++i) {
      ProcChannels::ChildCallbacks callbacks;
      callbacks.on_registered = [this](pid_t) { registered.Add(1); };
      auto ticket =
          channels->Expect(absl::StrCat("p", i), i, 1, std::move(callbacks));
      REQUIRE(ticket.ok());
      ids.push_back(ticket->id);
      fakes.push_back(std::make_unique<FakeProc>(ticket->child_fd));
    }
    REQUIRE(registered.WaitFor(procs));
  }
  ~Relay() {
    router->Shutdown();
    for (auto& fake : fakes) CHECK(fake->errors().items().empty());
    fakes.clear();
    channels.reset();
    router.reset();
  }

  // Proc `i` ended as the proc manager reports it: its channel is forgotten
  // and, once drained, the router is told how it ended.
  void Lose(int i) {
    v1::ProcExit exit;
    exit.set_proc(absl::StrCat("p", i));
    exit.set_host(kHost);
    exit.set_status(v1::FAILED);
    exit.set_term_signal(9);
    exit.add_stderr_lines("out of cheese");
    exit.set_reason(absl::StrCat("proc \"p", i, "\" was killed by SIGKILL"));
    channels->Forget(ids[i], [this, exit] { router->ProcLost(exit); });
  }

  // An envelope as client:t would write it on its stream.
  static v1::Envelope FromClient(uint64_t port) {
    v1::Envelope envelope;
    envelope.mutable_reply_to()->set_mailbox("client:t");
    envelope.mutable_reply_to()->set_port(port);
    envelope.set_sender("client:t");
    return envelope;
  }

  std::unique_ptr<ProcChannels> channels;
  std::unique_ptr<Router> router;
  uint64_t stream = 0;
  std::vector<uint64_t> ids;
  std::vector<std::unique_ptr<FakeProc>> fakes;
  Collected<int> registered;
  Collected<v1::RelayFrame> client;
  Collected<std::pair<std::string, v1::Envelope>> peer_sends;
};

// A host below this one in a tree cast, with one target.
v1::CastHost TreeHost(const std::string& host, uint64_t rank,
                      uint64_t correlation) {
  v1::CastHost node;
  node.set_host(host);
  node.set_correlation(correlation);
  v1::CastTarget* target = node.add_targets();
  target->set_proc("q0");
  target->set_actor("a0");
  target->set_cast_rank(rank);
  return node;
}

// A tree cast from client:t: rank 0 on p0 here; rank 1 on h1 (with rank 3
// on h3 below it) and rank 2 on h2.
v1::Envelope TreeCast(uint64_t port) {
  v1::Envelope envelope = Relay::FromClient(port);
  v1::CastTarget* target = envelope.add_targets();
  target->set_proc("p0");
  target->set_actor("a0");
  target->set_cast_rank(0);
  v1::CastHost h1 = TreeHost("10.0.0.1:7450", 1, 101);
  *h1.add_children() = TreeHost("10.0.0.3:7450", 3, 103);
  *envelope.add_forward() = h1;
  *envelope.add_forward() = TreeHost("10.0.0.2:7450", 2, 102);
  return envelope;
}

TEST_CASE(
    "the host's first frame is a Welcome naming the proc, rank and host") {
  Relay relay(2);
  auto frames = relay.fakes[1]->received().items();
  REQUIRE_FALSE(frames.empty());
  REQUIRE(frames[0].has_welcome());
  CHECK(frames[0].welcome().name() == "p1");
  CHECK(frames[0].welcome().rank() == 1);
  CHECK(frames[0].welcome().host() == kHost);
  CHECK(frames[0].welcome().protocol_version() ==
        v1::PROC_CHANNEL_VERSION_CURRENT);
}

TEST_CASE(
    "envelopes from two senders keep each sender's order through the relay "
    "(10,000 messages)") {
  Relay relay(1);
  constexpr int kPerSender = 5000;
  std::vector<std::thread> senders;
  for (const std::string sender : {"client:a", "client:b"}) {
    senders.emplace_back([&relay, sender] {
      for (int n = 0; n < kPerSender; ++n) {
        v1::Seq seq;
        seq.set_sender(sender);
        seq.set_n(n);
        v1::Envelope envelope;
        envelope.set_to_mailbox("p0");
        envelope.set_actor("a0");
        PackPayload(seq, &envelope);
        relay.router->Route(std::move(envelope), sender);
      }
    });
  }
  for (auto& thread : senders) thread.join();
  REQUIRE(relay.fakes[0]->received().WaitFor(2 + 2 * kPerSender));
  std::map<std::string, int64_t> last;
  int out_of_order = 0;
  for (const v1::HostFrame& frame : relay.fakes[0]->received().items()) {
    if (!frame.has_envelope()) continue;
    v1::Seq seq;
    REQUIRE(frame.envelope().payload().UnpackTo(&seq));
    auto [it, first] = last.emplace(seq.sender(), -1);
    if (static_cast<int64_t>(seq.n()) != it->second + 1) ++out_of_order;
    it->second = seq.n();
  }
  CHECK(out_of_order == 0);
  CHECK(last["client:a"] == kPerSender - 1);
  CHECK(last["client:b"] == kPerSender - 1);
}

TEST_CASE(
    "a cast crosses to the host once and reaches every target proc, replies "
    "come back on the sender's stream") {
  Relay relay(4);
  v1::Envelope cast = Relay::FromClient(9);
  for (int i = 0; i < 4; ++i) {
    v1::CastTarget* target = cast.add_targets();
    target->set_proc(absl::StrCat("p", i));
    target->set_actor("a0");
    target->set_cast_rank(10 + i);
  }
  PackPayload(v1::GetCount(), &cast);
  relay.router->Route(std::move(cast), "client:t");
  REQUIRE(relay.client.WaitFor(4));
  std::set<uint64_t> ranks;
  for (const v1::RelayFrame& frame : relay.client.items()) {
    REQUIRE(frame.has_envelope());
    CHECK(frame.envelope().to_mailbox() == "client:t");
    CHECK(frame.envelope().port() == 9);
    ranks.insert(frame.envelope().correlation());
  }
  CHECK(ranks == std::set<uint64_t>{10, 11, 12, 13});
}

TEST_CASE(
    "a reduced cast sends one folded reply; a dead proc fails its ranks") {
  Relay relay(3);
  auto cast_to_all = [&relay](v1::Reduce reduce) {
    v1::Envelope cast = Relay::FromClient(5);
    for (int i = 0; i < 3; ++i) {
      v1::CastTarget* target = cast.add_targets();
      target->set_proc(absl::StrCat("p", i));
      target->set_actor("a0");
      target->set_cast_rank(i + 1);
    }
    cast.set_reduce(reduce);
    cast.set_reduce_timeout_ms(20000);
    PackPayload(v1::GetCount(), &cast);
    relay.router->Route(std::move(cast), "client:t");
  };
  cast_to_all(v1::REDUCE_SUM);
  REQUIRE(relay.client.WaitFor(1));
  v1::Reduced sum;
  REQUIRE(relay.client.items()[0].envelope().payload().UnpackTo(&sum));
  CHECK(sum.value() == 1 + 2 + 3);
  CHECK(sum.ok() == 3);

  // p1 stops answering and then goes away: its rank fails at once, with
  // the cause, instead of at the deadline.
  relay.fakes[1]->set_silent(true);
  cast_to_all(v1::REDUCE_FIRST_ERROR);
  relay.fakes[1]->Close();
  relay.Lose(1);
  REQUIRE(relay.client.WaitFor(3));  // a MailboxLost, then the fold
  v1::Reduced folded;
  bool lost_seen = false;
  for (const v1::RelayFrame& frame : relay.client.items()) {
    if (frame.has_lost()) {
      lost_seen = true;
      CHECK(frame.lost().mailbox() == "p1");
      CHECK(frame.lost().host() == kHost);
      CHECK(frame.lost().reason().code() ==
            int(absl::StatusCode::kUnavailable));
      CHECK(frame.lost().exit().term_signal() == 9);
      CHECK(frame.lost().exit().stderr_lines(0) == "out of cheese");
    } else if (frame.envelope().payload().Is<v1::Reduced>()) {
      frame.envelope().payload().UnpackTo(&folded);
    }
  }
  CHECK(lost_seen);
  CHECK(folded.reduce() == v1::REDUCE_FIRST_ERROR);
  CHECK(folded.ok() == 2);
  CHECK(folded.failed() == 1);
  CHECK(folded.first_error_rank() == 2);
  CHECK(folded.first_error().code() == int(absl::StatusCode::kUnavailable));
  CHECK(folded.first_error().message().find("p1") != std::string::npos);
  CHECK(folded.first_error().message().find("SIGKILL") != std::string::npos);
}

TEST_CASE(
    "a forgotten proc's last replies reach its caller before the news that "
    "it is gone") {
  Relay relay(1);
  // Its process is gone (Forget) while its channel is still open: what the
  // proc still sends is routed, and the loss is reported only once the
  // channel closed.
  relay.Lose(0);
  v1::Envelope call = Relay::FromClient(8);
  call.set_to_mailbox("p0");
  call.set_actor("a0");
  PackPayload(v1::GetCount(), &call);
  relay.router->Route(std::move(call), "client:t");
  REQUIRE(relay.client.WaitFor(1));
  absl::SleepFor(absl::Milliseconds(100));
  CHECK(relay.client.items().size() == 1);
  relay.fakes[0]->Close();
  REQUIRE(relay.client.WaitFor(2));
  std::vector<v1::RelayFrame> frames = relay.client.items();
  CHECK(frames[0].has_envelope());
  CHECK(frames[1].has_lost());
  // Once closed, a later Forget reports at once.
  absl::Notification drained;
  relay.channels->Forget(relay.ids[0], [&drained] { drained.Notify(); });
  CHECK(drained.HasBeenNotified());
}

TEST_CASE(
    "the host stamps who sent an envelope: neither a proc nor a client can "
    "name itself another") {
  Relay relay(2);
  v1::Envelope from_proc;
  from_proc.set_to_mailbox("client:t");
  from_proc.set_port(5);
  from_proc.set_sender(absl::StrCat("p1@", kHost));  // a lie
  PackPayload(v1::Echo(), &from_proc);
  relay.router->Route(std::move(from_proc), "p0");
  REQUIRE(relay.client.WaitFor(1));
  CHECK(relay.client.items()[0].envelope().sender() ==
        absl::StrCat("p0@", kHost));

  v1::Envelope from_client = Relay::FromClient(6);
  from_client.set_to_mailbox("p1");
  from_client.set_actor("a0");
  from_client.set_sender(absl::StrCat("p0@", kHost));  // a lie
  PackPayload(v1::Echo(), &from_client);
  relay.router->Route(std::move(from_client), "client:t");
  REQUIRE(relay.fakes[1]->received().WaitFor(3));  // Welcome, Accepted, it
  CHECK(relay.fakes[1]->received().items()[2].envelope().sender() ==
        "client:t");
}

TEST_CASE(
    "a message for a proc whose channel is gone waits for its end and is "
    "answered with how it ended; once it ended, at once") {
  absl::Mutex mu;
  bool ended = false;
  const std::string reason = "proc \"p0\" was killed by SIGKILL";
  Relay relay(
      1, [&](const std::string&) -> absl::StatusOr<std::optional<std::string>> {
        absl::MutexLock lock(&mu);
        if (!ended) return std::nullopt;
        return reason;
      });
  relay.fakes[0]->Close();  // dead, not yet reaped
  auto call = [&relay](uint64_t port) {
    v1::Envelope envelope = Relay::FromClient(port);
    envelope.set_to_mailbox("p0");
    envelope.set_actor("a0");
    PackPayload(v1::Echo(), &envelope);
    relay.router->Route(std::move(envelope), "client:t");
  };
  // Wait until the channel's close was seen (the send fails and is held).
  absl::SleepFor(absl::Milliseconds(100));
  call(7);
  absl::SleepFor(absl::Milliseconds(200));
  CHECK(relay.client.items().empty());
  {
    absl::MutexLock lock(&mu);
    ended = true;
  }
  v1::ProcExit exit;
  exit.set_proc("p0");
  exit.set_host(kHost);
  exit.set_reason(reason);
  relay.router->ProcLost(exit);
  REQUIRE(relay.client.WaitFor(2));  // the loss and the answer
  call(8);
  REQUIRE(relay.client.WaitFor(3));
  std::vector<v1::RelayFrame> frames = relay.client.items();
  for (uint64_t port : {7, 8}) {
    INFO(port);
    bool answered = false;
    for (const v1::RelayFrame& frame : frames) {
      if (!frame.has_envelope() || frame.envelope().port() != port) continue;
      answered = true;
      CHECK(frame.envelope().error().code() ==
            int(absl::StatusCode::kUnavailable));
      CHECK(frame.envelope().error().message() == reason);
    }
    CHECK(answered);
  }
}

TEST_CASE("an envelope to a proc the host does not run gets an error reply") {
  Relay relay(1);
  v1::Envelope envelope = Relay::FromClient(3);
  envelope.set_to_mailbox("ghost");
  envelope.set_actor("a0");
  envelope.set_correlation(77);
  relay.router->Route(std::move(envelope), "client:t");
  REQUIRE(relay.client.WaitFor(1));
  const v1::Envelope reply = relay.client.items()[0].envelope();
  CHECK(reply.correlation() == 77);
  CHECK(reply.error().code() == int(absl::StatusCode::kNotFound));
  CHECK(reply.error().message().find("ghost") != std::string::npos);

  // Another host with a malformed address: refused, nothing dialled.
  v1::Envelope elsewhere = Relay::FromClient(3);
  elsewhere.set_to_host("not an address");
  elsewhere.set_to_mailbox("p0");
  elsewhere.set_actor("a0");
  relay.router->Route(std::move(elsewhere), "client:t");
  REQUIRE(relay.client.WaitFor(2));
  // A client reaches another host through its own stream: not via this one.
  CHECK(relay.client.items()[1].envelope().error().code() ==
        int(absl::StatusCode::kInvalidArgument));
  CHECK(relay.client.items()[1].envelope().error().message().find(
            "envelope.to_host") != std::string::npos);
}

TEST_CASE(
    "a relayed request is answered once: by the proc, at its deadline, when "
    "cancelled, or when the proc goes") {
  Relay relay(2);
  Collected<absl::StatusOr<v1::ProcResponse>> answers;
  auto record = [&answers](absl::StatusOr<v1::ProcResponse> r) {
    answers.Add(std::move(r));
  };
  v1::ProcRequest info;
  info.mutable_get_info();
  relay.channels->Request("p0", info, absl::Now() + absl::Seconds(20), record);
  REQUIRE(answers.WaitFor(1));
  REQUIRE(answers.items()[0].ok());
  CHECK(answers.items()[0]->info().name() == "p0");

  v1::ProcRequest wait;  // the fake proc never answers waits
  wait.mutable_wait_actors();
  relay.channels->Request("p0", wait, absl::Now() + absl::Milliseconds(100),
                          record);
  REQUIRE(answers.WaitFor(2));
  CHECK(answers.items()[1].status().code() ==
        absl::StatusCode::kDeadlineExceeded);

  uint64_t id = relay.channels->Request(
      "p0", wait, absl::Now() + absl::Seconds(60), record);
  relay.channels->Cancel(id);
  REQUIRE(answers.WaitFor(3));
  CHECK(answers.items()[2].status().code() == absl::StatusCode::kCancelled);
  // The proc was told to drop it.
  // The proc was told to drop both the timed-out and the cancelled one.
  REQUIRE(relay.fakes[0]->received().WaitFor(7));
  std::vector<v1::HostFrame> seen = relay.fakes[0]->received().items();
  CHECK(seen[4].has_cancel());
  CHECK(seen[6].cancel().id() == id);

  relay.channels->Request("p1", wait, absl::Now() + absl::Seconds(60), record);
  relay.fakes[1]->Close();
  REQUIRE(answers.WaitFor(4));
  CHECK(answers.items()[3].status().code() == absl::StatusCode::kUnavailable);
  CHECK(answers.items()[3].status().message().find("\"p1\"") !=
        std::string::npos);
  // Nothing goes to a proc that is gone.
  relay.channels->Request("p1", info, absl::Now() + absl::Seconds(60), record);
  REQUIRE(answers.WaitFor(5));
  CHECK(answers.items()[4].status().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("a proc of another protocol version is refused naming both") {
  ProcChannels channels{ProcChannels::Options()};
  channels.Start(kHost, nullptr);
  Collected<std::string> refused;
  ProcChannels::ChildCallbacks callbacks;
  callbacks.on_registered = [](pid_t) { FAIL("registered"); };
  callbacks.on_refused = [&refused](const std::string& why) {
    refused.Add(why);
  };
  auto ticket = channels.Expect("old", 0, 1, std::move(callbacks));
  REQUIRE(ticket.ok());
  FakeProc old(ticket->child_fd, 7);
  REQUIRE(refused.WaitFor(1));
  CHECK(refused.items()[0].find("version 7, this hostd version 2") !=
        std::string::npos);
  REQUIRE(old.received().WaitFor(2));
  CHECK(old.received().items()[1].refused().reason() == refused.items()[0]);
}

TEST_CASE(
    "a client reaches only this host's procs: not another client, not the "
    "host's own folds, and its replies go to itself or a proc") {
  Relay relay(1);
  Collected<v1::RelayFrame> other;
  REQUIRE(relay.router
              ->AddStream("client:other",
                          [&other](v1::RelayFrame frame) {
                            other.Add(std::move(frame));
                            return absl::OkStatus();
                          })
              .ok());

  v1::Envelope to_client = Relay::FromClient(1);
  to_client.set_to_mailbox("client:other");
  to_client.set_port(1);
  v1::Envelope to_host = Relay::FromClient(2);
  to_host.set_port(1);  // mailbox "": the host's folds
  v1::Envelope spoofed = Relay::FromClient(3);
  spoofed.set_to_mailbox("p0");
  spoofed.set_actor("a0");
  spoofed.mutable_reply_to()->set_mailbox("client:other");
  for (v1::Envelope* envelope : {&to_client, &to_host, &spoofed}) {
    relay.router->Route(*envelope, "client:t");
  }
  // The first two are refused to the sender; the spoofed one is dropped
  // (its reply_to is not the sender's to answer to).
  REQUIRE(relay.client.WaitFor(2));
  for (const v1::RelayFrame& frame : relay.client.items()) {
    INFO(frame.DebugString());
    CHECK(frame.envelope().error().code() ==
          int(absl::StatusCode::kInvalidArgument));
  }
  CHECK(relay.client.items().size() == 2);
  CHECK(other.items().empty());
  // Only the Welcome and Accepted reached the proc.
  CHECK(relay.fakes[0]->received().items().size() == 2);
}

TEST_CASE(
    "a sender's newer relay stream replaces its older one, which is told to "
    "end and hears nothing more") {
  Relay relay(1);
  int older_replaced = 0;
  int newer_replaced = 0;
  Collected<v1::RelayFrame> older;
  Collected<v1::RelayFrame> newer;
  auto sink_to = [](Collected<v1::RelayFrame>* frames) {
    return [frames](v1::RelayFrame frame) {
      frames->Add(std::move(frame));
      return absl::OkStatus();
    };
  };
  absl::StatusOr<uint64_t> first =
      relay.router->AddStream("client:back", sink_to(&older), std::nullopt,
                              [&older_replaced] { ++older_replaced; });
  REQUIRE(first.ok());
  // The caller checked that the sender is the same identity's (a client
  // back before its host saw the old stream end).
  absl::StatusOr<uint64_t> second =
      relay.router->AddStream("client:back", sink_to(&newer), std::nullopt,
                              [&newer_replaced] { ++newer_replaced; });
  REQUIRE(second.ok());
  CHECK(older_replaced == 1);
  CHECK(newer_replaced == 0);
  // The older stream ending late does not take the newer one with it.
  relay.router->RemoveStream(*first);

  relay.Lose(0);
  REQUIRE(newer.WaitFor(1));
  CHECK(newer.items()[0].lost().mailbox() == "p0");
  CHECK(older.items().empty());
  relay.router->RemoveStream(*second);
  CHECK(newer_replaced == 0);
}

TEST_CASE("an oversized or over-wide cast is refused, not fanned out") {
  Relay relay(1);
  v1::Envelope wide = Relay::FromClient(4);
  for (int i = 0; i <= Router::kMaxCastTargets; ++i) {
    v1::CastTarget* target = wide.add_targets();
    target->set_proc("p0");
    target->set_actor("a0");
  }
  relay.router->Route(std::move(wide), "client:t");
  REQUIRE(relay.client.WaitFor(1));
  CHECK(relay.client.items()[0].envelope().error().code() ==
        int(absl::StatusCode::kResourceExhausted));
  CHECK(relay.fakes[0]->received().items().size() == 2);
}

TEST_CASE(
    "a tree cast is delivered here and passed on to each host below with "
    "its own part of the tree") {
  Relay relay(1);
  relay.router->Route(TreeCast(5), "client:t");
  REQUIRE(relay.peer_sends.WaitFor(2));
  auto sends = relay.peer_sends.items();
  REQUIRE(sends.size() == 2);
  CHECK(sends[0].first == "10.0.0.1:7450");
  const v1::Envelope& h1 = sends[0].second;
  CHECK(h1.to_host() == "10.0.0.1:7450");
  CHECK(h1.correlation() == 101);
  REQUIRE(h1.targets_size() == 1);
  CHECK(h1.targets(0).cast_rank() == 1);
  REQUIRE(h1.forward_size() == 1);
  CHECK(h1.forward(0).host() == "10.0.0.3:7450");
  // The client's word travels with it: its id, and (an admin's stream) no
  // owner to hold the targets to.
  CHECK(h1.sender() == "client:t");
  CHECK(h1.has_forward_owner());
  CHECK(h1.forward_owner().empty());
  CHECK(h1.reply_to().mailbox() == "client:t");
  CHECK(sends[1].first == "10.0.0.2:7450");
  CHECK(sends[1].second.forward_size() == 0);
  // Its own target got its copy, and answered the client itself.
  REQUIRE(relay.client.WaitFor(1));
  CHECK(relay.client.items()[0].envelope().correlation() == 0);
}

TEST_CASE(
    "a tree cast that names a host twice, or this host, is refused whole") {
  Relay relay(1);
  v1::Envelope twice = TreeCast(6);
  *twice.mutable_forward(1)->add_children() = TreeHost("10.0.0.1:7450", 4, 104);
  relay.router->Route(std::move(twice), "client:t");
  v1::Envelope self = TreeCast(6);
  *self.add_forward() = TreeHost(kHost, 4, 104);
  relay.router->Route(std::move(self), "client:t");
  v1::Envelope bad = TreeCast(6);
  bad.mutable_forward(0)->set_host("no port");
  relay.router->Route(std::move(bad), "client:t");
  REQUIRE(relay.client.WaitFor(3));
  auto frames = relay.client.items();
  CHECK(frames[0].envelope().error().code() ==
        int(absl::StatusCode::kInvalidArgument));
  CHECK_THAT(frames[0].envelope().error().message(),
             Catch::Contains("10.0.0.1:7450") && Catch::Contains("twice"));
  CHECK(frames[1].envelope().error().code() ==
        int(absl::StatusCode::kInvalidArgument));
  CHECK_THAT(frames[2].envelope().error().message(),
             Catch::Contains("tree cast host"));
  CHECK(relay.peer_sends.items().empty());
  CHECK(relay.fakes[0]->received().items().size() == 2);  // welcome, accepted
}

// The answer host `host` sends this host's fold for its subtree.
void AnswerFold(Relay& relay, const v1::Envelope& forwarded, uint64_t ok,
                double value) {
  v1::Reduced reduced;
  reduced.set_reduce(forwarded.reduce());
  reduced.set_ok(ok);
  reduced.set_value(value);
  v1::Envelope answer = EnvelopeToPort(forwarded.reply_to(), reduced);
  answer.set_to_host("");
  answer.set_correlation(forwarded.correlation());
  relay.router->Route(std::move(answer),
                      absl::StrCat("host:", forwarded.to_host()));
}

TEST_CASE(
    "a reduced tree cast folds the answers of the hosts below into one "
    "answer") {
  Relay relay(1);
  REQUIRE(relay.router
              ->AddStream("host:10.0.0.1:7450",
                          [](v1::RelayFrame) { return absl::OkStatus(); })
              .ok());
  v1::Envelope envelope = TreeCast(7);
  envelope.set_reduce(v1::REDUCE_SUM);
  envelope.set_reduce_timeout_ms(20000);
  relay.router->Route(std::move(envelope), "client:t");
  REQUIRE(relay.peer_sends.WaitFor(2));
  auto sends = relay.peer_sends.items();
  // The hosts below answer this host's fold, a little sooner than it must.
  for (const auto& [host, forwarded] : sends) {
    CHECK(forwarded.reply_to().host() == kHost);
    CHECK(forwarded.reply_to().mailbox().empty());
    CHECK(forwarded.reduce() == v1::REDUCE_SUM);
    CHECK(forwarded.reduce_timeout_ms() < 20000);
    CHECK(forwarded.reduce_timeout_ms() >= 19800);
  }
  AnswerFold(relay, sends[0].second, 2, 4.0);  // ranks 1 and 3
  CHECK_FALSE(relay.client.WaitFor(1, absl::Milliseconds(100)));
  AnswerFold(relay, sends[1].second, 1, 2.0);  // rank 2
  REQUIRE(relay.client.WaitFor(1));
  v1::Reduced reduced;
  REQUIRE(relay.client.items()[0].envelope().payload().UnpackTo(&reduced));
  CHECK(reduced.ok() == 4);
  CHECK(reduced.failed() == 0);
  CHECK(reduced.value() == 6.0);  // 0 (p0's rank) + 4 + 2
}

TEST_CASE(
    "a host below that does not answer a tree fold fails its subtree's "
    "ranks, naming it") {
  Relay relay(1);
  v1::Envelope envelope = TreeCast(8);
  envelope.set_reduce(v1::REDUCE_COUNT);
  envelope.set_reduce_timeout_ms(300);
  relay.router->Route(std::move(envelope), "client:t");
  REQUIRE(relay.peer_sends.WaitFor(2));
  AnswerFold(relay, relay.peer_sends.items()[1].second, 1, 1.0);
  REQUIRE(relay.client.WaitFor(1, absl::Seconds(5)));
  v1::Reduced reduced;
  REQUIRE(relay.client.items()[0].envelope().payload().UnpackTo(&reduced));
  CHECK(reduced.ok() == 2);      // rank 0 here, rank 2 on h2
  CHECK(reduced.failed() == 2);  // ranks 1 and 3, behind h1
  CHECK(reduced.first_error_rank() == 1);
  CHECK(reduced.first_error().code() ==
        int(absl::StatusCode::kDeadlineExceeded));
  CHECK_THAT(reduced.first_error().message(),
             Catch::Contains("via host 10.0.0.1:7450"));
}

TEST_CASE(
    "a peer's tree cast reaches only the procs of the client it forwards "
    "for") {
  Relay relay(1, nullptr, [](const std::string& proc) {
    return absl::StatusOr<std::string>(proc == "p0" ? "alice" : "");
  });
  REQUIRE(relay.router
              ->AddStream("host:10.0.0.9:7450",
                          [](v1::RelayFrame) { return absl::OkStatus(); })
              .ok());
  auto forwarded = [](const std::string& owner) {
    v1::Envelope envelope;
    envelope.set_sender("client:bob");
    envelope.set_forward_owner(owner);
    v1::CastTarget* target = envelope.add_targets();
    target->set_proc("p0");
    target->set_actor("a0");
    return envelope;
  };
  relay.router->Route(forwarded("bob"), "host:10.0.0.9:7450");
  relay.router->Route(forwarded("alice"), "host:10.0.0.9:7450");
  // welcome, accepted, then alice's cast only.
  REQUIRE(relay.fakes[0]->received().WaitFor(3));
  absl::SleepFor(absl::Milliseconds(100));
  auto frames = relay.fakes[0]->received().items();
  REQUIRE(frames.size() == 3);
  CHECK(frames[2].envelope().sender() == "client:bob");
}

TEST_CASE(
    "a client cannot name the owner a tree cast is held to: its stream's "
    "owner is") {
  Relay relay(1);
  REQUIRE(relay.router
              ->AddStream(
                  "client:eve", [](v1::RelayFrame) { return absl::OkStatus(); },
                  "eve")
              .ok());
  v1::Envelope envelope = TreeCast(9);
  envelope.clear_targets();
  envelope.set_sender("client:eve");
  envelope.mutable_reply_to()->set_mailbox("client:eve");
  envelope.set_forward_owner("");  // claims to be an admin
  relay.router->Route(std::move(envelope), "client:eve");
  REQUIRE(relay.peer_sends.WaitFor(2));
  for (const auto& [host, sent] : relay.peer_sends.items()) {
    CHECK(sent.forward_owner() == "eve");
  }
}

}  // namespace
}  // namespace mesh
