// meshctl slurm up (the real binary, as an operator runs it) on a private
// one-node Slurm cluster (tests/testing/slurm_cluster_main, talked to over
// its stdin and stdout): two hostds through srun, printed as "host_<rank>
// <address> <node>", "job <id>", "ready"; other meshctl runs reach both with
// HOSTMESH_TOKEN_FILE=<its token file>; SIGTERM stops the proc spawned
// there and the hostds, releases the allocation and removes the token file
// (exit 0); a cancelled job is every host lost (exit 1 naming them). Bad
// flags exit 2 naming the flag, with nothing created. Skipped where Slurm
// is not installed (fails under CI=true).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/run_command.h"
#include "lib/testing/skip.h"
#include "lib/testing/temp_dir.h"
#include "tests/testing/test_host.h"

namespace mesh::testing {
namespace {

using Catch::Contains;

// Nothing of the test's own Slurm job, credentials or hosts reaches the
// programs it runs.
bool Foreign(absl::string_view name) {
  return absl::StartsWith(name, "SLURM_") ||
         absl::StartsWith(name, "HOSTMESH_") || name == "MESH_HOST";
}

// The test's environment without Foreign variables, plus `extra`.
std::vector<std::string> Env(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env = CurrentEnvironment(&Foreign);
  for (const auto& [key, value] : extra) {
    env.push_back(absl::StrCat(key, "=", value));
  }
  return env;
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// slurm_cluster_main: the cluster runs until its stdin closes. The
// destructor closes it and waits for the cluster's stop; the PipedProcess
// then kills what is left of it, by its pid's group.
class ClusterHelper {
 public:
  ClusterHelper() {
    absl::StatusOr<std::unique_ptr<PipedProcess>> started =
        PipedProcess::Start({BinaryPath("slurm_cluster_main")}, Env({}));
    REQUIRE(started.ok());
    process_ = *std::move(started);
  }
  ~ClusterHelper() {
    if (!ended_) Stop();
  }

  // True once it said "ready"; else false, and ended() says how it ended
  // (exit 3: it found no Slurm here).
  bool WaitReady() {
    absl::StatusOr<std::string> said =
        process_->ReadUntil("ready\n", absl::Seconds(120));
    if (!said.ok()) {
      ended_ = true;
      result_ = process_->Wait(absl::Seconds(60));
      return false;
    }
    for (absl::string_view line : absl::StrSplit(*said, '\n')) {
      std::vector<std::string> kv =
          absl::StrSplit(line, absl::MaxSplits('=', 1));
      if (kv.size() == 2) vars_[kv[0]] = kv[1];
    }
    return true;
  }
  const RunResult& ended() const { return result_; }

  // SLURM_CONF and HOSTMESH_SLURM_CLUSTER, for its clients.
  std::map<std::string, std::string> ClientVars() const {
    return {{"SLURM_CONF", vars_.at("SLURM_CONF")},
            {"HOSTMESH_SLURM_CLUSTER", vars_.at("HOSTMESH_SLURM_CLUSTER")}};
  }
  std::string node() const { return vars_.at("SLURM_NODE"); }

  // Closes its stdin: it stops the cluster and exits.
  const RunResult& Stop() {
    if (!ended_) {
      ended_ = true;
      process_->CloseStdin();
      result_ = process_->Wait(absl::Seconds(120));
    }
    return result_;
  }

 private:
  std::unique_ptr<PipedProcess> process_;
  std::map<std::string, std::string> vars_;
  bool ended_ = false;
  RunResult result_;
};

// One host line of `meshctl slurm up`.
struct UpHost {
  std::string name;
  std::string address;
  std::string node;
};

// `meshctl slurm up args...` running. The destructor, if it still runs,
// SIGTERMs it (its own stop releases the allocation) and waits; the
// PipedProcess kills its group if it did not end.
class SlurmUp {
 public:
  SlurmUp(const std::vector<std::string>& args,
          const std::vector<std::string>& env) {
    std::vector<std::string> argv = {BinaryPath("meshctl"), "slurm", "up"};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<std::unique_ptr<PipedProcess>> started =
        PipedProcess::Start(argv, env);
    REQUIRE(started.ok());
    process_ = *std::move(started);
  }
  ~SlurmUp() {
    if (!ended_) Stop(SIGTERM);
  }

  // Reads its lines up to "ready": the hosts and the job; REQUIREs them.
  void ReadReady() {
    absl::StatusOr<std::string> said =
        process_->ReadUntil("ready\n", absl::Seconds(120));
    INFO(said.status().ToString());
    REQUIRE(said.ok());
    INFO(*said);
    const std::regex host_line(R"(host_(\d+) (\S+) (\S+))");
    for (absl::string_view line : absl::StrSplit(*said, '\n')) {
      std::smatch match;
      const std::string text(line);
      if (std::regex_match(text, match, host_line)) {
        CHECK(match[1] == std::to_string(hosts.size()));
        hosts.push_back({"host_" + match[1].str(), match[2], match[3]});
      } else if (absl::StartsWith(text, "job ")) {
        job = text.substr(4);
      } else {
        CHECK((text.empty() || text == "ready"));
      }
    }
    REQUIRE_FALSE(job.empty());
  }

  // Sends `sig` to it (by its pid) and waits for its end.
  RunResult Stop(int sig) {
    kill(process_->pid(), sig);
    return Wait();
  }
  RunResult Wait() {
    ended_ = true;
    return process_->Wait(absl::Seconds(90));
  }

  std::vector<UpHost> hosts;
  std::string job;

 private:
  std::unique_ptr<PipedProcess> process_;
  bool ended_ = false;
};

// The jobs in the cluster's queue, once it is empty or as it is after
// `timeout` (a cancelled job stays a moment while it completes).
std::string QueueOnceEmpty(const std::vector<std::string>& env,
                           absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<RunResult> squeue =
        RunCommand({"squeue", "-h", "-o", "%i"}, env, absl::Seconds(20));
    REQUIRE(squeue.ok());
    INFO(squeue->Describe());
    REQUIRE(squeue->ok());
    std::string queue(absl::StripAsciiWhitespace(squeue->out));
    if (queue.empty() || absl::Now() > deadline) return queue;
    absl::SleepFor(absl::Milliseconds(200));
  }
}

// Another meshctl, as a client attaching with the token file.
RunResult Meshctl(const std::vector<std::string>& args,
                  const std::string& token_file) {
  std::vector<std::string> argv = {BinaryPath("meshctl")};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<RunResult> run = RunCommand(
      argv, Env({{"HOSTMESH_TOKEN_FILE", token_file}}), absl::Seconds(60));
  REQUIRE(run.ok());
  return *run;
}

bool GoneWithin(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (IsAlive(pid)) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return true;
}

TEST_CASE(
    "meshctl slurm up serves two hosts that clients reach with its token "
    "file until SIGTERM, then stops them, releases the job and removes the "
    "file",
    "[slurm]") {
  ClusterHelper cluster;
  if (!cluster.WaitReady()) {
    if (cluster.ended().exit_code == 3) {
      HOSTMESH_SKIP("no Slurm cluster here: " << cluster.ended().Describe());
    }
    FAIL("the Slurm cluster did not start: " << cluster.ended().Describe());
  }
  const std::vector<std::string> env = Env(cluster.ClientVars());
  TempDir dir;
  const std::vector<std::string> flags = {
      "--tasks-per-node=2",
      "--hostd=" + BinaryPath("hostd"),
      "--hostd-arg=--procd=" + BinaryPath("procd"),
      "--hostd-arg=--stop-grace=1s",
      "--node-dir=" + dir.path(),
      "--job-name=meshctl-test",
      "--timeout=60s",
  };

  const std::string token_file = dir.path() + "/mesh.token";
  std::vector<std::string> args = flags;
  args.push_back("--token-file=" + token_file);
  {
    SlurmUp up(args, env);
    up.ReadReady();
    REQUIRE(up.hosts.size() == 2);
    CHECK(up.hosts[0].address != up.hosts[1].address);
    for (const UpHost& host : up.hosts) CHECK(host.node == cluster.node());
    CHECK(QueueOnceEmpty(env, absl::ZeroDuration()) == up.job);
    struct stat info = {};
    REQUIRE(stat(token_file.c_str(), &info) == 0);
    CHECK((info.st_mode & 0777) == 0600);
    CHECK(info.st_size > 1);

    // Both hosts answer a client that has the token file, and nothing else.
    const std::string both =
        absl::StrCat(up.hosts[0].address, ",", up.hosts[1].address);
    RunResult list = Meshctl({"--hosts", both, "host", "list"}, token_file);
    INFO(list.Describe());
    CHECK(list.exit_code == 0);
    CHECK_THAT(list.out, Contains(up.hosts[0].address));
    CHECK_THAT(list.out, Contains(up.hosts[1].address));
    for (const UpHost& host : up.hosts) {
      RunResult status =
          Meshctl({"--host", host.address, "host", "status"}, token_file);
      INFO(status.Describe());
      CHECK(status.exit_code == 0);
    }
    RunResult stranger =
        Meshctl({"--host", up.hosts[0].address, "host", "status"}, "");
    CHECK(stranger.exit_code == 1);
    CHECK_THAT(stranger.err, Contains("UNAUTHENTICATED"));

    // A proc another client spawns there is stopped with the hosts.
    RunResult spawned = Meshctl(
        {"--host", up.hosts[1].address, "-o", "yaml", "proc", "spawn", "p0"},
        token_file);
    INFO(spawned.Describe());
    REQUIRE(spawned.exit_code == 0);
    std::smatch pid_match;
    REQUIRE(
        std::regex_search(spawned.out, pid_match, std::regex(R"(pid: (\d+))")));
    pid_t proc_pid = 0;
    REQUIRE(absl::SimpleAtoi(pid_match[1].str(), &proc_pid));
    CHECK(IsAlive(proc_pid));

    RunResult stopped = up.Stop(SIGTERM);
    INFO(stopped.Describe());
    CHECK(stopped.exit_code == 0);
    CHECK_FALSE(Exists(token_file));
    CHECK(GoneWithin(proc_pid, absl::Seconds(10)));
    CHECK(QueueOnceEmpty(env).empty());
  }

  // The job cancelled under it: every host lost, exit 1 naming them.
  {
    SlurmUp up(args, env);
    up.ReadReady();
    REQUIRE(up.hosts.size() == 2);
    absl::StatusOr<RunResult> scancel =
        RunCommand({"scancel", up.job}, env, absl::Seconds(20));
    REQUIRE(scancel.ok());
    REQUIRE(scancel->ok());
    RunResult ended = up.Wait();
    INFO(ended.Describe());
    CHECK(ended.exit_code == 1);
    CHECK_THAT(ended.err, Contains(absl::StrCat("every host of Slurm job ",
                                                up.job, " was lost")));
    CHECK_THAT(ended.err, Contains("host_0 (" + up.hosts[0].address));
    CHECK_THAT(ended.err, Contains("host_1 (" + up.hosts[1].address));
    CHECK_FALSE(Exists(token_file));
    CHECK(QueueOnceEmpty(env).empty());
  }

  RunResult helper = cluster.Stop();
  INFO(helper.Describe());
  CHECK(helper.exit_code == 0);
}

TEST_CASE(
    "meshctl slurm up refuses bad flags and an existing token file with exit "
    "2 naming them, and creates nothing",
    "[slurm]") {
  TempDir dir;
  const std::string token_file = dir.path() + "/mesh.token";
  auto up = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {BinaryPath("meshctl"), "slurm", "up"};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<RunResult> run =
        RunCommand(argv, Env({}), absl::Seconds(30));
    REQUIRE(run.ok());
    return *run;
  };

  RunResult no_nodes = up({"--nodes", "0", "--token-file", token_file});
  INFO(no_nodes.Describe());
  CHECK(no_nodes.exit_code == 2);
  CHECK_THAT(no_nodes.err, Contains("--nodes 0"));
  CHECK_FALSE(Exists(token_file));

  RunResult no_tasks = up({"--tasks-per-node=-1", "--token-file", token_file});
  CHECK(no_tasks.exit_code == 2);
  CHECK_THAT(no_tasks.err, Contains("--tasks-per-node"));

  RunResult no_token = up({});
  CHECK(no_token.exit_code == 2);
  CHECK_THAT(no_token.err, Contains("--token-file"));

  RunResult job_and_nodes =
      up({"--job-id", "7", "--nodes", "2", "--token-file", token_file});
  CHECK(job_and_nodes.exit_code == 2);
  CHECK_THAT(job_and_nodes.err, Contains("--nodes"));
  CHECK_THAT(job_and_nodes.err, Contains("job 7"));
  CHECK_FALSE(Exists(token_file));

  // An existing file is left as it was.
  {
    FILE* file = fopen(token_file.c_str(), "w");
    REQUIRE(file != nullptr);
    fputs("someone's\n", file);
    fclose(file);
  }
  RunResult exists = up({"--token-file", token_file});
  INFO(exists.Describe());
  CHECK(exists.exit_code == 2);
  CHECK_THAT(exists.err,
             Contains("--token-file \"" + token_file + "\" exists"));
  struct stat info = {};
  REQUIRE(stat(token_file.c_str(), &info) == 0);
  CHECK(info.st_size == 10);
}

}  // namespace
}  // namespace mesh::testing
