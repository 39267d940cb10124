// HostMesh::Slurm (issue 14) against a real Slurm: a private one-node
// cluster (tests/testing/slurm_cluster.h: its own munged, slurmctld and
// slurmd on 127.0.0.1) on which the mesh allocates 2 tasks, i.e. two
// hostds on the one node, each started with srun and registered back over
// srun's stdout. The canonical flow runs on them; Shutdown releases the
// allocation; a job cancelled mid-run is a host loss told to the owner at
// once, and nothing of the mesh is left; a hostd that cannot start fails
// the call naming its node, and the allocation is released. Then
// deploy/slurm/hostmesh.sbatch with a real sbatch: two hostds for clients
// to attach to, ended by scancel.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "client/testing/host_events.h"
#include "client/testing/supervision_events.h"
#include "hostmesh/hostmesh.h"
#include "lib/testing/skip.h"
#include "lib/testing/temp_dir.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/slurm_cluster.h"
#include "tests/testing/test_host.h"

namespace mesh::testing {
namespace {

// The cluster, or a skip naming why there is none (a failure under
// CI=true: HOSTMESH_SKIP).
#define START_SLURM_OR_SKIP(cluster)                                        \
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster##_started =         \
      SlurmCluster::Start();                                                \
  if (!cluster##_started.ok()) {                                            \
    HOSTMESH_SKIP(                                                          \
        "no Slurm cluster here: " << cluster##_started.status().message()); \
  }                                                                         \
  SlurmCluster& cluster = **cluster##_started

// Options for a mesh of `tasks` hostds on the cluster's one node, keeping
// their state in `node_dir`.
SlurmOptions OnCluster(const SlurmCluster& slurm, int tasks,
                       const std::string& node_dir) {
  SlurmOptions options;
  options.tasks_per_node = tasks;
  options.job_name = "mesh-test";
  options.node_dir = node_dir;
  options.env["SLURM_CONF"] = slurm.conf_path();
  // The cluster's marker: what its tasks are found by if it has no cgroups.
  for (const std::string& entry : slurm.ClientEnvironment()) {
    if (absl::StartsWith(entry, "HOSTMESH_SLURM_CLUSTER=")) {
      options.env["HOSTMESH_SLURM_CLUSTER"] = entry.substr(entry.find('=') + 1);
    }
  }
  return options;
}

HostMesh::Options HostdOptions(std::shared_ptr<Client> client) {
  HostMesh::Options options = WithClient(std::move(client), absl::Seconds(60));
  options.hostd_path = BinaryPath("hostd");
  options.hostd_args = {"--procd=" + BinaryPath("procd"), "--stop-grace=1s"};
  return options;
}

// The jobs in the cluster's queue.
std::string Queue(SlurmCluster& slurm) {
  absl::StatusOr<RunResult> squeue = slurm.Run({"squeue", "-h", "-o", "%i"});
  REQUIRE(squeue.ok());
  return std::string(absl::StripAsciiWhitespace(squeue->out));
}

// The queue once it is empty, or as it is after `timeout` (a cancelled
// job stays a moment while it completes).
std::string QueueOnceEmpty(SlurmCluster& slurm,
                           absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string queue = Queue(slurm);
  while (!queue.empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    queue = Queue(slurm);
  }
  return queue;
}

// Waits until nothing of `pids` is alive; the ones still alive after
// `timeout`.
std::vector<pid_t> WaitAllGone(const std::vector<pid_t>& pids,
                               absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    std::vector<pid_t> alive;
    for (pid_t pid : pids) {
      if (IsAlive(pid)) alive.push_back(pid);
    }
    if (alive.empty() || absl::Now() > deadline) return alive;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

// The cluster stops with nothing of it left (SlurmCluster::Stop checks).
void CheckStopsClean(SlurmCluster& slurm) {
  absl::Status stopped = slurm.Stop();
  INFO(stopped);
  CHECK(stopped.ok());
}

// HostMesh::Slurm with 2 tasks on the cluster's node, state in `dir`
// (REQUIREs it came up).
std::optional<HostMesh> StartMesh(SlurmCluster& slurm, const TempDir& dir,
                                  HostMesh::Options options) {
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Slurm(OnCluster(slurm, 2, dir.path()), std::move(options));
  INFO(hosts.status().ToString() << slurm.DaemonLogs());
  REQUIRE(hosts.ok());
  return *std::move(hosts);
}

// Waits until each of `hosts` was lost (a kLost event among all of
// `events`); the ones that were not after `timeout`.
std::vector<std::string> WaitLost(HostEvents& events,
                                  const std::vector<std::string>& hosts,
                                  absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    std::vector<std::string> waiting = hosts;
    for (const HostEvent& event : events.All()) {
      if (event.state == HostState::kLost) std::erase(waiting, event.host);
    }
    if (waiting.empty() || absl::Now() > deadline) return waiting;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

// Procs p0 (2 per host of `hosts`, extent {hosts: H, procs: 2}) with a
// mesh.echo actor each that answers in rank order; their pids.
struct EchoMesh {
  ProcMesh procs;
  ActorMesh echo;
  std::vector<pid_t> pids;
};
EchoMesh SpawnEcho(HostMesh& hosts) {
  absl::StatusOr<ProcMesh> procs = hosts.Spawn("p0", 2);
  INFO(procs.status().ToString());
  REQUIRE(procs.ok());
  CHECK(procs->extent().ToString() ==
        absl::StrCat("{hosts: ", hosts.num_hosts(), ", procs: 2}"));
  std::vector<pid_t> pids;
  for (const v1::ProcState& proc : procs->procs()) pids.push_back(proc.pid());
  absl::StatusOr<ActorMesh> echo = procs->Spawn("a0", "mesh.echo");
  REQUIRE(echo.ok());
  std::vector<uint64_t> ranks;
  for (uint64_t rank = 0; rank < 2 * hosts.num_hosts(); ++rank) {
    ranks.push_back(rank);
  }
  CHECK(RanksOf(echo->Call<v1::ActorIdReply>(v1::GetActorId())) == ranks);
  return EchoMesh{*std::move(procs), *std::move(echo), std::move(pids)};
}

TEST_CASE(
    "a host mesh of two hostds from a Slurm allocation runs the canonical "
    "flow and its Shutdown releases the allocation",
    "[slurm]") {
  START_SLURM_OR_SKIP(slurm);
  TempDir dir;
  std::shared_ptr<Client> client = NewClient();
  std::optional<HostMesh> hosts = StartMesh(slurm, dir, HostdOptions(client));
  CHECK(hosts->num_hosts() == 2);
  CHECK(hosts->extent().ToString() == "{hosts: 2}");
  CHECK_FALSE(hosts->slurm_job().empty());
  CHECK(Queue(slurm) == hosts->slurm_job());
  CHECK(hosts->nodes() ==
        std::vector<std::string>{slurm.node_name(), slurm.node_name()});
  CHECK(hosts->addresses()[0] != hosts->addresses()[1]);

  // local hosts -> 2x2 procs -> actors -> cast to a port -> gathered call
  // in rank order -> slice.
  EchoMesh mesh = SpawnEcho(*hosts);
  const std::vector<pid_t>& proc_pids = mesh.pids;
  const ActorMesh* echo = &mesh.echo;
  // Rank 0 (host 0) sends to rank 3 (host 1), whose reply comes to a port.
  Port<v1::ActorIdReply> port = client->OpenPort<v1::ActorIdReply>();
  v1::Forward forward;
  *forward.mutable_to() = echo->actor(3);
  forward.mutable_payload()->PackFrom(v1::GetActorId());
  *forward.mutable_reply_to() = port.ref();
  absl::StatusOr<ActorMesh> rank0 = echo->Slice("procs", 0, 1);
  REQUIRE(rank0.ok());
  REQUIRE(rank0->Slice("hosts", 0)->Cast(forward).ok());
  absl::StatusOr<v1::ActorIdReply> forwarded = port.Recv(absl::Seconds(20));
  REQUIRE(forwarded.ok());
  CHECK(forwarded->rank() == 3);
  CHECK(forwarded->id().host() == hosts->addresses()[1]);
  absl::StatusOr<ActorMesh> second = echo->Slice("hosts", 1);
  REQUIRE(second.ok());
  CHECK(RanksOf(second->Call<v1::ActorIdReply>(v1::GetActorId())) ==
        std::vector<uint64_t>{2, 3});

  CHECK(hosts->Shutdown().ok());
  // Every proc and both hostds are gone, and so is the allocation.
  CHECK(WaitAllGone(proc_pids, absl::Seconds(10)).empty());
  CHECK(QueueOnceEmpty(slurm).empty());
  CHECK(slurm.CancelAllJobs().ok());
  CheckStopsClean(slurm);
}

TEST_CASE(
    "a Slurm job cancelled mid-run is a host loss told to the owner at once "
    "and leaves nothing of the mesh",
    "[slurm]") {
  START_SLURM_OR_SKIP(slurm);
  TempDir dir;
  HostEvents host_events;
  // A lost_after far beyond the test: the loss comes from the hostd's
  // goodbye (it got Slurm's SIGTERM) or its srun's end, whichever is first.
  std::shared_ptr<Client> client =
      NewHealthClient(host_events, absl::Seconds(2), absl::Minutes(10));
  std::optional<HostMesh> hosts = StartMesh(slurm, dir, HostdOptions(client));
  EchoMesh mesh = SpawnEcho(*hosts);
  const std::vector<pid_t>& proc_pids = mesh.pids;
  ActorMesh* echo = &mesh.echo;
  SupervisionEvents supervision;
  echo->OnSupervisionEvent(supervision.Handler());

  const absl::Time cancelled = absl::Now();
  absl::StatusOr<RunResult> scancel =
      slurm.Run({"scancel", hosts->slurm_job()});
  REQUIRE(scancel.ok());
  INFO(scancel->Describe());
  REQUIRE(scancel->ok());
  CHECK(WaitLost(host_events, hosts->addresses(), absl::Seconds(60)).empty());
  const absl::Duration told = absl::Now() - cancelled;
  // Every actor ended: its proc was stopped (by its hostd on the job's
  // SIGTERM, or by Slurm's SIGTERM to every process of the step) and
  // PROC_ENDED says how, or its host was lost first (HOST_LOST); a call
  // to them fails now.
  std::vector<v1::SupervisionEvent> events = supervision.WaitFor(4);
  CHECK(events.size() == 4);
  for (const v1::SupervisionEvent& event : events) {
    INFO(event.ShortDebugString());
    CHECK((event.cause() == v1::SupervisionEvent::HOST_LOST ||
           event.cause() == v1::SupervisionEvent::PROC_ENDED));
  }
  for (const auto& reply : echo->Call<v1::ActorIdReply>(v1::GetActorId())) {
    CHECK_FALSE(reply.ok());
  }
  // Nothing of the mesh is left: procs (hostds stop them on SIGTERM, and
  // are orphaned otherwise), hostds and their sruns.
  CHECK(WaitAllGone(proc_pids, absl::Seconds(30)).empty());
  CHECK(QueueOnceEmpty(slurm).empty());
  WARN("scancel to both hosts lost at the owner: "
       << absl::FormatDuration(told));
  // The mesh's own shutdown has nothing left to stop: the lost hosts are
  // no news, and the allocation is released already.
  absl::Status shut_down = hosts->Shutdown(absl::Seconds(1));
  INFO(shut_down);
  CHECK(shut_down.ok());
  CheckStopsClean(slurm);
}

TEST_CASE(
    "a hostd killed by SIGKILL is lost at once through its srun's end, "
    "naming its node, while the other host goes on",
    "[slurm]") {
  START_SLURM_OR_SKIP(slurm);
  TempDir dir;
  HostEvents host_events;
  // Without srun's end the loss would take lost_after (10 minutes).
  std::shared_ptr<Client> client =
      NewHealthClient(host_events, absl::Seconds(2), absl::Minutes(10));
  HostMesh::Options options = HostdOptions(client);
  // Procs outlive their host's channel by this much.
  options.hostd_args.push_back("--orphan-timeout=2s");
  std::optional<HostMesh> hosts = StartMesh(slurm, dir, options);
  EchoMesh mesh = SpawnEcho(*hosts);
  // Handled: the failure of host 0's actors does not poison the mesh.
  SupervisionEvents supervision;
  mesh.echo.OnSupervisionEvent(supervision.Handler());
  const std::string victim = hosts->addresses()[0];
  v1::HostInfo info;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  REQUIRE(v1::Host::NewStub(client->Channel(victim))
              ->GetHostInfo(&context, {}, &info)
              .ok());
  REQUIRE(info.pid() > 0);

  const absl::Time killed = absl::Now();
  REQUIRE(kill(info.pid(), SIGKILL) == 0);
  REQUIRE(WaitLost(host_events, {victim}, absl::Seconds(30)).empty());
  const absl::Duration told = absl::Now() - killed;
  for (const HostEvent& event : host_events.All()) {
    if (event.state != HostState::kLost) continue;
    INFO(event.reason);
    CHECK(event.host == victim);
    CHECK(absl::StrContains(event.reason, "srun of host " + victim));
    CHECK(absl::StrContains(event.reason, "Slurm node " + slurm.node_name()));
    CHECK(absl::StrContains(event.reason, "Killed"));
  }
  CHECK(told < absl::Seconds(10));
  // The other host's ranks still answer.
  absl::StatusOr<ActorMesh> second = mesh.echo.Slice("hosts", 1);
  REQUIRE(second.ok());
  CHECK(RanksOf(second->Call<v1::ActorIdReply>(v1::GetActorId())) ==
        std::vector<uint64_t>{2, 3});
  WARN("SIGKILL of a hostd to its host lost at the owner: "
       << absl::FormatDuration(told));
  // The killed host's procs see their channel close and go after the
  // orphan timeout.
  CHECK(WaitAllGone({mesh.pids[0], mesh.pids[1]}, absl::Seconds(30)).empty());
  // The lost host is no news to Shutdown; the other one goes as asked.
  absl::Status shut_down = hosts->Shutdown(absl::Seconds(1));
  INFO(shut_down);
  CHECK(shut_down.ok());
  CHECK(QueueOnceEmpty(slurm).empty());
  CheckStopsClean(slurm);
}

TEST_CASE(
    "a hostd that cannot start on its node fails the whole Slurm call naming "
    "the node, and the allocation is released",
    "[slurm]") {
  START_SLURM_OR_SKIP(slurm);
  TempDir dir;
  HostMesh::Options options = HostdOptions(NewClient());
  options.hostd_args.push_back("--no-such-flag");
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Slurm(OnCluster(slurm, 2, dir.path()), options);
  REQUIRE_FALSE(hosts.ok());
  const std::string message(hosts.status().message());
  INFO(message);
  CHECK(absl::StrContains(message, "2 of 2 hosts did not start"));
  CHECK(
      absl::StrContains(message, "host_0 on Slurm node " + slurm.node_name()));
  CHECK(absl::StrContains(message, "--no-such-flag"));
  CHECK(QueueOnceEmpty(slurm).empty());

  SECTION("and a request Slurm does not grant in time is withdrawn") {
    SlurmOptions later = OnCluster(slurm, 2, dir.path());
    // Slurm queues it (it may start in an hour): salloc waits for the
    // Options' timeout, then it and its pending job go.
    later.salloc_args = {"--begin=now+1hour"};
    HostMesh::Options short_wait = HostdOptions(NewClient());
    short_wait.timeout = absl::Seconds(3);
    absl::StatusOr<HostMesh> refused = HostMesh::Slurm(later, short_wait);
    REQUIRE_FALSE(refused.ok());
    INFO(refused.status().message());
    CHECK(refused.status().code() == absl::StatusCode::kDeadlineExceeded);
    CHECK(absl::StrContains(refused.status().message(),
                            "not granted within 3s; withdrawn"));
    CHECK(absl::StrContains(refused.status().message(), "--begin=now+1hour"));
    CHECK(QueueOnceEmpty(slurm).empty());
  }
  CheckStopsClean(slurm);
}

TEST_CASE(
    "a client killed by SIGKILL leaves no allocation behind: salloc "
    "relinquishes it when the client's pipe closes",
    "[slurm]") {
  START_SLURM_OR_SKIP(slurm);
  TempDir dir;
  // meshctl slurm up is the client here: a process of its own to kill.
  std::vector<std::string> env = slurm.ClientEnvironment();
  env.push_back("HOSTMESH_HOSTD=" + BinaryPath("hostd"));
  absl::StatusOr<std::unique_ptr<PipedProcess>> client = PipedProcess::Start(
      {BinaryPath("meshctl"), "slurm", "up", "--tasks-per-node=2",
       "--token-file=" + dir.path() + "/token", "--node-dir=" + dir.path(),
       "--hostd-arg=--procd=" + BinaryPath("procd"),
       "--hostd-arg=--orphan-timeout=2s"},
      env);
  REQUIRE(client.ok());
  absl::StatusOr<std::string> up =
      (*client)->ReadUntil("ready\n", absl::Seconds(60));
  INFO(up.status().ToString());
  REQUIRE(up.ok());
  CHECK_FALSE(Queue(slurm).empty());

  (*client)->Signal(SIGKILL);
  RunResult killed = (*client)->Wait(absl::Seconds(10));
  CHECK(killed.term_signal == SIGKILL);
  // Its salloc sees its stdin end, relinquishes the job, and Slurm ends
  // the hostds; nothing of the cluster's jobs is left.
  CHECK(QueueOnceEmpty(slurm, absl::Seconds(30)).empty());
  CheckStopsClean(slurm);
}

constexpr char kOpsToken[] = "sbatch-test-ops-token-0123456789abcdef";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The lines of `path` once it exists (the script renames it into place
// whole), or none after `timeout`.
std::vector<std::string> WaitForLines(const std::string& path,
                                      absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  struct stat info;
  while (stat(path.c_str(), &info) != 0) {
    if (absl::Now() > deadline) return {};
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::StrSplit(ReadFile(path), '\n', absl::SkipWhitespace());
}

TEST_CASE(
    "hostmesh.sbatch brings up a hostd per task that clients attach to, and "
    "cancelling the job ends them and their procs",
    "[slurm]") {
  START_SLURM_OR_SKIP(slurm);
  TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  std::ofstream(tokens) << "ops admin " << kOpsToken << "\n";
  REQUIRE(chmod(tokens.c_str(), 0600) == 0);
  const std::string script = absl::StrCat(
      std::getenv("TEST_SRCDIR"), "/hostmesh/deploy/slurm/hostmesh.sbatch");

  // sbatch passes its environment on: the script's settings go with it.
  absl::StatusOr<RunResult> sbatch = slurm.Run(
      {"env", "HOSTMESH_HOSTD=" + BinaryPath("hostd"),
       "HOSTMESH_LISTEN=127.0.0.1:0", "HOSTMESH_NODE_DIR=" + dir.path(),
       "HOSTMESH_OUT=" + dir.path(), FindProgram("sbatch"), "--parsable",
       "--nodes=1", "--ntasks-per-node=2",
       "--output=" + dir.path() + "/job.out", script, "--tokens-file=" + tokens,
       "--procd=" + BinaryPath("procd"), "--allow-any-command", "--cgroup=none",
       "--stop-grace=1s"});
  REQUIRE(sbatch.ok());
  INFO(sbatch->Describe());
  REQUIRE(sbatch->ok());
  const std::string job(absl::StripAsciiWhitespace(sbatch->out));

  const std::string hosts_file =
      absl::StrCat(dir.path(), "/hostmesh-", job, ".hosts");
  std::vector<std::string> addresses =
      WaitForLines(hosts_file, absl::Seconds(60));
  INFO("job.out: " << ReadFile(dir.path() + "/job.out") << "\ntask 0: "
                   << ReadFile(absl::StrCat(dir.path(), "/hostmesh-", job,
                                            ".task_0.log"))
                   << slurm.DaemonLogs());
  REQUIRE(addresses.size() == 2);
  CHECK(addresses[0] != addresses[1]);

  // A client attaches with its token (this is loopback: no TLS needed).
  ClientCredentials ops;
  ops.token = kOpsToken;
  std::shared_ptr<Client> client = NewClient(ops);
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach(addresses, WithClient(client));
  INFO(hosts.status().ToString());
  REQUIRE(hosts.ok());
  EchoMesh mesh = SpawnEcho(*hosts);

  // The job ends: each hostd gets SIGTERM, stops its procs and exits.
  absl::StatusOr<RunResult> scancel = slurm.Run({"scancel", job});
  REQUIRE(scancel.ok());
  REQUIRE(scancel->ok());
  CHECK(WaitAllGone(mesh.pids, absl::Seconds(30)).empty());
  CHECK(QueueOnceEmpty(slurm).empty());
  hosts->Shutdown(absl::Seconds(1)).IgnoreError();
  CheckStopsClean(slurm);
}

}  // namespace
}  // namespace mesh::testing
