// Host unreachable vs host lost, end to end with real hostd processes: a
// stopped hostd (SIGSTOP) is unreachable and then reachable again (SIGCONT)
// with nothing lost; a killed one is lost after the grace with its procs; a
// restarted one (another incarnation) is lost at once. Bounds are short
// here and checked against a generous multiple (2-core CI runs tests in
// parallel); the measured times are printed.
#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "client/testing/host_events.h"
#include "hostmesh/hostmesh.h"
#include "lib/auth/credentials.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::HostEvents;
using testing::IsAlive;
using testing::NewHealthClient;
using testing::TestHost;
using testing::WithClient;

constexpr absl::Duration kWait = absl::Seconds(30);
// hostd's heartbeats, and the client's bound: five missed heartbeats.
constexpr absl::Duration kBeat = absl::Milliseconds(100);
constexpr absl::Duration kUnreachableAfter = absl::Milliseconds(500);
// What the tests accept: the bound (plus a tick) with room for a loaded
// 2-core machine.
constexpr absl::Duration kSlack = absl::Seconds(3);

std::vector<std::string> HostdArgs() {
  return {absl::StrCat("--heartbeat-interval=", absl::FormatDuration(kBeat)),
          "--orphan-timeout=2s"};
}

// SIGCONTs a stopped hostd however the test ends, so that its cleanup
// (ShutdownHost, signals) can proceed.
struct Continue {
  pid_t pid;
  ~Continue() {
    if (IsAlive(pid)) kill(pid, SIGCONT);
  }
};

// Procs whose hostd was killed exit by themselves after the orphan timeout;
// any still there after a while are killed (each is its own group leader).
void AwaitOrphans(const std::set<pid_t>& pids) {
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (pid_t pid : pids) {
    while (IsAlive(pid) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (IsAlive(pid)) {
      FAIL_CHECK("orphaned proc " << pid << " did not exit by itself");
      kill(-pid, SIGKILL);
    }
  }
}

// Every reply failed with UNAVAILABLE naming `host` as unreachable or lost.
void CheckFailedFast(
    const std::vector<absl::StatusOr<v1::ActorIdReply>>& replies,
    const std::string& host) {
  for (const auto& reply : replies) {
    INFO(reply.status().ToString());
    CHECK(reply.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(reply.status().message()),
               Catch::Contains(absl::StrCat("host ", host, " is")));
  }
}

struct Mesh {
  HostMesh hosts;
  ProcMesh procs;
  ActorMesh actors;
};

// Two procs with an echo actor each on `host`.
Mesh SpawnOn(const std::shared_ptr<Client>& client, const std::string& host) {
  absl::StatusOr<HostMesh> hosts = HostMesh::Attach({host}, WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("hh", 2);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> actors = procs->Spawn("a0", "mesh.echo");
  REQUIRE(actors.ok());
  return Mesh{*std::move(hosts), *std::move(procs), *std::move(actors)};
}

std::set<pid_t> PidsOf(const ProcMesh& procs) {
  std::set<pid_t> pids;
  for (const v1::ProcState& proc : procs.procs()) pids.insert(proc.pid());
  return pids;
}

TEST_CASE(
    "hostd sends a heartbeat when a relay stream opens, then every interval, "
    "and a closing one last when it shuts down") {
  auto host = TestHost::Start(HostdArgs());
  REQUIRE(host != nullptr);
  auto relay = v1::Relay::NewStub(host->channel());
  auto context = testing::Context(kWait);
  context->AddMetadata("mesh-sender", "client:0123456789abcdef");
  // Before the stream opens: a read of the first heartbeat may come late and
  // find the next ones queued, so the pace is measured from here.
  absl::Time start = absl::Now();
  auto stream = relay->Connect(context.get());
  v1::RelayFrame frame;
  REQUIRE(stream->Read(&frame));
  REQUIRE(frame.has_heartbeat());
  const uint64_t incarnation = frame.heartbeat().incarnation();
  CHECK(incarnation != 0);
  CHECK(frame.heartbeat().interval_ms() == 100);
  CHECK_FALSE(frame.heartbeat().closing());
  for (int i = 0; i < 5; ++i) {
    REQUIRE(stream->Read(&frame));
    CHECK(frame.heartbeat().incarnation() == incarnation);
  }
  absl::Duration five = absl::Now() - start;
  // Paced, not flooded: hostd's one ticker beats for every stream (the first
  // beat after the open one comes at any phase) and a beat may be half a
  // tick early (RelayService::Tick), so 4 intervals take at least 4 halves.
  CHECK(five >= 2 * kBeat);
  CHECK(five < 5 * kBeat + kSlack);

  v1::ShutdownHostRequest request;
  request.set_grace_ms(1000);
  v1::ShutdownHostResponse response;
  REQUIRE(host->stub()
              .ShutdownHost(testing::Context(kWait).get(), request, &response)
              .ok());
  bool closing = false;
  while (stream->Read(&frame)) {
    REQUIRE(frame.has_heartbeat());
    closing = frame.heartbeat().closing();
  }
  CHECK(closing);
  CHECK(stream->Finish().ok());
  REQUIRE(host->WaitExit().ok());
}

TEST_CASE(
    "a stopped host is unreachable within the bound, calls to it fail at "
    "once naming it, and it is reachable again when it continues") {
  HostEvents events;
  auto host = TestHost::Start(HostdArgs());
  REQUIRE(host != nullptr);
  std::shared_ptr<Client> client =
      NewHealthClient(events, kUnreachableAfter, absl::Seconds(30));
  client->SetHostCredentials(host->address(), host->credentials());
  Mesh mesh = SpawnOn(client, host->address());
  std::optional<HostEvent> event = events.Next(host->address());
  REQUIRE(event.has_value());
  REQUIRE(event->state == HostState::kReachable);
  for (const auto& reply :
       mesh.actors.Call<v1::ActorIdReply>(v1::GetActorId(), kWait)) {
    REQUIRE(reply.ok());
  }

  Continue resume{host->pid()};
  REQUIRE(kill(host->pid(), SIGSTOP) == 0);
  absl::Time stopped = absl::Now();
  event = events.Next(host->address());
  REQUIRE(event.has_value());
  const absl::Duration detected = absl::Now() - stopped;
  CHECK(event->state == HostState::kUnreachable);
  CHECK_THAT(event->reason, Catch::Contains(absl::StrCat("no frame from host ",
                                                         host->address())));
  CHECK(detected < kUnreachableAfter + kSlack);
  WARN("SIGSTOP to unreachable: "
       << absl::FormatDuration(detected) << " (unreachable_after "
       << absl::FormatDuration(kUnreachableAfter) << ", heartbeats every "
       << absl::FormatDuration(kBeat) << ")");

  // Calls fail at once, naming the host; no proc is declared dead.
  absl::Time called = absl::Now();
  CheckFailedFast(
      mesh.actors.Call<v1::ActorIdReply>(v1::GetActorId(), absl::Hours(1)),
      host->address());
  CHECK(absl::Now() - called < absl::Seconds(1));
  HostEvent health = client->HostHealth(host->address());
  CHECK(health.state == HostState::kUnreachable);
  CHECK(health.procs == (std::vector<std::string>{"hh_0", "hh_1"}));

  REQUIRE(kill(host->pid(), SIGCONT) == 0);
  absl::Time continued = absl::Now();
  event = events.Next(host->address());
  REQUIRE(event.has_value());
  const absl::Duration back = absl::Now() - continued;
  CHECK(event->state == HostState::kReachable);
  CHECK(event->previous == HostState::kUnreachable);
  CHECK(back < kSlack);
  WARN("SIGCONT to reachable: " << absl::FormatDuration(back));
  for (const auto& reply :
       mesh.actors.Call<v1::ActorIdReply>(v1::GetActorId(), kWait)) {
    INFO(reply.status().ToString());
    CHECK(reply.ok());
  }
  for (const HostEvent& seen : events.All()) {
    CHECK(seen.state != HostState::kLost);
  }
  CHECK(mesh.hosts.Shutdown().ok());
}

TEST_CASE(
    "a killed host is unreachable at once and lost after the grace, with "
    "the procs this client spawned there") {
  constexpr absl::Duration kLostAfter = absl::Milliseconds(1500);
  HostEvents events;
  auto host = TestHost::Start(HostdArgs());
  REQUIRE(host != nullptr);
  std::shared_ptr<Client> client =
      NewHealthClient(events, kUnreachableAfter, kLostAfter);
  client->SetHostCredentials(host->address(), host->credentials());
  Mesh mesh = SpawnOn(client, host->address());
  const std::set<pid_t> procs = PidsOf(mesh.procs);
  REQUIRE(events.Next(host->address())->state == HostState::kReachable);

  REQUIRE(kill(host->pid(), SIGKILL) == 0);
  absl::Time killed = absl::Now();
  std::optional<HostEvent> event = events.Next(host->address());
  REQUIRE(event.has_value());
  const absl::Duration unreachable = absl::Now() - killed;
  CHECK(event->state == HostState::kUnreachable);
  CHECK(unreachable < kSlack);
  CheckFailedFast(
      mesh.actors.Call<v1::ActorIdReply>(v1::GetActorId(), absl::Hours(1)),
      host->address());

  event = events.Next(host->address());
  REQUIRE(event.has_value());
  const absl::Duration lost = absl::Now() - killed;
  CHECK(event->state == HostState::kLost);
  CHECK(event->procs == (std::vector<std::string>{"hh_0", "hh_1"}));
  CHECK_THAT(event->reason, Catch::Contains("lost after 1.5s"));
  CHECK(lost >= kLostAfter);
  CHECK(lost < kLostAfter + kSlack);
  WARN("SIGKILL to unreachable: " << absl::FormatDuration(unreachable)
                                  << ", to lost: " << absl::FormatDuration(lost)
                                  << " (lost_after "
                                  << absl::FormatDuration(kLostAfter) << ")");
  CHECK(client->HostHealth(host->address()).state == HostState::kLost);
  AwaitOrphans(procs);
}

TEST_CASE(
    "a host that comes back as another incarnation within the grace is "
    "lost at once, then reachable") {
  HostEvents events;
  auto first = TestHost::Start(HostdArgs());
  REQUIRE(first != nullptr);
  const std::string address = first->address();
  std::shared_ptr<Client> client =
      NewHealthClient(events, kUnreachableAfter, absl::Seconds(30));
  client->SetHostCredentials(address, first->credentials());
  Mesh mesh = SpawnOn(client, address);
  const std::set<pid_t> procs = PidsOf(mesh.procs);
  std::optional<HostEvent> event = events.Next(address);
  REQUIRE(event.has_value());
  REQUIRE(event->state == HostState::kReachable);
  const uint64_t incarnation = event->incarnation;

  REQUIRE(kill(first->pid(), SIGKILL) == 0);
  REQUIRE(events.Next(address)->state == HostState::kUnreachable);
  REQUIRE(first->WaitExit().ok());

  // A restart on the same port.
  auto second =
      TestHost::Start(HostdArgs(), /*allow_any_command=*/true, address);
  REQUIRE(second != nullptr);
  client->SetHostCredentials(address, second->credentials());
  absl::Time restarted = absl::Now();
  event = events.Next(address);
  REQUIRE(event.has_value());
  const absl::Duration noticed = absl::Now() - restarted;
  CHECK(event->state == HostState::kLost);
  CHECK(event->procs == (std::vector<std::string>{"hh_0", "hh_1"}));
  CHECK_THAT(event->reason, Catch::Contains("another incarnation"));
  CHECK(event->incarnation == incarnation);
  CHECK(noticed < kSlack);  // within the reconnect backoff, not the grace
  WARN("restart to lost: " << absl::FormatDuration(noticed));
  event = events.Next(address);
  REQUIRE(event.has_value());
  CHECK(event->state == HostState::kReachable);
  CHECK(event->incarnation != incarnation);
  // The new hostd has no such procs.
  for (const auto& reply :
       mesh.actors.Call<v1::ActorIdReply>(v1::GetActorId(), kWait)) {
    INFO(reply.status().ToString());
    CHECK_FALSE(reply.ok());
    CHECK(reply.status().code() != absl::StatusCode::kDeadlineExceeded);
  }
  AwaitOrphans(procs);
}

// Not run by default (the default bounds take seconds): the figures with
// hostd's and the client's defaults, e.g.
//   bazel run //tests:host_health_test -- "[measure]"
TEST_CASE("measure: detection with the default bounds", "[.][measure]") {
  HostEvents events;
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  Client::Options options;
  options.on_host_event = events.Handler();
  std::shared_ptr<Client> client = testing::NewClient(std::move(options));
  client->SetHostCredentials(host->address(), host->credentials());
  Mesh mesh = SpawnOn(client, host->address());
  REQUIRE(events.Next(host->address())->state == HostState::kReachable);
  for (int round = 0; round < 3; ++round) {
    Continue resume{host->pid()};
    REQUIRE(kill(host->pid(), SIGSTOP) == 0);
    absl::Time stopped = absl::Now();
    REQUIRE(events.Next(host->address())->state == HostState::kUnreachable);
    absl::Duration unreachable = absl::Now() - stopped;
    absl::Time called = absl::Now();
    mesh.actors.Call<v1::ActorIdReply>(v1::GetActorId(), absl::Hours(1));
    absl::Duration failed = absl::Now() - called;
    REQUIRE(kill(host->pid(), SIGCONT) == 0);
    absl::Time continued = absl::Now();
    REQUIRE(events.Next(host->address())->state == HostState::kReachable);
    WARN("defaults: SIGSTOP to unreachable "
         << absl::FormatDuration(unreachable) << "; a call then fails in "
         << absl::FormatDuration(failed) << "; SIGCONT to reachable "
         << absl::FormatDuration(absl::Now() - continued));
  }
  CHECK(mesh.hosts.Shutdown().ok());
}

}  // namespace
}  // namespace mesh
