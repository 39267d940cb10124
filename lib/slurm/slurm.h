// Slurm's commands as hostmesh uses them (HostMesh::Slurm, the test
// cluster): an allocation made with `salloc --no-shell` and released with
// `scancel`, its nodes (squeue's node list expanded by `scontrol show
// hostnames`), and the srun command line that runs one task of a program on
// one node of it. Each command runs to its end with the environment given
// (e.g. SLURM_CONF) and a timeout; an error names the command and carries
// its stderr. Holds no state of its own; thread-compatible.
#ifndef HOSTMESH_LIB_SLURM_SLURM_H_
#define HOSTMESH_LIB_SLURM_SLURM_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/process/run_command.h"

namespace mesh {

// What to ask Slurm for (salloc's flags).
struct SlurmJobRequest {
  int nodes = 1;
  int tasks_per_node = 1;
  // Empty: the cluster's default partition.
  std::string partition;
  // Zero: the partition's default. Slurm counts whole minutes: rounded up.
  absl::Duration time_limit = absl::ZeroDuration();
  std::string job_name = "hostmesh";
  // Further salloc flags, as given (e.g. "--account=ml", "--exclusive").
  std::vector<std::string> extra_args;
};

class SlurmCommands {
 public:
  // `env`: the whole environment of every command ("K=V"); `timeout`: how
  // long one command may take (salloc waits this long for its nodes).
  SlurmCommands(std::vector<std::string> env, absl::Duration timeout);

  // salloc --no-shell with `request`: the new job's id. INVALID_ARGUMENT for
  // a request that cannot be asked (no node, no task); otherwise salloc's
  // error (UNAVAILABLE with its stderr, FAILED_PRECONDITION if it is not
  // installed).
  absl::StatusOr<std::string> Allocate(const SlurmJobRequest& request) const;
  // The nodes of running job `job`, in Slurm's order.
  absl::StatusOr<std::vector<std::string>> Nodes(const std::string& job) const;
  // scancel `job` (its steps get SIGTERM, then SIGKILL after KillWait); OK
  // too for a job that ended already.
  absl::Status Cancel(const std::string& job) const;

  // srun's path and flags for one task of `program_argv` on `node` of job
  // `job`, with the task's stdin and stdout carried to and from srun's as
  // they are written (--unbuffered). FAILED_PRECONDITION if srun is not
  // installed.
  absl::StatusOr<std::vector<std::string>> SrunArgv(
      const std::string& job, const std::string& node,
      const std::vector<std::string>& program_argv) const;

  const std::vector<std::string>& env() const { return env_; }

 private:
  // Runs a Slurm command: how it ended, or the error naming it (not
  // installed, not started). With `must_succeed`, an exit other than 0 is
  // Failed's error.
  absl::StatusOr<RunResult> Run(std::vector<std::string> argv,
                                bool must_succeed = true) const;
  // UNAVAILABLE naming `command`, with how it ended and its stderr.
  static absl::Status Failed(const std::string& command, const RunResult& run);

  std::vector<std::string> env_;
  absl::Duration timeout_;
};

// The job id in salloc's "Granted job allocation <id>" line of `salloc_err`;
// NOT_FOUND if there is none.
absl::StatusOr<std::string> GrantedJobId(absl::string_view salloc_err);

}  // namespace mesh

#endif  // HOSTMESH_LIB_SLURM_SLURM_H_
