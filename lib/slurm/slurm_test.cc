#include "lib/slurm/slurm.h"

#include "absl/strings/match.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("salloc's granted job id is read from its stderr and nothing else") {
  CHECK(*GrantedJobId("salloc: Granted job allocation 42\n") == "42");
  CHECK(*GrantedJobId("salloc: Pending job allocation 7\n"
                      "salloc: job 7 queued and waiting for resources\n"
                      "salloc: Granted job allocation 7\n") == "7");
  CHECK(GrantedJobId("salloc: error: Job submit/allocate failed\n")
            .status()
            .code() == absl::StatusCode::kNotFound);
  CHECK(GrantedJobId("salloc: Granted job allocation 4x2\n").status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("an allocation of no node or no task is refused before salloc runs") {
  SlurmCommands commands({}, absl::Seconds(1));
  SlurmJobRequest request;
  request.nodes = 0;
  absl::StatusOr<std::unique_ptr<SlurmAllocation>> job =
      commands.Allocate(request);
  CHECK(job.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(job.status().message(), "at least one node"));
}

TEST_CASE("srun runs one task on the named node of the job, unbuffered") {
  SlurmCommands commands({}, absl::Seconds(1));
  absl::StatusOr<std::vector<std::string>> argv =
      commands.SrunArgv("12", "n3", {"/bin/hostd", "--parent=stdio"});
  if (!argv.ok()) {
    // Slurm is not installed here: the error says so.
    CHECK(absl::StrContains(argv.status().message(), "srun is not installed"));
    return;
  }
  CHECK(absl::EndsWith((*argv)[0], "/srun"));
  const std::vector<std::string> flags(argv->begin() + 1, argv->end());
  CHECK(flags == std::vector<std::string>{"--jobid=12", "--nodes=1",
                                          "--ntasks=1", "--nodelist=n3",
                                          "--exact", "--unbuffered",
                                          "/bin/hostd", "--parent=stdio"});
}

}  // namespace
}  // namespace mesh
