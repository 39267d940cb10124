#include "lib/mailbox/mailbox.h"

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/mailbox/testing.h"
#include "lib/status.h"
#include "proto/actors.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(30);

using testing::Inbox;
using testing::Router;

// Waits for a one-shot callback.
class Flag {
 public:
  void Set(absl::Status status) {
    absl::MutexLock lock(&mu_);
    status_ = std::move(status);
    ++count_;
  }
  std::function<void(const absl::Status&)> Setter() {
    return [this](const absl::Status& status) { Set(status); };
  }
  int count() {
    absl::MutexLock lock(&mu_);
    return count_;
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

// An Outbound that keeps what it is given, or refuses with `refusal`.
class FakeOutbound {
 public:
  explicit FakeOutbound(absl::Status refusal = absl::OkStatus())
      : refusal_(std::move(refusal)) {}
  Mailbox::Outbound Get() {
    return [this](v1::Envelope& envelope) -> absl::Status {
      absl::MutexLock lock(&mu_);
      if (!refusal_.ok()) return refusal_;
      sent_.push_back(std::move(envelope));
      return absl::OkStatus();
    };
  }
  std::vector<v1::Envelope> sent() {
    absl::MutexLock lock(&mu_);
    return sent_;
  }

 private:
  const absl::Status refusal_;
  absl::Mutex mu_;
  std::vector<v1::Envelope> sent_ ABSL_GUARDED_BY(mu_);
};

v1::Seq MakeSeq(const std::string& sender, uint64_t n) {
  v1::Seq seq;
  seq.set_sender(sender);
  seq.set_n(n);
  return seq;
}

TEST_CASE("a message to a port in another mailbox arrives and is answered") {
  Router router;
  Mailbox& a = router.Add("h1:1", "a");
  Mailbox& b = router.Add("h2:2", "b");
  v1::PortRef echo_port = b.OpenPort([&b](v1::Envelope envelope) {
    v1::Envelope reply;
    AddressTo(envelope.reply_to(), &reply);
    reply.set_correlation(envelope.correlation());
    *reply.mutable_payload() = envelope.payload();
    b.Send(std::move(reply));
  });
  CHECK(echo_port.host() == "h2:2");
  CHECK(echo_port.mailbox() == "b");

  v1::Echo echo;
  echo.set_text("hello");
  v1::Envelope envelope = EnvelopeToPort(echo_port, echo);
  envelope.set_correlation(7);
  absl::StatusOr<v1::Envelope> reply = testing::Request(a, envelope);
  REQUIRE(reply.ok());
  CHECK(reply->correlation() == 7);
  CHECK(reply->sender() == "b@h2:2");
  absl::StatusOr<v1::Echo> got = UnpackPayload<v1::Echo>(*reply);
  REQUIRE(got.ok());
  CHECK(got->text() == "hello");
  CHECK(UnpackPayload<v1::Count>(*reply).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("ten thousand messages to one port arrive in the order sent") {
  Router router;
  Mailbox& a = router.Add("h1:1", "a");
  Mailbox& b = router.Add("h1:1", "b");
  Inbox inbox;
  v1::PortRef port = b.OpenPort(inbox.Handler());
  constexpr int kCount = 10000;
  for (int i = 1; i <= kCount; ++i) {
    a.Send(EnvelopeToPort(port, MakeSeq("a", i)));
  }
  REQUIRE(inbox.WaitFor(kCount));
  std::vector<v1::Envelope> got = inbox.envelopes();
  REQUIRE(got.size() == kCount);
  int out_of_order = 0;
  for (int i = 0; i < kCount; ++i) {
    if (UnpackPayload<v1::Seq>(got[i])->n() != static_cast<uint64_t>(i + 1)) {
      ++out_of_order;
    }
  }
  CHECK(out_of_order == 0);
}

TEST_CASE("envelopes to our own mailbox are delivered locally, in order") {
  FakeOutbound outbound;
  Mailbox a("h1:1", "a", outbound.Get());
  Inbox inbox;
  v1::PortRef port = a.OpenPort(inbox.Handler());
  for (int i = 1; i <= 100; ++i) {
    v1::Envelope envelope = EnvelopeToPort(port, MakeSeq("a", i));
    // Both an empty host and our own host mean this host.
    if (i % 2 == 0) envelope.clear_to_host();
    a.Send(std::move(envelope));
  }
  REQUIRE(inbox.WaitFor(100));
  std::vector<v1::Envelope> got = inbox.envelopes();
  for (int i = 0; i < 100; ++i) {
    CHECK(UnpackPayload<v1::Seq>(got[i])->n() == static_cast<uint64_t>(i + 1));
  }
  CHECK(outbound.sent().empty());
}

TEST_CASE(
    "a full local queue refuses with RESOURCE_EXHAUSTED and the refused hear "
    "why") {
  FakeOutbound outbound;
  Mailbox a("h1:1", "a", outbound.Get(), /*max_local_queue=*/4);
  // A port whose handler holds the local-delivery thread until released.
  absl::Notification entered;
  absl::Notification release;
  Inbox held;
  auto hold = held.Handler();
  v1::PortRef slow = a.OpenPort([&](v1::Envelope envelope) {
    if (!entered.HasBeenNotified()) entered.Notify();
    release.WaitForNotificationWithTimeout(kWait);
    hold(std::move(envelope));
  });
  Inbox errors;
  v1::PortRef error_port = a.OpenPort(errors.Handler());

  a.Send(EnvelopeToPort(slow, MakeSeq("a", 0)));
  REQUIRE(entered.WaitForNotificationWithTimeout(kWait));
  for (int i = 1; i <= 4; ++i) a.Send(EnvelopeToPort(slow, MakeSeq("a", i)));
  // The fifth waiting one is refused; its error reply still gets in.
  v1::Envelope refused = EnvelopeToPort(slow, MakeSeq("a", 5));
  *refused.mutable_reply_to() = error_port;
  refused.set_correlation(77);
  a.Send(std::move(refused));
  release.Notify();

  REQUIRE(errors.WaitFor(1));
  v1::Envelope error = errors.envelopes()[0];
  CHECK(error.correlation() == 77);
  absl::Status status = UnpackPayload<v1::Seq>(error).status();
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  CHECK(status.message() ==
        "mailbox a@h1:1 has 4 envelopes queued for local delivery, its limit");
  REQUIRE(held.WaitFor(5));
  CHECK(held.size() == 5);
  // Room again once delivered.
  a.Send(EnvelopeToPort(slow, MakeSeq("a", 6)));
  REQUIRE(held.WaitFor(6));
  CHECK(errors.size() == 1);
}

TEST_CASE("envelopes for elsewhere go to the Outbound with the sender set") {
  FakeOutbound outbound;
  Mailbox client("", "client:0123456789abcdef", outbound.Get());
  CHECK(client.sender() == "client:0123456789abcdef");
  v1::ActorRef actor;
  actor.set_host("h1:7450");
  actor.set_proc("p0_0");
  actor.set_actor("a0");
  client.Send(EnvelopeToActor(actor, MakeSeq("c", 1)));

  SECTION("a cast is never local, even to our own id") {
    v1::Envelope cast;
    cast.set_to_host("h1:7450");
    cast.set_to_mailbox(client.id());
    cast.add_targets()->set_proc("p0_0");
    CHECK_FALSE(client.IsLocal(cast));
    client.Send(std::move(cast));
  }

  std::vector<v1::Envelope> sent = outbound.sent();
  REQUIRE(!sent.empty());
  CHECK(sent[0].to_host() == "h1:7450");
  CHECK(sent[0].to_mailbox() == "p0_0");
  CHECK(sent[0].actor() == "a0");
  CHECK(sent[0].sender() == "client:0123456789abcdef");
  CHECK(MailboxName("h1:7450", "p0_0") == "p0_0@h1:7450");
  CHECK(MailboxName("h1:7450", "") == "host@h1:7450");
  CHECK(IsMailboxName("p0_0@h1:7450", "h1:7450", "p0_0"));
  CHECK(IsMailboxName("host@h1:7450", "h1:7450", ""));
  CHECK(IsMailboxName("client:1", "", "client:1"));
  CHECK_FALSE(IsMailboxName("p0_1@h1:7450", "h1:7450", "p0_0"));
  CHECK_FALSE(IsMailboxName("p0_0@h1:7451", "h1:7450", "p0_0"));
  CHECK_FALSE(IsMailboxName("p0_0#h1:7450", "h1:7450", "p0_0"));
  CHECK_FALSE(IsMailboxName("p0_0@h1:74500", "h1:7450", "p0_0"));
}

TEST_CASE("an envelope the Outbound refuses gets an error reply") {
  FakeOutbound outbound(absl::UnavailableError("host h9:1 is unreachable"));
  Mailbox a("h1:1", "a", outbound.Get());
  v1::PortRef dead;
  dead.set_host("h9:1");
  dead.set_mailbox("z");
  dead.set_port(1);
  v1::Envelope envelope = EnvelopeToPort(dead, MakeSeq("a", 1));
  envelope.set_correlation(42);
  absl::StatusOr<v1::Envelope> reply =
      testing::Request(a, std::move(envelope), kWait);
  REQUIRE(reply.ok());
  CHECK(reply->correlation() == 42);
  absl::Status status = UnpackPayload<v1::Seq>(*reply).status();
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(status.message()) == "host h9:1 is unreachable");

  SECTION("and one without reply_to is dropped") {
    a.Send(EnvelopeToPort(dead, MakeSeq("a", 2)));
  }
}

TEST_CASE("messages to a closed port are dropped") {
  FakeOutbound outbound;
  Mailbox a("h1:1", "a", outbound.Get());
  Inbox closed_inbox;
  Inbox open_inbox;
  v1::PortRef closed = a.OpenPort(closed_inbox.Handler());
  v1::PortRef open = a.OpenPort(open_inbox.Handler());
  a.ClosePort(closed.port());
  a.Deliver(EnvelopeToPort(closed, MakeSeq("x", 1)));
  a.Deliver(EnvelopeToPort(open, MakeSeq("x", 2)));
  CHECK(open_inbox.size() == 1);  // Deliver dispatches before returning
  CHECK(closed_inbox.size() == 0);
}

TEST_CASE("a message the actor sink refuses gets an error reply") {
  Router router;
  Mailbox& a = router.Add("h1:1", "a");
  Mailbox& b = router.Add("h1:1", "b");
  b.SetActorSink([](v1::Envelope envelope) {
    return absl::NotFoundError(
        absl::StrCat("no actor \"", envelope.actor(), "\""));
  });
  v1::ActorRef ghost;
  ghost.set_host("h1:1");
  ghost.set_proc("b");
  ghost.set_actor("ghost");
  v1::Envelope envelope = EnvelopeToActor(ghost, MakeSeq("a", 1));
  envelope.set_correlation(9);
  absl::StatusOr<v1::Envelope> reply = testing::Request(a, envelope);
  REQUIRE(reply.ok());
  CHECK(reply->correlation() == 9);
  absl::Status status = UnpackPayload<v1::Seq>(*reply).status();
  CHECK(status.code() == absl::StatusCode::kNotFound);
  CHECK(std::string(status.message()) == "no actor \"ghost\"");

  SECTION("an accepted message gets no error reply") {
    Inbox accepted;
    b.SetActorSink([&accepted](v1::Envelope envelope) {
      accepted.Handler()(std::move(envelope));
      return absl::OkStatus();
    });
    a.Send(EnvelopeToActor(ghost, MakeSeq("a", 2)));
    REQUIRE(accepted.WaitFor(1));
    CHECK(accepted.envelopes()[0].actor() == "ghost");
  }
}

TEST_CASE("a message to an actor in a mailbox without actors is NOT_FOUND") {
  Router router;
  Mailbox& a = router.Add("h1:1", "a");
  router.Add("h1:1", "b");
  v1::ActorRef actor;
  actor.set_host("h1:1");
  actor.set_proc("b");
  actor.set_actor("a0");
  absl::StatusOr<v1::Envelope> reply =
      testing::Request(a, EnvelopeToActor(actor, MakeSeq("a", 1)));
  REQUIRE(reply.ok());
  absl::Status status = UnpackPayload<v1::Seq>(*reply).status();
  CHECK(status.code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(status.message()), Catch::Contains("a0"));
}

TEST_CASE("ReportLost fires the watchers of that mailbox once") {
  FakeOutbound outbound;
  Mailbox client("", "client:1", outbound.Get());
  Flag p0;
  Flag p1;
  Flag other_host;
  Flag unwatched;
  client.WatchPeer("h1:1", "p0", p0.Setter());
  client.WatchPeer("h1:1", "p1", p1.Setter());
  client.WatchPeer("h2:2", "p0", other_host.Setter());
  uint64_t id = client.WatchPeer("h1:1", "p0", unwatched.Setter());
  client.UnwatchPeer(id);

  client.ReportLost("h1:1", "p0", absl::UnavailableError("p0 exited"));
  CHECK(p0.count() == 1);
  CHECK(p0.status().message() == "p0 exited");
  CHECK(p1.count() == 0);
  CHECK(other_host.count() == 0);
  CHECK(unwatched.count() == 0);

  client.ReportLost("h1:1", "p0", absl::UnavailableError("again"));
  CHECK(p0.count() == 1);

  SECTION("an empty mailbox means every mailbox reached through the host") {
    client.ReportLost("h1:1", "", absl::UnavailableError("stream broke"));
    CHECK(p1.count() == 1);
    CHECK(p1.status().message() == "stream broke");
    CHECK(other_host.count() == 0);
  }
  SECTION("a watch of the host itself fires only when the host is lost") {
    Flag host;
    client.WatchPeer("h2:2", "", host.Setter());
    client.ReportLost("h2:2", "p9", absl::UnavailableError("p9 exited"));
    CHECK(host.count() == 0);
    client.ReportLost("h2:2", "", absl::UnavailableError("stream broke"));
    CHECK(host.count() == 1);
    CHECK(other_host.count() == 1);
  }
}

TEST_CASE("a watcher may call back into the mailbox") {
  FakeOutbound outbound;
  Mailbox client("", "client:1", outbound.Get());
  Flag second;
  client.WatchPeer("h1:1", "p0", [&](const absl::Status&) {
    client.WatchPeer("h1:1", "p0", second.Setter());
  });
  client.ReportLost("h1:1", "p0", absl::UnavailableError("gone"));
  client.ReportLost("h1:1", "p0", absl::UnavailableError("gone again"));
  CHECK(second.count() == 1);
}

TEST_CASE("after Shutdown nothing is sent, delivered locally or reported") {
  FakeOutbound outbound;
  Mailbox a("h1:1", "a", outbound.Get());
  Inbox inbox;
  v1::PortRef port = a.OpenPort(inbox.Handler());
  Flag lost;
  a.WatchPeer("h2:2", "b", lost.Setter());
  a.Shutdown();
  a.Shutdown();  // idempotent

  a.Send(EnvelopeToPort(port, MakeSeq("a", 1)));
  v1::PortRef elsewhere = port;
  elsewhere.set_host("h2:2");
  a.Send(EnvelopeToPort(elsewhere, MakeSeq("a", 2)));
  a.ReportLost("h2:2", "b", absl::UnavailableError("gone"));
  CHECK(outbound.sent().empty());
  CHECK(lost.count() == 0);
  CHECK(a.WatchPeer("h2:2", "b", lost.Setter()) > 0);
  a.ReportLost("h2:2", "", absl::UnavailableError("gone"));
  CHECK(lost.count() == 0);
  CHECK(inbox.size() == 0);
}

TEST_CASE("two threads sending to one port each keep their own order") {
  Router router;
  Mailbox& a = router.Add("h1:1", "a");
  Mailbox& c = router.Add("h1:1", "c");
  Mailbox& b = router.Add("h2:2", "b");
  Inbox inbox;
  v1::PortRef port = b.OpenPort(inbox.Handler());
  constexpr int kCount = 2000;
  auto send_all = [&](Mailbox* from, const std::string& name) {
    for (int i = 1; i <= kCount; ++i) {
      from->Send(EnvelopeToPort(port, MakeSeq(name, i)));
    }
  };
  std::thread t1(send_all, &a, "a");
  std::thread t2(send_all, &c, "c");
  t1.join();
  t2.join();
  REQUIRE(inbox.WaitFor(2 * kCount));
  std::map<std::string, uint64_t> last;
  int out_of_order = 0;
  for (const v1::Envelope& envelope : inbox.envelopes()) {
    v1::Seq seq = *UnpackPayload<v1::Seq>(envelope);
    CHECK(envelope.sender() == seq.sender() + "@h1:1");
    if (seq.n() != last[seq.sender()] + 1) ++out_of_order;
    last[seq.sender()] = seq.n();
  }
  CHECK(out_of_order == 0);
  CHECK(last["a"] == kCount);
  CHECK(last["c"] == kCount);
}

}  // namespace
}  // namespace mesh
