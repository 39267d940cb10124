#include "lib/slurm/slurm.h"

#include <signal.h>

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/process/run_command.h"

namespace mesh {

SlurmCommands::SlurmCommands(std::vector<std::string> env,
                             absl::Duration timeout)
    : env_(std::move(env)), timeout_(timeout) {}

absl::StatusOr<RunResult> SlurmCommands::Run(std::vector<std::string> argv,
                                             bool must_succeed) const {
  const std::string command = absl::StrJoin(argv, " ");
  absl::StatusOr<RunResult> run = RunCommand(std::move(argv), env_, timeout_);
  if (!run.ok()) {
    return absl::Status(run.status().code(),
                        absl::StrCat(command, ": ", run.status().message()));
  }
  if (must_succeed && !run->ok()) return Failed(command, *run);
  return run;
}

absl::Status SlurmCommands::Failed(const std::string& command,
                                   const RunResult& run) {
  return absl::UnavailableError(
      absl::StrCat(command, " failed (", run.Describe(), ")"));
}

namespace {

// The id in the first line of `salloc_err` that holds `what` followed by
// the id.
absl::StatusOr<std::string> IdAfter(absl::string_view salloc_err,
                                    absl::string_view what) {
  for (absl::string_view line : absl::StrSplit(salloc_err, '\n')) {
    const size_t at = line.find(what);
    if (at == absl::string_view::npos) continue;
    line.remove_prefix(at + what.size());
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty() && std::all_of(line.begin(), line.end(), [](char c) {
          return absl::ascii_isdigit(c);
        })) {
      return std::string(line);
    }
  }
  return absl::NotFoundError(absl::StrCat("no \"", what, "<id>\" line"));
}

// The job salloc named, granted or still pending.
absl::StatusOr<std::string> JobIdIn(absl::string_view salloc_err) {
  absl::StatusOr<std::string> job =
      IdAfter(salloc_err, "Granted job allocation ");
  if (job.ok()) return job;
  return IdAfter(salloc_err, "Pending job allocation ");
}

}  // namespace

absl::StatusOr<std::string> GrantedJobId(absl::string_view salloc_err) {
  return IdAfter(salloc_err, "Granted job allocation ");
}

absl::StatusOr<std::unique_ptr<SlurmAllocation>> SlurmCommands::Allocate(
    const SlurmJobRequest& request) const {
  if (request.nodes < 1 || request.tasks_per_node < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a Slurm allocation needs at least one node and one "
        "task per node (asked: ",
        request.nodes, " nodes, ", request.tasks_per_node, " tasks per node)"));
  }
  const std::string salloc = FindProgram("salloc");
  if (salloc.empty()) {
    return absl::FailedPreconditionError(
        "salloc is not installed (not in $PATH or the sbin and bin dirs)");
  }
  std::vector<std::string> argv = {
      salloc, absl::StrCat("--nodes=", request.nodes),
      absl::StrCat("--ntasks-per-node=", request.tasks_per_node),
      absl::StrCat("--job-name=", request.job_name)};
  if (!request.partition.empty()) {
    argv.push_back(absl::StrCat("--partition=", request.partition));
  }
  if (request.time_limit > absl::ZeroDuration()) {
    const int64_t minutes = absl::ToInt64Minutes(
        request.time_limit + absl::Minutes(1) - absl::Nanoseconds(1));
    argv.push_back(absl::StrCat("--time=", minutes));
  }
  argv.insert(argv.end(), request.extra_args.begin(), request.extra_args.end());
  const std::string command = absl::StrJoin(argv, " ");
  // salloc's command says which job it holds, then holds it until its
  // stdin (this process's pipe) ends.
  argv.insert(argv.end(), {"/bin/sh", "-c",
                           "echo \"job $SLURM_JOB_ID\"; exec cat >/dev/null"});
  absl::StatusOr<std::unique_ptr<PipedProcess>> started =
      PipedProcess::Start(argv, env_);
  if (!started.ok()) {
    return absl::Status(
        started.status().code(),
        absl::StrCat(command, ": ", started.status().message()));
  }
  std::unique_ptr<PipedProcess> process = *std::move(started);
  absl::StatusOr<std::string> said = process->ReadUntil("\n", timeout_);
  if (said.ok()) {
    absl::string_view job = absl::StripAsciiWhitespace(*said);
    if (absl::ConsumePrefix(&job, "job ") && !job.empty()) {
      return std::make_unique<SlurmAllocation>(std::string(job),
                                               std::move(process), *this);
    }
  }
  // Not granted: salloc failed, or is still waiting past the timeout. On
  // SIGTERM a waiting salloc withdraws its request; a job it named that is
  // still there goes too.
  process->Signal(SIGTERM);
  RunResult run = process->Wait(absl::Seconds(10));
  absl::StatusOr<std::string> pending = JobIdIn(run.err);
  if (pending.ok()) Cancel(*pending).IgnoreError();
  if (absl::IsDeadlineExceeded(said.status())) {
    return absl::DeadlineExceededError(absl::StrCat(
        command, ": not granted within ", absl::FormatDuration(timeout_),
        "; withdrawn (", run.Describe(), ")"));
  }
  return Failed(command, run);
}

SlurmAllocation::SlurmAllocation(std::string job,
                                 std::unique_ptr<PipedProcess> salloc,
                                 SlurmCommands commands)
    : job_(std::move(job)),
      salloc_(std::move(salloc)),
      commands_(std::move(commands)) {}

SlurmAllocation::~SlurmAllocation() { Release().IgnoreError(); }

absl::Status SlurmAllocation::Release(absl::Duration timeout) {
  if (released_) return absl::OkStatus();
  released_ = true;
  salloc_->CloseStdin();
  RunResult run = salloc_->Wait(timeout);
  if (run.exit_code.has_value() || run.term_signal != SIGKILL) {
    return absl::OkStatus();
  }
  // It did not go in time and was killed: the job may still be there.
  absl::Status cancelled = commands_.Cancel(job_);
  if (!cancelled.ok()) {
    return absl::Status(
        cancelled.code(),
        absl::StrCat("Slurm job ", job_,
                     " may still hold its nodes: ", cancelled.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> SlurmCommands::Nodes(
    const std::string& job) const {
  auto listed = Run(
      {"squeue", "--noheader", absl::StrCat("--jobs=", job), "--format=%N"});
  if (!listed.ok()) return listed.status();
  const std::string list(absl::StripAsciiWhitespace(listed->out));
  if (list.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Slurm job ", job, " has no nodes (it is not running, or is gone)"));
  }
  auto expanded = Run({"scontrol", "show", "hostnames", list});
  if (!expanded.ok()) return expanded.status();
  std::vector<std::string> nodes =
      absl::StrSplit(expanded->out, absl::ByAnyChar(" \n"), absl::SkipEmpty());
  if (nodes.empty()) {
    return absl::UnavailableError(
        absl::StrCat("scontrol show hostnames ", list, " named no node"));
  }
  return nodes;
}

absl::Status SlurmCommands::Cancel(const std::string& job) const {
  absl::StatusOr<RunResult> run = Run({"scancel", job}, /*must_succeed=*/false);
  if (!run.ok()) return run.status();
  // A job that ended already (cancelled, out of time) is released.
  if (run->ok() ||
      absl::StrContains(run->err, "already completing or completed") ||
      absl::StrContains(run->err, "Invalid job id")) {
    return absl::OkStatus();
  }
  return Failed(absl::StrCat("scancel ", job), *run);
}

absl::StatusOr<std::vector<std::string>> SlurmCommands::SrunArgv(
    const std::string& job, const std::string& node,
    const std::vector<std::string>& program_argv) const {
  const std::string srun = FindProgram("srun");
  if (srun.empty()) {
    return absl::FailedPreconditionError(
        "srun is not installed (not in $PATH or the sbin and bin dirs)");
  }
  // One task, on that node alone, with only the CPUs it asks for (so that
  // several steps share the node); stdio carried as it is written.
  std::vector<std::string> argv = {
      srun,          absl::StrCat("--jobid=", job),     "--nodes=1",
      "--ntasks=1",  absl::StrCat("--nodelist=", node), "--exact",
      "--unbuffered"};
  argv.insert(argv.end(), program_argv.begin(), program_argv.end());
  return argv;
}

}  // namespace mesh
