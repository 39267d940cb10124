// B10 (issue 14): a host mesh through Slurm, on a private one-node cluster
// (tests/testing/slurm_cluster.h: its own munged, slurmctld and slurmd on
// 127.0.0.1), round by round beside its floor and the same mesh through
// HostMesh::Process:
//
//   B10         Slurm(2 tasks) on an existing     F10: two srun steps of
//               allocation -> 2 x 2 procs         /bin/true in the same
//               RUNNING                           allocation, in parallel,
//                                                 until both exited
//   B10.salloc  the same with the allocation      F10
//               made by Slurm() (salloc
//               --no-shell) and released
//   B10.process Process(2) -> 2 x 2 procs         F10 (for context: the
//               RUNNING                           same mesh without Slurm)
//
// Usage: slurm_bench [--rows FILE] [--rounds R]. Exits 1 if something could
// not be measured (the notes say what); without Slurm installed it notes
// that and reports no rows.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/report.h"
#include "bench/util.h"
#include "hostmesh/hostmesh.h"
#include "lib/process/run_command.h"
#include "lib/slurm/slurm.h"
#include "tests/testing/slurm_cluster.h"

namespace mesh::bench {
namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

class SlurmBench {
 public:
  explicit SlurmBench(int rounds) : rounds_(rounds) {}

  int Run(const std::string& rows_path) {
    absl::StatusOr<std::unique_ptr<testing::SlurmCluster>> cluster =
        testing::SlurmCluster::Start();
    if (!cluster.ok()) {
      report_.Note(
          absl::StrCat("B10: no Slurm cluster: ", cluster.status().message()));
      return Finish(rows_path, /*ok=*/false);
    }
    slurm_ = cluster->get();
    env_ = slurm_->ClientEnvironment();
    absl::StatusOr<std::string> job = slurm_->Allocate(2, "bench");
    if (!job.ok()) {
      report_.Note(absl::StrCat("B10: ", job.status().message()));
      return Finish(rows_path, false);
    }
    absl::StatusOr<std::string> hostd = FindBenchBinary("hostd");
    absl::StatusOr<std::string> procd = FindBenchBinary("procd");
    if (!hostd.ok() || !procd.ok()) {
      report_.Note("B10: hostd or procd not found");
      return Finish(rows_path, false);
    }
    hostd_ = *hostd;
    procd_ = *procd;
    bool ok = true;
    for (int round = 0; round < rounds_ && ok; ++round) {
      ok = Floor(*job) && Mesh(*job, &b10_) && Mesh("", &b10_salloc_) &&
           Process();
    }
    report_.Add("F10", "2 srun steps of /bin/true, parallel", "ms", f10_);
    report_
        .Add("B10", "Slurm(2 tasks), allocation given -> 2x2 RUNNING", "ms",
             b10_)
        .set_floor("F10");
    report_
        .Add("B10.salloc", "the same, salloc'd and released by it", "ms",
             b10_salloc_)
        .set_floor("F10");
    report_
        .Add("B10.process", "Process(2) -> 2x2 procs RUNNING", "ms", process_)
        .set_floor("F10");
    slurm_->Run({"scancel", *job}).IgnoreError();
    absl::Status stopped = slurm_->Stop();
    if (!stopped.ok()) {
      report_.Note(
          absl::StrCat("B10: the cluster's stop: ", stopped.message()));
      ok = false;
    }
    return Finish(rows_path, ok);
  }

 private:
  int Finish(const std::string& rows_path, bool ok) {
    if (rows_path.empty()) {
      report_.PrintTable(stdout);
    } else if (absl::Status appended = report_.AppendTo(rows_path);
               !appended.ok()) {
      std::fprintf(stderr, "slurm_bench: %s\n",
                   std::string(appended.message()).c_str());
      return 1;
    }
    return ok ? 0 : 1;
  }

  // F10: what any per-task srun launch costs here.
  bool Floor(const std::string& job) {
    SlurmCommands commands(env_, absl::Seconds(30));
    absl::StatusOr<std::vector<std::string>> argv =
        commands.SrunArgv(job, slurm_->node_name(), {"/bin/true"});
    if (!argv.ok()) {
      report_.Note(absl::StrCat("F10: ", argv.status().message()));
      return false;
    }
    std::vector<absl::StatusOr<RunResult>> runs(2,
                                                absl::UnknownError("not run"));
    const absl::Time start = absl::Now();
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back(
          [&, i] { runs[i] = RunCommand(*argv, env_, absl::Seconds(30)); });
    }
    for (std::thread& thread : threads) thread.join();
    const absl::Duration took = absl::Now() - start;
    for (const auto& run : runs) {
      if (!run.ok() || !run->ok()) {
        report_.Note(
            absl::StrCat("F10: srun failed: ",
                         run.ok() ? run->Describe() : run.status().ToString()));
        return false;
      }
    }
    f10_.push_back(Ms(took));
    return true;
  }

  HostMesh::Options MeshOptions() {
    HostMesh::Options options;
    ClientOptions client_options;
    client_options.forward_proc_output = false;
    absl::StatusOr<std::shared_ptr<Client>> client =
        Client::Create(client_options);
    if (client.ok()) options.client = *client;
    options.hostd_path = hostd_;
    options.hostd_args = {"--procd=" + procd_};
    options.keep_logs = false;
    return options;
  }

  // Slurm() (on `job`, or salloc'd if empty) -> 2x2 procs RUNNING.
  bool Mesh(const std::string& job, std::vector<double>* samples) {
    SlurmOptions slurm;
    slurm.job_id = job;
    slurm.tasks_per_node = 2;
    slurm.job_name = "bench";
    for (const std::string& entry : slurm_->Env()) {
      slurm.env[entry.substr(0, entry.find('='))] =
          entry.substr(entry.find('=') + 1);
    }
    slurm.node_dir = slurm_->dir();
    const absl::Time start = absl::Now();
    absl::StatusOr<HostMesh> hosts = HostMesh::Slurm(slurm, MeshOptions());
    if (!hosts.ok()) {
      report_.Note(absl::StrCat("B10: ", hosts.status().ToString()));
      return false;
    }
    return SpawnAndTime(*hosts, start, samples, "B10");
  }

  bool Process() {
    const absl::Time start = absl::Now();
    absl::StatusOr<HostMesh> hosts = HostMesh::Process(2, MeshOptions());
    if (!hosts.ok()) {
      report_.Note(absl::StrCat("B10.process: ", hosts.status().ToString()));
      return false;
    }
    return SpawnAndTime(*hosts, start, &process_, "B10.process");
  }

  bool SpawnAndTime(HostMesh& hosts, absl::Time start,
                    std::vector<double>* samples, const std::string& id) {
    absl::StatusOr<ProcMesh> procs = hosts.Spawn("p", 2);
    if (!procs.ok()) {
      report_.Note(absl::StrCat(id, ": ", procs.status().ToString()));
      return false;
    }
    samples->push_back(Ms(absl::Now() - start));
    if (absl::Status down = hosts.Shutdown(); !down.ok()) {
      report_.Note(absl::StrCat(id, ": shutdown: ", down.ToString()));
      return false;
    }
    return true;
  }

  const int rounds_;
  Report report_;
  testing::SlurmCluster* slurm_ = nullptr;
  std::vector<std::string> env_;
  std::string hostd_;
  std::string procd_;
  std::vector<double> f10_, b10_, b10_salloc_, process_;
};

}  // namespace
}  // namespace mesh::bench

int main(int argc, char** argv) {
  mesh::bench::QuietLogging(argv[0]);
  int rounds = 5;
  std::string rows;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--rounds" && absl::SimpleAtoi(argv[i + 1], &rounds) &&
        rounds > 0) {
      continue;
    }
    if (flag == "--rows") {
      rows = argv[i + 1];
      continue;
    }
    std::fprintf(stderr, "usage: slurm_bench [--rows FILE] [--rounds R]\n");
    return 2;
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "usage: slurm_bench [--rows FILE] [--rounds R]\n");
    return 2;
  }
  return mesh::bench::SlurmBench(rounds).Run(rows);
}
