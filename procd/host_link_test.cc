// HostLink over a socketpair in one process; the test plays hostd on the
// other end with a FrameChannel of its own, and a restarted hostd on a real
// listening Unix socket in a temporary directory (RejoinListener).
#include "procd/host_link.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/channel/frame_channel.h"
#include "lib/testing/temp_dir.h"
#include "procd/testing/rejoin_listener.h"
#include "proto/proc_channel.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(30);
// 32 bytes each, printable so that a log line holding one is easy to find.
constexpr char kSecret1[] = "SECRET-one-0123456789abcdefghijk";
constexpr char kSecret2[] = "SECRET-two-0123456789abcdefghijk";

using testing::RejoinListener;

v1::Welcome MakeWelcome(uint32_t version = v1::PROC_CHANNEL_VERSION_CURRENT) {
  v1::Welcome welcome;
  welcome.set_protocol_version(version);
  welcome.set_name("p1");
  welcome.set_rank(4);
  welcome.set_host("h1:7450");
  welcome.set_orphan_timeout_ms(30000);
  welcome.set_incarnation(3);
  return welcome;
}

// The host's end of a socketpair: sends HostFrames, collects ProcFrames.
class HostEnd {
 public:
  HostEnd() {
    int pair[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    proc_fd_ = pair[1];
    FrameChannel::Callbacks callbacks;
    callbacks.on_frame = [this](std::string_view bytes) {
      v1::ProcFrame frame;
      REQUIRE(frame.ParseFromArray(bytes.data(), bytes.size()));
      absl::MutexLock lock(&mu_);
      frames_.push_back(std::move(frame));
    };
    absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
        FrameChannel::Create(pair[0], FrameChannel::Options{},
                             std::move(callbacks));
    REQUIRE(channel.ok());
    channel_ = *std::move(channel);
  }

  // The proc's end, for HostLink::Connect (which takes it).
  int proc_fd() const { return proc_fd_; }

  void Send(const v1::HostFrame& frame) { REQUIRE(channel_->Send(frame).ok()); }
  void Close() { channel_->Close(); }
  size_t frames() {
    absl::MutexLock lock(&mu_);
    return frames_.size();
  }

  // Waits for the `n`th frame (1-based) from the proc and returns it.
  v1::ProcFrame WaitFrame(size_t n) {
    absl::MutexLock lock(&mu_);
    auto arrived = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return frames_.size() >= n;
    };
    REQUIRE(mu_.AwaitWithTimeout(absl::Condition(&arrived), kTimeout));
    return frames_[n - 1];
  }

 private:
  int proc_fd_ = -1;
  absl::Mutex mu_;
  std::vector<v1::ProcFrame> frames_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<FrameChannel> channel_;
};

v1::HostFrame WelcomeFrame(const v1::Welcome& welcome) {
  v1::HostFrame frame;
  *frame.mutable_welcome() = welcome;
  return frame;
}

v1::HostFrame AcceptedFrame(const std::string& secret) {
  v1::HostFrame frame;
  frame.mutable_accepted()->set_secret(secret);
  return frame;
}

v1::HostFrame RejoinedFrame(const std::string& secret,
                            const std::string& host = "h1:7450") {
  v1::HostFrame frame;
  frame.mutable_rejoined()->set_secret(secret);
  frame.mutable_rejoined()->set_host(host);
  return frame;
}

v1::HostFrame RequestFrame(uint64_t id) {
  v1::HostFrame frame;
  frame.mutable_request()->set_id(id);
  frame.mutable_request()->mutable_get_info();
  return frame;
}

TEST_CASE("ChannelFdFromEnv reads the fd once and refuses a malformed one") {
  unsetenv(kChannelFdEnv);
  absl::StatusOr<std::optional<int>> unset = HostLink::ChannelFdFromEnv();
  REQUIRE(unset.ok());
  CHECK_FALSE(unset->has_value());

  setenv(kChannelFdEnv, "three", 1);
  absl::StatusOr<std::optional<int>> malformed = HostLink::ChannelFdFromEnv();
  CHECK(malformed.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(malformed.status().message(), "three"));
  CHECK(std::getenv(kChannelFdEnv) == nullptr);

  int fds[2];
  REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
  close(fds[0]);
  setenv(kChannelFdEnv, std::to_string(fds[0]).c_str(), 1);
  CHECK(HostLink::ChannelFdFromEnv().status().code() ==
        absl::StatusCode::kInvalidArgument);

  setenv(kChannelFdEnv, std::to_string(fds[1]).c_str(), 1);
  absl::StatusOr<std::optional<int>> open = HostLink::ChannelFdFromEnv();
  REQUIRE(open.ok());
  CHECK(open->value_or(-1) == fds[1]);
  CHECK(std::getenv(kChannelFdEnv) == nullptr);
  close(fds[1]);
}

TEST_CASE(
    "a link takes the Welcome, says Hello and carries requests, responses, "
    "stops and cancels") {
  HostEnd host;
  host.Send(WelcomeFrame(MakeWelcome()));
  // Sent before the proc's Start: handed over by Start, in order.
  host.Send(RequestFrame(1));
  host.Send(RequestFrame(2));
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  REQUIRE(link.ok());
  CHECK((*link)->welcome().name() == "p1");
  CHECK((*link)->welcome().rank() == 4);
  CHECK((*link)->welcome().host() == "h1:7450");

  absl::Mutex mu;
  std::vector<uint64_t> requests;
  std::vector<uint64_t> cancels;
  std::string stop_reason;
  absl::Duration stop_grace;
  absl::Notification stopped;
  HostLink::Callbacks callbacks;
  callbacks.on_request = [&](v1::ProcRequest request) {
    absl::MutexLock lock(&mu);
    requests.push_back(request.id());
  };
  callbacks.on_cancel = [&](uint64_t id) {
    absl::MutexLock lock(&mu);
    cancels.push_back(id);
  };
  callbacks.on_stop = [&](const std::string& reason, absl::Duration grace) {
    stop_reason = reason;
    stop_grace = grace;
    stopped.Notify();
  };
  (*link)->Start(std::move(callbacks),
                 HostLink::StartOptions{{"mesh.echo", "t.x"}, std::nullopt});

  v1::ProcFrame hello = host.WaitFrame(1);
  REQUIRE(hello.has_hello());
  CHECK(hello.hello().protocol_version() == v1::PROC_CHANNEL_VERSION_CURRENT);
  CHECK(hello.hello().pid() == getpid());
  CHECK(std::vector<std::string>(hello.hello().actor_types().begin(),
                                 hello.hello().actor_types().end()) ==
        std::vector<std::string>{"mesh.echo", "t.x"});

  host.Send(RequestFrame(3));
  v1::HostFrame cancel;
  cancel.mutable_cancel()->set_id(3);
  host.Send(cancel);
  v1::HostFrame stop;
  stop.mutable_stop()->set_reason("test is done");
  stop.mutable_stop()->set_grace_ms(1500);
  host.Send(stop);
  REQUIRE(stopped.WaitForNotificationWithTimeout(kTimeout));
  CHECK(stop_reason == "test is done");
  CHECK(stop_grace == absl::Milliseconds(1500));
  {
    absl::MutexLock lock(&mu);
    CHECK(requests == std::vector<uint64_t>{1, 2, 3});
    CHECK(cancels == std::vector<uint64_t>{3});
  }

  v1::ProcResponse response;
  response.set_id(3);
  REQUIRE((*link)->SendResponse(response).ok());
  v1::Envelope envelope;
  envelope.set_to_mailbox("client:x");
  envelope.set_port(9);
  REQUIRE((*link)->SendEnvelope(envelope).ok());
  CHECK((*link)->Flush(kTimeout));
  CHECK(host.WaitFrame(2).response().id() == 3);
  CHECK(host.WaitFrame(3).envelope().port() == 9);
}

TEST_CASE(
    "a link welcomed with another protocol version says Hello with its own "
    "and fails naming both") {
  HostEnd host;
  host.Send(WelcomeFrame(MakeWelcome(/*version=*/7)));
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  CHECK(link.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(link.status().message() ==
        "hostd speaks proc channel protocol v7, this proc v2");
  v1::ProcFrame hello = host.WaitFrame(1);
  CHECK(hello.hello().protocol_version() == v1::PROC_CHANNEL_VERSION_CURRENT);
}

TEST_CASE("a link applies the Welcome's frame cap both ways") {
  HostEnd host;
  v1::Welcome welcome = MakeWelcome();
  welcome.set_max_frame_bytes(4096);
  host.Send(WelcomeFrame(welcome));
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  REQUIRE(link.ok());
  absl::Mutex mu;
  std::vector<uint64_t> requests;
  absl::Notification ended;
  HostLink::Callbacks callbacks;
  callbacks.on_request = [&](v1::ProcRequest request) {
    absl::MutexLock lock(&mu);
    requests.push_back(request.id());
  };
  callbacks.on_not_accepted = [&](const std::string&) { ended.Notify(); };
  (*link)->Start(std::move(callbacks), HostLink::StartOptions{});
  REQUIRE(host.WaitFrame(1).has_hello());

  v1::Envelope small;
  small.set_to_mailbox("client:x");
  small.set_port(1);
  CHECK((*link)->SendEnvelope(small).ok());
  v1::Envelope big = small;
  big.mutable_payload()->set_value(std::string(5000, 'x'));
  absl::Status refused = (*link)->SendEnvelope(big);
  CHECK(refused.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(refused.message(), "max_frame_bytes 4096"));
  // Not sent: the caller keeps it.
  CHECK(big.payload().value().size() == 5000);

  host.Send(RequestFrame(1));
  v1::HostFrame oversized = RequestFrame(2);
  oversized.mutable_request()->mutable_get_info()->set_proc(
      std::string(5000, 'p'));
  host.Send(oversized);
  // The oversized frame ends the channel (here before Accepted).
  REQUIRE(ended.WaitForNotificationWithTimeout(kTimeout));
  absl::MutexLock lock(&mu);
  CHECK(requests == std::vector<uint64_t>{1});
}

TEST_CASE("a link whose channel closes before the Welcome fails UNAVAILABLE") {
  HostEnd host;
  host.Close();
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  CHECK(link.status().code() == absl::StatusCode::kUnavailable);
  CHECK(absl::StrContains(link.status().message(), "Welcome"));
}

TEST_CASE("a link without a Welcome gives up at its timeout") {
  HostEnd host;
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), absl::Milliseconds(50));
  CHECK(link.status().code() == absl::StatusCode::kDeadlineExceeded);
}

TEST_CASE("a link refused by its host before the Welcome fails with why") {
  HostEnd host;
  v1::HostFrame refused;
  refused.mutable_refused()->set_reason("no room");
  host.Send(refused);
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  CHECK(link.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(link.status().message(), "no room"));
}

TEST_CASE("a link refused after its Hello hears the reason") {
  HostEnd host;
  host.Send(WelcomeFrame(MakeWelcome()));
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  REQUIRE(link.ok());
  std::string reason;
  absl::Notification refused;
  HostLink::Callbacks callbacks;
  callbacks.on_refused = [&](const std::string& why) {
    reason = why;
    refused.Notify();
  };
  (*link)->Start(std::move(callbacks), {});
  REQUIRE(host.WaitFrame(1).has_hello());
  v1::HostFrame frame;
  frame.mutable_refused()->set_reason("proc speaks v1, hostd v2");
  host.Send(frame);
  host.Close();
  REQUIRE(refused.WaitForNotificationWithTimeout(kTimeout));
  CHECK(reason == "proc speaks v1, hostd v2");
}

TEST_CASE(
    "an accepted link without a rejoin socket is orphaned after the orphan "
    "timeout") {
  HostEnd host;
  v1::Welcome welcome = MakeWelcome();
  welcome.set_orphan_timeout_ms(600000);
  host.Send(WelcomeFrame(welcome));
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  REQUIRE(link.ok());
  absl::Notification orphaned;
  HostLink::Callbacks callbacks;
  callbacks.on_orphaned = [&] { orphaned.Notify(); };
  // The start option overrides the Welcome's ten minutes.
  (*link)->Start(std::move(callbacks),
                 HostLink::StartOptions{{}, absl::Milliseconds(50)});
  REQUIRE(host.WaitFrame(1).has_hello());
  host.Send(AcceptedFrame(kSecret1));
  REQUIRE(host.WaitFrame(2).has_ready());
  host.Close();
  CHECK(orphaned.WaitForNotificationWithTimeout(kTimeout));
  CHECK((*link)->SendResponse(v1::ProcResponse()).code() !=
        absl::StatusCode::kOk);
}

// Collects every glog message while it lives.
class LogCapture : public google::LogSink {
 public:
  LogCapture() { google::AddLogSink(this); }
  ~LogCapture() override { google::RemoveLogSink(this); }

  void send(google::LogSeverity, const char*, const char*, int,
            const google::LogMessageTime&, const char* message,
            size_t length) override {
    absl::MutexLock lock(&mu_);
    text_.append(message, length);
    text_.push_back('\n');
  }

  std::string text() {
    absl::MutexLock lock(&mu_);
    return text_;
  }

 private:
  absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
};

// What a test's callbacks saw. Thread-safe.
struct Seen {
  absl::Mutex mu;
  std::vector<uint64_t> requests ABSL_GUARDED_BY(mu);
  absl::Notification refused;
  std::string refused_reason;
  absl::Notification not_accepted;
  std::string not_accepted_reason;
  absl::Notification orphaned;
  absl::Time orphaned_at;

  HostLink::Callbacks Callbacks() {
    HostLink::Callbacks callbacks;
    callbacks.on_request = [this](v1::ProcRequest request) {
      absl::MutexLock lock(&mu);
      requests.push_back(request.id());
    };
    callbacks.on_refused = [this](const std::string& reason) {
      refused_reason = reason;
      refused.Notify();
    };
    callbacks.on_not_accepted = [this](const std::string& reason) {
      not_accepted_reason = reason;
      not_accepted.Notify();
    };
    callbacks.on_orphaned = [this] {
      orphaned_at = absl::Now();
      orphaned.Notify();
    };
    return callbacks;
  }

  size_t requests_seen() {
    absl::MutexLock lock(&mu);
    return requests.size();
  }
};

// A link over `host` to the rejoin socket `socket`, started and accepted
// with kSecret1 (hostd has its Hello and Ready).
std::unique_ptr<HostLink> StartAccepted(HostEnd& host,
                                        const std::string& socket,
                                        HostLink::Callbacks callbacks,
                                        HostLink::StartOptions options = {}) {
  v1::Welcome welcome = MakeWelcome();
  welcome.set_rejoin_socket(socket);
  host.Send(WelcomeFrame(welcome));
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  REQUIRE(link.ok());
  (*link)->Start(std::move(callbacks), std::move(options));
  REQUIRE(host.WaitFrame(1).has_hello());
  host.Send(AcceptedFrame(kSecret1));
  REQUIRE(host.WaitFrame(2).has_ready());
  return *std::move(link);
}

std::unique_ptr<RejoinListener> Listen(const std::string& path,
                                       RejoinListener::Options options = {}) {
  absl::StatusOr<std::unique_ptr<RejoinListener>> listener =
      RejoinListener::Listen(path, options);
  INFO(listener.status().ToString());
  REQUIRE(listener.ok());
  return *std::move(listener);
}

v1::ProcFrame Frame(RejoinListener& listener, size_t connection, size_t k) {
  absl::StatusOr<v1::ProcFrame> frame = listener.WaitFrame(connection, k);
  INFO(frame.status().ToString());
  REQUIRE(frame.ok());
  return *std::move(frame);
}

// Sends responses until one fails (the link noticed the channel closed).
absl::Status SendUntilRefused(HostLink& link) {
  const absl::Time deadline = absl::Now() + kTimeout;
  while (absl::Now() < deadline) {
    absl::Status sent = link.SendResponse(v1::ProcResponse());
    if (!sent.ok()) return sent;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return absl::OkStatus();
}

TEST_CASE(
    "an accepted link whose channel closes redials the rejoin socket and "
    "presents its name, incarnation, pid, secret and actor types") {
  testing::TempDir dir;
  const std::string socket = dir.path() + "/rejoin.sock";
  std::unique_ptr<RejoinListener> listener = Listen(socket);
  HostEnd host;
  Seen seen;
  std::unique_ptr<HostLink> link =
      StartAccepted(host, socket, seen.Callbacks(),
                    HostLink::StartOptions{{"mesh.echo", "t.x"}, std::nullopt});
  CHECK(listener->connections() == 0);  // Nothing dialled while connected.
  host.Close();
  v1::ProcFrame rejoin = Frame(*listener, 1, 1);
  REQUIRE(rejoin.has_rejoin());
  CHECK(rejoin.rejoin().protocol_version() == v1::PROC_CHANNEL_VERSION_CURRENT);
  CHECK(rejoin.rejoin().name() == "p1");
  CHECK(rejoin.rejoin().incarnation() == 3);
  CHECK(rejoin.rejoin().pid() == getpid());
  CHECK(rejoin.rejoin().secret() == kSecret1);
  CHECK(std::vector<std::string>(rejoin.rejoin().actor_types().begin(),
                                 rejoin.rejoin().actor_types().end()) ==
        std::vector<std::string>{"mesh.echo", "t.x"});
  CHECK_FALSE(seen.orphaned.HasBeenNotified());
}

TEST_CASE(
    "a link re-adopted with Rejoined answers Ready, takes the new frame cap, "
    "carries frames with the same callbacks and presents the new secret "
    "next time, never logging either") {
  LogCapture logs;
  FLAGS_v = 2;
  testing::TempDir dir;
  const std::string socket = dir.path() + "/rejoin.sock";
  std::unique_ptr<RejoinListener> listener = Listen(socket);
  HostEnd host;
  Seen seen;
  std::unique_ptr<HostLink> link =
      StartAccepted(host, socket, seen.Callbacks());
  host.Send(RequestFrame(1));
  host.Close();
  REQUIRE(Frame(*listener, 1, 1).rejoin().secret() == kSecret1);
  // Another address than the Welcome's: a warning, not an end. And this
  // hostd's frame cap, which the link takes from now on.
  v1::HostFrame rejoined = RejoinedFrame(kSecret2, "h1-new:7450");
  rejoined.mutable_rejoined()->set_max_frame_bytes(4096);
  REQUIRE(listener->Send(1, rejoined).ok());
  CHECK(Frame(*listener, 1, 2).has_ready());
  v1::Envelope big;
  big.set_to_mailbox("client:x");
  big.set_port(1);
  big.mutable_payload()->set_value(std::string(5000, 'x'));
  absl::Status refused = link->SendEnvelope(big);
  CHECK(refused.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(refused.message(), "max_frame_bytes 4096"));

  REQUIRE(listener->Send(1, RequestFrame(2)).ok());
  v1::ProcResponse response;
  response.set_id(2);
  // The request's answer goes out on the new connection once it is seen.
  const absl::Time deadline = absl::Now() + kTimeout;
  while (seen.requests_seen() < 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  {
    absl::MutexLock lock(&seen.mu);
    CHECK(seen.requests == std::vector<uint64_t>{1, 2});
  }
  REQUIRE(link->SendResponse(response).ok());
  CHECK(Frame(*listener, 1, 3).response().id() == 2);

  // hostd goes away again: the next Rejoin presents the new secret.
  listener->Close(1);
  v1::ProcFrame again = Frame(*listener, 2, 1);
  CHECK(again.rejoin().secret() == kSecret2);
  CHECK_FALSE(seen.orphaned.HasBeenNotified());
  CHECK_FALSE(seen.refused.HasBeenNotified());
  link.reset();
  FLAGS_v = 0;
  const std::string logged = logs.text();
  CHECK(absl::StrContains(logged, "re-adopted"));
  CHECK_FALSE(absl::StrContains(logged, "SECRET"));
}

TEST_CASE(
    "a link whose channel closes before Accepted ends at once and does not "
    "redial") {
  testing::TempDir dir;
  const std::string socket = dir.path() + "/rejoin.sock";
  std::unique_ptr<RejoinListener> listener = Listen(socket);
  HostEnd host;
  v1::Welcome welcome = MakeWelcome();
  welcome.set_rejoin_socket(socket);
  welcome.set_orphan_timeout_ms(600000);
  host.Send(WelcomeFrame(welcome));
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  REQUIRE(link.ok());
  Seen seen;
  HostLink::Callbacks callbacks = seen.Callbacks();
  const bool fallback = GENERATE(false, true);
  if (fallback) callbacks.on_not_accepted = nullptr;
  (*link)->Start(std::move(callbacks), {});
  REQUIRE(host.WaitFrame(1).has_hello());
  host.Close();
  absl::Notification& ended = fallback ? seen.refused : seen.not_accepted;
  REQUIRE(ended.WaitForNotificationWithTimeout(kTimeout));
  CHECK((fallback ? seen.refused_reason : seen.not_accepted_reason) ==
        "hostd went away before accepting this proc");
  absl::Status sent = (*link)->SendResponse(v1::ProcResponse());
  CHECK(sent.code() == absl::StatusCode::kUnavailable);
  absl::SleepFor(absl::Milliseconds(200));
  CHECK(listener->connections() == 0);
  CHECK_FALSE(seen.orphaned.HasBeenNotified());
}

TEST_CASE(
    "a link nobody re-adopts is orphaned when the orphan timeout passes, not "
    "before") {
  testing::TempDir dir;
  // Nobody listens there.
  const std::string socket = dir.path() + "/rejoin.sock";
  HostEnd host;
  Seen seen;
  constexpr absl::Duration kOrphan = absl::Milliseconds(400);
  std::unique_ptr<HostLink> link = StartAccepted(
      host, socket, seen.Callbacks(), HostLink::StartOptions{{}, kOrphan});
  const absl::Time closed = absl::Now();
  host.Close();
  REQUIRE(seen.orphaned.WaitForNotificationWithTimeout(kTimeout));
  CHECK(seen.orphaned_at - closed >= kOrphan);
  CHECK(absl::StrContains(link->SendResponse(v1::ProcResponse()).message(),
                          "orphaned"));
}

TEST_CASE(
    "a link refused at its Rejoin hears the reason and stops redialling") {
  testing::TempDir dir;
  const std::string socket = dir.path() + "/rejoin.sock";
  std::unique_ptr<RejoinListener> listener = Listen(socket);
  HostEnd host;
  Seen seen;
  std::unique_ptr<HostLink> link =
      StartAccepted(host, socket, seen.Callbacks());
  host.Close();
  REQUIRE(Frame(*listener, 1, 1).has_rejoin());
  v1::HostFrame refused;
  refused.mutable_refused()->set_reason("secret does not match");
  REQUIRE(listener->Send(1, refused).ok());
  REQUIRE(seen.refused.WaitForNotificationWithTimeout(kTimeout));
  CHECK(seen.refused_reason == "secret does not match");
  CHECK(listener->WaitClosed(1));
  absl::SleepFor(absl::Milliseconds(300));
  CHECK(listener->connections() == 1);
  CHECK_FALSE(seen.orphaned.HasBeenNotified());
  CHECK(link->SendResponse(v1::ProcResponse()).code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE(
    "while a link reconnects its sends fail UNAVAILABLE naming the rejoin "
    "socket and leave the envelope with the caller") {
  testing::TempDir dir;
  const std::string socket = dir.path() + "/rejoin.sock";
  HostEnd host;
  Seen seen;
  std::unique_ptr<HostLink> link =
      StartAccepted(host, socket, seen.Callbacks());
  host.Close();
  absl::Status refused = SendUntilRefused(*link);
  CHECK(refused.code() == absl::StatusCode::kUnavailable);
  CHECK(refused.message() == "hostd is gone; reconnecting to " + socket);
  v1::Envelope envelope;
  envelope.set_to_mailbox("client:x");
  envelope.set_port(9);
  absl::Status sent = link->SendEnvelope(envelope);
  CHECK(sent.code() == absl::StatusCode::kUnavailable);
  CHECK(absl::StrContains(sent.message(), socket));
  CHECK(envelope.port() == 9);
  CHECK(envelope.to_mailbox() == "client:x");
  const size_t frames = host.frames();  // Hello, Ready.

  // A hostd comes back: sends work again, on the new connection only.
  std::unique_ptr<RejoinListener> listener = Listen(socket);
  REQUIRE(Frame(*listener, 1, 1).has_rejoin());
  REQUIRE(listener->Send(1, RejoinedFrame(kSecret2)).ok());
  REQUIRE(Frame(*listener, 1, 2).has_ready());
  const absl::Time deadline = absl::Now() + kTimeout;
  while (!link->SendEnvelope(envelope).ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  CHECK(Frame(*listener, 1, 3).envelope().port() == 9);
  CHECK(host.frames() == frames);
}

TEST_CASE(
    "a Rejoin nobody answers is closed at the answer timeout and dialled "
    "again") {
  testing::TempDir dir;
  const std::string socket = dir.path() + "/rejoin.sock";
  std::unique_ptr<RejoinListener> listener = Listen(socket);
  HostEnd host;
  Seen seen;
  HostLink::StartOptions options;
  options.rejoin_answer_timeout = absl::Milliseconds(200);
  std::unique_ptr<HostLink> link =
      StartAccepted(host, socket, seen.Callbacks(), options);
  host.Close();
  REQUIRE(Frame(*listener, 1, 1).has_rejoin());
  CHECK(listener->WaitClosed(1));
  CHECK(Frame(*listener, 2, 1).rejoin().secret() == kSecret1);
}

TEST_CASE("a link redials with a growing backoff, not in a tight loop") {
  testing::TempDir dir;
  const std::string socket = dir.path() + "/rejoin.sock";
  RejoinListener::Options hang_up;
  hang_up.hang_up = true;
  std::unique_ptr<RejoinListener> listener = Listen(socket, hang_up);
  HostEnd host;
  Seen seen;
  std::unique_ptr<HostLink> link =
      StartAccepted(host, socket, seen.Callbacks());
  host.Close();
  REQUIRE(listener->WaitConnections(1));
  absl::SleepFor(absl::Milliseconds(1500));
  // 20 ms doubling to 1 s, jittered to half: some 6 to 9 dials in 1.5 s
  // (a fixed 20 ms would make ~75, no backoff thousands).
  const size_t dials = listener->connections();
  INFO(dials << " dials");
  CHECK(dials >= 3);
  CHECK(dials <= 15);
}

TEST_CASE("a link destroyed while it redials ends at once") {
  testing::TempDir dir;
  HostEnd host;
  Seen seen;
  // 30 s orphan timeout; nobody listens.
  std::unique_ptr<HostLink> link =
      StartAccepted(host, dir.path() + "/rejoin.sock", seen.Callbacks());
  host.Close();
  CHECK(SendUntilRefused(*link).code() == absl::StatusCode::kUnavailable);
  absl::SleepFor(absl::Milliseconds(100));  // Past a few dials.
  const absl::Time start = absl::Now();
  link.reset();
  CHECK(absl::Now() - start < absl::Seconds(5));
  CHECK_FALSE(seen.orphaned.HasBeenNotified());
}

}  // namespace
}  // namespace mesh
