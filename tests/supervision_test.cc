// Failures reach their owner (issue 8), end to end with a real hostd and
// procs of tests/testdata/trouble_procd: a proc killed by a signal, or one
// that aborts, exits or segfaults, becomes one supervision event per actor
// with the signal or exit code and the stderr lines that explain it; a
// failing handler reaches its mesh's handler; with no handler the mesh is
// poisoned, or (kExitProcess) the client exits; calls and watched ports
// waiting on a dead actor fail at once with the cause. Bounds are checked
// against a generous multiple (2-core CI runs tests in parallel).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <sstream>
#include <string>
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
#include "client/testing/supervision_events.h"
#include "hostmesh/hostmesh.h"
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

}  // namespace
}  // namespace mesh
