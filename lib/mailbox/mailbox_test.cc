#include "lib/mailbox/mailbox.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/mailbox/testing.h"
#include "proto/actors.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(30);

using testing::Inbox;
// A mailbox on its own in-process server.
class Node : public testing::MailboxNode {
 public:
  explicit Node(const std::string& name) : MailboxNode(name) { REQUIRE(ok()); }
};

// Waits for a one-shot callback.
class Flag {
 public:
  void Set(absl::Status status) {
    absl::MutexLock lock(&mu_);
    status_ = std::move(status);
    ++count_;
  }
  bool WaitSet(absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto set = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return count_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&set), timeout);
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  int count() {
    absl::MutexLock lock(&mu_);
    return count_;
  }

 private:
  absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

v1::Seq MakeSeq(const std::string& sender, uint64_t n) {
  v1::Seq seq;
  seq.set_sender(sender);
  seq.set_n(n);
  return seq;
}

// A loopback address on which nothing listens.
std::string UnusedAddress() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

TEST_CASE("a message to a port in another mailbox arrives and is answered") {
  Node a("a");
  Node b("b");
  Inbox replies;
  v1::PortRef reply_port = a.mailbox().OpenPort(replies.Handler());
  Mailbox& b_mailbox = b.mailbox();
  v1::PortRef echo_port = b.mailbox().OpenPort([&](v1::Envelope envelope) {
    v1::Envelope reply;
    reply.set_port(envelope.reply_to().port());
    reply.set_correlation(envelope.correlation());
    *reply.mutable_payload() = envelope.payload();
    b_mailbox.Send(envelope.reply_to().address(), std::move(reply));
  });
  CHECK(reply_port.address() == a.address());

  v1::Echo echo;
  echo.set_text("hello");
  v1::Envelope envelope = EnvelopeToPort(echo_port, echo);
  *envelope.mutable_reply_to() = reply_port;
  envelope.set_correlation(7);
  a.mailbox().Send(echo_port.address(), std::move(envelope));

  REQUIRE(replies.WaitFor(1));
  v1::Envelope reply = replies.envelopes()[0];
  CHECK(reply.correlation() == 7);
  CHECK(reply.sender() == absl::StrCat("b@", b.address()));
  absl::StatusOr<v1::Echo> got = UnpackPayload<v1::Echo>(reply);
  REQUIRE(got.ok());
  CHECK(got->text() == "hello");
  CHECK_FALSE(UnpackPayload<v1::Count>(reply).ok());
}

TEST_CASE("ten thousand messages to one port arrive in the order sent") {
  Node a("a");
  Node b("b");
  Inbox inbox;
  v1::PortRef port = b.mailbox().OpenPort(inbox.Handler());
  constexpr int kCount = 10000;
  for (int i = 1; i <= kCount; ++i) {
    a.mailbox().Send(port.address(), EnvelopeToPort(port, MakeSeq("a", i)));
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

TEST_CASE("two senders to one port each keep their own order") {
  Node a("a");
  Node c("c");
  Node b("b");
  Inbox inbox;
  v1::PortRef port = b.mailbox().OpenPort(inbox.Handler());
  constexpr int kCount = 2000;
  auto send_all = [&](Mailbox* from, const std::string& name) {
    for (int i = 1; i <= kCount; ++i) {
      from->Send(port.address(), EnvelopeToPort(port, MakeSeq(name, i)));
    }
  };
  std::thread t1(send_all, &a.mailbox(), "a");
  std::thread t2(send_all, &c.mailbox(), "c");
  t1.join();
  t2.join();
  REQUIRE(inbox.WaitFor(2 * kCount));
  std::map<std::string, uint64_t> last;
  int out_of_order = 0;
  for (const v1::Envelope& envelope : inbox.envelopes()) {
    v1::Seq seq = *UnpackPayload<v1::Seq>(envelope);
    CHECK(envelope.sender().substr(0, 2) == seq.sender() + "@");
    if (seq.n() != last[seq.sender()] + 1) ++out_of_order;
    last[seq.sender()] = seq.n();
  }
  CHECK(out_of_order == 0);
  CHECK(last["a"] == kCount);
  CHECK(last["c"] == kCount);
}

TEST_CASE("sending to our own address is delivered locally and in order") {
  Node a("a");
  Inbox inbox;
  v1::PortRef port = a.mailbox().OpenPort(inbox.Handler());
  for (int i = 1; i <= 100; ++i) {
    a.mailbox().Send(a.address(), EnvelopeToPort(port, MakeSeq("a", i)));
  }
  REQUIRE(inbox.WaitFor(100));
  std::vector<v1::Envelope> got = inbox.envelopes();
  for (int i = 0; i < 100; ++i) {
    CHECK(UnpackPayload<v1::Seq>(got[i])->n() == static_cast<uint64_t>(i + 1));
  }
}

TEST_CASE("a peer watcher fires when the peer's server shuts down") {
  Node a("a");
  Node b("b");
  Inbox inbox;
  v1::PortRef port = b.mailbox().OpenPort(inbox.Handler());
  a.mailbox().Send(port.address(), EnvelopeToPort(port, MakeSeq("a", 1)));
  REQUIRE(inbox.WaitFor(1));

  Flag lost;
  Flag unwatched;
  a.mailbox().WatchPeer(b.address(),
                        [&](const absl::Status& s) { lost.Set(s); });
  uint64_t id = a.mailbox().WatchPeer(
      b.address(), [&](const absl::Status& s) { unwatched.Set(s); });
  a.mailbox().UnwatchPeer(id);
  b.Stop();

  REQUIRE(lost.WaitSet());
  CHECK(lost.status().code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(lost.status().message()).find(b.address()) !=
        std::string::npos);
  CHECK(unwatched.count() == 0);
  CHECK(lost.count() == 1);
}

TEST_CASE("a peer watcher fires for an address nobody listens on") {
  Node a("a");
  std::string nowhere = UnusedAddress();
  Flag lost;
  a.mailbox().WatchPeer(nowhere, [&](const absl::Status& s) { lost.Set(s); });
  REQUIRE(lost.WaitSet());
  CHECK(lost.status().code() == absl::StatusCode::kUnavailable);

  SECTION("and a message sent there gets an error reply") {
    Inbox replies;
    v1::PortRef reply_port = a.mailbox().OpenPort(replies.Handler());
    v1::PortRef dead{};
    dead.set_address(nowhere);
    dead.set_port(1);
    v1::Envelope envelope = EnvelopeToPort(dead, MakeSeq("a", 1));
    *envelope.mutable_reply_to() = reply_port;
    envelope.set_correlation(42);
    a.mailbox().Send(nowhere, std::move(envelope));
    REQUIRE(replies.WaitFor(1));
    v1::Envelope reply = replies.envelopes()[0];
    CHECK(reply.correlation() == 42);
    CHECK(UnpackPayload<v1::Seq>(reply).status().code() ==
          absl::StatusCode::kUnavailable);
  }
}

TEST_CASE("messages to a closed port are dropped") {
  Node a("a");
  Node b("b");
  Inbox closed_inbox;
  Inbox open_inbox;
  v1::PortRef closed = b.mailbox().OpenPort(closed_inbox.Handler());
  v1::PortRef open = b.mailbox().OpenPort(open_inbox.Handler());
  b.mailbox().ClosePort(closed.port());
  a.mailbox().Send(b.address(), EnvelopeToPort(closed, MakeSeq("a", 1)));
  // Same stream, sent after: once it arrived, the first was handled too.
  a.mailbox().Send(b.address(), EnvelopeToPort(open, MakeSeq("a", 2)));
  REQUIRE(open_inbox.WaitFor(1));
  CHECK(closed_inbox.size() == 0);
}

TEST_CASE("a message the actor sink refuses gets an error reply") {
  Node a("a");
  Node b("b");
  b.mailbox().SetActorSink([](v1::Envelope envelope) {
    return absl::NotFoundError(
        absl::StrCat("no actor \"", envelope.actor(), "\""));
  });
  Inbox replies;
  v1::PortRef reply_port = a.mailbox().OpenPort(replies.Handler());
  v1::Envelope envelope = EnvelopeToActor("ghost", MakeSeq("a", 1));
  *envelope.mutable_reply_to() = reply_port;
  envelope.set_correlation(9);
  a.mailbox().Send(b.address(), std::move(envelope));
  REQUIRE(replies.WaitFor(1));
  v1::Envelope reply = replies.envelopes()[0];
  CHECK(reply.correlation() == 9);
  absl::Status status = UnpackPayload<v1::Seq>(reply).status();
  CHECK(status.code() == absl::StatusCode::kNotFound);
  CHECK(std::string(status.message()).find("ghost") != std::string::npos);
}

TEST_CASE("a message to an actor in a mailbox without actors is NOT_FOUND") {
  Node a("a");
  Node b("b");
  Inbox replies;
  v1::PortRef reply_port = a.mailbox().OpenPort(replies.Handler());
  v1::Envelope envelope = EnvelopeToActor("a0", MakeSeq("a", 1));
  *envelope.mutable_reply_to() = reply_port;
  a.mailbox().Send(b.address(), std::move(envelope));
  REQUIRE(replies.WaitFor(1));
  CHECK(UnpackPayload<v1::Seq>(replies.envelopes()[0]).status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("a mailbox shuts down while streams are open in both directions") {
  Node a("a");
  Node b("b");
  Inbox a_inbox;
  Inbox b_inbox;
  v1::PortRef a_port = a.mailbox().OpenPort(a_inbox.Handler());
  v1::PortRef b_port = b.mailbox().OpenPort(b_inbox.Handler());
  a.mailbox().Send(b.address(), EnvelopeToPort(b_port, MakeSeq("a", 1)));
  b.mailbox().Send(a.address(), EnvelopeToPort(a_port, MakeSeq("b", 1)));
  REQUIRE(a_inbox.WaitFor(1));
  REQUIRE(b_inbox.WaitFor(1));
  a.Stop();
  // Sends after shutdown are dropped, not crashes.
  a.mailbox().Send(b.address(), EnvelopeToPort(b_port, MakeSeq("a", 2)));
  b.Stop();
  CHECK(b_inbox.size() == 1);
}

}  // namespace
}  // namespace mesh
