#include "lib/relay/relay_stream.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
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
  // `batches`: each stream first writes a heartbeat announcing that it
  // reads batches (so the other end may batch), and batches its own writes
  // once the other end announced the same.
  explicit EchoRelay(bool read, bool batches = false)
      : read_(read), batches_(batches) {}

  grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* Connect(
      grpc::CallbackServerContext* context) override {
    absl::MutexLock lock(&mu_);
    senders_.push_back(RelayServerStream::SenderOf(*context));
    auto* stream = new Stream(this, context, batches_ ? 64 << 10 : 0);
    if (batches_) {
      v1::RelayFrame heartbeat;
      heartbeat.mutable_heartbeat()->set_interval_ms(1000);
      stream->Write(std::move(heartbeat)).IgnoreError();
    }
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
    Stream(EchoRelay* service, grpc::CallbackServerContext* context,
           size_t max_batch_bytes)
        : RelayServerStream(context, 64 << 20, max_batch_bytes),
          service_(service) {}

   private:
    void OnFrame(v1::RelayFrame& frame) override {
      if (frame.has_envelope()) {
        absl::MutexLock lock(&service_->mu_);
        service_->received_.push_back(frame.envelope().correlation());
      }
      Write(std::move(frame)).IgnoreError();
    }

    EchoRelay* const service_;
  };

  const bool read_;
  const bool batches_;
  absl::Mutex mu_;
  std::vector<std::string> senders_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> received_ ABSL_GUARDED_BY(mu_);
};

// The echo server on 127.0.0.1:0.
class Host {
 public:
  explicit Host(bool read = true, bool batches = false)
      : service_(read, batches) {
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
      if (frame.has_batch()) ++batches_;  // must never reach on_frame
      if (frame.has_heartbeat()) ++heartbeats_;
      if (frame.has_envelope()) {
        envelopes_.push_back(frame.envelope().correlation());
      }
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
  bool WaitHeartbeat() {
    absl::MutexLock lock(&mu_);
    auto seen = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return heartbeats_ > 0;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&seen), kWait);
  }
  bool WaitEnvelopes(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return envelopes_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }
  std::vector<uint64_t> envelopes() {
    absl::MutexLock lock(&mu_);
    return envelopes_;
  }
  int batches() {
    absl::MutexLock lock(&mu_);
    return batches_;
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
  std::vector<uint64_t> envelopes_ ABSL_GUARDED_BY(mu_);
  int heartbeats_ ABSL_GUARDED_BY(mu_) = 0;
  int batches_ ABSL_GUARDED_BY(mu_) = 0;
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

TEST_CASE(
    "frames batched both ways still arrive one by one in the order written") {
  Host host(/*read=*/true, /*batches=*/true);
  Seen seen;
  std::unique_ptr<RelayStream> stream = Open(host.address(), seen);
  REQUIRE(seen.WaitHeartbeat());  // the host reads batches from now on
  v1::RelayFrame heartbeat;       // and so does this end
  heartbeat.mutable_heartbeat()->set_interval_ms(1000);
  REQUIRE(stream->Write(heartbeat).ok());
  constexpr uint64_t kCount = 20000;
  for (uint64_t i = 0; i < kCount; ++i) {
    v1::Envelope envelope = Numbered(i, i % 7 == 0 ? 3000 : 10);
    REQUIRE(stream->Send(envelope).ok());
  }
  REQUIRE(seen.WaitEnvelopes(kCount));
  std::vector<uint64_t> back = seen.envelopes();
  std::vector<uint64_t> received = host.service().received();
  REQUIRE(back.size() == kCount);
  REQUIRE(received.size() == kCount);
  size_t out_of_order = 0;
  for (uint64_t i = 0; i < kCount; ++i) {
    if (back[i] != i || received[i] != i) ++out_of_order;
  }
  CHECK(out_of_order == 0);
  CHECK(seen.batches() == 0);  // unpacked before on_frame
  stream->Shutdown(kWait);
  CHECK(seen.status().ok());
  CHECK(seen.unsent() == 0);
}

// A host that reads raw messages (batches as they came): it announces
// `announce` as the batch cap it reads, then records every message.
class RawRelay final : public v1::Relay::Service {
 public:
  explicit RawRelay(uint32_t announce) : announce_(announce) {}

  grpc::Status Connect(grpc::ServerContext*,
                       grpc::ServerReaderWriter<v1::RelayFrame, v1::RelayFrame>*
                           stream) override {
    v1::RelayFrame heartbeat;
    heartbeat.mutable_heartbeat()->set_interval_ms(1000);
    heartbeat.mutable_heartbeat()->set_max_batch_bytes(announce_);
    stream->Write(heartbeat);
    v1::RelayFrame frame;
    while (stream->Read(&frame)) {
      absl::MutexLock lock(&mu_);
      messages_.push_back(frame);
    }
    return grpc::Status::OK;
  }

  std::vector<v1::RelayFrame> messages() {
    absl::MutexLock lock(&mu_);
    return messages_;
  }

 private:
  const uint32_t announce_;
  absl::Mutex mu_;
  std::vector<v1::RelayFrame> messages_ ABSL_GUARDED_BY(mu_);
};

TEST_CASE(
    "a batch keeps within both ends' caps and a frame over them goes alone") {
  RawRelay service(/*announce=*/4096);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  Seen seen;
  RelayStream::Options options;
  options.sender = "client:0123456789abcdef";
  options.peer = "raw host";
  size_t own_cap = 0;
  SECTION("the host's cap is the smaller") { own_cap = 64 << 10; }
  SECTION("this end's cap is the smaller") { own_cap = 2500; }
  options.max_batch_bytes = own_cap;
  const size_t cap = std::min<size_t>(own_cap, 4096);
  std::unique_ptr<RelayStream> stream = RelayStream::Start(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                          grpc::InsecureChannelCredentials()),
      options, seen.OnFrame(), seen.OnDone());
  REQUIRE(seen.WaitHeartbeat());
  v1::RelayFrame heartbeat;
  heartbeat.mutable_heartbeat()->set_interval_ms(1000);
  REQUIRE(stream->Write(heartbeat).ok());
  constexpr uint64_t kCount = 5000;
  constexpr uint64_t kLarge = 2500;  // over either cap: goes alone
  for (uint64_t i = 0; i < kCount; ++i) {
    v1::Envelope envelope = Numbered(i, i == kLarge ? 6000 : 100);
    REQUIRE(stream->Send(envelope).ok());
  }
  stream->Shutdown(kWait);
  REQUIRE(seen.status().ok());

  std::vector<v1::RelayFrame> messages = service.messages();
  REQUIRE_FALSE(messages.empty());
  // This end's heartbeat says what it reads.
  REQUIRE(messages[0].has_heartbeat());
  CHECK(messages[0].heartbeat().max_batch_bytes() == own_cap);
  std::vector<uint64_t> order;
  size_t batches = 0;
  size_t over_cap = 0;
  bool large_alone = false;
  for (const v1::RelayFrame& message : messages) {
    if (!message.has_batch()) {
      if (!message.has_envelope()) continue;
      if (message.envelope().correlation() == kLarge) large_alone = true;
      order.push_back(message.envelope().correlation());
      continue;
    }
    ++batches;
    if (message.ByteSizeLong() > cap) ++over_cap;
    CHECK(message.batch().frames_size() >= 2);
    for (const v1::RelayFrame& frame : message.batch().frames()) {
      CHECK_FALSE(frame.has_batch());
      order.push_back(frame.envelope().correlation());
    }
  }
  CHECK(batches > 0);
  CHECK(over_cap == 0);
  CHECK(large_alone);
  REQUIRE(order.size() == kCount);
  size_t out_of_order = 0;
  for (uint64_t i = 0; i < kCount; ++i) {
    if (order[i] != i) ++out_of_order;
  }
  CHECK(out_of_order == 0);
  server->Shutdown(std::chrono::system_clock::now());
}

TEST_CASE("a stream sends no batches to an end that never announced a cap") {
  RawRelay service(/*announce=*/0);
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
  REQUIRE(seen.WaitHeartbeat());
  for (uint64_t i = 0; i < 2000; ++i) {
    v1::Envelope envelope = Numbered(i, 100);
    REQUIRE(stream->Send(envelope).ok());
  }
  stream->Shutdown(kWait);
  std::vector<v1::RelayFrame> messages = service.messages();
  CHECK(messages.size() == 2000);
  for (const v1::RelayFrame& message : messages) CHECK(message.has_envelope());
  server->Shutdown(std::chrono::system_clock::now());
}

// A host (RelayServerStream) that writes `count` envelopes in a burst once
// the other end's first heartbeat came.
class BurstRelay final : public v1::Relay::CallbackService {
 public:
  BurstRelay(uint64_t count, size_t max_batch_bytes)
      : count_(count), max_batch_bytes_(max_batch_bytes) {}

  grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* Connect(
      grpc::CallbackServerContext* context) override {
    auto* stream = new Stream(this, context);
    stream->StartReading();
    return stream;
  }

 private:
  class Stream final : public RelayServerStream {
   public:
    Stream(BurstRelay* service, grpc::CallbackServerContext* context)
        : RelayServerStream(context, 64 << 20, service->max_batch_bytes_),
          service_(service) {}

   private:
    void OnFrame(v1::RelayFrame& frame) override {
      if (!frame.has_heartbeat() || burst_) return;
      burst_ = true;
      for (uint64_t i = 0; i < service_->count_; ++i) {
        v1::RelayFrame out;
        *out.mutable_envelope() = Numbered(i, i == 7 ? 6000 : 100);
        Write(std::move(out)).IgnoreError();
      }
    }
    BurstRelay* const service_;
    bool burst_ = false;
  };

  const uint64_t count_;
  const size_t max_batch_bytes_;
};

TEST_CASE(
    "a host batches what is queued for a client that reads batches, in "
    "order and within both caps") {
  constexpr uint64_t kCount = 5000;
  BurstRelay service(kCount, /*max_batch_bytes=*/3000);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  auto stub = v1::Relay::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  uint32_t announce = 0;
  SECTION("the client's cap is the larger") { announce = 64 << 10; }
  SECTION("the client's cap is the smaller") { announce = 2000; }
  const size_t cap = std::min<size_t>(announce, 3000);
  grpc::ClientContext context;
  auto call = stub->Connect(&context);
  v1::RelayFrame heartbeat;
  heartbeat.mutable_heartbeat()->set_max_batch_bytes(announce);
  REQUIRE(call->Write(heartbeat));
  std::vector<uint64_t> order;
  size_t batches = 0;
  size_t over_cap = 0;
  v1::RelayFrame message;
  while (order.size() < kCount && call->Read(&message)) {
    if (!message.has_batch()) {
      order.push_back(message.envelope().correlation());
      continue;
    }
    ++batches;
    if (message.ByteSizeLong() > cap) ++over_cap;
    for (const v1::RelayFrame& frame : message.batch().frames()) {
      order.push_back(frame.envelope().correlation());
    }
  }
  call->WritesDone();
  CHECK(call->Finish().ok());
  CHECK(batches > 0);
  CHECK(over_cap == 0);
  REQUIRE(order.size() == kCount);
  size_t out_of_order = 0;
  for (uint64_t i = 0; i < kCount; ++i) {
    if (order[i] != i) ++out_of_order;
  }
  CHECK(out_of_order == 0);
  server->Shutdown(std::chrono::system_clock::now());
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
