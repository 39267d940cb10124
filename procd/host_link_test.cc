// HostLink over a socketpair in one process; the test plays hostd on the
// other end with a FrameChannel of its own.
#include "procd/host_link.h"

#include <fcntl.h>
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
#include "proto/proc_channel.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(30);

v1::Welcome MakeWelcome(uint32_t version = v1::PROC_CHANNEL_VERSION_CURRENT) {
  v1::Welcome welcome;
  welcome.set_protocol_version(version);
  welcome.set_name("p1");
  welcome.set_rank(4);
  welcome.set_host("h1:7450");
  welcome.set_orphan_timeout_ms(30000);
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
        "hostd speaks proc channel protocol v7, this proc v1");
  v1::ProcFrame hello = host.WaitFrame(1);
  CHECK(hello.hello().protocol_version() == v1::PROC_CHANNEL_VERSION_CURRENT);
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

TEST_CASE("a link whose channel closed is orphaned after the orphan timeout") {
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
  host.Close();
  CHECK(orphaned.WaitForNotificationWithTimeout(kTimeout));
  CHECK((*link)->SendResponse(v1::ProcResponse()).code() !=
        absl::StatusCode::kOk);
}

TEST_CASE(
    "a link destroyed while it waits out the orphan timeout ends at once") {
  HostEnd host;
  host.Send(WelcomeFrame(MakeWelcome()));  // 30 s orphan timeout.
  absl::StatusOr<std::unique_ptr<HostLink>> link =
      HostLink::Connect(host.proc_fd(), kTimeout);
  REQUIRE(link.ok());
  (*link)->Start({}, {});
  host.Close();
  const absl::Time start = absl::Now();
  link->reset();  // Ends the orphan wait (if it began) without waiting it out.
  CHECK(absl::Now() - start < absl::Seconds(20));
}

}  // namespace
}  // namespace mesh
