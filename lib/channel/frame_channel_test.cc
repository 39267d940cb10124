#include "lib/channel/frame_channel.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "google/protobuf/wrappers.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

// A connected pair of stream sockets; the test owns both until it hands one
// to a FrameChannel.
std::pair<int, int> SocketPair() {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  return {sv[0], sv[1]};
}

std::string Header(uint32_t length) {
  std::string header(4, '\0');
  for (int i = 0; i < 4; ++i) header[i] = static_cast<char>(length >> (8 * i));
  return header;
}

std::string Framed(const std::string& body) {
  return Header(body.size()) + body;
}

void WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    REQUIRE(n > 0);
    done += n;
  }
}

// Waits until `fd` is readable or `timeout` passes; false on timeout.
bool WaitReadable(int fd, absl::Duration timeout) {
  struct pollfd pfd = {fd, POLLIN, 0};
  return poll(&pfd, 1, absl::ToInt64Milliseconds(timeout)) == 1;
}

// Reads exactly `n` bytes (false on EOF, error or a 10 s stall). Safe to call
// from a helper thread: it uses no Catch2 assertions.
bool ReadExactly(int fd, size_t n, std::string* out) {
  out->resize(n);
  size_t done = 0;
  while (done < n) {
    if (!WaitReadable(fd, kWait)) return false;
    ssize_t got = read(fd, out->data() + done, n - done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    done += got;
  }
  return true;
}

// True if the peer of `fd` has shut the stream down (read returns EOF).
bool SeesEof(int fd) {
  char byte;
  return WaitReadable(fd, kWait) && read(fd, &byte, 1) == 0;
}

// Deterministic frame contents: byte j of frame `seed` of `size` bytes.
std::string Pattern(uint32_t seed, size_t size) {
  std::string s(size, '\0');
  for (size_t j = 0; j < size; ++j) s[j] = static_cast<char>(seed * 31 + j);
  return s;
}

// Collects what a channel delivers. Declare it before the channel: it must
// outlive it.
class Recorder {
 public:
  FrameChannel::Callbacks Callbacks() {
    return {[this](std::string_view frame) {
              absl::MutexLock lock(&mu_);
              frames_.emplace_back(frame);
            },
            [this](const absl::Status& status) {
              absl::MutexLock lock(&mu_);
              closed_ = status;
              ++closed_calls_;
            }};
  }

  bool WaitForFrames(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return frames_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }

  // The status on_closed was called with (nullopt if not within 10 s).
  std::optional<absl::Status> WaitForClosed() {
    absl::MutexLock lock(&mu_);
    auto closed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_.has_value();
    };
    mu_.AwaitWithTimeout(absl::Condition(&closed), kWait);
    return closed_;
  }

  std::vector<std::string> frames() {
    absl::MutexLock lock(&mu_);
    return frames_;
  }
  int closed_calls() {
    absl::MutexLock lock(&mu_);
    return closed_calls_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> frames_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> closed_ ABSL_GUARDED_BY(mu_);
  int closed_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

std::unique_ptr<FrameChannel> MakeChannel(int fd,
                                          FrameChannel::Callbacks callbacks,
                                          FrameChannel::Options options = {}) {
  absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
      FrameChannel::Create(fd, std::move(options), std::move(callbacks));
  REQUIRE(channel.ok());
  return *std::move(channel);
}

TEST_CASE("frames of every size arrive whole and in order") {
  const std::vector<size_t> sizes = {0,     1,    3,     4,       5,
                                     100,   4095, 4096,  65535,   65536,
                                     65537, 0,    70000, 1 << 20, 7};
  constexpr int kFrames = 600;
  int a, b;
  std::tie(a, b) = SocketPair();
  std::atomic<int> received{0};
  std::atomic<int> wrong{0};
  absl::Notification all;
  std::unique_ptr<FrameChannel> receiver =
      MakeChannel(b, {[&](std::string_view frame) {
                        int i = received.load();
                        if (frame != Pattern(i, sizes[i % sizes.size()]))
                          ++wrong;
                        if (received.fetch_add(1) + 1 == kFrames) all.Notify();
                      },
                      nullptr});
  std::unique_ptr<FrameChannel> sender = MakeChannel(a, {});
  for (int i = 0; i < kFrames; ++i) {
    REQUIRE(sender->SendFrame(Pattern(i, sizes[i % sizes.size()])).ok());
  }
  REQUIRE(all.WaitForNotificationWithTimeout(kWait));
  CHECK(wrong.load() == 0);
  CHECK(sender->Flush(kWait));
}

TEST_CASE(
    "frames from two sending threads each arrive in that thread's order") {
  constexpr uint32_t kPerThread = 5000;
  // Frame i of a thread: 1 MiB every 1000th, empty every 100th, else small.
  auto size_of = [](uint32_t i) -> size_t {
    if (i % 1000 == 999) return 1 << 20;
    if (i % 100 == 50) return 0;
    return 5 + (i * 7919) % 3000;
  };
  // A non-empty frame: [thread][seq, 4 bytes LE][pattern].
  auto make = [](uint8_t thread, uint32_t seq, size_t size) {
    std::string frame = Pattern(seq + thread, size);
    frame[0] = static_cast<char>(thread);
    for (int k = 0; k < 4; ++k) frame[1 + k] = static_cast<char>(seq >> 8 * k);
    return frame;
  };
  size_t expected_empty = 0;
  for (uint32_t i = 0; i < kPerThread; ++i) expected_empty += size_of(i) == 0;

  int a, b;
  std::tie(a, b) = SocketPair();
  std::atomic<uint32_t> total{0};
  std::atomic<int> wrong{0};
  std::atomic<size_t> empty{0};
  int64_t last[2] = {-1, -1};
  uint32_t count[2] = {0, 0};
  absl::Notification all;
  std::unique_ptr<FrameChannel> receiver = MakeChannel(
      b, {[&](std::string_view frame) {
            if (frame.empty()) {
              ++empty;
            } else {
              uint8_t thread = frame[0];
              uint32_t seq = 0;
              for (int k = 0; k < 4; ++k) {
                seq |= static_cast<uint32_t>(static_cast<uint8_t>(frame[1 + k]))
                       << 8 * k;
              }
              if (thread > 1 || seq <= last[thread] ||
                  frame != make(thread, seq, size_of(seq))) {
                ++wrong;
              } else {
                last[thread] = seq;
                ++count[thread];
              }
            }
            if (total.fetch_add(1) + 1 == 2 * kPerThread) all.Notify();
          },
          nullptr});
  std::unique_ptr<FrameChannel> sender = MakeChannel(a, {});
  std::atomic<int> send_errors{0};
  std::vector<std::thread> threads;
  for (uint8_t t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (uint32_t i = 0; i < kPerThread; ++i) {
        size_t size = size_of(i);
        if (!sender->SendFrame(size == 0 ? "" : make(t, i, size)).ok()) {
          ++send_errors;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(send_errors.load() == 0);
  REQUIRE(all.WaitForNotificationWithTimeout(kWait));
  CHECK(wrong.load() == 0);
  CHECK(empty.load() == 2 * expected_empty);
  CHECK(count[0] == kPerThread - expected_empty);
  CHECK(count[1] == kPerThread - expected_empty);
}

TEST_CASE("a protobuf message sent with Send arrives as one frame") {
  int a, b;
  std::tie(a, b) = SocketPair();
  Recorder recorder;
  std::unique_ptr<FrameChannel> receiver = MakeChannel(b, recorder.Callbacks());
  std::unique_ptr<FrameChannel> sender = MakeChannel(a, {});
  google::protobuf::BytesValue message;
  message.set_value(Pattern(7, 300000));
  REQUIRE(sender->Send(message).ok());
  REQUIRE(sender->Send(google::protobuf::BytesValue()).ok());
  REQUIRE(recorder.WaitForFrames(2));
  google::protobuf::BytesValue got;
  REQUIRE(got.ParseFromString(recorder.frames()[0]));
  CHECK(got.value() == message.value());
  CHECK(recorder.frames()[1].empty());
}

TEST_CASE(
    "frames only queued go out in order with the next WriteQueued, ahead of "
    "a later Send") {
  int a, b;
  std::tie(a, b) = SocketPair();
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, {}, {.name = "queued", .max_pending_bytes = 1 << 20});
  google::protobuf::BytesValue small, large, last;
  small.set_value(Pattern(1, 100));
  large.set_value(Pattern(2, 100000));  // a chunk of its own
  last.set_value(Pattern(3, 10));
  // The channel thread is asleep in poll by now (it writes queued bytes it
  // happens to see on its own, which would make the next check racy).
  absl::SleepFor(absl::Milliseconds(50));
  REQUIRE(channel->Queue(small).ok());
  REQUIRE(channel->Queue(large).ok());
  REQUIRE(channel->Queue(small).ok());
  // Nothing is written until WriteQueued.
  CHECK_FALSE(WaitReadable(b, absl::Milliseconds(50)));
  channel->WriteQueued();
  REQUIRE(channel->Send(last).ok());  // behind what was queued
  std::string expected =
      Framed(small.SerializeAsString()) + Framed(large.SerializeAsString()) +
      Framed(small.SerializeAsString()) + Framed(last.SerializeAsString());
  std::string got;
  REQUIRE(ReadExactly(b, expected.size(), &got));
  CHECK(got == expected);
  CHECK(channel->Flush(kWait));

  SECTION("Queue keeps to max_pending_bytes") {
    google::protobuf::BytesValue big;
    big.set_value(std::string(600 << 10, 'q'));
    REQUIRE(channel->Queue(big).ok());
    absl::Status status = channel->Queue(big);
    CHECK(status.code() == absl::StatusCode::kResourceExhausted);
    channel->WriteQueued();
    REQUIRE(ReadExactly(b, Framed(big.SerializeAsString()).size(), &got));
    CHECK(got == Framed(big.SerializeAsString()));
  }
  channel.reset();
  close(b);
}

TEST_CASE("a peer that closes at a frame boundary ends the channel with OK") {
  int a, b;
  std::tie(a, b) = SocketPair();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, recorder.Callbacks(), {.name = "to-peer"});
  WriteAll(b, Framed("hello") + Framed(""));
  close(b);
  std::optional<absl::Status> closed = recorder.WaitForClosed();
  REQUIRE(closed.has_value());
  CHECK(closed->ok());
  CHECK(recorder.frames() == std::vector<std::string>{"hello", ""});
  CHECK(channel->closed());
  absl::Status send = channel->SendFrame("late");
  CHECK(send.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(send.message(), "\"to-peer\""));
  channel.reset();
  CHECK(recorder.closed_calls() == 1);
}

TEST_CASE("a peer that closes inside a frame ends the channel with DATA_LOSS") {
  int a, b;
  std::tie(a, b) = SocketPair();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, recorder.Callbacks(), {.name = "truncated"});
  SECTION("inside the body") {
    WriteAll(b, Framed("whole") + Header(100) + std::string(10, 'x'));
    close(b);
    std::optional<absl::Status> closed = recorder.WaitForClosed();
    REQUIRE(closed.has_value());
    CHECK(closed->code() == absl::StatusCode::kDataLoss);
    CHECK(absl::StrContains(closed->message(), "\"truncated\""));
    CHECK(absl::StrContains(closed->message(), "frame of 100 bytes (got 10)"));
    CHECK(recorder.frames() == std::vector<std::string>{"whole"});
  }
  SECTION("inside the header") {
    WriteAll(b, std::string(2, '\0'));
    close(b);
    std::optional<absl::Status> closed = recorder.WaitForClosed();
    REQUIRE(closed.has_value());
    CHECK(closed->code() == absl::StatusCode::kDataLoss);
    CHECK(absl::StrContains(closed->message(), "\"truncated\""));
    CHECK(absl::StrContains(closed->message(), "frame header"));
  }
}

TEST_CASE("an incoming frame over max_frame_bytes ends the channel") {
  int a, b;
  std::tie(a, b) = SocketPair();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel = MakeChannel(
      a, recorder.Callbacks(), {.name = "small", .max_frame_bytes = 1024});
  WriteAll(b, Framed(std::string(1024, 'k')) + Header(1 << 20));
  std::optional<absl::Status> closed = recorder.WaitForClosed();
  REQUIRE(closed.has_value());
  CHECK(closed->code() == absl::StatusCode::kResourceExhausted);
  CHECK(absl::StrContains(closed->message(), "\"small\""));
  CHECK(absl::StrContains(closed->message(), "frame of 1048576 bytes"));
  CHECK(recorder.frames().size() == 1);
  CHECK(SeesEof(b));  // the channel closed its end
  close(b);
}

TEST_CASE("sending a frame over max_frame_bytes is INVALID_ARGUMENT") {
  int a, b;
  std::tie(a, b) = SocketPair();
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, {}, {.name = "small", .max_frame_bytes = 1024});
  absl::Status big = channel->SendFrame(std::string(1025, 'x'));
  CHECK(big.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(big.message(), "\"small\""));
  google::protobuf::BytesValue message;
  message.set_value(std::string(2000, 'x'));
  CHECK(channel->Send(message).code() == absl::StatusCode::kInvalidArgument);
  // The channel is still usable.
  REQUIRE(channel->SendFrame(std::string(1024, 'y')).ok());
  std::string got;
  REQUIRE(ReadExactly(b, 4 + 1024, &got));
  CHECK(got == Framed(std::string(1024, 'y')));
  close(b);
}

TEST_CASE("Send after Close is FAILED_PRECONDITION naming the channel") {
  int a, b;
  std::tie(a, b) = SocketPair();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, recorder.Callbacks(), {.name = "done"});
  CHECK_FALSE(channel->closed());
  channel->Close();
  channel->Close();  // idempotent
  CHECK(channel->closed());
  absl::Status send = channel->SendFrame("x");
  CHECK(send.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(send.message(), "channel \"done\" is closed"));
  CHECK(channel->Send(google::protobuf::BytesValue()).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(channel->Flush(absl::Seconds(1)));  // nothing was left unsent
  CHECK(SeesEof(b));
  channel.reset();
  CHECK(recorder.closed_calls() == 0);  // Close came first
  close(b);
}

TEST_CASE("Close makes the peer's channel end with OK") {
  int a, b;
  std::tie(a, b) = SocketPair();
  Recorder recorder;
  std::unique_ptr<FrameChannel> peer = MakeChannel(b, recorder.Callbacks());
  std::unique_ptr<FrameChannel> channel = MakeChannel(a, {});
  REQUIRE(channel->SendFrame("last").ok());
  REQUIRE(channel->Flush(kWait));
  channel->Close();
  std::optional<absl::Status> closed = recorder.WaitForClosed();
  REQUIRE(closed.has_value());
  CHECK(closed->ok());
  CHECK(recorder.frames() == std::vector<std::string>{"last"});
}

TEST_CASE("a peer that never reads makes Send RESOURCE_EXHAUSTED, not block") {
  int a, b;
  std::tie(a, b) = SocketPair();
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, {}, {.name = "stuck", .max_pending_bytes = 1 << 20});
  const std::string frame(64 << 10, 'z');
  absl::Status status;
  int sent = 0;
  // The socket buffer takes a few hundred KiB, the queue 1 MiB more.
  while (sent < 1000) {
    status = channel->SendFrame(frame);
    if (!status.ok()) break;
    ++sent;
  }
  CHECK(sent > 0);
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  CHECK(absl::StrContains(status.message(), "\"stuck\""));
  CHECK(absl::StrContains(status.message(), "not reading"));
  CHECK_FALSE(channel->Flush(absl::Milliseconds(20)));
  CHECK_FALSE(channel->closed());
  channel.reset();  // drops the queue; does not wait for the peer
  close(b);
}

TEST_CASE("Flush returns once the peer has read every queued frame") {
  int a, b;
  std::tie(a, b) = SocketPair();
  std::unique_ptr<FrameChannel> channel = MakeChannel(a, {});
  constexpr int kFrames = 64;
  std::string expected;
  for (int i = 0; i < kFrames; ++i) {
    std::string frame = Pattern(i, 64 << 10);
    expected += Framed(frame);
    REQUIRE(channel->SendFrame(frame).ok());
  }
  // Nobody reads yet: 4 MiB cannot all be in the socket.
  CHECK_FALSE(channel->Flush(absl::Milliseconds(20)));
  std::string got;
  bool read_ok = false;
  std::thread reader([&] { read_ok = ReadExactly(b, expected.size(), &got); });
  CHECK(channel->Flush(kWait));
  reader.join();
  CHECK(read_ok);
  CHECK(got == expected);
  close(b);
}

TEST_CASE("Flush from inside on_frame writes the reply itself") {
  int a, b;
  std::tie(a, b) = SocketPair();
  std::unique_ptr<FrameChannel> channel;
  std::atomic<bool> flushed{false};
  absl::Notification replied;
  const std::string reply(4 << 20, 'r');
  channel = MakeChannel(a, {[&](std::string_view) {
                              if (channel->SendFrame(reply).ok()) {
                                flushed = channel->Flush(kWait);
                              }
                              replied.Notify();
                            },
                            nullptr});
  std::string got;
  bool read_ok = false;
  std::thread reader([&] { read_ok = ReadExactly(b, 4 + reply.size(), &got); });
  WriteAll(b, Framed("please"));
  REQUIRE(replied.WaitForNotificationWithTimeout(kWait));
  reader.join();
  CHECK(flushed.load());
  CHECK(read_ok);
  CHECK(got == Framed(reply));
  channel.reset();
  close(b);
}

TEST_CASE("Close from inside on_frame stops delivery at once") {
  int a, b;
  std::tie(a, b) = SocketPair();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel;
  std::atomic<int> frames{0};
  absl::Notification closed_inside;
  channel = MakeChannel(a, {[&](std::string_view) {
                              ++frames;
                              channel->Close();
                              closed_inside.Notify();
                            },
                            [&](const absl::Status&) { ++frames; }});
  std::string burst;
  for (int i = 0; i < 100; ++i) burst += Framed("frame");
  WriteAll(b, burst);
  REQUIRE(closed_inside.WaitForNotificationWithTimeout(kWait));
  CHECK(channel->closed());
  CHECK(SeesEof(b));
  channel.reset();
  CHECK(frames.load() == 1);  // no frame and no on_closed after Close
  close(b);
}

TEST_CASE("the destructor waits for a running callback and joins") {
  int a, b;
  std::tie(a, b) = SocketPair();
  absl::Notification started;
  std::atomic<bool> finished{false};
  std::atomic<int> frames{0};
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, {[&](std::string_view) {
                        if (frames.fetch_add(1) == 0) {
                          started.Notify();
                          absl::SleepFor(absl::Milliseconds(100));
                          finished = true;
                        }
                      },
                      nullptr});
  std::string burst;
  for (int i = 0; i < 50; ++i) burst += Framed("frame");
  WriteAll(b, burst);
  REQUIRE(started.WaitForNotificationWithTimeout(kWait));
  channel.reset();
  CHECK(finished.load());
  CHECK(frames.load() == 1);  // Close stopped delivery after the running one
  close(b);
}

TEST_CASE("a peer that stops reading ends the channel with the write error") {
  int a, b;
  std::tie(a, b) = SocketPair();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, recorder.Callbacks(), {.name = "half"});
  WriteAll(b, Framed("bye"));
  REQUIRE(shutdown(b, SHUT_RD) == 0);
  absl::Status send = channel->SendFrame("hello?");
  CHECK_FALSE(send.ok());
  CHECK(absl::StrContains(send.message(), "\"half\""));
  std::optional<absl::Status> closed = recorder.WaitForClosed();
  REQUIRE(closed.has_value());
  CHECK(closed->code() == absl::StatusCode::kFailedPrecondition);  // EPIPE
  CHECK(absl::StrContains(closed->message(), "\"half\": send"));
  CHECK(recorder.frames() == std::vector<std::string>{"bye"});
  CHECK(channel->SendFrame("again").code() ==
        absl::StatusCode::kFailedPrecondition);
  channel.reset();
  close(b);
}

TEST_CASE("Create refuses an fd that is not a stream socket and closes it") {
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
      FrameChannel::Create(p[0], {.name = "pipe"}, {});
  CHECK(channel.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(channel.status().message(), "\"pipe\""));
  CHECK(fcntl(p[0], F_GETFD) == -1);
  close(p[1]);
}

// Waits for `pid` up to 10 s; SIGKILLs and reaps it on timeout. Returns the
// wait status, or -1 if it had to be killed.
int ReapChild(pid_t pid) {
  absl::Time deadline = absl::Now() + kWait;
  int status = 0;
  while (absl::Now() < deadline) {
    pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) return status;
    if (got < 0 && errno != EINTR) return -1;
    absl::SleepFor(absl::Milliseconds(5));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

TEST_CASE("a child process echoes frames back over the channel") {
  int a, b;
  std::tie(a, b) = SocketPair();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // /bin/cat reads and writes the same socket: an echo server.
    if (dup2(b, 0) < 0 || dup2(b, 1) < 0) _exit(126);
    execl("/bin/cat", "cat", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(b);
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel =
      MakeChannel(a, recorder.Callbacks(), {.name = "cat"});
  constexpr int kFrames = 200;
  std::vector<std::string> sent;
  for (int i = 0; i < kFrames; ++i) {
    std::string body = Pattern(i, (i * 7919) % 100000);
    if (i % 2 == 0) {
      google::protobuf::BytesValue message;
      message.set_value(body);
      REQUIRE(channel->Send(message).ok());
      sent.push_back(message.SerializeAsString());
    } else {
      REQUIRE(channel->SendFrame(body).ok());
      sent.push_back(body);
    }
  }
  REQUIRE(recorder.WaitForFrames(kFrames));
  CHECK(recorder.frames() == sent);
  channel.reset();  // cat sees EOF and exits
  int status = ReapChild(pid);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(recorder.closed_calls() == 0);
}

// ---- Over a pair of pipes (CreateOnPipes) ----

// One pipe: {read end, write end}, close-on-exec.
std::pair<int, int> Pipe() {
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  return {p[0], p[1]};
}

std::unique_ptr<FrameChannel> MakePipeChannel(
    int read_fd, int write_fd, FrameChannel::Callbacks callbacks,
    FrameChannel::Options options = {}) {
  absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
      FrameChannel::CreateOnPipes(read_fd, write_fd, std::move(options),
                                  std::move(callbacks));
  REQUIRE(channel.ok());
  return *std::move(channel);
}

// Two channels joined by two pipes, as a parent and its child over the
// child's stdin and stdout.
struct PipePair {
  Recorder parent_seen, child_seen;
  std::unique_ptr<FrameChannel> parent, child;

  explicit PipePair(FrameChannel::Options options = {}) {
    auto [to_child_read, to_child_write] = Pipe();
    auto [from_child_read, from_child_write] = Pipe();
    options.name = "parent";
    parent = MakePipeChannel(from_child_read, to_child_write,
                             parent_seen.Callbacks(), options);
    options.name = "child";
    child = MakePipeChannel(to_child_read, from_child_write,
                            child_seen.Callbacks(), options);
  }
};

TEST_CASE("over two pipes, frames and messages arrive whole both ways") {
  PipePair pipes;
  const std::vector<size_t> sizes = {0, 1, 4, 5, 4095, 65536, 65537, 300000};
  std::vector<std::string> to_child, to_parent;
  for (size_t i = 0; i < sizes.size(); ++i) {
    to_child.push_back(Pattern(i, sizes[i]));
    to_parent.push_back(Pattern(100 + i, sizes[sizes.size() - 1 - i]));
    REQUIRE(pipes.parent->SendFrame(to_child.back()).ok());
    REQUIRE(pipes.child->SendFrame(to_parent.back()).ok());
  }
  google::protobuf::BytesValue message;
  message.set_value("with a NUL\0 and a newline\n");
  REQUIRE(pipes.child->Send(message).ok());
  to_parent.push_back(message.SerializeAsString());
  REQUIRE(pipes.child_seen.WaitForFrames(to_child.size()));
  REQUIRE(pipes.parent_seen.WaitForFrames(to_parent.size()));
  CHECK(pipes.child_seen.frames() == to_child);
  CHECK(pipes.parent_seen.frames() == to_parent);
  CHECK(pipes.parent->Flush(kWait));
  CHECK(pipes.child->Flush(kWait));
}

TEST_CASE("over two pipes, a frame far larger than a pipe's buffer arrives") {
  PipePair pipes;
  // 8 MiB: the pipe takes 64 KiB at a time, the rest waits in the queue.
  const std::string big = Pattern(9, 8 << 20);
  REQUIRE(pipes.parent->SendFrame(big).ok());
  REQUIRE(pipes.parent->SendFrame("after").ok());
  REQUIRE(pipes.child_seen.WaitForFrames(2));
  CHECK(pipes.child_seen.frames()[0] == big);
  CHECK(pipes.child_seen.frames()[1] == "after");
  CHECK(pipes.parent->Flush(kWait));
}

TEST_CASE("over two pipes, Close makes the peer end with OK (EOF)") {
  PipePair pipes;
  REQUIRE(pipes.parent->SendFrame("last").ok());
  REQUIRE(pipes.parent->Flush(kWait));
  pipes.parent->Close();
  std::optional<absl::Status> closed = pipes.child_seen.WaitForClosed();
  REQUIRE(closed.has_value());
  CHECK(closed->ok());
  CHECK(pipes.child_seen.frames() == std::vector<std::string>{"last"});
  CHECK(pipes.child->closed());
  absl::Status send = pipes.child->SendFrame("late");
  CHECK(send.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(send.message(), "closed by the peer"));
  pipes.parent.reset();
  CHECK(pipes.parent_seen.closed_calls() == 0);  // Close came first
}

TEST_CASE("over two pipes, a peer that closes its write end ends the channel") {
  auto [in_read, in_write] = Pipe();
  auto [out_read, out_write] = Pipe();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel = MakePipeChannel(
      in_read, out_write, recorder.Callbacks(), {.name = "stdio"});
  SECTION("at a frame boundary: OK") {
    WriteAll(in_write, Framed("hello") + Framed(""));
    close(in_write);
    std::optional<absl::Status> closed = recorder.WaitForClosed();
    REQUIRE(closed.has_value());
    CHECK(closed->ok());
    CHECK(recorder.frames() == std::vector<std::string>{"hello", ""});
  }
  SECTION("inside a frame: DATA_LOSS") {
    WriteAll(in_write, Framed("whole") + Header(100) + std::string(10, 'x'));
    close(in_write);
    std::optional<absl::Status> closed = recorder.WaitForClosed();
    REQUIRE(closed.has_value());
    CHECK(closed->code() == absl::StatusCode::kDataLoss);
    CHECK(absl::StrContains(closed->message(), "\"stdio\""));
    CHECK(absl::StrContains(closed->message(), "frame of 100 bytes (got 10)"));
    CHECK(recorder.frames() == std::vector<std::string>{"whole"});
  }
  // Either way the channel closed its write end too: the peer reads EOF.
  CHECK(SeesEof(out_read));
  channel.reset();
  close(out_read);
}

TEST_CASE(
    "over two pipes, a reader that went away is a broken pipe, not SIGPIPE") {
  auto [in_read, in_write] = Pipe();
  auto [out_read, out_write] = Pipe();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel = MakePipeChannel(
      in_read, out_write, recorder.Callbacks(), {.name = "gone"});
  WriteAll(in_write, Framed("bye"));
  REQUIRE(recorder.WaitForFrames(1));
  close(out_read);  // The peer is gone; SIGPIPE is not ignored here.
  REQUIRE(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
  absl::Status send = channel->SendFrame("hello?");
  CHECK(send.code() == absl::StatusCode::kFailedPrecondition);  // EPIPE
  CHECK(absl::StrContains(send.message(), "\"gone\""));
  std::optional<absl::Status> closed = recorder.WaitForClosed();
  REQUIRE(closed.has_value());
  CHECK(closed->code() == absl::StatusCode::kFailedPrecondition);
  CHECK(recorder.frames() == std::vector<std::string>{"bye"});
  channel.reset();
  close(in_write);
}

TEST_CASE(
    "over two pipes, a queue the channel thread flushes to a reader that "
    "goes away ends the channel with the broken pipe") {
  auto [in_read, in_write] = Pipe();
  auto [out_read, out_write] = Pipe();
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel = MakePipeChannel(
      in_read, out_write, recorder.Callbacks(), {.name = "stalled"});
  REQUIRE(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
  // More than the pipe holds: the rest is queued for the channel thread.
  REQUIRE(channel->SendFrame(std::string(1 << 20, 'q')).ok());
  CHECK_FALSE(channel->Flush(absl::Milliseconds(20)));
  close(out_read);
  std::optional<absl::Status> closed = recorder.WaitForClosed();
  REQUIRE(closed.has_value());
  CHECK(closed->code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(closed->message(), "\"stalled\": send"));
  channel.reset();
  close(in_write);
}

TEST_CASE("a child process echoes frames back over its stdin and stdout") {
  auto [to_child_read, to_child_write] = Pipe();
  auto [from_child_read, from_child_write] = Pipe();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (dup2(to_child_read, 0) < 0 || dup2(from_child_write, 1) < 0) {
      _exit(126);
    }
    execl("/bin/cat", "cat", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(to_child_read);
  close(from_child_write);
  Recorder recorder;
  std::unique_ptr<FrameChannel> channel = MakePipeChannel(
      from_child_read, to_child_write, recorder.Callbacks(), {.name = "cat"});
  std::vector<std::string> sent;
  for (int i = 0; i < 100; ++i) {
    sent.push_back(Pattern(i, (i * 7919) % 200000));
    REQUIRE(channel->SendFrame(sent.back()).ok());
  }
  REQUIRE(recorder.WaitForFrames(sent.size()));
  CHECK(recorder.frames() == sent);
  channel->Close();  // cat reads EOF on its stdin and exits
  int status = ReapChild(pid);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  channel.reset();
  CHECK(recorder.closed_calls() == 0);
}

TEST_CASE("CreateOnPipes refuses fds that cannot serve, and closes them") {
  auto [r, w] = Pipe();
  SECTION("the same fd twice") {
    absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
        FrameChannel::CreateOnPipes(r, r, {.name = "same"}, {});
    CHECK(channel.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(channel.status().message(), "two distinct fds"));
    CHECK(fcntl(r, F_GETFD) == -1);
    close(w);
  }
  SECTION("the ends swapped") {
    absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
        FrameChannel::CreateOnPipes(w, r, {.name = "swapped"}, {});
    CHECK(channel.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(channel.status().message(), "\"swapped\""));
    CHECK(absl::StrContains(channel.status().message(), "cannot be read"));
    CHECK(fcntl(r, F_GETFD) == -1);
    CHECK(fcntl(w, F_GETFD) == -1);
  }
  SECTION("a regular file") {
    char path[] = "/tmp/frame_channel_test.XXXXXX";
    int file = mkstemp(path);
    REQUIRE(file >= 0);
    unlink(path);
    absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
        FrameChannel::CreateOnPipes(r, file, {.name = "file"}, {});
    CHECK(channel.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(channel.status().message(),
                            "not a pipe, socket or terminal"));
    CHECK(fcntl(file, F_GETFD) == -1);
    CHECK(fcntl(r, F_GETFD) == -1);
    close(w);
  }
}

}  // namespace
}  // namespace mesh
