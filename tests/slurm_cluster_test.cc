// A real one-node Slurm cluster (munged, slurmctld, slurmd in a temp dir on
// loopback, tests/testing/slurm_cluster.h): jobs run, srun's pipes carry a
// task's stdin and stdout both ways, a cancelled job and a stopped cluster
// leave no process behind. The groundwork of HostMesh::Slurm (issue 14).
#include "tests/testing/slurm_cluster.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/process_identity.h"
#include "lib/testing/skip.h"
#include "lib/testing/sockets.h"

namespace mesh::testing {
namespace {

bool Alive(pid_t pid) {
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  return stat.ok() && stat->state != 'Z' && stat->state != 'X';
}

// Waits up to `timeout` for none of `pids` to be alive; returns those left.
std::vector<pid_t> WaitGone(const std::vector<pid_t>& pids,
                            absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    std::vector<pid_t> left;
    for (pid_t pid : pids) {
      if (Alive(pid)) left.push_back(pid);
    }
    if (left.empty() || absl::Now() > deadline) return left;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

// The pids, one a line, that a job wrote to `path`, once there are `count`.
std::vector<pid_t> WaitForPids(const std::string& path, size_t count,
                               absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    std::vector<pid_t> pids;
    FILE* file = fopen(path.c_str(), "r");
    if (file != nullptr) {
      for (long pid; fscanf(file, "%ld", &pid) == 1;) pids.push_back(pid);
      fclose(file);
    }
    if (pids.size() >= count || absl::Now() > deadline) return pids;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

// Submits a batch job that writes its shell's pid, a child's and a setsid
// child's (in a session of its own, as a proc in its own process group
// would be) to <dir>/pids, then waits. With `escapee`, also starts a
// double-forked setsid child (re-parented away from the job: Slurm's
// proctrack/linuxproc loses it, the cluster's own tracking must not).
// Returns the job id.
std::string SubmitSleeper(SlurmCluster& cluster, bool escapee = false) {
  std::string pids = cluster.dir() + "/pids";
  std::string escape =
      escapee ? absl::StrCat("(setsid sleep 300 & echo $! >> ", pids, "); ")
              : "";
  absl::StatusOr<RunResult> sbatch =
      cluster.Run({"sbatch", "--parsable", "-N1", "-n1",
                   "--output=" + cluster.dir() + "/job-%j.out", "--wrap",
                   absl::StrCat(escape, "sleep 300 & echo $! >> ", pids,
                                "; setsid sleep 300 & echo $! >> ", pids,
                                "; echo $$ >> ", pids, "; wait")});
  REQUIRE(sbatch.ok());
  INFO(sbatch->Describe());
  REQUIRE(sbatch->ok());
  std::string job(absl::StripAsciiWhitespace(sbatch->out));
  uint64_t id = 0;
  REQUIRE(absl::SimpleAtoi(job, &id));
  return job;
}

// The reason a cluster did not start, on one line; the whole message (the
// daemons' stderr tails) goes to stderr.
std::string Reason(const absl::Status& status) {
  std::cerr << status.message() << std::endl;
  std::string message(status.message());
  return message.substr(0, message.find('\n'));
}

}  // namespace

TEST_CASE(
    "a one-node cluster starts on loopback and srun runs two tasks on its "
    "node") {
  absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster = SlurmCluster::Start();
  if (!cluster.ok()) {
    HOSTMESH_SKIP("no Slurm cluster here: " << Reason(cluster.status()));
  }
  WARN("cluster up in " << absl::FormatDuration(absl::Now() - start));
  SlurmCluster& slurm = **cluster;

  // 8 CPUs declared on whatever the machine has.
  absl::StatusOr<RunResult> sinfo =
      slurm.Run({"sinfo", "-h", "-N", "-o", "%N %c %t %P"});
  REQUIRE(sinfo.ok());
  INFO(sinfo->Describe());
  CHECK(absl::StripAsciiWhitespace(sinfo->out) ==
        slurm.node_name() + " 8 idle debug*");

  // Both daemons listen on 127.0.0.1 only; munged on its own socket.
  for (pid_t pid : {slurm.slurmctld_pid(), slurm.slurmd_pid()}) {
    std::vector<std::string> sockets = ListeningSockets(pid);
    INFO("pid " << pid << " listens on " << sockets.size() << " sockets");
    CHECK(!sockets.empty());
    for (const std::string& socket : sockets) {
      INFO(socket);
      CHECK(absl::StartsWith(socket, "tcp 0100007F:"));
    }
  }
  CHECK(ListeningSockets(slurm.munged_pid()) ==
        std::vector<std::string>{"unix " + slurm.munge_socket()});

  absl::Time ran = absl::Now();
  absl::StatusOr<RunResult> srun =
      slurm.Run({"srun", "-N1", "-n2", "/bin/sh", "-c",
                 "echo \"task $SLURM_PROCID of $SLURM_NTASKS on "
                 "$SLURMD_NODENAME\""});
  WARN("srun -n2 took " << absl::FormatDuration(absl::Now() - ran));
  REQUIRE(srun.ok());
  INFO(srun->Describe());
  REQUIRE(srun->ok());
  std::vector<std::string> lines =
      absl::StrSplit(srun->out, '\n', absl::SkipEmpty());
  std::sort(lines.begin(), lines.end());
  CHECK(lines ==
        std::vector<std::string>{"task 0 of 2 on " + slurm.node_name(),
                                 "task 1 of 2 on " + slurm.node_name()});

  REQUIRE(slurm.Stop().ok());
  CHECK(slurm.LivePids().empty());
}

TEST_CASE("a task's stdin and stdout flow both ways through srun's pipes") {
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster = SlurmCluster::Start();
  if (!cluster.ok()) {
    HOSTMESH_SKIP("no Slurm cluster here: " << Reason(cluster.status()));
  }
  SlurmCluster& slurm = **cluster;

  SECTION("a line-by-line conversation with one task") {
    absl::StatusOr<std::unique_ptr<PipedProcess>> srun = slurm.Spawn(
        {"srun", "-N1", "-n1", "--unbuffered", "/bin/sh", "-c",
         "while read -r line; do echo \"echo: $line\"; done; echo eof"});
    REQUIRE(srun.ok());
    PipedProcess& task = **srun;
    for (const char* word : {"hello", "world"}) {
      REQUIRE(task.Write(absl::StrCat(word, "\n")).ok());
      absl::StatusOr<std::string> reply =
          task.ReadUntil(absl::StrCat("echo: ", word, "\n"), absl::Seconds(20));
      INFO(reply.status().ToString());
      REQUIRE(reply.ok());
      CHECK(*reply == absl::StrCat("echo: ", word, "\n"));
    }
    task.CloseStdin();  // EOF reaches the task.
    absl::StatusOr<std::string> eof =
        task.ReadUntil("eof\n", absl::Seconds(20));
    INFO(eof.status().ToString());
    REQUIRE(eof.ok());
    RunResult result = task.Wait(absl::Seconds(20));
    INFO(result.Describe());
    CHECK(result.ok());
  }

  SECTION(
      "bytes without a newline, NUL included, come back at once with "
      "--unbuffered") {
    // What a register-back frame over srun needs: slurmstepd otherwise holds
    // a task's output until a newline.
    absl::StatusOr<std::unique_ptr<PipedProcess>> srun =
        slurm.Spawn({"srun", "-N1", "-n1", "--unbuffered", "/bin/cat"});
    REQUIRE(srun.ok());
    PipedProcess& task = **srun;
    const std::string frame("\x00\x00\x00\x05hello", 9);
    for (int i = 0; i < 3; ++i) {
      REQUIRE(task.Write(frame).ok());
      absl::StatusOr<std::string> echoed =
          task.ReadUntil(frame, absl::Seconds(20));
      INFO(echoed.status().ToString());
      REQUIRE(echoed.ok());
      CHECK(*echoed == frame);
    }
    task.CloseStdin();
    RunResult result = task.Wait(absl::Seconds(20));
    INFO(result.Describe());
    CHECK(result.ok());
    CHECK(result.out.empty());
  }

  SECTION("stdin goes to the task srun --input names, the others read EOF") {
    absl::StatusOr<RunResult> srun = slurm.Run(
        {"srun", "-N1", "-n2", "--input=0", "--label", "/bin/sh", "-c",
         "if read -r line; then echo \"got $line\"; else echo \"no input\"; "
         "fi"},
        "hi\n");
    REQUIRE(srun.ok());
    INFO(srun->Describe());
    REQUIRE(srun->ok());
    CHECK(absl::StrContains(srun->out, "0: got hi\n"));
    CHECK(absl::StrContains(srun->out, "1: no input\n"));
  }

  REQUIRE(slurm.Stop().ok());
}

TEST_CASE(
    "two steps of one salloc allocation each talk over their own srun pipes") {
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster = SlurmCluster::Start();
  if (!cluster.ok()) {
    HOSTMESH_SKIP("no Slurm cluster here: " << Reason(cluster.status()));
  }
  SlurmCluster& slurm = **cluster;
  // An allocation of 2 tasks, no shell: what HostMesh::Slurm would ask for.
  absl::StatusOr<std::string> allocated = slurm.Allocate(2);
  INFO(allocated.status().ToString());
  REQUIRE(allocated.ok());
  const std::string job = *allocated;

  // One step per task, both at once, each with its own pipes (one per
  // hostd, in issue 14's terms). --exact: a step takes only what it asks
  // for, not every CPU of the allocation on its node (which would hold the
  // second step until the first ends; on distinct nodes it would not
  // matter).
  std::vector<std::unique_ptr<PipedProcess>> steps;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<std::unique_ptr<PipedProcess>> step =
        slurm.Spawn({"srun", "--jobid=" + job, "-N1", "-n1", "--exact",
                     "--unbuffered", "/bin/sh", "-c",
                     "while read -r line; do echo \"$SLURM_STEP_ID $line\"; "
                     "done"});
    REQUIRE(step.ok());
    steps.push_back(*std::move(step));
  }
  std::set<std::string> step_ids;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 2; ++i) {
      std::string word = absl::StrCat("step", i, "-round", round);
      REQUIRE(steps[i]->Write(word + "\n").ok());
      absl::StatusOr<std::string> reply =
          steps[i]->ReadUntil(word + "\n", absl::Seconds(20));
      INFO(reply.status().ToString());
      REQUIRE(reply.ok());
      step_ids.insert(
          std::string(absl::StripSuffix(*reply, " " + word + "\n")));
    }
  }
  CHECK(step_ids.size() == 2);  // Two distinct steps answered.

  absl::StatusOr<RunResult> scancel = slurm.Run({"scancel", job});
  REQUIRE(scancel.ok());
  for (auto& step : steps) {
    RunResult ended = step->Wait(absl::Seconds(30));
    INFO(ended.Describe());
    CHECK(!ended.ok());  // The allocation's end ends its steps.
  }
  CHECK(slurm.CancelAllJobs().ok());
  REQUIRE(slurm.Stop().ok());
}

TEST_CASE(
    "scancel ends every process of a batch job, a setsid child included") {
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster = SlurmCluster::Start();
  if (!cluster.ok()) {
    HOSTMESH_SKIP("no Slurm cluster here: " << Reason(cluster.status()));
  }
  SlurmCluster& slurm = **cluster;
  std::string job = SubmitSleeper(slurm);
  std::vector<pid_t> pids =
      WaitForPids(slurm.dir() + "/pids", 3, absl::Seconds(30));
  REQUIRE(pids.size() == 3);
  for (pid_t pid : pids) CHECK(Alive(pid));

  absl::StatusOr<RunResult> squeue =
      slurm.Run({"squeue", "-h", "-j", job, "-o", "%T"});
  REQUIRE(squeue.ok());
  CHECK(absl::StripAsciiWhitespace(squeue->out) == "RUNNING");

  absl::Time cancelled = absl::Now();
  absl::StatusOr<RunResult> scancel = slurm.Run({"scancel", job});
  REQUIRE(scancel.ok());
  INFO(scancel->Describe());
  REQUIRE(scancel->ok());
  CHECK(WaitGone(pids, absl::Seconds(30)).empty());
  WARN("the job's processes were gone "
       << absl::FormatDuration(absl::Now() - cancelled) << " after scancel");
  CHECK(slurm.CancelAllJobs().ok());  // The queue empties.

  REQUIRE(slurm.Stop().ok());
}

TEST_CASE(
    "stopping the cluster ends its daemons and every running job's processes") {
  // Tracked by cgroup leaves (where possible: root here), and by the
  // fallback for machines without them (sessions and the marker).
  const bool cgroups = GENERATE(true, false);
  SlurmCluster::Options options;
  options.cgroups = cgroups;
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster =
      SlurmCluster::Start(options);
  if (!cluster.ok()) {
    HOSTMESH_SKIP("no Slurm cluster here: " << Reason(cluster.status()));
  }
  INFO("cgroups: " << cgroups);
  SubmitSleeper(**cluster, /*escapee=*/true);
  std::vector<pid_t> pids =
      WaitForPids((*cluster)->dir() + "/pids", 4, absl::Seconds(30));
  REQUIRE(pids.size() == 4);
  // And a step still talking to its srun.
  absl::StatusOr<std::unique_ptr<PipedProcess>> srun =
      (*cluster)->Spawn({"srun", "-N1", "-n2", "--unbuffered", "/bin/sh", "-c",
                         "echo $$; exec sleep 300"});
  REQUIRE(srun.ok());
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<std::string> line =
        (*srun)->ReadUntil("\n", absl::Seconds(20));
    INFO(line.status().ToString());
    REQUIRE(line.ok());
    pid_t pid = 0;
    REQUIRE(absl::SimpleAtoi(absl::StripAsciiWhitespace(*line), &pid));
    pids.push_back(pid);
  }
  std::vector<pid_t> all = (*cluster)->LivePids();
  for (pid_t pid : pids) {
    INFO("pid " << pid << " is the cluster's");
    CHECK(std::count(all.begin(), all.end(), pid) == 1);
  }
  std::vector<pid_t> daemons = {(*cluster)->munged_pid(),
                                (*cluster)->slurmctld_pid(),
                                (*cluster)->slurmd_pid()};
  for (pid_t pid : pids) CHECK(Alive(pid));
  std::string dir = (*cluster)->dir();

  cluster->reset();  // The destructor stops everything.

  pids.insert(pids.end(), all.begin(), all.end());
  pids.insert(pids.end(), daemons.begin(), daemons.end());
  CHECK(WaitGone(pids, absl::Seconds(1)).empty());
  CHECK(access(dir.c_str(), F_OK) != 0);
  RunResult ended = (*srun)->Wait(absl::Seconds(20));
  INFO(ended.Describe());
  CHECK(!ended.ok());  // Its step was killed under it.
}

TEST_CASE("a cluster whose slurm.conf is broken fails to start and names why") {
  if (FindProgram("slurmctld").empty()) {
    HOSTMESH_SKIP("Slurm is not installed (deploy/install-deps.sh)");
  }
  SlurmCluster::Options options;
  options.extra_conf = {"ProctrackType=proctrack/no-such-plugin"};
  options.start_timeout = absl::Seconds(20);
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster =
      SlurmCluster::Start(options);
  REQUIRE(!cluster.ok());
  INFO(cluster.status().ToString());
  CHECK(absl::StrContains(cluster.status().message(), "exited"));
  CHECK(absl::StrContains(cluster.status().message(), "no-such-plugin"));
}

}  // namespace mesh::testing
