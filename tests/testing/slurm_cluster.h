// SlurmCluster: a real one-node Slurm cluster for a test (issue 14), private
// to it and on loopback only.
//
// Start() makes a temp dir and, in it, a munge key of its own (0400, the
// running user's), then starts as children, each in its own process group
// (ProcessSupervisor; stdout/stderr in <dir>/log/<daemon>/; through
// `setpriv --pdeathsig=KILL`, so they die with this process even if it is
// killed before its destructors run):
//   - munged -F with its own socket, key, pid, log and seed files;
//   - slurmctld -D and slurmd -D on a slurm.conf it wrote: one node named
//     after this machine (NodeAddr=127.0.0.1, CPUs=8 declared whatever the
//     hardware, SlurmdParameters=config_overrides), a default partition
//     "debug", ports picked free on 127.0.0.1, both daemons bound to
//     127.0.0.1 (CommunicationParameters=NoCtldInAddrAny,NoInAddrAny),
//     proctrack/linuxproc, task/none, auth/munge through its munged,
//     SlurmUser the running user (root here), every state, spool, log and
//     pid file under the temp dir;
// and returns once sinfo shows the node idle. Clients (srun, sbatch, salloc,
// scancel, squeue, ...) reach it with Env() (SLURM_CONF=<its slurm.conf>)
// or through Run()/Spawn(), which also drop any SLURM_* of the test's own
// environment.
//
// Nothing outlives it. Where this process may make cgroup v2 directories
// (root), each daemon runs in a leaf of a private subtree from its first
// instruction, so every slurmstepd and job task slurmd starts stays in
// slurmd's leaf, setsid or double-forked or not; stopping slurmd kills the
// leaf (cgroup.kill) and waits until it is empty. Elsewhere Stop() asks
// slurmstepd itself which pids its steps have (scontrol listpids) and kills
// every process of those sessions (slurmstepd leads its steps' session), and
// every process whose environment holds this cluster's marker
// (HOSTMESH_SLURM_CLUSTER=<dir>, which Run() and Spawn() give clients and
// so their tasks), each through a pidfd re-checked after opening. Never by
// name. (slurmd's stop alone would not do: slurmstepd is re-parented to
// init at its start and outlives slurmd by design, so that slurmd can
// restart under running jobs.)
//
// Stop() (also run by the destructor): cancels every job and waits for the
// queue to empty, then stops slurmd, slurmctld and munged, each by its own
// pid (SIGTERM, then SIGKILL after a grace), checks that no process of the
// cluster is left, and the temp dir goes with the object. Not thread-safe:
// one test thread uses it.
#ifndef HOSTMESH_TESTS_TESTING_SLURM_CLUSTER_H_
#define HOSTMESH_TESTS_TESTING_SLURM_CLUSTER_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/process/run_command.h"
#include "lib/process/supervisor.h"
#include "lib/testing/temp_dir.h"

namespace mesh::testing {

class SlurmCluster {
 public:
  struct Options {
    // CPUs declared for the node (SlurmdParameters=config_overrides).
    int cpus = 8;
    // From the first daemon's start to the node idle in sinfo.
    absl::Duration start_timeout = absl::Seconds(30);
    // Extra slurm.conf lines (e.g. to break it in a test).
    std::vector<std::string> extra_conf;
    // Run the daemons in cgroup leaves where this process can make them.
    // False: track by session and marker even there (the fallback, tested).
    bool cgroups = true;
  };

  // FAILED_PRECONDITION naming what is missing (a binary: install
  // deploy/install-deps.sh's packages) or what did not come up (with the
  // daemon's stderr tail), after stopping what it started.
  static absl::StatusOr<std::unique_ptr<SlurmCluster>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<SlurmCluster>> Start() {
    return Start(Options());
  }
  ~SlurmCluster();
  SlurmCluster(const SlurmCluster&) = delete;
  SlurmCluster& operator=(const SlurmCluster&) = delete;

  // The temp dir, its slurm.conf, the node's name (this machine's short
  // hostname), the munge socket.
  const std::string& dir() const { return dir_.path(); }
  const std::string& conf_path() const { return conf_path_; }
  const std::string& node_name() const { return node_name_; }
  const std::string& munge_socket() const { return munge_socket_; }
  // What a client of this cluster needs in its environment:
  // {"SLURM_CONF=<conf_path()>"}.
  std::vector<std::string> Env() const;
  // The whole environment Run() and Spawn() give: this process's, without
  // its SLURM_*, SBATCH_*, SALLOC_* and SRUN_* variables and those of a
  // service manager, plus Env() and the marker
  // HOSTMESH_SLURM_CLUSTER=<dir()> (jobs inherit it: see above).
  std::vector<std::string> ClientEnvironment() const;
  // Runs `argv` (argv[0] a program name, found by FindProgram, or an
  // absolute path) with ClientEnvironment(), `input` on its stdin, in the
  // temp dir, until it exits (killed after `timeout`).
  absl::StatusOr<RunResult> Run(std::vector<std::string> argv,
                                const std::string& input = "",
                                absl::Duration timeout = absl::Seconds(30));
  // The same, started with pipes for a conversation.
  absl::StatusOr<std::unique_ptr<PipedProcess>> Spawn(
      std::vector<std::string> argv);

  // An allocation of `tasks` tasks on one node without a shell (`salloc
  // --no-shell`, what a mesh asks Slurm for): its job id, or the error
  // with salloc's stderr.
  absl::StatusOr<std::string> Allocate(int tasks,
                                       const std::string& job_name = "mesh");

  // scancel of every job in the queue, then waits until squeue shows none.
  absl::Status CancelAllJobs(absl::Duration timeout = absl::Seconds(20));
  // Live processes of the cluster: the daemons, every slurmstepd and task.
  std::vector<pid_t> LivePids() const;
  // The daemons' pids (0 once stopped).
  pid_t munged_pid() const { return munged_.pid; }
  pid_t slurmctld_pid() const { return slurmctld_.pid; }
  pid_t slurmd_pid() const { return slurmd_.pid; }
  // The stderr tails of the three daemons (for failure messages).
  std::string DaemonLogs() const;

  // Cancels every job, stops slurmd, slurmctld and munged, and checks that
  // nothing of the cluster is left (INTERNAL naming the pids if so).
  // Idempotent; the destructor calls it.
  absl::Status Stop();

 private:
  // How a daemon ended: set on the supervisor thread, then notified.
  struct DaemonExit;
  struct Daemon {
    std::string name;
    pid_t pid = 0;
    std::shared_ptr<DaemonExit> exit;
  };

  explicit SlurmCluster(Options options) : options_(std::move(options)) {}
  absl::Status StartAll();
  absl::Status WriteMungeKey();
  absl::Status WriteConf();
  absl::Status StartDaemon(Daemon& daemon, const std::string& program,
                           std::vector<std::string> args);
  absl::Status WaitNodeIdle();
  // Stops one daemon: SIGTERM to its process group, then SIGKILL after
  // `grace`; returns once it is reaped (and its leaf empty).
  void StopDaemon(Daemon& daemon, absl::Duration grace);
  // Without cgroups: the sessions of the steps' processes, as slurmstepd
  // lists them (scontrol listpids), remembered in step_sessions_; the live
  // processes of those sessions or with the marker; SIGKILL to each of them
  // until none is left.
  void RecordStepSessions();
  std::vector<pid_t> Leftovers() const;
  void KillLeftovers();
  bool DaemonExited(const Daemon& daemon) const;

  const Options options_;
  TempDir dir_;
  std::string conf_path_;
  std::string node_name_;
  std::string munge_socket_;
  std::string key_path_;
  int ctld_port_ = 0;
  int slurmd_port_ = 0;
  // The cgroup subtree the daemons' leaves are in; "" without cgroups.
  std::string cgroup_dir_;
  std::unique_ptr<ProcessSupervisor> supervisor_;
  Daemon munged_{"munged"};
  Daemon slurmctld_{"slurmctld"};
  Daemon slurmd_{"slurmd"};
  std::vector<pid_t> step_sessions_;
  bool stopped_ = false;
  absl::Status stop_status_;
};

}  // namespace mesh::testing

#endif  // HOSTMESH_TESTS_TESTING_SLURM_CLUSTER_H_
