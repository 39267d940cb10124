// Failures reach their owner (issue 8), end to end with a real hostd and
// procs of tests/testdata/trouble_procd: a proc killed by a signal, or one
// that aborts, exits or segfaults, becomes one supervision event per actor
// with the signal or exit code and the stderr lines that explain it; a
// failing handler reaches its mesh's handler; with no handler the mesh is
// poisoned, or (kExitProcess) the client exits; calls and watched ports
// waiting on a dead actor fail at once with the cause. A host killed is lost
// (one HOST_LOST event per actor); a host stopped shortly is only
// unreachable (calls fail, nothing is reported dead). An owner with a
// client-role identity hears of its procs and another identity does not; a
// stop the owner did not ask for is a failure, one it asked for is not.
// Bounds are checked against a generous multiple (2-core CI runs tests in
// parallel).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "client/testing/host_events.h"
#include "client/testing/supervision_events.h"
#include "hostmesh/hostmesh.h"
#include "lib/auth/credentials.h"
#include "lib/testing/temp_dir.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "proto/proc.pb.h"
#include "tests/testdata/trouble.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::BinaryPath;
using testing::TestHost;
using testing::WithClient;

// What "at once" may take on a loaded 2-core machine.
constexpr absl::Duration kSlack = absl::Seconds(5);
// Calls that must fail well before their own timeout.
constexpr absl::Duration kLongCall = absl::Seconds(30);

std::vector<std::string> HostdArgs() {
  return {"--heartbeat-interval=100ms", "--owner-lease=500ms",
          "--orphan-timeout=2s"};
}

v1::ProcSpec TroubleSpec() {
  v1::ProcSpec spec;
  spec.set_command(BinaryPath("trouble_procd"));
  return spec;
}

// A client with short heartbeats that uses `host`'s admin credentials.
std::shared_ptr<Client> NewClientFor(const TestHost& host) {
  Client::Options options;
  options.heartbeat_interval = absl::Milliseconds(100);
  std::shared_ptr<Client> client = testing::NewClient(std::move(options));
  client->SetHostCredentials(host.address(), host.credentials());
  return client;
}

using Events = testing::SupervisionEvents;

// A test hostd, a client of it (short heartbeats) and `procs_per_host`
// trouble procds named <name>_<rank>, attached as a host mesh; the mesh is
// shut down before the host.
struct TroubleProcs {
  std::unique_ptr<TestHost> host;
  std::shared_ptr<Client> client;
  std::optional<HostMesh> hosts;
  std::optional<ProcMesh> procs;
  ~TroubleProcs() {
    if (hosts.has_value()) hosts->Shutdown().IgnoreError();
  }
};

std::unique_ptr<TroubleProcs> StartTroubleProcs(const std::string& name,
                                                size_t procs_per_host) {
  auto setup = std::make_unique<TroubleProcs>();
  setup->host = TestHost::Start(HostdArgs());
  REQUIRE(setup->host != nullptr);
  setup->client = NewClientFor(*setup->host);
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach({setup->host->address()}, WithClient(setup->client));
  REQUIRE(hosts.ok());
  setup->hosts = *std::move(hosts);
  absl::StatusOr<ProcMesh> procs =
      setup->hosts->Spawn(name, procs_per_host, TroubleSpec());
  REQUIRE(procs.ok());
  setup->procs = *std::move(procs);
  return setup;
}

bool HasLine(const v1::ProcExit& exit, const std::string& line) {
  for (const std::string& seen : exit.stderr_lines()) {
    if (seen == line) return true;
  }
  return false;
}

// Waits until `mesh` is poisoned (or `timeout`); its status.
absl::Status AwaitPoison(const ActorMesh& mesh,
                         absl::Duration timeout = kSlack) {
  absl::Time deadline = absl::Now() + timeout;
  while (mesh.status().ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  return mesh.status();
}

// Sends this process's stderr (where glog writes) to a file while alive.
class CaptureStderr {
 public:
  explicit CaptureStderr(std::string path) : path_(std::move(path)) {
    std::fflush(stderr);
    saved_ = dup(STDERR_FILENO);
    int fd =
        open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  ~CaptureStderr() { Stop(); }
  // Restores stderr; what was written meanwhile.
  std::string Stop() {
    if (saved_ >= 0) {
      std::fflush(stderr);
      dup2(saved_, STDERR_FILENO);
      close(saved_);
      saved_ = -1;
    }
    std::ifstream in(path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  std::string path_;
  int saved_ = -1;
};

TEST_CASE(
    "a proc killed with SIGKILL reaches its owner as one event per actor "
    "with the signal and the stderr line that explains it, and a call "
    "pending on it fails at once with the same cause") {
  Events events;
  std::unique_ptr<TroubleProcs> setup = StartTroubleProcs("t", 1);
  std::shared_ptr<Client> client = setup->client;
  client->OnSupervisionEvent(events.Handler());
  std::optional<ProcMesh>& procs = setup->procs;
  std::optional<HostMesh>& hosts = setup->hosts;
  std::vector<ActorMesh> meshes;
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<ActorMesh> mesh =
        procs->Spawn(absl::StrCat("m", i), "test.trouble");
    REQUIRE(mesh.ok());
    meshes.push_back(*std::move(mesh));
  }
  const std::string cause = "trouble: the disk under t_0 is on fire";
  test::Say say;
  say.set_text(cause);
  auto said = meshes[0].Call<test::Said>(say);
  REQUIRE(said.size() == 1);
  REQUIRE(said[0].ok());
  const pid_t pid = procs->procs()[0].pid();
  REQUIRE(said[0]->pid() == pid);

  test::Sleep sleep;
  sleep.set_ms(600000);
  auto pending = std::async(std::launch::async, [&meshes, &sleep] {
    return meshes[1].Call<test::Slept>(sleep, kLongCall);
  });
  absl::SleepFor(absl::Milliseconds(200));  // the Sleep is on its way
  REQUIRE(kill(pid, SIGKILL) == 0);
  const absl::Time killed = absl::Now();

  std::vector<absl::StatusOr<test::Slept>> slept = pending.get();
  const absl::Duration call_failed = absl::Now() - killed;
  REQUIRE(slept.size() == 1);
  INFO(slept[0].status().ToString());
  CHECK(slept[0].status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(slept[0].status().message()), Catch::Contains(cause));
  CHECK(call_failed < kSlack);

  std::vector<v1::SupervisionEvent> got = events.WaitFor(8);
  const absl::Duration delivered = absl::Now() - killed;
  CHECK(got.size() == 8);
  CHECK(delivered < kSlack);
  std::set<std::string> mesh_names;
  for (const v1::SupervisionEvent& event : got) {
    INFO(event.ShortDebugString());
    mesh_names.insert(event.mesh());
    CHECK(event.cause() == v1::SupervisionEvent::PROC_ENDED);
    CHECK(event.failure());
    CHECK(event.rank() == 0);
    CHECK(event.actor().ref().proc() == "t_0");
    CHECK(event.proc_exit().proc() == "t_0");
    CHECK(event.proc_exit().pid() == pid);
    CHECK(event.proc_exit().term_signal() == SIGKILL);
    CHECK_FALSE(event.proc_exit().has_exit_code());
    CHECK_FALSE(event.proc_exit().requested());
    CHECK(HasLine(event.proc_exit(), cause));
    CHECK_THAT(event.message(), Catch::Contains(cause) &&
                                    Catch::Contains("SIGKILL") &&
                                    Catch::Contains("rank 0"));
  }
  CHECK(mesh_names ==
        std::set<std::string>{"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"});
  // One event per actor and end: nothing more comes.
  absl::SleepFor(absl::Milliseconds(500));
  CHECK(events.All().size() == 8);
  // Handled (by the client's handler): no mesh is poisoned.
  for (const ActorMesh& mesh : meshes) CHECK(mesh.status().ok());
  WARN("SIGKILL to failed call: " << absl::FormatDuration(call_failed)
                                  << ", to 8 events: "
                                  << absl::FormatDuration(delivered));
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "a proc that aborts, exits with a code or segfaults is reported with "
    "that signal or code and its last words") {
  Events events;
  std::unique_ptr<TroubleProcs> setup = StartTroubleProcs("c", 3);
  std::shared_ptr<Client> client = setup->client;
  client->OnSupervisionEvent(events.Handler());
  std::optional<ProcMesh>& procs = setup->procs;
  std::optional<HostMesh>& hosts = setup->hosts;
  absl::StatusOr<ActorMesh> mesh = procs->Spawn("crashy", "test.trouble");
  REQUIRE(mesh.ok());

  struct Case {
    test::Crash::How how;
    std::optional<int> exit_code;
    std::optional<int> term_signal;
  };
  const std::vector<Case> cases = {
      {test::Crash::ABORT, std::nullopt, SIGABRT},
      {test::Crash::EXIT_CODE, 3, std::nullopt},
      {test::Crash::SEGV, std::nullopt, SIGSEGV},
  };
  for (size_t rank = 0; rank < cases.size(); ++rank) {
    absl::StatusOr<ActorMesh> one = mesh->Slice("procs", rank);
    REQUIRE(one.ok());
    test::Crash crash;
    crash.set_how(cases[rank].how);
    crash.set_code(3);
    crash.set_last_words(absl::StrCat("last words of rank ", rank));
    const absl::Time sent = absl::Now();
    auto replies = one->Call<test::Crashed>(crash, kLongCall);
    REQUIRE(replies.size() == 1);
    INFO(replies[0].status().ToString());
    CHECK(replies[0].status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(replies[0].status().message()),
               Catch::Contains(crash.last_words()));
    CHECK(absl::Now() - sent < kSlack);
  }

  std::vector<v1::SupervisionEvent> got = events.WaitFor(3);
  REQUIRE(got.size() == 3);
  for (const v1::SupervisionEvent& event : got) {
    INFO(event.ShortDebugString());
    REQUIRE(event.rank() < cases.size());
    const Case& expected = cases[event.rank()];
    const v1::ProcExit& exit = event.proc_exit();
    CHECK(event.cause() == v1::SupervisionEvent::PROC_ENDED);
    CHECK(event.failure());
    CHECK(event.mesh() == "crashy");
    CHECK(exit.proc() == absl::StrCat("c_", event.rank()));
    CHECK(exit.pid() == procs->procs()[event.rank()].pid());
    CHECK(exit.status() == v1::FAILED);
    if (expected.exit_code.has_value()) {
      CHECK(exit.exit_code() == *expected.exit_code);
      CHECK_FALSE(exit.has_term_signal());
    } else {
      CHECK(exit.term_signal() == *expected.term_signal);
      CHECK_FALSE(exit.has_exit_code());
    }
    const std::string words = absl::StrCat("last words of rank ", event.rank());
    CHECK(HasLine(exit, words));
    CHECK_THAT(event.message(), Catch::Contains(words));
  }
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "an actor whose handler fails reaches its mesh's own handler as a "
    "failure of that rank, and the rest of the mesh keeps working") {
  Events mesh_events;
  Events client_events;
  std::unique_ptr<TroubleProcs> setup = StartTroubleProcs("h", 2);
  std::shared_ptr<Client> client = setup->client;
  client->OnSupervisionEvent(client_events.Handler());
  std::optional<ProcMesh>& procs = setup->procs;
  std::optional<HostMesh>& hosts = setup->hosts;
  absl::StatusOr<ActorMesh> mesh = procs->Spawn("f", "test.trouble");
  REQUIRE(mesh.ok());
  mesh->OnSupervisionEvent(mesh_events.Handler());

  absl::StatusOr<ActorMesh> rank1 = mesh->Slice("procs", 1);
  REQUIRE(rank1.ok());
  test::FailNow fail;
  fail.set_why("bad input 42");
  auto failed = rank1->Call<test::Failed>(fail);
  REQUIRE(failed.size() == 1);
  CHECK_THAT(std::string(failed[0].status().message()),
             Catch::Contains("failing as asked: bad input 42"));

  std::vector<v1::SupervisionEvent> got = mesh_events.WaitFor(1);
  REQUIRE(got.size() == 1);
  const v1::SupervisionEvent& event = got[0];
  INFO(event.ShortDebugString());
  CHECK(event.cause() == v1::SupervisionEvent::ACTOR_ENDED);
  CHECK(event.failure());
  CHECK(event.mesh() == "f");
  CHECK(event.rank() == 1);
  CHECK(event.actor().status() == v1::FAILED);
  CHECK(event.actor().ref().proc() == "h_1");
  CHECK_THAT(event.message(),
             Catch::Contains("rank 1") && Catch::Contains("bad input 42"));

  // The mesh's handler took it: not the client's, not a poison.
  absl::SleepFor(absl::Milliseconds(300));
  CHECK(mesh_events.All().size() == 1);
  CHECK(client_events.All().empty());
  CHECK(mesh->status().ok());
  absl::StatusOr<ActorMesh> rank0 = mesh->Slice("procs", 0);
  REQUIRE(rank0.ok());
  test::Say say;
  say.set_text("still here");
  auto said = rank0->Call<test::Said>(say);
  REQUIRE(said.size() == 1);
  CHECK(said[0].ok());
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "a failure that no handler takes poisons the mesh: status, Call, Cast "
    "and Reduce return FAILED_PRECONDITION naming the rank and the cause, "
    "and it is logged once") {
  testing::TempDir dir;
  std::unique_ptr<TroubleProcs> setup = StartTroubleProcs("q", 2);
  std::shared_ptr<Client> client = setup->client;  // no handler
  std::optional<ProcMesh>& procs = setup->procs;
  std::optional<HostMesh>& hosts = setup->hosts;
  absl::StatusOr<ActorMesh> mesh = procs->Spawn("p", "test.trouble");
  REQUIRE(mesh.ok());
  REQUIRE(mesh->status().ok());
  absl::StatusOr<ActorMesh> rank0 = mesh->Slice("procs", 0);
  absl::StatusOr<ActorMesh> rank1 = mesh->Slice("procs", 1);
  REQUIRE(rank0.ok());
  REQUIRE(rank1.ok());

  const std::string why = "poison pill 7";
  CaptureStderr captured(dir.path() + "/stderr");
  test::FailNow fail;
  fail.set_why(why);
  auto failed = rank1->Call<test::Failed>(fail);
  REQUIRE(failed.size() == 1);
  CHECK_FALSE(failed[0].ok());

  absl::Status poison = AwaitPoison(*mesh);
  INFO(poison.ToString());
  CHECK(poison.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(poison.message()),
             Catch::Contains("rank 1") && Catch::Contains(why));
  std::optional<v1::SupervisionEvent> event = SupervisionEventOf(poison);
  REQUIRE(event.has_value());
  CHECK(event->cause() == v1::SupervisionEvent::ACTOR_ENDED);
  CHECK(event->failure());
  CHECK(event->mesh() == "p");
  CHECK(event->rank() == 1);

  // Every later verb, on the mesh, a slice or a copy, returns the poison.
  test::Say say;
  say.set_text("anyone there?");
  auto replies = mesh->Call<test::Said>(say);
  REQUIRE(replies.size() == 2);
  for (const auto& reply : replies) {
    CHECK(reply.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(reply.status().message() == poison.message());
    std::optional<v1::SupervisionEvent> carried =
        SupervisionEventOf(reply.status());
    REQUIRE(carried.has_value());
    CHECK(carried->rank() == 1);
  }
  auto sliced = rank0->Call<test::Said>(say);
  REQUIRE(sliced.size() == 1);
  CHECK(sliced[0].status().code() == absl::StatusCode::kFailedPrecondition);
  ActorMesh copy = *mesh;
  CHECK(copy.status().code() == absl::StatusCode::kFailedPrecondition);
  absl::Status cast = mesh->Cast(say);
  CHECK(cast.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(cast.message()), Catch::Contains(why));
  absl::StatusOr<v1::Reduced> reduced =
      mesh->Reduce(say, v1::REDUCE_COUNT, absl::Seconds(10));
  CHECK(reduced.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(reduced.status().message()), Catch::Contains(why));

  absl::SleepFor(absl::Milliseconds(300));  // any late log line
  const std::string log = captured.Stop();
  size_t logged = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StartsWith(line, "E") && absl::StrContains(line, why)) ++logged;
  }
  INFO(log);
  CHECK(logged == 1);
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "a client told to exit on an unhandled failure exits 1 with the failure "
    "on its stderr") {
  auto host = TestHost::Start(HostdArgs());
  REQUIRE(host != nullptr);
  SpawnOptions spawn;
  spawn.path = BinaryPath("spawn_client");
  spawn.args = {"--host", host->address(), "--name",     "x", "--procs",
                "1",      "--fail",        "exit pill 9"};
  spawn.env = {{"HOSTMESH_TOKEN_FILE", host->token_file()}};
  SpawnOptions with_exit = spawn;
  with_exit.args.push_back("--exit-on-failure");
  ExitInfo exit = testing::RunToExit(with_exit, absl::Seconds(30));
  INFO(exit.stderr_tail);
  CHECK(exit.exit_code == std::optional<int>(1));
  CHECK_THAT(exit.stderr_tail, Catch::Contains("exit pill 9") &&
                                   Catch::Contains("rank 0 of actor mesh a"));
}

TEST_CASE(
    "a port watched on a mesh fails Recv at once with the cause when the "
    "mesh's proc is killed, and an unwatched one keeps waiting") {
  Events events;
  std::unique_ptr<TroubleProcs> setup = StartTroubleProcs("w", 1);
  std::shared_ptr<Client> client = setup->client;
  client->OnSupervisionEvent(events.Handler());
  std::optional<ProcMesh>& procs = setup->procs;
  std::optional<HostMesh>& hosts = setup->hosts;
  absl::StatusOr<ActorMesh> mesh = procs->Spawn("s", "test.trouble");
  REQUIRE(mesh.ok());
  const std::string cause = "trouble: w_0 ran out of luck";
  test::Say say;
  say.set_text(cause);
  REQUIRE(mesh->Call<test::Said>(say)[0].ok());

  Port<test::Slept> watched = client->OpenPort<test::Slept>();
  watched.Watch(*mesh);
  Port<test::Slept> unwatched = client->OpenPort<test::Slept>();
  test::Sleep quick;
  quick.set_ms(10);
  *quick.mutable_notify() = watched.ref();
  REQUIRE(mesh->Cast(quick).ok());
  absl::StatusOr<test::Slept> first = watched.Recv(kSlack);
  REQUIRE(first.ok());  // the port works while the mesh is alive
  CHECK(first->ms() == 10);

  test::Sleep sleep;
  sleep.set_ms(600000);
  *sleep.mutable_notify() = watched.ref();
  REQUIRE(mesh->Cast(sleep).ok());
  *sleep.mutable_notify() = unwatched.ref();
  REQUIRE(mesh->Cast(sleep).ok());
  absl::SleepFor(absl::Milliseconds(100));
  REQUIRE(kill(procs->procs()[0].pid(), SIGKILL) == 0);
  const absl::Time killed = absl::Now();
  absl::StatusOr<test::Slept> failed = watched.Recv(kLongCall);
  const absl::Duration took = absl::Now() - killed;
  INFO(failed.status().ToString());
  CHECK_FALSE(failed.ok());
  CHECK(failed.status().code() != absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(failed.status().message()), Catch::Contains(cause));
  CHECK(took < kSlack);
  std::optional<v1::SupervisionEvent> event =
      SupervisionEventOf(failed.status());
  REQUIRE(event.has_value());
  CHECK(event->cause() == v1::SupervisionEvent::PROC_ENDED);
  CHECK(event->mesh() == "s");
  // Recv keeps failing; the unwatched port just times out.
  CHECK_FALSE(watched.Recv(absl::Milliseconds(100)).ok());
  CHECK(unwatched.Recv(absl::Milliseconds(300)).status().code() ==
        absl::StatusCode::kDeadlineExceeded);
  WARN("SIGKILL to watched Recv failing: " << absl::FormatDuration(took));
  CHECK(hosts->Shutdown().ok());
}

// ---------------------------------------------------------------------------
// Hosts lost and hosts merely unreachable.

// SIGCONTs a stopped process however the test ends.
struct Continue {
  pid_t pid;
  ~Continue() {
    if (testing::IsAlive(pid)) kill(pid, SIGCONT);
  }
};

// Procs whose hostd was killed exit by themselves after hostd's orphan
// timeout; any still there after a while are killed (each leads its group).
void AwaitOrphans(const std::vector<pid_t>& pids) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (pid_t pid : pids) {
    while (testing::IsAlive(pid) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (testing::IsAlive(pid)) {
      FAIL_CHECK("orphaned proc " << pid << " did not exit by itself");
      kill(-pid, SIGKILL);
    }
  }
}

// A client with short heartbeats and the given host health bounds, using
// `host`'s admin credentials; its host events go to `host_events`.
std::shared_ptr<Client> NewHealthClientFor(const TestHost& host,
                                           testing::HostEvents& host_events,
                                           absl::Duration unreachable_after,
                                           absl::Duration lost_after) {
  Client::Options options;
  options.heartbeat_interval = absl::Milliseconds(100);
  options.unreachable_after = unreachable_after;
  options.lost_after = lost_after;
  options.on_host_event = host_events.Handler();
  std::shared_ptr<Client> client = testing::NewClient(std::move(options));
  client->SetHostCredentials(host.address(), host.credentials());
  return client;
}

std::vector<pid_t> PidsOf(const ProcMesh& procs) {
  std::vector<pid_t> pids;
  for (const v1::ProcState& proc : procs.procs()) pids.push_back(proc.pid());
  return pids;
}

// A call every test.trouble actor answers at once.
test::Sleep Nap() {
  test::Sleep nap;
  nap.set_ms(1);
  return nap;
}

// Each reply failed with UNAVAILABLE naming `host` as unreachable or lost.
template <typename T>
void CheckHostFailed(const std::vector<absl::StatusOr<T>>& replies,
                     const std::string& host) {
  for (const auto& reply : replies) {
    INFO(reply.status().ToString());
    CHECK(reply.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(reply.status().message()),
               Catch::Contains(absl::StrCat("host ", host, " is")));
  }
}

TEST_CASE(
    "a host killed with SIGKILL is lost after lost_after: one HOST_LOST "
    "event per actor reaches its mesh's handler, and calls pending on it "
    "fail at once") {
  constexpr absl::Duration kUnreachableAfter = absl::Milliseconds(300);
  constexpr absl::Duration kLostAfter = absl::Seconds(1);
  testing::HostEvents host_events;
  Events events;
  auto host = TestHost::Start(HostdArgs());
  REQUIRE(host != nullptr);
  std::shared_ptr<Client> client =
      NewHealthClientFor(*host, host_events, kUnreachableAfter, kLostAfter);
  absl::StatusOr<HostMesh> hosts = HostMesh::Attach(
      {host->address()}, WithClient(client, absl::Seconds(10)));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("hl", 2, TroubleSpec());
  REQUIRE(procs.ok());
  const std::vector<pid_t> pids = PidsOf(*procs);
  std::vector<ActorMesh> meshes;
  for (const char* name : {"m0", "m1"}) {
    absl::StatusOr<ActorMesh> mesh = procs->Spawn(name, "test.trouble");
    REQUIRE(mesh.ok());
    mesh->OnSupervisionEvent(events.Handler());
    meshes.push_back(*std::move(mesh));
  }
  std::optional<HostEvent> reachable = host_events.Next(host->address());
  REQUIRE(reachable.has_value());
  REQUIRE(reachable->state == HostState::kReachable);

  test::Sleep sleep;
  sleep.set_ms(600000);
  auto pending = std::async(std::launch::async, [&meshes, &sleep] {
    return meshes[0].Call<test::Slept>(sleep, kLongCall);
  });
  absl::SleepFor(absl::Milliseconds(200));  // the Sleeps are on their way
  REQUIRE(kill(host->pid(), SIGKILL) == 0);
  const absl::Time killed = absl::Now();

  std::vector<absl::StatusOr<test::Slept>> slept = pending.get();
  const absl::Duration call_failed = absl::Now() - killed;
  CHECK(slept.size() == 2);
  CheckHostFailed(slept, host->address());
  CHECK(call_failed < kUnreachableAfter + kSlack);

  std::vector<v1::SupervisionEvent> got = events.WaitFor(4, kLongCall);
  const absl::Duration delivered = absl::Now() - killed;
  CHECK(got.size() == 4);
  CHECK(delivered >= kLostAfter - absl::Milliseconds(100));
  CHECK(delivered < kLostAfter + kSlack);
  std::set<std::pair<std::string, uint64_t>> actors;
  for (const v1::SupervisionEvent& event : got) {
    INFO(event.ShortDebugString());
    actors.insert({event.mesh(), event.rank()});
    CHECK(event.cause() == v1::SupervisionEvent::HOST_LOST);
    CHECK(event.failure());
    CHECK(event.actor().status() == v1::FAILED);
    CHECK(event.actor().ref().proc() == absl::StrCat("hl_", event.rank()));
    CHECK_FALSE(event.host_reason().empty());
    CHECK_THAT(event.message(),
               Catch::Contains("is lost") &&
                   Catch::Contains(absl::StrCat("rank ", event.rank())));
  }
  CHECK(actors == std::set<std::pair<std::string, uint64_t>>{
                      {"m0", 0}, {"m0", 1}, {"m1", 0}, {"m1", 1}});
  // One event per actor: nothing more comes; handled, nothing is poisoned.
  absl::SleepFor(absl::Milliseconds(300));
  CHECK(events.All().size() == 4);
  for (const ActorMesh& mesh : meshes) CHECK(mesh.status().ok());
  // A later call does not wait either.
  const absl::Time called = absl::Now();
  for (const auto& reply : meshes[1].Call<test::Slept>(Nap(), kLongCall)) {
    INFO(reply.status().ToString());
    CHECK_FALSE(reply.ok());
    CHECK(reply.status().code() != absl::StatusCode::kDeadlineExceeded);
  }
  CHECK(absl::Now() - called < kSlack);
  WARN("SIGKILL to hostd: pending calls failed after "
       << absl::FormatDuration(call_failed) << ", 4 HOST_LOST events after "
       << absl::FormatDuration(delivered) << " (unreachable after "
       << absl::FormatDuration(kUnreachableAfter) << ", lost after "
       << absl::FormatDuration(kLostAfter) << ")");
  hosts->Shutdown().IgnoreError();  // its hostd is gone
  AwaitOrphans(pids);
}

TEST_CASE(
    "a host stopped for less than lost_after is only unreachable: calls fail "
    "with UNAVAILABLE naming it, no event arrives, no mesh is poisoned, and "
    "calls work again once it continues") {
  constexpr absl::Duration kUnreachableAfter = absl::Milliseconds(300);
  constexpr absl::Duration kStoppedFor = absl::Milliseconds(1500);
  testing::HostEvents host_events;
  Events events;
  // A long lease and orphan timeout: nothing ends while hostd is stopped.
  auto host = TestHost::Start({"--heartbeat-interval=100ms",
                               "--owner-lease=60s", "--orphan-timeout=30s"});
  REQUIRE(host != nullptr);
  std::shared_ptr<Client> client = NewHealthClientFor(
      *host, host_events, kUnreachableAfter, absl::Seconds(60));
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach({host->address()}, WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("hu", 2, TroubleSpec());
  REQUIRE(procs.ok());
  // "handled" reports to a handler; "bare" has none (a failure would
  // poison it).
  absl::StatusOr<ActorMesh> handled = procs->Spawn("handled", "test.trouble");
  REQUIRE(handled.ok());
  handled->OnSupervisionEvent(events.Handler());
  absl::StatusOr<ActorMesh> bare = procs->Spawn("bare", "test.trouble");
  REQUIRE(bare.ok());
  std::optional<HostEvent> event = host_events.Next(host->address());
  REQUIRE(event.has_value());
  REQUIRE(event->state == HostState::kReachable);

  test::Sleep sleep;
  sleep.set_ms(1000);
  auto pending = std::async(std::launch::async, [&bare, &sleep] {
    return bare->Call<test::Slept>(sleep, kLongCall);
  });
  absl::SleepFor(absl::Milliseconds(200));  // the Sleeps are on their way
  Continue resume{host->pid()};
  REQUIRE(kill(host->pid(), SIGSTOP) == 0);
  const absl::Time stopped = absl::Now();

  event = host_events.Next(host->address(), kSlack);
  REQUIRE(event.has_value());
  CHECK(event->state == HostState::kUnreachable);
  std::vector<absl::StatusOr<test::Slept>> slept = pending.get();
  const absl::Duration pending_failed = absl::Now() - stopped;
  CHECK(slept.size() == 2);
  CheckHostFailed(slept, host->address());
  CHECK(pending_failed < kUnreachableAfter + kSlack);
  // A new call fails at once, naming the host.
  const absl::Time called = absl::Now();
  CheckHostFailed(handled->Call<test::Slept>(Nap(), absl::Hours(1)),
                  host->address());
  CHECK(absl::Now() - called < absl::Seconds(1));
  absl::SleepFor(stopped + kStoppedFor - absl::Now());
  CHECK(client->HostHealth(host->address()).state == HostState::kUnreachable);
  CHECK(events.All().empty());
  CHECK(handled->status().ok());
  CHECK(bare->status().ok());

  REQUIRE(kill(host->pid(), SIGCONT) == 0);
  const absl::Time continued = absl::Now();
  event = host_events.Next(host->address(), kSlack);
  REQUIRE(event.has_value());
  CHECK(event->state == HostState::kReachable);
  const absl::Duration back = absl::Now() - continued;
  for (const ActorMesh* mesh : {&*handled, &*bare}) {
    for (const auto& reply :
         mesh->Call<test::Slept>(Nap(), absl::Seconds(10))) {
      INFO(reply.status().ToString());
      CHECK(reply.ok());
    }
  }
  absl::SleepFor(absl::Milliseconds(300));
  CHECK(events.All().empty());
  CHECK(handled->status().ok());
  CHECK(bare->status().ok());
  for (const HostEvent& seen : host_events.All()) {
    CHECK(seen.state != HostState::kLost);
  }
  WARN("SIGSTOP to hostd: pending calls failed after "
       << absl::FormatDuration(pending_failed)
       << "; SIGCONT to reachable: " << absl::FormatDuration(back));
  CHECK(hosts->Shutdown().ok());
}

// ---------------------------------------------------------------------------
// Owners that are not admins; stops asked for or not.

constexpr char kAliceToken[] = "alice-token-0123456789abcdef";
constexpr char kBobToken[] = "bob-token-0123456789abcdef";

// A host (HostdArgs) with two client identities, alice and bob, besides the
// test's admin token.
std::unique_ptr<TestHost> HostWithClients(const testing::TempDir& dir) {
  const std::string tokens = dir.path() + "/tokens";
  std::ofstream(tokens) << "# identity role token\n"
                        << "alice client " << kAliceToken << "\n"
                        << "bob client " << kBobToken << "\n";
  REQUIRE(chmod(tokens.c_str(), 0600) == 0);
  std::vector<std::string> args = HostdArgs();
  args.push_back("--tokens-file=" + tokens);
  return TestHost::Start(args);
}

ClientCredentials Token(const std::string& token) {
  ClientCredentials credentials;
  credentials.token = token;
  return credentials;
}

// A client presenting `token`, with short heartbeats.
std::shared_ptr<Client> NewClientAs(const std::string& token) {
  Client::Options options;
  options.credentials = Token(token);
  options.heartbeat_interval = absl::Milliseconds(100);
  return testing::NewClient(std::move(options));
}

// A raw relay stream to `host` as client id `id` presenting `token`: every
// frame it receives is kept (reading until Stop).
class RawRelay {
 public:
  RawRelay(const std::string& host, const std::string& token,
           const std::string& id)
      : stub_(v1::Relay::NewStub(NewAuthedChannel(host, Token(token)))) {
    context_.AddMetadata("mesh-sender", id);
    stream_ = stub_->Connect(&context_);
    reader_ = std::thread([this] {
      v1::RelayFrame frame;
      while (stream_->Read(&frame)) {
        absl::MutexLock lock(&mu_);
        frames_.push_back(frame);
      }
    });
  }
  ~RawRelay() {
    context_.TryCancel();
    reader_.join();
    stream_->Finish().IgnoreError();
  }
  // The MailboxLost frames received so far.
  std::vector<v1::MailboxLost> Lost() {
    absl::MutexLock lock(&mu_);
    std::vector<v1::MailboxLost> lost;
    for (const v1::RelayFrame& frame : frames_) {
      if (frame.has_lost()) lost.push_back(frame.lost());
    }
    return lost;
  }
  // Whether a heartbeat came (the stream is open).
  bool Heard() {
    absl::MutexLock lock(&mu_);
    return !frames_.empty();
  }

 private:
  std::unique_ptr<v1::Relay::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::RelayFrame, v1::RelayFrame>>
      stream_;
  std::thread reader_;
  absl::Mutex mu_;
  std::vector<v1::RelayFrame> frames_ ABSL_GUARDED_BY(mu_);
};

bool HasLostOf(const std::vector<v1::MailboxLost>& lost,
               const std::string& proc) {
  for (const v1::MailboxLost& one : lost) {
    if (one.mailbox() == proc) return true;
  }
  return false;
}

// Polls until `done` holds or `timeout` passes; whether it held.
template <typename F>
bool Eventually(F done, absl::Duration timeout = kSlack) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

TEST_CASE(
    "a client-role owner gets its killed proc's end with the stderr line "
    "and holds its procs' lease, and another client identity on the same "
    "host hears nothing of it") {
  testing::TempDir dir;
  auto host = HostWithClients(dir);
  REQUIRE(host != nullptr);
  Events alice_events;
  Events bob_events;
  std::shared_ptr<Client> alice = NewClientAs(kAliceToken);
  alice->OnSupervisionEvent(alice_events.Handler());
  std::shared_ptr<Client> bob = NewClientAs(kBobToken);
  bob->OnSupervisionEvent(bob_events.Handler());

  absl::StatusOr<HostMesh> alice_hosts =
      HostMesh::Attach({host->address()}, WithClient(alice));
  REQUIRE(alice_hosts.ok());
  absl::StatusOr<ProcMesh> alice_procs =
      alice_hosts->Spawn("al", 2, TroubleSpec());
  REQUIRE(alice_procs.ok());
  absl::StatusOr<ActorMesh> alice_mesh =
      alice_procs->Spawn("am", "test.trouble");
  REQUIRE(alice_mesh.ok());
  absl::StatusOr<HostMesh> bob_hosts =
      HostMesh::Attach({host->address()}, WithClient(bob));
  REQUIRE(bob_hosts.ok());
  absl::StatusOr<ProcMesh> bob_procs = bob_hosts->Spawn("bo", 1, TroubleSpec());
  REQUIRE(bob_procs.ok());
  absl::StatusOr<ActorMesh> bob_mesh = bob_procs->Spawn("bm", "test.trouble");
  REQUIRE(bob_mesh.ok());
  // Bob also listens on a raw relay stream of his own.
  RawRelay bob_relay(host->address(), kBobToken, "client:00000000000b0b01");
  REQUIRE(Eventually([&] { return bob_relay.Heard(); }));

  // Alice's procs are hers: her identity, her client as lease holder.
  auto alice_stub =
      v1::Host::NewStub(NewAuthedChannel(host->address(), Token(kAliceToken)));
  for (const v1::ProcState& spawned : alice_procs->procs()) {
    v1::GetProcStateRequest get;
    get.set_name(spawned.name());
    v1::ProcState state;
    REQUIRE(
        alice_stub->GetProcState(testing::Context().get(), get, &state).ok());
    INFO(state.ShortDebugString());
    CHECK(state.owner() == "alice");
    CHECK(state.client() == alice->id());
  }
  v1::ProcState bob_state;
  REQUIRE(host->Get("bo_0", &bob_state).ok());
  CHECK(bob_state.owner() == "bob");
  CHECK(bob_state.client() == bob->id());

  const std::string cause = "trouble: alice's al_0 hit a wall";
  absl::StatusOr<ActorMesh> rank0 = alice_mesh->Slice("procs", 0);
  REQUIRE(rank0.ok());
  test::Say say;
  say.set_text(cause);
  auto said = rank0->Call<test::Said>(say);
  REQUIRE(said.size() == 1);
  REQUIRE(said[0].ok());
  REQUIRE(kill(alice_procs->procs()[0].pid(), SIGKILL) == 0);

  std::vector<v1::SupervisionEvent> got = alice_events.WaitFor(1);
  REQUIRE(got.size() == 1);
  {
    const v1::SupervisionEvent& event = got[0];
    INFO(event.ShortDebugString());
    CHECK(event.cause() == v1::SupervisionEvent::PROC_ENDED);
    CHECK(event.failure());
    CHECK(event.mesh() == "am");
    CHECK(event.rank() == 0);
    CHECK(event.proc_exit().proc() == "al_0");
    CHECK(event.proc_exit().term_signal() == SIGKILL);
    CHECK(HasLine(event.proc_exit(), cause));
    CHECK_THAT(event.message(), Catch::Contains(cause));
  }
  // Bob hears nothing of it: no event, no MailboxLost on any of his
  // streams.
  absl::SleepFor(absl::Seconds(1));
  CHECK(bob_events.All().empty());
  CHECK(bob_mesh->status().ok());
  CHECK_FALSE(HasLostOf(bob_relay.Lost(), "al_0"));

  // ... while he does hear of his own (the streams were listening).
  REQUIRE(kill(bob_procs->procs()[0].pid(), SIGKILL) == 0);
  std::vector<v1::SupervisionEvent> bobs = bob_events.WaitFor(1);
  REQUIRE(bobs.size() == 1);
  CHECK(bobs[0].proc_exit().proc() == "bo_0");
  CHECK(Eventually([&] { return HasLostOf(bob_relay.Lost(), "bo_0"); }));
  CHECK_FALSE(HasLostOf(bob_relay.Lost(), "al_0"));
  absl::SleepFor(absl::Milliseconds(300));
  CHECK(alice_events.All().size() == 1);
  CHECK(bob_events.All().size() == 1);
  CHECK(alice_hosts->Shutdown().ok());
  CHECK(bob_hosts->Shutdown().ok());
}

TEST_CASE(
    "a stop the owner did not ask for is a failure and fails a watched port "
    "at once; a stop the owner asked for is no failure and poisons nothing, "
    "but still fails a watched port at once") {
  testing::TempDir dir;
  auto host = HostWithClients(dir);
  REQUIRE(host != nullptr);
  std::shared_ptr<Client> alice = NewClientAs(kAliceToken);  // no handler
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach({host->address()}, WithClient(alice));
  REQUIRE(hosts.ok());

  SECTION("an admin stops the proc") {
    Events events;
    absl::StatusOr<ProcMesh> procs = hosts->Spawn("as", 1, TroubleSpec());
    REQUIRE(procs.ok());
    absl::StatusOr<ActorMesh> mesh = procs->Spawn("x", "test.trouble");
    REQUIRE(mesh.ok());
    mesh->OnSupervisionEvent(events.Handler());
    Port<test::Slept> watched = alice->OpenPort<test::Slept>();
    watched.Watch(*mesh);

    v1::ProcState state;
    const absl::Time stopping = absl::Now();
    REQUIRE(host->Stop("as_0", &state).ok());
    absl::StatusOr<test::Slept> failed = watched.Recv(kLongCall);
    const absl::Duration took = absl::Now() - stopping;
    INFO(failed.status().ToString());
    CHECK(failed.status().code() == absl::StatusCode::kUnavailable);
    CHECK(took < kSlack);
    std::optional<v1::SupervisionEvent> carried =
        SupervisionEventOf(failed.status());
    REQUIRE(carried.has_value());
    CHECK(carried->failure());

    // One event (however the actor's end is told), a failure.
    std::vector<v1::SupervisionEvent> got = events.WaitFor(1);
    absl::SleepFor(absl::Milliseconds(300));
    REQUIRE(events.All().size() == 1);
    INFO(got[0].ShortDebugString());
    CHECK(got[0].failure());
    CHECK(got[0].actor().status() == v1::FAILED);
    CHECK(got[0].actor().ref().proc() == "as_0");
    CHECK_THAT(got[0].message(), Catch::Contains("as_0"));
  }

  SECTION("the owner stops its proc mesh") {
    Events events;
    absl::StatusOr<ProcMesh> procs = hosts->Spawn("os", 1, TroubleSpec());
    REQUIRE(procs.ok());
    // "told" reports to a handler; "bare" has none.
    absl::StatusOr<ActorMesh> told = procs->Spawn("told", "test.trouble");
    REQUIRE(told.ok());
    told->OnSupervisionEvent(events.Handler());
    absl::StatusOr<ActorMesh> bare = procs->Spawn("bare", "test.trouble");
    REQUIRE(bare.ok());
    Port<test::Slept> told_port = alice->OpenPort<test::Slept>();
    told_port.Watch(*told);
    Port<test::Slept> bare_port = alice->OpenPort<test::Slept>();
    bare_port.Watch(*bare);

    const absl::Time stopping = absl::Now();
    REQUIRE(procs->Stop().ok());
    for (Port<test::Slept>* port : {&told_port, &bare_port}) {
      absl::StatusOr<test::Slept> failed = port->Recv(kLongCall);
      INFO(failed.status().ToString());
      CHECK(failed.status().code() == absl::StatusCode::kUnavailable);
      std::optional<v1::SupervisionEvent> carried =
          SupervisionEventOf(failed.status());
      REQUIRE(carried.has_value());
      CHECK_FALSE(carried->failure());
    }
    CHECK(absl::Now() - stopping < kSlack);

    std::vector<v1::SupervisionEvent> got = events.WaitFor(1);
    absl::SleepFor(absl::Milliseconds(300));
    REQUIRE(events.All().size() == 1);
    INFO(got[0].ShortDebugString());
    CHECK_FALSE(got[0].failure());
    CHECK(got[0].actor().status() == v1::STOPPED);
    CHECK(got[0].actor().ref().proc() == "os_0");
    CHECK(told->status().ok());
    CHECK(bare->status().ok());
  }
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "a long-lived port watched on a mesh still fails at once when its proc "
    "is killed after 5000 other watched ports came and went") {
  Events events;
  std::unique_ptr<TroubleProcs> setup = StartTroubleProcs("mw", 1);
  std::shared_ptr<Client> client = setup->client;
  client->OnSupervisionEvent(events.Handler());
  absl::StatusOr<ActorMesh> mesh = setup->procs->Spawn("s", "test.trouble");
  REQUIRE(mesh.ok());

  Port<test::Slept> kept = client->OpenPort<test::Slept>();
  kept.Watch(*mesh);
  const absl::Time opening = absl::Now();
  for (int i = 0; i < 5000; ++i) {
    OncePort<test::Slept> once = client->OpenOncePort<test::Slept>();
    once.Watch(*mesh);
  }
  const absl::Duration churn = absl::Now() - opening;

  REQUIRE(kill(setup->procs->procs()[0].pid(), SIGKILL) == 0);
  const absl::Time killed = absl::Now();
  absl::StatusOr<test::Slept> failed = kept.Recv(kLongCall);
  const absl::Duration took = absl::Now() - killed;
  INFO(failed.status().ToString());
  CHECK(failed.status().code() == absl::StatusCode::kUnavailable);
  CHECK(took < kSlack);
  std::optional<v1::SupervisionEvent> event =
      SupervisionEventOf(failed.status());
  REQUIRE(event.has_value());
  CHECK(event->cause() == v1::SupervisionEvent::PROC_ENDED);
  CHECK(event->mesh() == "s");
  WARN("5000 watched once ports opened and dropped in "
       << absl::FormatDuration(churn)
       << "; SIGKILL to the kept one failing: " << absl::FormatDuration(took));
  CHECK(setup->hosts->Shutdown().ok());
}

}  // namespace
}  // namespace mesh
