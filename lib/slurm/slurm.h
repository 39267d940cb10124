// Slurm's commands as hostmesh uses them (HostMesh::Slurm, the test
// cluster): an allocation made with `salloc --no-shell` and released with
// `scancel`, its nodes (squeue's node list expanded by `scontrol show
// hostnames`), and the srun command line that runs one task of a program on
// one node of it. Each command runs to its end with the environment given
// (e.g. SLURM_CONF) and a timeout; an error names the command and carries
// its stderr. Holds no state of its own; thread-compatible.
#ifndef HOSTMESH_LIB_SLURM_SLURM_H_
#define HOSTMESH_LIB_SLURM_SLURM_H_

#include <memory>
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

class SlurmAllocation;

class SlurmCommands {
 public:
  // `env`: the whole environment of every command ("K=V"); `timeout`: how
  // long one command may take (salloc waits this long for its nodes).
  SlurmCommands(std::vector<std::string> env, absl::Duration timeout);

  // A new allocation for `request`, held by a salloc child of this process
  // (see SlurmAllocation), once Slurm granted it: salloc may wait `timeout`
  // for it, then gives up (its pending job goes too). INVALID_ARGUMENT for
  // a request that cannot be asked (no node, no task); otherwise salloc's
  // error (UNAVAILABLE with its stderr, FAILED_PRECONDITION if it is not
  // installed).
  absl::StatusOr<std::unique_ptr<SlurmAllocation>> Allocate(
      const SlurmJobRequest& request) const;
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

// An allocation held by `salloc <flags> /bin/sh -c '... exec cat'`, a
// child of this process whose stdin is a pipe only this process holds: the
// allocation lasts while that pipe is open. Release() closes it (salloc
// relinquishes the job, Slurm ends its steps); so does this process's end,
// however it ends (a crash or SIGKILL included), so an allocation never
// outlives the process that asked for it. The destructor releases.
class SlurmAllocation {
 public:
  SlurmAllocation(std::string job, std::unique_ptr<PipedProcess> salloc,
                  SlurmCommands commands);
  ~SlurmAllocation();
  SlurmAllocation(const SlurmAllocation&) = delete;
  SlurmAllocation& operator=(const SlurmAllocation&) = delete;

  const std::string& job() const { return job_; }
  // Closes salloc's stdin and waits up to `timeout` for it to relinquish
  // the job and exit; past that it is killed and the job scancel'd (that
  // error, naming the job, if scancel fails). Idempotent.
  absl::Status Release(absl::Duration timeout = absl::Seconds(30));

 private:
  const std::string job_;
  std::unique_ptr<PipedProcess> salloc_;
  const SlurmCommands commands_;
  bool released_ = false;
};

// The job id in salloc's "Granted job allocation <id>" line of `salloc_err`;
// NOT_FOUND if there is none.
absl::StatusOr<std::string> GrantedJobId(absl::string_view salloc_err);

}  // namespace mesh

#endif  // HOSTMESH_LIB_SLURM_SLURM_H_
