// Both sides of the register-back handshake in one process: the test plays
// the parent (a Registrar) and the child (a ParentChannel) over a real Unix
// socket.
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/bootstrap/parent_channel.h"
#include "lib/bootstrap/registrar.h"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

// A fresh directory, removed with everything in it at the end. Unix socket
// paths are short, so it falls back to /tmp when $TEST_TMPDIR is long.
using testing::TempDir;

// What the parent heard about one child.
struct ParentSide {
  absl::Notification registered;
  absl::Notification disconnected;
  std::string address;
  pid_t pid = 0;
  std::atomic<int> disconnects{0};

  Registrar::ChildCallbacks Callbacks() {
    return {
        .on_registered =
            [this](const std::string& a, pid_t p) {
              address = a;
              pid = p;
              registered.Notify();
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
    const TempDir& dir, absl::Duration orphan_timeout = absl::Seconds(30)) {
  Registrar::Options options;
  options.runtime_dir = dir.path() + "/run";
  options.orphan_timeout = orphan_timeout;
  absl::StatusOr<std::unique_ptr<Registrar>> registrar =
      Registrar::Create(options);
  REQUIRE(registrar.ok());
  return std::move(registrar).value();
}

// Does what a spawned child does: finds the inherited fd in the environment
// and reads its BootstrapInfo.
v1::BootstrapInfo ReadAsChild(const Registrar::Ticket& ticket) {
  REQUIRE(setenv(kBootstrapFdEnv, std::to_string(ticket.read_fd).c_str(), 1) ==
          0);
  absl::StatusOr<std::optional<v1::BootstrapInfo>> info =
      ParentChannel::ReadFromEnv();
  REQUIRE(info.ok());
  REQUIRE(info->has_value());
  CHECK(getenv(kBootstrapFdEnv) == nullptr);
  return **info;
}

// Expects child "p0_0" and registers it as the child would; returns its
// ticket and its open channel once the parent saw the registration.
struct RegisteredChild {
  Registrar::Ticket ticket;
  std::unique_ptr<ParentChannel> channel;
};

RegisteredChild RegisterChild(Registrar& registrar, ParentSide& parent,
                              ChildSide& child) {
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar.Expect("p0_0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(ReadAsChild(*ticket), "127.0.0.1:7451",
                              child.Callbacks());
  REQUIRE(channel.ok());
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  return {*ticket, std::move(channel).value()};
}

TEST_CASE(
    "a child with the right secret registers and the parent learns "
    "its address and pid") {
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir, absl::Milliseconds(1500));
  struct stat st;
  REQUIRE(stat((dir.path() + "/run").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);

  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("p0_3", 3, parent.Callbacks());
  REQUIRE(ticket.ok());
  v1::BootstrapInfo info = ReadAsChild(*ticket);
  CHECK(info.name() == "p0_3");
  CHECK(info.rank() == 3);
  CHECK(info.registry_socket() == registrar->socket_path());
  CHECK(info.secret().size() == 64);
  CHECK(info.advertise_host() == "127.0.0.1");
  CHECK(info.orphan_timeout_ms() == 1500);

  ChildSide child;
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(info, "127.0.0.1:7451", child.Callbacks());
  REQUIRE(channel.ok());
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  CHECK(parent.address == "127.0.0.1:7451");
  CHECK(parent.pid == getpid());
}

TEST_CASE(
    "a wrong secret, a replayed secret or an unknown name is "
    "PERMISSION_DENIED") {
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir);
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("p0_0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  const v1::BootstrapInfo info = ReadAsChild(*ticket);

  ChildSide child;
  v1::BootstrapInfo wrong = info;
  wrong.mutable_secret()->back() = wrong.secret().back() == '0' ? '1' : '0';
  absl::StatusOr<std::unique_ptr<ParentChannel>> rejected =
      ParentChannel::Register(wrong, "127.0.0.1:7451", child.Callbacks());
  CHECK(rejected.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(absl::StrContains(rejected.status().message(),
                          "register of \"p0_0\" rejected"));

  v1::BootstrapInfo unknown = info;
  unknown.set_name("p0_1");
  CHECK(ParentChannel::Register(unknown, "127.0.0.1:7451", child.Callbacks())
            .status()
            .code() == absl::StatusCode::kPermissionDenied);

  absl::StatusOr<std::unique_ptr<ParentChannel>> accepted =
      ParentChannel::Register(info, "127.0.0.1:7451", child.Callbacks());
  REQUIRE(accepted.ok());
  CHECK(ParentChannel::Register(info, "127.0.0.1:7452", child.Callbacks())
            .status()
            .code() == absl::StatusCode::kPermissionDenied);
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  CHECK(parent.address == "127.0.0.1:7451");
}

TEST_CASE("a bad address is INVALID_ARGUMENT and does not use up the secret") {
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir);
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("p0_0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  const v1::BootstrapInfo info = ReadAsChild(*ticket);

  ChildSide child;
  for (const char* bad : {"", "127.0.0.1", ":7451", "127.0.0.1:", "h:0",
                          "h:65536", "h:12x", "::1:7451"}) {
    INFO("address \"" << bad << "\"");
    CHECK(
        ParentChannel::Register(info, bad, child.Callbacks()).status().code() ==
        absl::StatusCode::kInvalidArgument);
  }
  CHECK_FALSE(parent.registered.HasBeenNotified());
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(info, "[::1]:7451", child.Callbacks());
  REQUIRE(channel.ok());
  REQUIRE(parent.registered.WaitForNotificationWithTimeout(kWait));
  CHECK(parent.address == "[::1]:7451");
}

TEST_CASE("SendStop reaches the child's on_stop with the reason and grace") {
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir);
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("p0_0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  const v1::BootstrapInfo info = ReadAsChild(*ticket);
  CHECK(registrar->SendStop(ticket->id, "too early", absl::Seconds(1)).code() ==
        absl::StatusCode::kFailedPrecondition);

  ChildSide child;
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(info, "127.0.0.1:7451", child.Callbacks());
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
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir);
  ChildSide child;
  auto [ticket, channel] = RegisterChild(*registrar, parent, child);

  channel.reset();
  REQUIRE(parent.disconnected.WaitForNotificationWithTimeout(kWait));
  CHECK(registrar->SendStop(ticket.id, "gone", absl::Seconds(1)).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK_FALSE(child.orphaned.HasBeenNotified());
}

TEST_CASE(
    "a child whose registrar is destroyed is orphaned after the "
    "orphan timeout") {
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir, absl::Milliseconds(200));
  ChildSide child;
  auto [ticket, channel] = RegisterChild(*registrar, parent, child);

  const std::string socket_path = registrar->socket_path();
  registrar.reset();
  CHECK_FALSE(std::filesystem::exists(socket_path));
  REQUIRE(child.orphaned.WaitForNotificationWithTimeout(kWait));
  // Destruction forgets every child: no callback ran for the disconnect.
  CHECK(parent.disconnects.load() == 0);
}

TEST_CASE(
    "a child forgotten after registering is orphaned and the parent "
    "hears nothing more about it") {
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir, absl::Milliseconds(200));
  ChildSide child;
  auto [ticket, channel] = RegisterChild(*registrar, parent, child);

  registrar->Forget(ticket.id);
  REQUIRE(child.orphaned.WaitForNotificationWithTimeout(kWait));
  CHECK(parent.disconnects.load() == 0);
  CHECK(registrar->SendStop(ticket.id, "gone", absl::Seconds(1)).code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("a secret forgotten before registration is rejected") {
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir);
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("p0_0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  const v1::BootstrapInfo info = ReadAsChild(*ticket);
  registrar->Forget(ticket->id);

  ChildSide child;
  CHECK(ParentChannel::Register(info, "127.0.0.1:7451", child.Callbacks())
            .status()
            .code() == absl::StatusCode::kPermissionDenied);
  CHECK_FALSE(parent.registered.HasBeenNotified());
}

TEST_CASE("a child may be forgotten from its own on_disconnected callback") {
  TempDir dir;
  uint64_t id = 0;
  absl::Notification forgotten;
  // Declared last of the three: destroying it waits for its callbacks.
  std::unique_ptr<Registrar> registrar = MakeRegistrar(dir);
  Registrar::ChildCallbacks callbacks;
  callbacks.on_disconnected = [&] {
    registrar->Forget(id);
    forgotten.Notify();
  };
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("p0_0", 0, std::move(callbacks));
  REQUIRE(ticket.ok());
  id = ticket->id;
  ChildSide child;
  absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
      ParentChannel::Register(ReadAsChild(*ticket), "127.0.0.1:7451",
                              child.Callbacks());
  REQUIRE(channel.ok());
  channel->reset();
  REQUIRE(forgotten.WaitForNotificationWithTimeout(kWait));
  CHECK(registrar->SendStop(id, "gone", absl::Seconds(1)).code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("a channel may be destroyed from its own on_orphaned callback") {
  TempDir dir;
  ParentSide parent;
  auto registrar = MakeRegistrar(dir, absl::Milliseconds(100));
  absl::StatusOr<Registrar::Ticket> ticket =
      registrar->Expect("p0_0", 0, parent.Callbacks());
  REQUIRE(ticket.ok());
  const v1::BootstrapInfo info = ReadAsChild(*ticket);

  // Shared with the callback, which outlives this test's frame: the
  // channel's thread is detached when the channel is destroyed from it.
  struct Holder {
    absl::Mutex mu;
    std::unique_ptr<ParentChannel> channel ABSL_GUARDED_BY(mu);
    absl::Notification destroyed;
  };
  auto holder = std::make_shared<Holder>();
  ParentChannel::Callbacks callbacks;
  callbacks.on_orphaned = [holder] {
    std::unique_ptr<ParentChannel> doomed;
    {
      absl::MutexLock l(&holder->mu);
      doomed = std::move(holder->channel);
    }
    doomed.reset();
    holder->destroyed.Notify();
  };
  {
    absl::StatusOr<std::unique_ptr<ParentChannel>> registered =
        ParentChannel::Register(info, "127.0.0.1:7451", std::move(callbacks));
    REQUIRE(registered.ok());
    absl::MutexLock l(&holder->mu);
    holder->channel = std::move(registered).value();
  }
  registrar.reset();
  REQUIRE(holder->destroyed.WaitForNotificationWithTimeout(kWait));
}

TEST_CASE(
    "the runtime dir is made private, and a non-directory there is "
    "FAILED_PRECONDITION") {
  TempDir dir;
  const std::string run = dir.path() + "/a/b/run";
  std::filesystem::create_directories(run);
  chmod(run.c_str(), 0755);
  {
    Registrar::Options options;
    options.runtime_dir = run;
    absl::StatusOr<std::unique_ptr<Registrar>> registrar =
        Registrar::Create(options);
    REQUIRE(registrar.ok());
    struct stat st;
    REQUIRE(stat(run.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
  }
  // A stale socket from an earlier registrar is replaced.
  {
    Registrar::Options options;
    options.runtime_dir = run;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string sock = run + "/registry.sock";
    strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    close(fd);
    CHECK(Registrar::Create(options).ok());
  }

  const std::string file = dir.path() + "/file";
  std::ofstream(file) << "not a dir";
  Registrar::Options options;
  options.runtime_dir = file;
  CHECK(Registrar::Create(options).status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE(
    "ReadFromEnv is nullopt without the variable and INVALID_ARGUMENT "
    "for garbage") {
  unsetenv(kBootstrapFdEnv);
  absl::StatusOr<std::optional<v1::BootstrapInfo>> none =
      ParentChannel::ReadFromEnv();
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());

  setenv(kBootstrapFdEnv, "not-a-number", 1);
  CHECK(ParentChannel::ReadFromEnv().status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(getenv(kBootstrapFdEnv) == nullptr);

  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const char garbage[] = "\xff\xff\xff garbage";
  REQUIRE(write(fds[1], garbage, sizeof(garbage)) ==
          static_cast<ssize_t>(sizeof(garbage)));
  close(fds[1]);
  setenv(kBootstrapFdEnv, std::to_string(fds[0]).c_str(), 1);
  CHECK(ParentChannel::ReadFromEnv().status().code() ==
        absl::StatusCode::kInvalidArgument);

  REQUIRE(pipe(fds) == 0);
  close(fds[1]);  // Empty: parses, but lacks every field.
  CHECK(ParentChannel::ReadFromFd(fds[0]).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a parent that never answers makes Register DEADLINE_EXCEEDED") {
  TempDir dir;
  // A socket that accepts connections into its backlog but never speaks.
  const std::string sock = dir.path() + "/mute.sock";
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(listen(fd, 8) == 0);

  v1::BootstrapInfo info;
  info.set_registry_socket(sock);
  info.set_name("p0_0");
  info.set_secret("00");
  ChildSide child;
  CHECK(ParentChannel::Register(info, "127.0.0.1:7451", child.Callbacks(),
                                absl::Milliseconds(300))
            .status()
            .code() == absl::StatusCode::kDeadlineExceeded);
  close(fd);
}

TEST_CASE("a parent that is not there makes Register UNAVAILABLE") {
  TempDir dir;
  v1::BootstrapInfo info;
  info.set_registry_socket(dir.path() + "/missing.sock");
  info.set_name("p0_0");
  info.set_secret("00");
  ChildSide child;
  CHECK(ParentChannel::Register(info, "127.0.0.1:7451", child.Callbacks())
            .status()
            .code() == absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace mesh
