// ProcChannels' handshake (v2: Hello, accept(), Accepted, Ready) and rejoin
// (Listen, Rejoin, AcceptRejoin/RefuseRejoin) against a proc side the test
// plays itself: FrameChannels on socketpair ends and on connections to a
// real rejoin socket in a temp dir. No process is started.
#include "hostd/proc_channels.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/auth/sha256.h"
#include "lib/channel/frame_channel.h"
#include "lib/channel/unix_socket.h"
#include "lib/testing/collected.h"
#include "lib/testing/temp_dir.h"
#include "proto/proc_channel.pb.h"

namespace mesh {
namespace {

constexpr char kHost[] = "127.0.0.1:7450";
constexpr uint32_t kVersion = v1::PROC_CHANNEL_VERSION_CURRENT;
// How long "nothing happens" is watched for.
constexpr absl::Duration kQuiet = absl::Milliseconds(200);

using testing::Collected;

// The proc side of one channel: records every HostFrame and sends what the
// test tells it to.
class FakeProc {
 public:
  explicit FakeProc(int fd) {
    FrameChannel::Callbacks callbacks;
    callbacks.on_frame = [this](std::string_view bytes) {
      v1::HostFrame frame;
      frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
      received_.Add(std::move(frame));
    };
    callbacks.on_closed = [this](const absl::Status&) { closed_.Notify(); };
    auto channel = FrameChannel::Create(fd, {}, std::move(callbacks));
    REQUIRE(channel.ok());
    channel_ = *std::move(channel);
  }

  // Connects to the rejoin socket at `path`.
  static std::unique_ptr<FakeProc> Dial(const std::string& path) {
    absl::StatusOr<int> fd = DialUnix(path);
    REQUIRE(fd.ok());
    return std::make_unique<FakeProc>(*fd);
  }

  void Send(const v1::ProcFrame& frame) { REQUIRE(channel_->Send(frame).ok()); }
  void SendHello(uint32_t version = kVersion) {
    v1::ProcFrame frame;
    frame.mutable_hello()->set_protocol_version(version);
    frame.mutable_hello()->set_pid(getpid());
    Send(frame);
  }
  void SendReady() {
    v1::ProcFrame frame;
    frame.mutable_ready();
    Send(frame);
  }
  void SendRejoin(const std::string& name, const std::string& secret,
                  uint32_t version = kVersion) {
    v1::ProcFrame frame;
    v1::Rejoin* rejoin = frame.mutable_rejoin();
    rejoin->set_protocol_version(version);
    rejoin->set_name(name);
    rejoin->set_incarnation(3);
    rejoin->set_pid(getpid());
    rejoin->set_secret(secret);
    rejoin->add_actor_types("counter");
    Send(frame);
  }

  // True once the host closed the connection.
  bool WaitClosed(absl::Duration timeout = absl::Seconds(20)) {
    return closed_.WaitForNotificationWithTimeout(timeout);
  }
  bool closed() const { return closed_.HasBeenNotified(); }
  void Close() { channel_->Close(); }
  Collected<v1::HostFrame>& received() { return received_; }

 private:
  Collected<v1::HostFrame> received_;
  absl::Notification closed_;
  std::unique_ptr<FrameChannel> channel_;
};

// What a child's callbacks saw.
struct Seen {
  struct Hello {
    pid_t pid;
    std::string verifier;
    std::function<void()> accept;
  };
  ProcChannels::ChildCallbacks Callbacks() {
    ProcChannels::ChildCallbacks callbacks;
    callbacks.on_hello = [this](pid_t pid, std::string verifier,
                                std::function<void()> accept) {
      hellos.Add(Hello{pid, std::move(verifier), std::move(accept)});
    };
    callbacks.on_registered = [this](pid_t pid) { registered.Add(pid); };
    callbacks.on_refused = [this](const std::string& why) { refused.Add(why); };
    callbacks.on_disconnected = [this] { disconnected.Add(1); };
    return callbacks;
  }
  Collected<Hello> hellos;
  Collected<pid_t> registered;
  Collected<std::string> refused;
  Collected<int> disconnected;
};

// ProcChannels listening on a rejoin socket in a temp dir; each Rejoin is
// recorded (and answered by the test).
struct Host {
  explicit Host(ProcChannels::Options options = {}) {
    channels = std::make_unique<ProcChannels>(options);
    channels->Start(kHost, [this](const std::string& proc, v1::Envelope e) {
      envelopes.Add({proc, std::move(e)});
    });
    socket = dir.path() + "/procs.sock";
  }
  void Listen(mode_t mode = 0600) {
    REQUIRE(channels
                ->Listen(socket, mode,
                         [this](ProcChannels::RejoinRequest request) {
                           rejoins.Add(std::move(request));
                         })
                .ok());
  }

  testing::TempDir dir;
  std::string socket;
  std::unique_ptr<ProcChannels> channels;
  Collected<ProcChannels::RejoinRequest> rejoins;
  Collected<std::pair<std::string, v1::Envelope>> envelopes;
};

std::string Secret(char fill) { return std::string(32, fill); }

TEST_CASE(
    "a spawned proc gets Accepted only after the manager's accept() and is "
    "registered only on its Ready") {
  Host host;
  host.Listen();
  Seen seen;
  auto ticket = host.channels->Expect("p", 4, 7, seen.Callbacks());
  REQUIRE(ticket.ok());
  FakeProc proc(ticket->child_fd);

  REQUIRE(proc.received().WaitFor(1));
  const v1::Welcome welcome = proc.received().items()[0].welcome();
  CHECK(welcome.protocol_version() == kVersion);
  CHECK(welcome.name() == "p");
  CHECK(welcome.rank() == 4);
  CHECK(welcome.incarnation() == 7);
  CHECK(welcome.host() == kHost);
  CHECK(welcome.rejoin_socket() == host.socket);

  proc.SendHello();
  REQUIRE(seen.hellos.WaitFor(1));
  Seen::Hello hello = seen.hellos.items()[0];
  CHECK(hello.pid == getpid());
  CHECK(hello.verifier.size() == 32);
  // Nothing goes out until the manager accepts.
  absl::SleepFor(kQuiet);
  CHECK(proc.received().size() == 1);

  hello.accept();
  hello.accept();  // at most once
  REQUIRE(proc.received().WaitFor(2));
  const v1::HostFrame accepted = proc.received().items()[1];
  REQUIRE(accepted.has_accepted());
  CHECK(accepted.accepted().secret().size() == ProcChannels::kSecretBytes);
  CHECK(Sha256(accepted.accepted().secret()) == hello.verifier);

  // Accepted is not RUNNING: the proc is not reachable before its Ready.
  absl::SleepFor(kQuiet);
  CHECK(seen.registered.size() == 0);
  v1::Envelope envelope;
  envelope.set_actor("a");
  CHECK(host.channels->SendEnvelope("p", envelope).code() ==
        absl::StatusCode::kNotFound);
  CHECK(host.channels->SendStop(ticket->id, "no", absl::Seconds(1)).code() ==
        absl::StatusCode::kFailedPrecondition);

  proc.SendReady();
  REQUIRE(seen.registered.WaitFor(1));
  CHECK(seen.registered.items()[0] == getpid());
  CHECK(host.channels->SendEnvelope("p", envelope).ok());
  REQUIRE(proc.received().WaitFor(3));
  CHECK(proc.received().items()[2].envelope().actor() == "a");
  // The second accept() sent nothing.
  CHECK(proc.received().size() == 3);
  close(ticket->child_fd);
}

TEST_CASE(
    "without Listen a Welcome names no rejoin socket, and a proc without "
    "on_hello is accepted at once") {
  ProcChannels channels{ProcChannels::Options()};
  channels.Start(kHost, nullptr);
  Collected<pid_t> registered;
  ProcChannels::ChildCallbacks callbacks;
  callbacks.on_registered = [&registered](pid_t pid) { registered.Add(pid); };
  auto ticket = channels.Expect("p", 0, 1, std::move(callbacks));
  REQUIRE(ticket.ok());
  FakeProc proc(ticket->child_fd);
  REQUIRE(proc.received().WaitFor(1));
  CHECK(proc.received().items()[0].welcome().rejoin_socket().empty());
  proc.SendHello();
  REQUIRE(proc.received().WaitFor(2));
  CHECK(proc.received().items()[1].has_accepted());
  proc.SendReady();
  REQUIRE(registered.WaitFor(1));
}

TEST_CASE(
    "a proc whose channel closed before accept() is never accepted or "
    "registered; accept() then does nothing, even after the channels are "
    "gone") {
  auto channels = std::make_unique<ProcChannels>(ProcChannels::Options());
  channels->Start(kHost, nullptr);
  Seen seen;
  auto ticket = channels->Expect("p", 0, 1, seen.Callbacks());
  REQUIRE(ticket.ok());
  auto proc = std::make_unique<FakeProc>(ticket->child_fd);
  proc->SendHello();
  REQUIRE(seen.hellos.WaitFor(1));
  proc->Close();  // the proc was killed
  proc.reset();
  absl::SleepFor(kQuiet);  // the host sees EOF
  seen.hellos.items()[0].accept();
  absl::SleepFor(kQuiet);
  CHECK(seen.registered.size() == 0);
  CHECK(seen.disconnected.size() == 0);  // it never registered
  channels->Forget(ticket->id);
  channels.reset();
  seen.hellos.items()[0].accept();  // the ProcChannels is gone
}

TEST_CASE(
    "envelopes sent in a SendBatch reach the proc in order, before those "
    "sent after it") {
  ProcChannels channels{ProcChannels::Options()};
  channels.Start(kHost, nullptr);
  Collected<pid_t> registered;
  ProcChannels::ChildCallbacks callbacks;
  callbacks.on_registered = [&registered](pid_t pid) { registered.Add(pid); };
  auto ticket = channels.Expect("p", 0, 1, std::move(callbacks));
  REQUIRE(ticket.ok());
  FakeProc proc(ticket->child_fd);
  REQUIRE(proc.received().WaitFor(1));
  proc.SendHello();
  REQUIRE(proc.received().WaitFor(2));
  proc.SendReady();
  REQUIRE(registered.WaitFor(1));
  constexpr int kCount = 500;
  {
    ProcChannels::SendBatch batch(&channels);
    ProcChannels::SendBatch inner(&channels);  // nested: does nothing
    for (int i = 0; i < kCount; ++i) {
      v1::Envelope envelope;
      envelope.set_correlation(i);
      REQUIRE(channels.SendEnvelope("p", envelope).ok());
    }
    v1::Envelope nowhere;
    CHECK(channels.SendEnvelope("q", nowhere).code() ==
          absl::StatusCode::kNotFound);
  }
  v1::Envelope after;
  after.set_correlation(kCount);
  REQUIRE(channels.SendEnvelope("p", after).ok());
  REQUIRE(proc.received().WaitFor(2 + kCount + 1));
  std::vector<v1::HostFrame> frames = proc.received().items();
  int out_of_order = 0;
  for (int i = 0; i <= kCount; ++i) {
    if (frames[2 + i].envelope().correlation() != static_cast<uint64_t>(i)) {
      ++out_of_order;
    }
  }
  CHECK(out_of_order == 0);
  close(ticket->child_fd);
}

TEST_CASE("a spawned proc of another protocol version is refused naming both") {
  Host host;
  Seen seen;
  auto ticket = host.channels->Expect("old", 0, 1, seen.Callbacks());
  REQUIRE(ticket.ok());
  FakeProc proc(ticket->child_fd);
  proc.SendHello(1);
  REQUIRE(seen.refused.WaitFor(1));
  CHECK(seen.refused.items()[0].find("version 1, this hostd version 2") !=
        std::string::npos);
  REQUIRE(proc.received().WaitFor(2));
  CHECK(proc.received().items()[1].refused().reason() ==
        seen.refused.items()[0]);
  CHECK(proc.WaitClosed());
  CHECK(seen.hellos.size() == 0);
}

TEST_CASE(
    "Listen binds the rejoin socket with the given mode, replaces "
    "a stale one, refuses a non-socket and unlinks its own at the end") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/procs.sock";
  {
    ProcChannels stale{ProcChannels::Options()};
    stale.Start(kHost, nullptr);
    REQUIRE(stale.Listen(path, 0600, [](auto) {}).ok());
    CHECK(stale.Listen(path, 0600, [](auto) {}).code() ==
          absl::StatusCode::kFailedPrecondition);
  }
  struct stat st;
  CHECK(lstat(path.c_str(), &st) != 0);  // unlinked with its ProcChannels
  // A socket left behind (as by a hostd killed with -9) is replaced.
  absl::StatusOr<int> stale = ListenUnix(path, 0600);
  REQUIRE(stale.ok());
  close(*stale);
  {
    ProcChannels channels{ProcChannels::Options()};
    channels.Start(kHost, nullptr);
    REQUIRE(channels.Listen(path, 0640, [](auto) {}).ok());
    REQUIRE(lstat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0640);
    auto proc = FakeProc::Dial(path);  // it accepts
  }
  const std::string file = dir.path() + "/file";
  FILE* f = fopen(file.c_str(), "w");
  REQUIRE(f != nullptr);
  fclose(f);
  ProcChannels channels{ProcChannels::Options()};
  channels.Start(kHost, nullptr);
  absl::Status status = channels.Listen(file, 0600, [](auto) {});
  CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(lstat(file.c_str(), &st) == 0);  // not removed
}

TEST_CASE(
    "a Rejoin on the rejoin socket reaches the handler with both verifiers "
    "and the peer's pid and uid, never the secret") {
  Host host;
  host.Listen();
  auto proc = FakeProc::Dial(host.socket);
  proc->SendRejoin("p", Secret('s'));
  REQUIRE(host.rejoins.WaitFor(1));
  const ProcChannels::RejoinRequest request = host.rejoins.items()[0];
  CHECK(request.id != 0);
  CHECK(request.rejoin.protocol_version() == kVersion);
  CHECK(request.rejoin.name() == "p");
  CHECK(request.rejoin.incarnation() == 3);
  CHECK(request.rejoin.pid() == getpid());
  CHECK(request.rejoin.actor_types_size() == 1);
  CHECK(request.rejoin.secret().empty());
  CHECK(request.presented_verifier == Sha256(Secret('s')));
  CHECK(request.next_verifier.size() == 32);
  CHECK(request.next_verifier != request.presented_verifier);
  CHECK(request.peer_pid == getpid());
  CHECK(request.peer_uid == getuid());
  // Nothing is answered before the manager does.
  absl::SleepFor(kQuiet);
  CHECK(proc->received().size() == 0);
  CHECK_FALSE(proc->closed());
}

TEST_CASE(
    "an accepted rejoin gets Rejoined with the next secret, registers on its "
    "Ready and is then the proc's channel by name") {
  Host host;
  host.Listen();
  auto proc = FakeProc::Dial(host.socket);
  proc->SendRejoin("p", Secret('s'));
  REQUIRE(host.rejoins.WaitFor(1));
  const ProcChannels::RejoinRequest request = host.rejoins.items()[0];
  Seen seen;
  host.channels->AcceptRejoin(request.id, "p", 2, seen.Callbacks());
  host.channels->RefuseRejoin(request.id, "too late");  // answered already
  REQUIRE(proc->received().WaitFor(1));
  const v1::HostFrame rejoined = proc->received().items()[0];
  REQUIRE(rejoined.has_rejoined());
  CHECK(rejoined.rejoined().host() == kHost);
  CHECK(Sha256(rejoined.rejoined().secret()) == request.next_verifier);

  v1::Envelope envelope;
  envelope.set_actor("a");
  absl::SleepFor(kQuiet);
  CHECK(seen.registered.size() == 0);
  CHECK(host.channels->SendEnvelope("p", envelope).code() ==
        absl::StatusCode::kNotFound);

  proc->SendReady();
  REQUIRE(seen.registered.WaitFor(1));
  CHECK(seen.registered.items()[0] == getpid());
  CHECK(seen.hellos.size() == 0);

  // Envelopes both ways, a relayed request, a stop: as for a spawned proc.
  REQUIRE(host.channels->SendEnvelope("p", envelope).ok());
  v1::ProcFrame out;
  out.mutable_envelope()->set_actor("back");
  proc->Send(out);
  REQUIRE(host.envelopes.WaitFor(1));
  CHECK(host.envelopes.items()[0].first == "p");
  CHECK(host.envelopes.items()[0].second.actor() == "back");
  Collected<absl::StatusOr<v1::ProcResponse>> answers;
  v1::ProcRequest info;
  info.mutable_get_info();
  host.channels->Request("p", info, absl::Now() + absl::Seconds(20),
                         [&answers](absl::StatusOr<v1::ProcResponse> r) {
                           answers.Add(std::move(r));
                         });
  REQUIRE(host.channels->SendStop(request.id, "bye", absl::Seconds(3)).ok());
  REQUIRE(proc->received().WaitFor(4));
  std::vector<v1::HostFrame> frames = proc->received().items();
  CHECK(frames[1].envelope().actor() == "a");
  REQUIRE(frames[2].has_request());
  CHECK(frames[3].stop().reason() == "bye");
  CHECK(frames[3].stop().grace_ms() == 3000);
  out.Clear();
  out.mutable_response()->set_id(frames[2].request().id());
  out.mutable_response()->mutable_info()->set_name("p");
  proc->Send(out);
  REQUIRE(answers.WaitFor(1));
  REQUIRE(answers.items()[0].ok());
  CHECK(answers.items()[0]->info().name() == "p");

  proc->Close();
  REQUIRE(seen.disconnected.WaitFor(1));
  CHECK(host.channels->SendEnvelope("p", envelope).code() ==
        absl::StatusCode::kNotFound);
  // The manager forgets it as any proc's channel.
  absl::Notification drained;
  host.channels->Forget(request.id, [&drained] { drained.Notify(); });
  CHECK(drained.HasBeenNotified());
}

TEST_CASE("a refused rejoin gets Refused with the reason and is closed") {
  Host host;
  host.Listen();
  auto proc = FakeProc::Dial(host.socket);
  proc->SendRejoin("p", Secret('x'));
  REQUIRE(host.rejoins.WaitFor(1));
  const uint64_t id = host.rejoins.items()[0].id;
  host.channels->RefuseRejoin(id, "proc \"p\" presented a wrong secret");
  Seen seen;
  host.channels->AcceptRejoin(id, "p", 0, seen.Callbacks());  // too late
  REQUIRE(proc->WaitClosed());
  std::vector<v1::HostFrame> frames = proc->received().items();
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].refused().reason() == "proc \"p\" presented a wrong secret");
}

TEST_CASE(
    "a rejoin connection that sends nothing is closed after the first-frame "
    "deadline, not before") {
  ProcChannels::Options options;
  options.rejoin_first_frame_timeout = absl::Milliseconds(500);
  Host host(options);
  host.Listen();
  const absl::Time start = absl::Now();
  auto proc = FakeProc::Dial(host.socket);
  REQUIRE(proc->WaitClosed());
  CHECK(absl::Now() - start >= absl::Milliseconds(450));
  CHECK(host.rejoins.size() == 0);
  CHECK(proc->received().size() == 0);
}

TEST_CASE(
    "a rejoin connection whose first frame is not a Rejoin is closed at "
    "once") {
  Host host;  // the first-frame deadline is 5 s: not what closes it
  host.Listen();
  auto hello = FakeProc::Dial(host.socket);
  hello->SendHello();
  auto garbage = FakeProc::Dial(host.socket);
  v1::ProcFrame ready;
  ready.mutable_ready();
  garbage->Send(ready);
  REQUIRE(hello->WaitClosed(absl::Seconds(3)));
  REQUIRE(garbage->WaitClosed(absl::Seconds(3)));
  CHECK(host.rejoins.size() == 0);
  CHECK(hello->received().size() == 0);
}

TEST_CASE(
    "a Rejoin of another protocol version is refused naming both versions, "
    "without asking the manager") {
  Host host;
  host.Listen();
  auto proc = FakeProc::Dial(host.socket);
  proc->SendRejoin("p", Secret('s'), 1);
  REQUIRE(proc->WaitClosed());
  std::vector<v1::HostFrame> frames = proc->received().items();
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].refused().reason().find("version 1, this hostd version 2") !=
        std::string::npos);
  CHECK(host.rejoins.size() == 0);
}

TEST_CASE(
    "at most max_waiting_rejoins connections wait for an answer; one more is "
    "closed at once") {
  ProcChannels::Options options;
  options.max_waiting_rejoins = 2;
  Host host(options);
  host.Listen();
  auto first = FakeProc::Dial(host.socket);
  first->SendRejoin("a", Secret('a'));
  auto second = FakeProc::Dial(host.socket);  // waits for its Rejoin
  REQUIRE(host.rejoins.WaitFor(1));
  auto third = FakeProc::Dial(host.socket);
  REQUIRE(third->WaitClosed(absl::Seconds(3)));
  CHECK_FALSE(second->closed());
  // An answer makes room.
  host.channels->RefuseRejoin(host.rejoins.items()[0].id, "no");
  REQUIRE(first->WaitClosed());
  auto fourth = FakeProc::Dial(host.socket);
  fourth->SendRejoin("d", Secret('d'));
  REQUIRE(host.rejoins.WaitFor(2));
  CHECK(host.rejoins.items()[1].rejoin.name() == "d");
}

}  // namespace
}  // namespace mesh
