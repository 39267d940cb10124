#include "lib/relay/relay_stream.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/relay/relay_server_stream.h"
#include "lib/testing/sockets.h"
#include "proto/host.grpc.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(30);

// A trivial Relay server: each stream echoes every frame it reads back to
// its sender, in order, and finishes OK once the sender half-closed and the
// echoes are written. With `read` false it never reads (a stalled host).
class EchoRelay final : public v1::Relay::CallbackService {
 public:
  explicit EchoRelay(bool read) : read_(read) {}

  grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* Connect(
      grpc::CallbackServerContext* context) override {
    absl::MutexLock lock(&mu_);
    senders_.push_back(RelayServerStream::SenderOf(*context));
    auto* stream = new Stream(this, context);
    if (read_) stream->StartReading();
    return stream;
  }

  std::vector<std::string> senders() {
    absl::MutexLock lock(&mu_);
    return senders_;
  }
  std::vector<uint64_t> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }

 private:
  class Stream final : public RelayServerStream {
   public:
    Stream(EchoRelay* service, grpc::CallbackServerContext* context)
        : RelayServerStream(context), service_(service) {}

   private:
    void OnFrame(v1::RelayFrame& frame) override {
      {
        absl::MutexLock lock(&service_->mu_);
        service_->received_.push_back(frame.envelope().correlation());
      }
      Write(std::move(frame)).IgnoreError();
    }

    EchoRelay* const service_;
  };

  const bool read_;
  absl::Mutex mu_;
  std::vector<std::string> senders_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> received_ ABSL_GUARDED_BY(mu_);
};

// The echo server on 127.0.0.1:0.
class Host {
 public:
  explicit Host(bool read = true) : service_(read) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  ~Host() { Stop(); }

  void Stop() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
    server_.reset();
  }

  const std::string& address() const { return address_; }
  EchoRelay& service() { return service_; }

 private:
  EchoRelay service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

// What a stream's callbacks saw.
class Seen {
 public:
  RelayStream::FrameHandler OnFrame() {
    return [this](v1::RelayFrame frame) {
      absl::MutexLock lock(&mu_);
      frames_.push_back(frame.envelope().correlation());
    };
  }
  RelayStream::DoneHandler OnDone() {
    return
        [this](const absl::Status& status, std::vector<v1::RelayFrame> unsent) {
          absl::MutexLock lock(&mu_);
          ++done_;
          status_ = status;
          unsent_ = unsent.size();
        };
  }
  bool WaitFrames(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return frames_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }
  std::vector<uint64_t> frames() {
    absl::MutexLock lock(&mu_);
    return frames_;
  }
  int done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  size_t unsent() {
    absl::MutexLock lock(&mu_);
    return unsent_;
  }

 private:
  absl::Mutex mu_;
  std::vector<uint64_t> frames_ ABSL_GUARDED_BY(mu_);
  int done_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  size_t unsent_ ABSL_GUARDED_BY(mu_) = 0;
};

std::unique_ptr<RelayStream> Open(const std::string& address, Seen& seen,
                                  size_t max_queued_bytes = 64 << 20,
                                  const MonotonicClock* clock = nullptr) {
  RelayStream::Options options;
  options.clock = clock;
  options.sender = "client:0123456789abcdef";
  options.peer = address;
  options.max_queued_bytes = max_queued_bytes;
  return RelayStream::Start(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()), options,
      seen.OnFrame(), seen.OnDone());
}

v1::Envelope Numbered(uint64_t n, size_t bytes = 0) {
  v1::Envelope envelope;
  envelope.set_correlation(n);
  if (bytes > 0) envelope.mutable_payload()->set_value(std::string(bytes, 'x'));
  return envelope;
}

// A 127.0.0.1 address nothing listens on.
std::string ClosedAddress() { return testing::ClosedLoopbackAddress(); }

TEST_CASE("ten thousand frames reach the host and come back in order") {
  Host host;
  Seen seen;
  std::unique_ptr<RelayStream> stream = Open(host.address(), seen);
  constexpr uint64_t kCount = 10000;
  for (uint64_t i = 0; i < kCount; ++i) {
    v1::Envelope envelope = Numbered(i);
    REQUIRE(stream->Send(envelope).ok());
  }
  REQUIRE(seen.WaitFrames(kCount));
  std::vector<uint64_t> back = seen.frames();
  std::vector<uint64_t> received = host.service().received();
  REQUIRE(back.size() == kCount);
  REQUIRE(received.size() == kCount);
  size_t out_of_order = 0;
  for (uint64_t i = 0; i < kCount; ++i) {
    if (back[i] != i || received[i] != i) ++out_of_order;
  }
  CHECK(out_of_order == 0);

  SECTION("the host sees the sender in the call's metadata") {
    CHECK(host.service().senders() ==
          std::vector<std::string>{"client:0123456789abcdef"});
  }
  SECTION("Shutdown half-closes; the host ends the stream OK") {
    stream->Shutdown(kWait);
    CHECK(seen.done() == 1);
    CHECK(seen.status().ok());
    CHECK(seen.unsent() == 0);
    v1::Envelope late = Numbered(1);
    CHECK(stream->Send(late).code() == absl::StatusCode::kUnavailable);
  }
}

TEST_CASE("on_done runs once when the host shuts down") {
  Host host;
  Seen seen;
  std::unique_ptr<RelayStream> stream = Open(host.address(), seen);
  v1::Envelope envelope = Numbered(1);
  REQUIRE(stream->Send(envelope).ok());
  REQUIRE(seen.WaitFrames(1));
  host.Stop();
  REQUIRE(stream->WaitDone(kWait));
  CHECK(seen.done() == 1);
  CHECK_FALSE(seen.status().ok());
  CHECK(stream->ended());

  v1::Envelope late = Numbered(2);
  absl::Status status = stream->Send(late);
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(status.message()), Catch::Contains(host.address()));
  CHECK(late.correlation() == 2);  // left as it was
}

TEST_CASE(
    "a stream times the frames it reads by its clock and learns the "
    "heartbeat interval") {
  Host host;
  Seen seen;
  FakeClock clock;
  const absl::Duration started = clock.Now();
  std::unique_ptr<RelayStream> stream =
      Open(host.address(), seen, 64 << 20, &clock);
  CHECK(stream->last_frame_at() == started);
  CHECK(stream->frames_read() == 0);
  CHECK(stream->heartbeat_interval() == absl::ZeroDuration());

  clock.Advance(absl::Seconds(5));
  v1::Envelope envelope = Numbered(1);
  REQUIRE(stream->Send(envelope).ok());
  REQUIRE(seen.WaitFrames(1));
  CHECK(stream->last_frame_at() == started + absl::Seconds(5));
  CHECK(stream->frames_read() == 1);

  clock.Advance(absl::Seconds(1));
  v1::RelayFrame heartbeat;  // echoed back as if the host sent it
  heartbeat.mutable_heartbeat()->set_incarnation(7);
  heartbeat.mutable_heartbeat()->set_interval_ms(700);
  REQUIRE(stream->Write(heartbeat).ok());
  REQUIRE(seen.WaitFrames(2));
  CHECK(stream->last_frame_at() == started + absl::Seconds(6));
  CHECK(stream->frames_read() == 2);
  CHECK(stream->heartbeat_interval() == absl::Milliseconds(700));
}

// A host that says goodbye at once: WriteLast, then the stream is over.
class GoodbyeRelay final : public v1::Relay::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* Connect(
      grpc::CallbackServerContext* context) override {
    auto* stream = new Stream(context);
    v1::RelayFrame last;
    last.mutable_heartbeat()->set_closing(true);
    stream->WriteLast(last);
    v1::RelayFrame more;
    more.mutable_envelope()->set_correlation(9);
    refused_after_last_ = stream->Write(more).code();
    stream->StartReading();
    return stream;
  }
  absl::StatusCode refused_after_last_ = absl::StatusCode::kOk;

 private:
  class Stream final : public RelayServerStream {
   public:
    using RelayServerStream::RelayServerStream;

   private:
    void OnFrame(v1::RelayFrame&) override {}
  };
};

TEST_CASE("a frame written last ends the stream OK once it is out") {
  GoodbyeRelay service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  Seen seen;
  std::unique_ptr<RelayStream> stream =
      Open(absl::StrCat("127.0.0.1:", port), seen);
  REQUIRE(stream->WaitDone(kWait));
  CHECK(stream->frames_read() == 1);
  CHECK(seen.status().ok());
  CHECK(service.refused_after_last_ == absl::StatusCode::kUnavailable);
  stream.reset();
  server->Shutdown(std::chrono::system_clock::now());
  server->Wait();
}

TEST_CASE("a stream to an address nobody listens on ends UNAVAILABLE") {
  std::string nowhere = ClosedAddress();
  Seen seen;
  std::unique_ptr<RelayStream> stream = Open(nowhere, seen);
  size_t queued = 0;
  for (uint64_t i = 0; i < 10; ++i) {
    v1::Envelope envelope = Numbered(i);
    if (stream->Send(envelope).ok()) ++queued;
  }
  REQUIRE(stream->WaitDone(kWait));
  CHECK(seen.status().code() == absl::StatusCode::kUnavailable);
  // Every frame that was queued comes back as unsent.
  CHECK(seen.unsent() == queued);
  CHECK(seen.done() == 1);
}

TEST_CASE("frames queued past the cap are RESOURCE_EXHAUSTED") {
  Host host(/*read=*/false);
  Seen seen;
  std::unique_ptr<RelayStream> stream =
      Open(host.address(), seen, /*max_queued_bytes=*/1 << 20);
  absl::Status status;
  size_t queued = 0;
  // The host never reads: flow control stalls the writes long before 128 MiB.
  for (int i = 0; i < 2000 && status.ok(); ++i) {
    v1::Envelope envelope = Numbered(i, 64 << 10);
    status = stream->Send(envelope);
    if (status.ok()) ++queued;
  }
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(status.message()), Catch::Contains("cap"));
  CHECK(queued > 0);

  stream->Cancel();
  REQUIRE(stream->WaitDone(kWait));
  CHECK(seen.status().code() == absl::StatusCode::kCancelled);
  // What was still queued is handed back (how much the transport took
  // before the cancel is up to it).
  CHECK(seen.unsent() <= queued);
}

TEST_CASE("destroying the handle cancels the stream and waits for on_done") {
  Host host(/*read=*/false);
  Seen seen;
  std::unique_ptr<RelayStream> stream = Open(host.address(), seen);
  v1::Envelope envelope = Numbered(1);
  REQUIRE(stream->Send(envelope).ok());
  stream.reset();
  CHECK(seen.done() == 1);
  CHECK(seen.status().code() == absl::StatusCode::kCancelled);
}

TEST_CASE("a handle destroyed in its own on_done does not wait for itself") {
  Host host;
  absl::Mutex mu;
  std::unique_ptr<RelayStream> stream;
  bool done = false;
  // Outlives the stream (see the class comment).
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(host.address(), grpc::InsecureChannelCredentials());
  {
    absl::MutexLock lock(&mu);
    RelayStream::Options options;
    options.peer = host.address();
    stream = RelayStream::Start(
        channel, options, nullptr,
        [&](const absl::Status&, std::vector<v1::RelayFrame>) {
          absl::MutexLock lock(&mu);
          stream.reset();
          done = true;
        });
    stream->Cancel();
  }
  absl::MutexLock lock(&mu);
  CHECK(mu.AwaitWithTimeout(absl::Condition(&done), kWait));
}

}  // namespace
}  // namespace mesh
