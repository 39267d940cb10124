// Both sides of the register-back handshake in one process: the test plays
// the parent (a Registrar) and the child (a ParentChannel, or a RawChild
// that writes frames by hand) over the socketpair Expect() makes.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/bootstrap/parent_channel.h"
#include "lib/bootstrap/registrar.h"
#include "lib/channel/frame_channel.h"
#include "lib/testing/sockets.h"
#include "proto/bootstrap.pb.h"

namespace mesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

// What the parent heard about one child.
struct ParentSide {
  absl::Notification registered;
  absl::Notification disconnected;
  std::string address;
  pid_t pid = 0;
  std::atomic<int> registrations{0};
  std::atomic<int> disconnects{0};

  Registrar::ChildCallbacks Callbacks() {
    return {
        .on_registered =
            [this](const std::string& a, pid_t p) {
              address = a;
              pid = p;
              if (registrations.fetch_add(1) == 0) registered.Notify();
            },
        .on_disconnected =
            [this] {
              if (disconnects.fetch_add(1) == 0) disconnected.Notify();
            },
    };
  }
};

// What the child heard from its parent.
struct ChildSide {
  absl::Notification stopped;
  absl::Notification orphaned;
  std::string reason;
  absl::Duration grace;

  ParentChannel::Callbacks Callbacks() {
    return {
        .on_stop =
            [this](const std::string& r, absl::Duration g) {
              reason = r;
              grace = g;
              stopped.Notify();
            },
        .on_orphaned = [this] { orphaned.Notify(); },
    };
  }
};

std::unique_ptr<Registrar> MakeRegistrar(
    absl::Duration orphan_timeout = absl::Seconds(30)) {
  Registrar::Options options;
  options.orphan_timeout = orphan_timeout;
  absl::StatusOr<std::unique_ptr<Registrar>> registrar =
      Registrar::Create(options);
  REQUIRE(registrar.ok());
  return *std::move(registrar);
}

// What a spawned child does first: takes its end and reads the BootstrapInfo.
ParentChannel::Inherited Take(const Registrar::Ticket& ticket) {
  absl::StatusOr<ParentChannel::Inherited> inherited =
      ParentChannel::ReadFromFd(ticket.child_fd);
  REQUIRE(inherited.ok());
  return *std::move(inherited);
}

// Expects child `name` and registers it as the child would; returns its
// ticket and its open channel once the parent saw the registration.
struct RegisteredChild {
  Registrar::Ticket ticket;
  std::unique_ptr<ParentChannel> channel;
};

RegisteredChild RegisterChild(Registrar& registrar, ParentSide& parent,
                              ChildSide& child,
                              const std::string& name = "h0") {
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar.Expect(name, 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(Take(*ticket), "127.0.0.1:7451",
                              child.Callbacks());
  REQUIRE(channel.ok());
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  return {*ticket, *std::move(channel)};
}

// A 4-byte little-endian length, then the message.
std::string Framed(const google::protobuf::MessageLite& message) {
  const std::string body = message.SerializeAsString();
  const uint32_t n = static_cast<uint32_t>(body.size());
  std::string out = {
      static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
      static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
  return out + body;
}

void WriteAll(int fd, const std::string& data) {
  REQUIRE(write(fd, data.data(), data.size()) ==
          static_cast<ssize_t>(data.size()));
}

// A socketpair whose first end plays a parent that wrote `info`; returns
// the child's end.
int FakeParent(const v1::BootstrapInfo& info, int* parent_fd) {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  v1::ParentFrame frame;
  *frame.mutable_info() = info;
  WriteAll(fds[0], Framed(frame));
  *parent_fd = fds[0];
  return fds[1];
}

v1::BootstrapInfo CurrentInfo(const std::string& name) {
  v1::BootstrapInfo info;
  info.set_protocol_version(v1::BOOTSTRAP_VERSION_CURRENT);
  info.set_name(name);
  info.set_orphan_timeout_ms(1000);
  return info;
}

// A child that speaks the protocol by hand, to send what ParentChannel
// never would.
class RawChild {
 public:
  explicit RawChild(int fd) {
    FrameChannel::Callbacks callbacks;
    callbacks.on_frame = [this](std::string_view data) {
      v1::ParentFrame frame;
      frame.ParseFromArray(data.data(), static_cast<int>(data.size()));
      absl::MutexLock l(&mu_);
      frames_.push_back(std::move(frame));
    };
    absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
        FrameChannel::Create(fd, {.name = "raw child"}, std::move(callbacks));
    REQUIRE(channel.ok());
    channel_ = *std::move(channel);
  }

  void Register(const std::string& address,
                uint32_t version = v1::BOOTSTRAP_VERSION_CURRENT,
                int32_t pid = getpid()) {
    v1::ChildFrame frame;
    frame.mutable_register_()->set_protocol_version(version);
    frame.mutable_register_()->set_address(address);
    frame.mutable_register_()->set_pid(pid);
    REQUIRE(channel_->Send(frame).ok());
  }

  void SendGarbage() { REQUIRE(channel_->SendFrame("\xff\xff garbage").ok()); }

  // The parent's next frame.
  v1::ParentFrame Next() {
    absl::MutexLock l(&mu_);
    REQUIRE(mu_.AwaitWithTimeout(absl::Condition(this, &RawChild::HasFrame),
                                 kWait));
    v1::ParentFrame frame = std::move(frames_.front());
    frames_.pop_front();
    return frame;
  }

  // The parent's next frame, which must be a refusal with `code`.
  std::string NextRefusal(absl::StatusCode code) {
    v1::ParentFrame frame = Next();
    REQUIRE(frame.has_refused());
    CHECK(frame.refused().code() == static_cast<int>(code));
    return frame.refused().reason();
  }

  void Close() { channel_.reset(); }

 private:
  bool HasFrame() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !frames_.empty();
  }

  absl::Mutex mu_;
  std::deque<v1::ParentFrame> frames_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<FrameChannel> channel_;  // Last: goes first.
};

TEST_CASE(
    "a child registers over its inherited channel and the parent learns its "
    "address and pid") {
  ParentSide parent;
  auto registrar = MakeRegistrar(absl::Milliseconds(1500));
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h3", 3, parent.Callbacks());
  REQUIRE(ticket.ok());
  // Close-on-exec here: only the child it is handed to (by dup2) gets it.
  CHECK((fcntl(ticket->child_fd, F_GETFD) & FD_CLOEXEC) != 0);

  ParentChannel::Inherited inherited = Take(*ticket);
  CHECK(inherited.info().protocol_version() == v1::BOOTSTRAP_VERSION_CURRENT);
  CHECK(inherited.info().name() == "h3");
  CHECK(inherited.info().rank() == 3);
  CHECK(inherited.info().orphan_timeout_ms() == 1500);

  ChildSide child;
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(std::move(inherited), "127.0.0.1:7451",
                              child.Callbacks());
  REQUIRE(channel.ok());
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  CHECK(parent.address == "127.0.0.1:7451");
  CHECK(parent.pid == getpid());
}

TEST_CASE("a parent with many registered children listens on no socket") {
  constexpr int kChildren = 32;
  auto registrar = MakeRegistrar();
  std::vector<std::unique_ptr<ParentSide>> parents;
  std::vector<std::unique_ptr<ChildSide>> children;
  std::vector<Registrar::Ticket> tickets;
  for (int i = 0; i < kChildren; ++i) {
    parents.push_back(std::make_unique<ParentSide>());
    children.push_back(std::make_unique<ChildSide>());
    absl::StatusOr<Registrar::Ticket> ticket =
        registrar->Expect(absl::StrCat("h", i), i, parents.back()->Callbacks());
    REQUIRE(ticket.ok());
    tickets.push_back(*ticket);
  }
  // All register at once, each from its own thread.
  std::vector<absl::StatusOr<std::unique_ptr<ParentChannel>>> channels(
      kChildren);
  std::vector<std::thread> threads;
  for (int i = 0; i < kChildren; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<ParentChannel::Inherited> inherited =
          ParentChannel::ReadFromFd(tickets[i].child_fd);
      if (!inherited.ok()) {
        channels[i] = inherited.status();
        return;
      }
      channels[i] = ParentChannel::Register(
          *std::move(inherited), absl::StrCat("127.0.0.1:", 10000 + i),
          children[i]->Callbacks());
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kChildren; ++i) {
    INFO("child " << i);
    REQUIRE(channels[i].ok());
    REQUIRE(parents[i]->registered.WaitForNotificationWithTimeout(kWait));
    CHECK(parents[i]->address == absl::StrCat("127.0.0.1:", 10000 + i));
  }

  CHECK(testing::ListeningSockets(getpid()).empty());

  for (int i = 0; i < kChildren; ++i) {
    REQUIRE(registrar
                ->SendStop(tickets[i].id, absl::StrCat("stop ", i),
                           absl::Seconds(1))
                .ok());
  }
  for (int i = 0; i < kChildren; ++i) {
    INFO("child " << i);
    REQUIRE(children[i]->stopped.WaitForNotificationWithTimeout(kWait));
    CHECK(children[i]->reason == absl::StrCat("stop ", i));
  }
  channels.clear();
  for (int i = 0; i < kChildren; ++i) {
    INFO("child " << i);
    REQUIRE(parents[i]->disconnected.WaitForNotificationWithTimeout(kWait));
    CHECK(parents[i]->registrations.load() == 1);
  }
}

TEST_CASE(
    "a child without the inherited fd cannot register: there is nothing to "
    "dial and no other fd carries a bootstrap info") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  CHECK(testing::ListeningSockets(getpid()).empty());

  unsetenv(kBootstrapFdEnv);
  absl::StatusOr<std::optional<ParentChannel::Inherited>> none =
      ParentChannel::ReadFromEnv();
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());

  // A socket of its own hears nothing from anybody.
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  CHECK(ParentChannel::ReadFromFd(fds[1], absl::Milliseconds(200))
            .status()
            .code() == absl::StatusCode::kDeadlineExceeded);
  close(fds[0]);
  CHECK_FALSE(parent.registered.HasBeenNotified());
  close(ticket->child_fd);
}

TEST_CASE("a second register on the same channel is refused") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  RawChild raw(ticket->child_fd);
  CHECK(raw.Next().info().name() == "h0");

  raw.Register("127.0.0.1:7451");
  CHECK(raw.Next().has_accepted());
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  raw.Register("127.0.0.1:7452");
  const std::string why = raw.NextRefusal(absl::StatusCode::kAlreadyExists);
  CHECK(absl::StrContains(why, "child \"h0\" registered already"));
  // The first registration stands, and its channel is still open.
  CHECK(parent.address == "127.0.0.1:7451");
  CHECK(parent.registrations.load() == 1);
  CHECK(registrar->SendStop(ticket->id, "still here", absl::Seconds(1)).ok());
  CHECK(raw.Next().stop().reason() == "still here");

  raw.Close();
  REQUIRE(parent.disconnected.WaitForNotificationWithTimeout(kWait));
  CHECK(parent.disconnects.load() == 1);
}

TEST_CASE(
    "a child of another protocol version is refused with a message naming "
    "both versions") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  RawChild raw(ticket->child_fd);
  CHECK(raw.Next().has_info());

  raw.Register("127.0.0.1:7451", /*version=*/99);
  const std::string why =
      raw.NextRefusal(absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(why, "version 99"));
  CHECK(absl::StrContains(
      why, absl::StrCat("version ",
                        static_cast<int>(v1::BOOTSTRAP_VERSION_CURRENT))));
  CHECK_FALSE(parent.registered.HasBeenNotified());
  // Garbage is refused too, without ending the channel.
  raw.SendGarbage();
  raw.NextRefusal(absl::StatusCode::kInvalidArgument);
  raw.Register("127.0.0.1:7451");
  CHECK(raw.Next().has_accepted());
}

TEST_CASE(
    "a parent of another protocol version is refused by the child with a "
    "message naming both versions") {
  v1::BootstrapInfo info = CurrentInfo("h0");
  info.set_protocol_version(99);
  int parent_fd = -1;
  const int child_fd = FakeParent(info, &parent_fd);
  absl::StatusOr<ParentChannel::Inherited> inherited =
      ParentChannel::ReadFromFd(child_fd);
  CHECK(inherited.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(inherited.status().message(), "version 99"));
  CHECK(absl::StrContains(
      inherited.status().message(),
      absl::StrCat("version ",
                   static_cast<int>(v1::BOOTSTRAP_VERSION_CURRENT))));
  close(parent_fd);
}

TEST_CASE(
    "a bad address or pid is INVALID_ARGUMENT and does not use up the "
    "registration") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  RawChild raw(ticket->child_fd);
  CHECK(raw.Next().has_info());
  for (const char* bad : {"", "127.0.0.1", ":7451", "127.0.0.1:", "h:0",
                          "h:65536", "h:12x", "::1:7451"}) {
    INFO("address \"" << bad << "\"");
    raw.Register(bad);
    CHECK(absl::StrContains(raw.NextRefusal(absl::StatusCode::kInvalidArgument),
                            "is not host:port"));
  }
  raw.Register("127.0.0.1:7451", v1::BOOTSTRAP_VERSION_CURRENT, /*pid=*/0);
  CHECK(absl::StrContains(raw.NextRefusal(absl::StatusCode::kInvalidArgument),
                          "bad pid 0"));
  CHECK_FALSE(parent.registered.HasBeenNotified());

  raw.Register("[::1]:7451");
  CHECK(raw.Next().has_accepted());
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  CHECK(parent.address == "[::1]:7451");
}

TEST_CASE("a refused Register fails with the parent's code and reason") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  ChildSide child;
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(Take(*ticket), "no-port", child.Callbacks());
  CHECK(channel.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(channel.status().message(),
                          "parent refused the registration of \"h0\""));
  CHECK(absl::StrContains(channel.status().message(), "\"no-port\""));
  CHECK_FALSE(parent.registered.HasBeenNotified());
}

TEST_CASE("SendStop reaches the child's on_stop with the reason and grace") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  ParentChannel::Inherited inherited = Take(*ticket);
  CHECK(registrar->SendStop(ticket->id, "too early", absl::Seconds(1)).code() ==
        absl::StatusCode::kFailedPrecondition);

  ChildSide child;
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(std::move(inherited), "127.0.0.1:7451",
                              child.Callbacks());
  REQUIRE(channel.ok());
  REQUIRE(registrar->SendStop(ticket->id, "draining", absl::Milliseconds(1500))
              .ok());
  REQUIRE(child.stopped.WaitForNotificationWithTimeout(kWait));
  CHECK(child.reason == "draining");
  CHECK(child.grace == absl::Milliseconds(1500));
  CHECK(registrar->SendStop(ticket->id + 100, "nobody", absl::Seconds(1))
            .code() == absl::StatusCode::kNotFound);
}

TEST_CASE("destroying the child's channel tells the parent it disconnected") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  ChildSide child;
  auto [ticket, channel] = RegisterChild(*registrar, parent, child);

  channel.reset();
  REQUIRE(parent.disconnected.WaitForNotificationWithTimeout(kWait));
  CHECK(registrar->SendStop(ticket.id, "gone", absl::Seconds(1)).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK_FALSE(child.orphaned.HasBeenNotified());
  CHECK(parent.disconnects.load() == 1);
}

TEST_CASE(
    "a child whose registrar is destroyed is orphaned after the orphan "
    "timeout") {
  ParentSide parent;
  auto registrar = MakeRegistrar(absl::Milliseconds(200));
  ChildSide child;
  auto [ticket, channel] = RegisterChild(*registrar, parent, child);

  registrar.reset();
  REQUIRE(child.orphaned.WaitForNotificationWithTimeout(kWait));
  // Destruction forgets every child: no callback ran for the disconnect.
  CHECK(parent.disconnects.load() == 0);
}

TEST_CASE(
    "a child whose channel is destroyed within the orphan timeout is not "
    "orphaned") {
  ParentSide parent;
  auto registrar = MakeRegistrar(absl::Seconds(30));
  ChildSide child;
  auto [ticket, channel] = RegisterChild(*registrar, parent, child);
  registrar.reset();
  // The orphan wait is under way (or about to start); destroying the
  // channel ends it at once, without on_orphaned.
  channel.reset();
  CHECK_FALSE(child.orphaned.HasBeenNotified());
}

TEST_CASE(
    "a child forgotten after registering is orphaned and the parent hears "
    "nothing more about it") {
  ParentSide parent;
  auto registrar = MakeRegistrar(absl::Milliseconds(200));
  ChildSide child;
  auto [ticket, channel] = RegisterChild(*registrar, parent, child);

  registrar->Forget(ticket.id);
  REQUIRE(child.orphaned.WaitForNotificationWithTimeout(kWait));
  CHECK(parent.disconnects.load() == 0);
  CHECK(registrar->SendStop(ticket.id, "gone", absl::Seconds(1)).code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("a child forgotten before registering cannot register") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  ParentChannel::Inherited inherited = Take(*ticket);
  registrar->Forget(ticket->id);

  ChildSide child;
  CHECK(ParentChannel::Register(std::move(inherited), "127.0.0.1:7451",
                                child.Callbacks())
            .status()
            .code() == absl::StatusCode::kUnavailable);
  CHECK_FALSE(parent.registered.HasBeenNotified());
}

TEST_CASE("a child may be forgotten from its own callbacks") {
  std::unique_ptr<Registrar> registrar = MakeRegistrar(absl::Milliseconds(100));
  uint64_t id = 0;
  absl::Notification forgotten;
  std::atomic<int> after_forget{0};
  Registrar::ChildCallbacks callbacks;
  ChildSide child;
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel;

  SECTION("on_registered") {
    callbacks.on_registered = [&](const std::string&, pid_t) {
      registrar->Forget(id);
      forgotten.Notify();
    };
    callbacks.on_disconnected = [&] { after_forget.fetch_add(1); };
    absl::StatusOr<Registrar::Ticket> ticket =
        registrar->Expect("h0", 0, std::move(callbacks));
    REQUIRE(ticket.ok());
    id = ticket->id;
    channel = ParentChannel::Register(Take(*ticket), "127.0.0.1:7451",
                                      child.Callbacks());
    REQUIRE(channel.ok());
    REQUIRE(forgotten.WaitForNotificationWithTimeout(kWait));
    // Its channel was closed: the child is orphaned.
    REQUIRE(child.orphaned.WaitForNotificationWithTimeout(kWait));
    // The next Expect joins the forgotten channel's thread.
    CHECK(registrar->Expect("h1", 1, {}).ok());
  }
  SECTION("on_disconnected") {
    callbacks.on_disconnected = [&] {
      registrar->Forget(id);
      forgotten.Notify();
    };
    absl::StatusOr<Registrar::Ticket> ticket =
        registrar->Expect("h0", 0, std::move(callbacks));
    REQUIRE(ticket.ok());
    id = ticket->id;
    channel = ParentChannel::Register(Take(*ticket), "127.0.0.1:7451",
                                      child.Callbacks());
    REQUIRE(channel.ok());
    channel->reset();
    REQUIRE(forgotten.WaitForNotificationWithTimeout(kWait));
  }
  CHECK(registrar->SendStop(id, "gone", absl::Seconds(1)).code() ==
        absl::StatusCode::kNotFound);
  registrar.reset();
  CHECK(after_forget.load() == 0);
}

TEST_CASE("a channel may be destroyed from its own callbacks") {
  ParentSide parent;
  auto registrar = MakeRegistrar(absl::Milliseconds(100));
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());

  // Shared with the callbacks, which outlive this test's frame: the
  // channel's thread is joined elsewhere when the channel is destroyed from
  // it.
  struct Holder {
    absl::Mutex mu;
    std::unique_ptr<ParentChannel> channel ABSL_GUARDED_BY(mu);
    absl::Notification destroyed;
    void Destroy() {
      std::unique_ptr<ParentChannel> doomed;
      {
        absl::MutexLock l(&mu);
        doomed = std::move(channel);
      }
      doomed.reset();
      destroyed.Notify();
    }
  };
  auto holder = std::make_shared<Holder>();
  ParentChannel::Callbacks callbacks;
  {
    absl::MutexLock l(&holder->mu);
    callbacks.on_orphaned = [holder] { holder->Destroy(); };
    callbacks.on_stop = [holder](const std::string&, absl::Duration) {
      holder->Destroy();
    };
  }
  {
    absl::StatusOr<std::unique_ptr<ParentChannel>> registered =
        ParentChannel::Register(Take(*ticket), "127.0.0.1:7451",
                                std::move(callbacks));
    REQUIRE(registered.ok());
    absl::MutexLock l(&holder->mu);
    holder->channel = *std::move(registered);
  }
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  SECTION("on_orphaned") { registrar.reset(); }
  SECTION("on_stop") {
    REQUIRE(registrar->SendStop(ticket->id, "bye", absl::Seconds(1)).ok());
    // The parent sees the child's channel close.
    REQUIRE(parent.disconnected.WaitForNotificationWithTimeout(kWait));
  }
  REQUIRE(holder->destroyed.WaitForNotificationWithTimeout(kWait));
}

// Runs `fn` in a forked child, which has one thread (ReadFromEnv refuses to
// touch the environment while a second thread runs), and returns what it
// returned.
std::string InSingleThreadedChild(const std::function<std::string()>& fn) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return "pipe failed";
  pid_t child = fork();
  if (child == 0) {
    close(out[0]);
    std::string result = fn();
    WriteAll(out[1], result);
    _exit(0);
  }
  close(out[1]);
  std::string result;
  char buffer[256];
  ssize_t n;
  while ((n = read(out[0], buffer, sizeof(buffer))) > 0) {
    result.append(buffer, n);
  }
  close(out[0]);
  int status = 0;
  waitpid(child, &status, 0);
  return result;
}

TEST_CASE(
    "ReadFromEnv takes the fd and unsets the variable, is nullopt without "
    "it, INVALID_ARGUMENT for garbage, and FAILED_PRECONDITION while other "
    "threads run") {
  ParentSide parent;
  auto registrar = MakeRegistrar();
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("h7", 7, parent.Callbacks());
  REQUIRE(ticket.ok());
  REQUIRE(setenv(kBootstrapFdEnv, std::to_string(ticket->child_fd).c_str(),
                 1) == 0);
  CHECK(std::string(kBootstrapFdEnv) == "HOSTMESH_PARENT_FD");
  // This process runs the registrar's threads: the variable stays.
  CHECK(ParentChannel::ReadFromEnv().status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(getenv(kBootstrapFdEnv) != nullptr);

  const int child_fd = ticket->child_fd;
  CHECK(InSingleThreadedChild([child_fd] {
          std::string out;
          {
            absl::StatusOr<std::optional<ParentChannel::Inherited>> inherited =
                ParentChannel::ReadFromEnv();
            if (!inherited.ok()) return inherited.status().ToString();
            if (!inherited->has_value()) return std::string("none");
            absl::StrAppend(
                &out, (*inherited)->info().name(), " ",
                (*inherited)->info().rank(), " ",
                getenv(kBootstrapFdEnv) == nullptr ? "unset" : "set");
          }
          // Dropping the Inherited closed the fd.
          absl::StrAppend(&out,
                          fcntl(child_fd, F_GETFD) == -1 ? " closed" : " open");
          absl::StatusOr<std::optional<ParentChannel::Inherited>> none =
              ParentChannel::ReadFromEnv();
          absl::StrAppend(&out,
                          none.ok() && !none->has_value() ? " none" : " some");
          for (const char* value : {"not-a-number", "1", "-4"}) {
            setenv(kBootstrapFdEnv, value, 1);
            absl::Status status = ParentChannel::ReadFromEnv().status();
            absl::StrAppend(
                &out, " ", value, ":", absl::StatusCodeToString(status.code()),
                getenv(kBootstrapFdEnv) == nullptr ? ",unset" : ",set");
          }
          int pipe_fds[2];
          if (pipe(pipe_fds) != 0) return out + " pipe failed";
          close(pipe_fds[1]);  // Not a socket.
          setenv(kBootstrapFdEnv, std::to_string(pipe_fds[0]).c_str(), 1);
          absl::StrAppend(&out, " pipe:",
                          absl::StatusCodeToString(
                              ParentChannel::ReadFromEnv().status().code()));
          return out;
        }) ==
        "h7 7 unset closed none not-a-number:INVALID_ARGUMENT,unset "
        "1:INVALID_ARGUMENT,unset -4:INVALID_ARGUMENT,unset "
        "pipe:INVALID_ARGUMENT");
  unsetenv(kBootstrapFdEnv);

  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  WriteAll(fds[0], std::string("\x09\x00\x00\x00\xff\xff garbage", 13));
  CHECK(ParentChannel::ReadFromFd(fds[1]).status().code() ==
        absl::StatusCode::kInvalidArgument);
  close(fds[0]);

  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  WriteAll(fds[0], std::string("\xff\xff\xff\x7f", 4));  // 2 GiB "frame".
  CHECK(ParentChannel::ReadFromFd(fds[1]).status().code() ==
        absl::StatusCode::kInvalidArgument);
  close(fds[0]);

  v1::BootstrapInfo nameless = CurrentInfo("");
  int parent_fd = -1;
  CHECK(ParentChannel::ReadFromFd(FakeParent(nameless, &parent_fd))
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  close(parent_fd);
}

TEST_CASE("a parent that never answers makes Register DEADLINE_EXCEEDED") {
  int parent_fd = -1;
  const int child_fd = FakeParent(CurrentInfo("h0"), &parent_fd);
  absl::StatusOr<ParentChannel::Inherited> inherited =
      ParentChannel::ReadFromFd(child_fd);
  REQUIRE(inherited.ok());
  ChildSide child;
  CHECK(ParentChannel::Register(*std::move(inherited), "127.0.0.1:7451",
                                child.Callbacks(), absl::Milliseconds(300))
            .status()
            .code() == absl::StatusCode::kDeadlineExceeded);
  close(parent_fd);
}

TEST_CASE("a parent that is gone makes Register UNAVAILABLE") {
  int parent_fd = -1;
  const int child_fd = FakeParent(CurrentInfo("h0"), &parent_fd);
  close(parent_fd);
  // What the parent wrote before it went is still there.
  absl::StatusOr<ParentChannel::Inherited> inherited =
      ParentChannel::ReadFromFd(child_fd);
  REQUIRE(inherited.ok());
  ChildSide child;
  CHECK(ParentChannel::Register(*std::move(inherited), "127.0.0.1:7451",
                                child.Callbacks())
            .status()
            .code() == absl::StatusCode::kUnavailable);

  // And with nothing written at all, ReadFromFd says so.
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  close(fds[0]);
  CHECK(ParentChannel::ReadFromFd(fds[1]).status().code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE("a negative orphan timeout is INVALID_ARGUMENT") {
  Registrar::Options options;
  options.orphan_timeout = absl::Seconds(-1);
  CHECK(Registrar::Create(options).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mesh
