// The real procd binary, spawned by a FakeHost that plays its hostd over
// the proc's channel (a socketpair): the handshake, the actor verbs,
// envelopes, stopping, orphaning, and that a proc serves no port.
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/mailbox/mailbox.h"
#include "lib/testing/sockets.h"
#include "lib/testing/temp_dir.h"
#include "procd/testing/fake_host.h"
#include "procd/testing/rejoin_listener.h"
#include "proto/actors.pb.h"
#include "proto/proc.pb.h"
#include "proto/proc_channel.pb.h"

namespace mesh {
namespace {

using testing::FakeHost;
using testing::RejoinListener;

std::string ProcdPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  REQUIRE(srcdir != nullptr);
  return absl::StrCat(srcdir, "/hostmesh/procd/procd");
}

// Starts procd under a FakeHost.
std::unique_ptr<FakeHost> StartProcd(FakeHost::Options options = {}) {
  options.binary = ProcdPath();
  absl::StatusOr<std::unique_ptr<FakeHost>> host =
      FakeHost::Start(std::move(options));
  INFO(host.status().ToString());
  REQUIRE(host.ok());
  return *std::move(host);
}

// Starts procd and waits for its Hello.
std::unique_ptr<FakeHost> StartRunning(
    v1::Welcome welcome = FakeHost::DefaultWelcome(),
    std::vector<std::string> args = {}) {
  FakeHost::Options options;
  options.welcome = std::move(welcome);
  options.args = std::move(args);
  std::unique_ptr<FakeHost> host = StartProcd(std::move(options));
  absl::StatusOr<v1::Hello> hello = host->WaitHello();
  INFO(host->Output());
  REQUIRE(hello.ok());
  // Accepted (by the FakeHost, at the Hello): the proc knows it.
  REQUIRE(host->WaitReady());
  return host;
}

absl::Status ErrorOf(const v1::ProcResponse& response) {
  return absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                      response.error().message());
}

// Sends `request` and returns the response, which must have come.
v1::ProcResponse Call(FakeHost& host, v1::ProcRequest request) {
  absl::StatusOr<v1::ProcResponse> response = host.Request(std::move(request));
  INFO(response.status().ToString());
  REQUIRE(response.ok());
  return *std::move(response);
}

v1::ProcResponse Create(FakeHost& host, const std::string& name,
                        const std::string& type, uint64_t rank = 0,
                        const v1::PortRef* supervisor = nullptr) {
  v1::ProcRequest request;
  v1::CreateOrUpdateActorRequest* create = request.mutable_create_actor();
  create->set_name(name);
  create->set_type(type);
  create->set_rank(rank);
  create->set_proc("ignored by the proc");
  if (supervisor != nullptr) *create->mutable_supervisor() = *supervisor;
  return Call(host, std::move(request));
}

v1::ProcInfo GetInfo(FakeHost& host) {
  v1::ProcRequest request;
  request.mutable_get_info();
  v1::ProcResponse response = Call(host, std::move(request));
  REQUIRE(response.has_info());
  return response.info();
}

// Waits for the proc to exit; requires exit code `code`.
void RequireExit(FakeHost& host, int code) {
  std::optional<int> status = host.WaitExit();
  INFO(host.Output());
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == code);
}

// The inodes of the sockets process `pid` holds open.
std::set<std::string> SocketInodes(pid_t pid) {
  std::set<std::string> inodes;
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* fds = opendir(dir.c_str());
  REQUIRE(fds != nullptr);
  while (dirent* entry = readdir(fds)) {
    char target[256];
    ssize_t n = readlink(absl::StrCat(dir, "/", entry->d_name).c_str(), target,
                         sizeof(target) - 1);
    if (n <= 0) continue;
    std::string link(target, n);
    if (absl::StartsWith(link, "socket:[") && absl::EndsWith(link, "]")) {
      inodes.insert(link.substr(8, link.size() - 9));
    }
  }
  closedir(fds);
  return inodes;
}

// A line of /proc/<pid>/status, e.g. "Threads", without its name.
std::string StatusField(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, field + ":")) {
      return std::string(
          absl::StripAsciiWhitespace(line.substr(field.size() + 1)));
    }
  }
  return "";
}

TEST_CASE(
    "a procd started by a host says Hello and describes itself as the "
    "Welcome named it") {
  v1::Welcome welcome = FakeHost::DefaultWelcome();
  welcome.set_name("p9_3");
  welcome.set_rank(3);
  welcome.set_host("h1:7450");
  FakeHost::Options options;
  options.welcome = welcome;
  std::unique_ptr<FakeHost> host = StartProcd(std::move(options));
  absl::StatusOr<v1::Hello> hello = host->WaitHello();
  REQUIRE(hello.ok());
  CHECK(hello->protocol_version() == v1::PROC_CHANNEL_VERSION_CURRENT);
  CHECK(hello->pid() == host->pid());
  CHECK(std::vector<std::string>(hello->actor_types().begin(),
                                 hello->actor_types().end()) ==
        std::vector<std::string>{"mesh.counter", "mesh.echo"});

  v1::ProcInfo info = GetInfo(*host);
  CHECK(info.name() == "p9_3");
  CHECK(info.rank() == 3);
  CHECK(info.host() == "h1:7450");
  CHECK(info.pid() == host->pid());
  CHECK(info.num_actors() == 0);
  CHECK(info.actor_types_size() == 2);
}

TEST_CASE("a procd serves the actor verbs over its channel") {
  std::unique_ptr<FakeHost> host = StartRunning();
  v1::ProcResponse created = Create(*host, "a0", "mesh.echo", /*rank=*/1);
  REQUIRE(created.has_actor());
  CHECK(created.actor().ref().host() == "fakehost:7450");
  CHECK(created.actor().ref().proc() == "p0");
  CHECK(created.actor().ref().actor() == "a0");
  CHECK(created.actor().ref().rank() == 1);
  CHECK(Create(*host, "a0", "mesh.echo", 1).has_actor());
  CHECK(ErrorOf(Create(*host, "a0", "mesh.counter", 1)).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(ErrorOf(Create(*host, "../a1", "mesh.echo")).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ErrorOf(Create(*host, "a1", "no.such.type")).code() ==
        absl::StatusCode::kInvalidArgument);

  v1::ProcRequest wait;
  wait.mutable_wait_actors()->add_names("a0");
  wait.mutable_wait_actors()->set_min_status(v1::RUNNING);
  wait.mutable_wait_actors()->set_timeout_ms(30000);
  v1::ProcResponse waited = Call(*host, wait);
  REQUIRE(waited.wait_actors().actors_size() == 1);
  CHECK(waited.wait_actors().actors(0).status() == v1::RUNNING);

  v1::ProcRequest get;
  get.mutable_get_actor()->set_name("a0");
  CHECK(Call(*host, get).actor().status() == v1::RUNNING);
  get.mutable_get_actor()->set_name("nobody");
  CHECK(ErrorOf(Call(*host, get)).code() == absl::StatusCode::kNotFound);

  v1::ProcRequest list;
  list.mutable_list_actors();
  CHECK(Call(*host, list).list_actors().actors_size() == 1);
  CHECK(GetInfo(*host).num_actors() == 1);

  v1::ProcRequest call;
  call.set_id(77);
  v1::Echo echo;
  echo.set_text("hi");
  call.mutable_call_actor()->set_actor("a0");
  call.mutable_call_actor()->mutable_payload()->PackFrom(echo);
  v1::ProcResponse called = Call(*host, call);
  CHECK(called.id() == 77);
  v1::Echo echoed;
  REQUIRE(called.call_actor().reply().UnpackTo(&echoed));
  CHECK(echoed.text() == "hi");
  call.mutable_call_actor()->set_actor("ghost");
  CHECK(ErrorOf(Call(*host, call)).code() == absl::StatusCode::kNotFound);

  v1::ProcRequest stop;
  stop.mutable_stop_actor()->set_name("a0");
  CHECK(Call(*host, stop).actor().status() == v1::STOPPED);
}

TEST_CASE(
    "an envelope to an actor is answered at a client's port, and supervision "
    "reaches the client") {
  std::unique_ptr<FakeHost> host = StartRunning();
  v1::PortRef supervisor = host->OpenPort();
  REQUIRE(Create(*host, "a0", "mesh.echo", 2, &supervisor).has_actor());

  v1::PortRef also = host->OpenPort();
  v1::GetActorId get_id;
  *get_id.mutable_port() = also;
  v1::Envelope envelope = EnvelopeToActor(host->ActorOfProc("a0"), get_id);
  envelope.set_cast_rank(5);
  envelope.set_correlation(1234);
  absl::StatusOr<v1::Envelope> reply = host->Ask(std::move(envelope));
  REQUIRE(reply.ok());
  CHECK(reply->to_host().empty());
  CHECK(reply->to_mailbox() == FakeHost::kClientMailbox);
  CHECK(reply->correlation() == 1234);
  CHECK(reply->sender() == "p0@fakehost:7450");
  absl::StatusOr<v1::ActorIdReply> id = UnpackPayload<v1::ActorIdReply>(*reply);
  REQUIRE(id.ok());
  CHECK(id->id().host() == "fakehost:7450");
  CHECK(id->id().proc() == "p0");
  CHECK(id->id().actor() == "a0");
  CHECK(id->rank() == 2);
  CHECK(id->cast_rank() == 5);
  CHECK(id->pid() == host->pid());
  REQUIRE(host->WaitEnvelopes(also, 1).ok());

  absl::StatusOr<v1::Envelope> unknown =
      host->Ask(EnvelopeToActor(host->ActorOfProc("ghost"), v1::Echo()));
  REQUIRE(unknown.ok());
  CHECK(UnpackPayload<v1::Echo>(*unknown).status().code() ==
        absl::StatusCode::kNotFound);

  v1::Fail fail;
  fail.set_why("test says so");
  absl::StatusOr<v1::Envelope> failed =
      host->Ask(EnvelopeToActor(host->ActorOfProc("a0"), fail));
  REQUIRE(failed.ok());
  CHECK(UnpackPayload<v1::Fail>(*failed).status().code() ==
        absl::StatusCode::kInternal);
  absl::StatusOr<std::vector<v1::Envelope>> events =
      host->WaitEnvelopes(supervisor, 1);
  REQUIRE(events.ok());
  absl::StatusOr<v1::SupervisionEvent> event =
      UnpackPayload<v1::SupervisionEvent>((*events)[0]);
  REQUIRE(event.ok());
  CHECK(event->actor().name() == "a0");
  CHECK(event->actor().status() == v1::FAILED);
}

TEST_CASE("10,000 messages from each of two senders keep each sender's order") {
  std::unique_ptr<FakeHost> host = StartRunning();
  REQUIRE(Create(*host, "a0", "mesh.echo").has_actor());
  constexpr int kCount = 10000;
  // Catch2 assertions belong to the test's thread: the senders return what
  // went wrong.
  auto send_all = [&host](const std::string& sender) {
    for (int i = 1; i <= kCount; ++i) {
      v1::Seq seq;
      seq.set_n(i);
      v1::Envelope envelope = EnvelopeToActor(host->ActorOfProc("a0"), seq);
      envelope.set_sender(sender);
      absl::Status sent = host->SendEnvelope(std::move(envelope));
      if (!sent.ok()) return sent;
    }
    return absl::OkStatus();
  };
  absl::Status sent_a;
  absl::Status sent_b;
  std::thread a([&] { sent_a = send_all("client:a"); });
  std::thread b([&] { sent_b = send_all("client:b"); });
  a.join();
  b.join();
  REQUIRE(sent_a.ok());
  REQUIRE(sent_b.ok());
  absl::StatusOr<v1::Envelope> reply =
      host->Ask(EnvelopeToActor(host->ActorOfProc("a0"), v1::GetSeqReport()));
  REQUIRE(reply.ok());
  absl::StatusOr<v1::SeqReport> report = UnpackPayload<v1::SeqReport>(*reply);
  REQUIRE(report.ok());
  CHECK(report->received() == 2 * kCount);
  CHECK(report->out_of_order() == 0);
  REQUIRE(report->last_by_sender_size() == 2);
  CHECK(report->last_by_sender().at("client:a") == kCount);
  CHECK(report->last_by_sender().at("client:b") == kCount);
}

TEST_CASE(
    "a procd welcomed with another protocol version says Hello with its own "
    "and exits 1 naming both") {
  v1::Welcome welcome = FakeHost::DefaultWelcome();
  welcome.set_protocol_version(1);
  FakeHost::Options options;
  options.welcome = welcome;
  std::unique_ptr<FakeHost> host = StartProcd(std::move(options));
  absl::StatusOr<v1::Hello> hello = host->WaitHello();
  REQUIRE(hello.ok());
  CHECK(hello->protocol_version() == v1::PROC_CHANNEL_VERSION_CURRENT);
  RequireExit(*host, 1);
  CHECK(absl::StrContains(
      host->Output(), "hostd speaks proc channel protocol v1, this proc v2"));
}

TEST_CASE(
    "a procd its host refuses for its version exits 1 with the host's "
    "reason") {
  std::unique_ptr<FakeHost> host = StartRunning();
  const std::string reason =
      "proc \"p0\" speaks proc channel protocol v1, this hostd v2";
  REQUIRE(host->SendRefused(reason).ok());
  host->CloseChannel();
  RequireExit(*host, 1);
  CHECK(absl::StrContains(host->Output(), reason));
}

TEST_CASE("a procd asked to stop by its host exits 0 and closes its channel") {
  std::unique_ptr<FakeHost> host = StartRunning();
  REQUIRE(Create(*host, "a0", "mesh.echo").has_actor());
  REQUIRE(host->SendStop("test is done", absl::Seconds(10)).ok());
  CHECK(host->WaitChannelClosed());
  RequireExit(*host, 0);
  CHECK(absl::StrContains(host->Output(), "test is done"));
}

TEST_CASE(
    "a procd stopping answers the requests still waiting before its channel "
    "closes") {
  std::unique_ptr<FakeHost> host = StartRunning();
  v1::ProcRequest wait;
  wait.mutable_wait_actors()->add_names("never");
  wait.mutable_wait_actors()->set_min_status(v1::RUNNING);
  wait.mutable_wait_actors()->set_timeout_ms(600000);
  absl::StatusOr<uint64_t> waiting = host->SendRequest(wait);
  REQUIRE(waiting.ok());
  absl::StatusOr<uint64_t> cancelled = host->SendRequest(wait);
  REQUIRE(cancelled.ok());
  REQUIRE(host->SendCancel(*cancelled).ok());
  REQUIRE(host->SendStop("test is done", absl::Seconds(10)).ok());
  absl::StatusOr<v1::ProcResponse> answered = host->WaitResponse(*waiting);
  REQUIRE(answered.ok());
  CHECK(ErrorOf(*answered).code() == absl::StatusCode::kUnavailable);
  CHECK(host->WaitChannelClosed());
  // The cancelled one was dropped: no answer even at the shutdown.
  CHECK_FALSE(host->HasResponse(*cancelled));
  RequireExit(*host, 0);
}

TEST_CASE("a procd exits 0 on SIGTERM") {
  std::unique_ptr<FakeHost> host = StartRunning();
  REQUIRE(Create(*host, "a0", "mesh.echo").has_actor());
  host->Kill(SIGTERM);
  RequireExit(*host, 0);
}

TEST_CASE("a procd asked to StopAll with exit_proc answers and exits 0") {
  std::unique_ptr<FakeHost> host = StartRunning();
  REQUIRE(Create(*host, "c0", "mesh.counter").has_actor());
  v1::ProcRequest stop_all;
  stop_all.mutable_stop_all()->set_reason("test done");
  stop_all.mutable_stop_all()->set_exit_proc(true);
  v1::ProcResponse stopped = Call(*host, stop_all);
  REQUIRE(stopped.stop_all().stopped_size() == 1);
  CHECK(stopped.stop_all().stopped(0).status() == v1::STOPPED);
  RequireExit(*host, 0);
}

TEST_CASE("a procd whose channel closed exits 0 after the orphan timeout") {
  v1::Welcome welcome = FakeHost::DefaultWelcome();
  welcome.set_orphan_timeout_ms(300);
  std::unique_ptr<FakeHost> host = StartRunning(welcome);
  const absl::Time closed = absl::Now();
  host->CloseChannel();
  RequireExit(*host, 0);
  // It cannot have left before its timer ran out.
  CHECK(absl::Now() - closed >= absl::Milliseconds(300));
  CHECK(absl::StrContains(host->Output(), "orphaned"));
}

TEST_CASE(
    "a procd whose channel closes before its host accepted it exits 1 at "
    "once") {
  v1::Welcome welcome = FakeHost::DefaultWelcome();
  welcome.set_orphan_timeout_ms(600000);
  FakeHost::Options options;
  options.welcome = welcome;
  options.accept = false;
  std::unique_ptr<FakeHost> host = StartProcd(std::move(options));
  REQUIRE(host->WaitHello().ok());
  const absl::Time closed = absl::Now();
  host->CloseChannel();
  RequireExit(*host, 1);
  CHECK(absl::Now() - closed < absl::Seconds(20));
  CHECK(absl::StrContains(host->Output(),
                          "hostd went away before accepting this proc"));
}

TEST_CASE(
    "a procd cut off from its host rejoins through the rejoin socket and "
    "serves on with its actors' state") {
  testing::TempDir dir;
  const std::string socket = dir.path() + "/rejoin.sock";
  absl::StatusOr<std::unique_ptr<RejoinListener>> listener =
      RejoinListener::Listen(socket);
  REQUIRE(listener.ok());
  v1::Welcome welcome = FakeHost::DefaultWelcome();
  welcome.set_rejoin_socket(socket);
  welcome.set_incarnation(5);
  std::unique_ptr<FakeHost> host = StartRunning(welcome);
  REQUIRE(Create(*host, "a0", "mesh.echo").has_actor());
  host->CloseChannel();

  absl::StatusOr<v1::ProcFrame> rejoin = (*listener)->WaitFrame(1, 1);
  REQUIRE(rejoin.ok());
  CHECK(rejoin->rejoin().name() == "p0");
  CHECK(rejoin->rejoin().incarnation() == 5);
  CHECK(rejoin->rejoin().pid() == host->pid());
  CHECK(rejoin->rejoin().secret() == FakeHost::kSecret);
  v1::HostFrame rejoined;
  rejoined.mutable_rejoined()->set_secret("another secret");
  rejoined.mutable_rejoined()->set_host("fakehost:7450");
  REQUIRE((*listener)->Send(1, rejoined).ok());
  absl::StatusOr<v1::ProcFrame> ready = (*listener)->WaitFrame(1, 2);
  REQUIRE(ready.ok());
  CHECK(ready->has_ready());

  // The new connection carries the verbs; the actor is still there.
  v1::HostFrame list;
  list.mutable_request()->set_id(77);
  list.mutable_request()->mutable_list_actors();
  REQUIRE((*listener)->Send(1, list).ok());
  absl::StatusOr<v1::ProcFrame> listed = (*listener)->WaitFrame(1, 3);
  REQUIRE(listed.ok());
  REQUIRE(listed->response().id() == 77);
  REQUIRE(listed->response().list_actors().actors_size() == 1);
  CHECK(listed->response().list_actors().actors(0).name() == "a0");

  v1::HostFrame stop;
  stop.mutable_stop()->set_reason("test is done");
  REQUIRE((*listener)->Send(1, stop).ok());
  RequireExit(*host, 0);
}

TEST_CASE(
    "a procd cut off from its host with nobody at the rejoin socket exits 0 "
    "at the orphan timeout") {
  testing::TempDir dir;
  v1::Welcome welcome = FakeHost::DefaultWelcome();
  welcome.set_rejoin_socket(dir.path() + "/rejoin.sock");
  welcome.set_orphan_timeout_ms(300);
  std::unique_ptr<FakeHost> host = StartRunning(welcome);
  const absl::Time closed = absl::Now();
  host->CloseChannel();
  RequireExit(*host, 0);
  CHECK(absl::Now() - closed >= absl::Milliseconds(300));
  CHECK(absl::StrContains(host->Output(), "orphaned"));
}

TEST_CASE("--orphan-timeout overrides the host's orphan timeout") {
  v1::Welcome welcome = FakeHost::DefaultWelcome();
  welcome.set_orphan_timeout_ms(600000);
  std::unique_ptr<FakeHost> host =
      StartRunning(welcome, {"--orphan-timeout=100ms"});
  host->CloseChannel();
  RequireExit(*host, 0);
}

TEST_CASE(
    "a procd without HOSTMESH_CHANNEL_FD exits 2 saying a proc is reached "
    "only through its host") {
  FakeHost::Options options;
  options.give_channel = false;
  std::unique_ptr<FakeHost> host = StartProcd(std::move(options));
  RequireExit(*host, 2);
  CHECK(absl::StrContains(
      host->Output(),
      "procd: not started by a hostd (no HOSTMESH_CHANNEL_FD): a proc is "
      "reached only through its host"));
}

TEST_CASE("a procd whose channel closes before the Welcome exits 1") {
  FakeHost::Options options;
  options.welcome = std::nullopt;
  std::unique_ptr<FakeHost> host = StartProcd(std::move(options));
  host->CloseChannel();
  RequireExit(*host, 1);
  CHECK(absl::StrContains(host->Output(), "Welcome"));
}

TEST_CASE("the listening-socket check sees a listening socket") {
  int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(tcp >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(tcp, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
          0);
  REQUIRE(listen(tcp, 1) == 0);
  int unix_socket = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(unix_socket >= 0);
  sockaddr_un unix_address{};
  unix_address.sun_family = AF_UNIX;
  // Abstract: no file to clean up.
  const std::string name = absl::StrCat("procd_test.", getpid());
  std::copy(name.begin(), name.end(), unix_address.sun_path + 1);
  REQUIRE(bind(unix_socket, reinterpret_cast<sockaddr*>(&unix_address),
               sizeof(sa_family_t) + 1 + name.size()) == 0);
  REQUIRE(listen(unix_socket, 1) == 0);
  std::vector<std::string> serving = testing::ListeningSockets(getpid());
  close(tcp);
  close(unix_socket);
  CHECK(serving.size() == 2);
}

TEST_CASE("a procd serves no listening socket of any family") {
  std::unique_ptr<FakeHost> host = StartRunning();
  GetInfo(*host);  // Past its start-up.
  std::cerr << "idle procd without actors: Threads "
            << StatusField(host->pid(), "Threads") << ", VmRSS "
            << StatusField(host->pid(), "VmRSS") << std::endl;
  REQUIRE(Create(*host, "a0", "mesh.echo").has_actor());
  REQUIRE(host->Ask(EnvelopeToActor(host->ActorOfProc("a0"), v1::Echo())).ok());
  // Its one socket is the channel.
  CHECK(SocketInodes(host->pid()).size() == 1);
  std::vector<std::string> serving = testing::ListeningSockets(host->pid());
  INFO(absl::StrJoin(serving, ", "));
  CHECK(serving.empty());
  std::cerr << "idle procd with one actor: Threads "
            << StatusField(host->pid(), "Threads") << ", VmRSS "
            << StatusField(host->pid(), "VmRSS") << std::endl;
}

}  // namespace
}  // namespace mesh
