// deploy/slurm/hostmesh.sbatch (issue 14) submitted with a real sbatch to a
// private one-node Slurm cluster (tests/testing/slurm_cluster.h): two tasks,
// two hostds on the one node, for a mesh clients attach to. The hosts file
// it writes names both; a client attaches with a token of hostd's
// --tokens-file and runs procs and actors there; cancelling the job ends
// the hostds and their procs, and the queue empties.
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "lib/testing/skip.h"
#include "lib/testing/temp_dir.h"
#include "proto/actors.pb.h"
#include "tests/testing/slurm_cluster.h"
#include "tests/testing/test_host.h"

namespace mesh::testing {
namespace {

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
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster = SlurmCluster::Start();
  if (!cluster.ok()) {
    HOSTMESH_SKIP("no Slurm cluster here: " << cluster.status().message());
  }
  SlurmCluster& slurm = **cluster;
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
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 2);
  INFO(procs.status().ToString());
  REQUIRE(procs.ok());
  std::vector<pid_t> proc_pids;
  for (const v1::ProcState& proc : procs->procs()) {
    proc_pids.push_back(proc.pid());
  }
  absl::StatusOr<ActorMesh> echo = procs->Spawn("a0", "mesh.echo");
  REQUIRE(echo.ok());
  CHECK(RanksOf(echo->Call<v1::ActorIdReply>(v1::GetActorId())) ==
        std::vector<uint64_t>{0, 1, 2, 3});

  // The job ends: each hostd gets SIGTERM, stops its procs and exits.
  absl::StatusOr<RunResult> scancel = slurm.Run({"scancel", job});
  REQUIRE(scancel.ok());
  REQUIRE(scancel->ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::vector<pid_t> alive = proc_pids;
  while (!alive.empty() && absl::Now() < deadline) {
    std::erase_if(alive, [](pid_t pid) { return !IsAlive(pid); });
    absl::SleepFor(absl::Milliseconds(50));
  }
  CHECK(alive.empty());
  CHECK(slurm.CancelAllJobs().ok());
  hosts->Shutdown(absl::Seconds(1)).IgnoreError();
  absl::Status stopped = slurm.Stop();
  INFO(stopped);
  CHECK(stopped.ok());
}

}  // namespace
}  // namespace mesh::testing
