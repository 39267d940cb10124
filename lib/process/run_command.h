// Running a system program (salloc, scancel, scontrol, ...) and reading
// what it wrote: RunCommand for a run to its end, PipedProcess for a
// conversation over its stdin and stdout. The child leads its own process
// group, gets exactly the environment it is given, and is reaped by its own
// pid (waitpid on that pid only, so another reaper of this process's
// children, e.g. a ProcessSupervisor's pidfds, is not disturbed). Not for
// hostmesh's own daemons: those are supervised (lib/process/supervisor.h).
#ifndef HOSTMESH_LIB_PROCESS_RUN_COMMAND_H_
#define HOSTMESH_LIB_PROCESS_RUN_COMMAND_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace mesh {

// How a process run to its end ended, with all it wrote.
struct RunResult {
  std::optional<int> exit_code;
  std::optional<int> term_signal;
  std::string out;
  std::string err;
  bool ok() const { return exit_code == 0; }
  // "exit 1" or "signal 9", then the tails of stdout and stderr (for
  // error messages).
  std::string Describe() const;
};

// A child with pipes on its stdin, stdout and stderr, leading its own
// process group; the destructor SIGKILLs the group and reaps the child.
// For a conversation with a program (e.g. a task through srun).
class PipedProcess {
 public:
  // argv[0] is an absolute path; `env` the whole environment ("K=V"); it
  // runs in `cwd` if not empty.
  static absl::StatusOr<std::unique_ptr<PipedProcess>> Start(
      const std::vector<std::string>& argv, const std::vector<std::string>& env,
      const std::string& cwd = "");
  ~PipedProcess();
  PipedProcess(const PipedProcess&) = delete;
  PipedProcess& operator=(const PipedProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Writes all of `data` to its stdin (keep it small: nothing is read
  // meanwhile).
  absl::Status Write(absl::string_view data);
  void CloseStdin();
  // Sends `sig` to its process group (nothing once it was reaped).
  void Signal(int sig);
  // Reads its stdout until what was read holds `needle`, and returns (and
  // consumes) what was read up to and including it; DEADLINE_EXCEEDED
  // after `timeout`, UNAVAILABLE at end of file, both with what was read.
  absl::StatusOr<std::string> ReadUntil(absl::string_view needle,
                                        absl::Duration timeout);
  // Waits until it exits (it is killed after `timeout`), reading the rest
  // of its stdout and stderr.
  RunResult Wait(absl::Duration timeout);

 private:
  PipedProcess() = default;
  // Reads what is ready on stdout/stderr within `wait`; false if both are
  // closed.
  bool Pump(absl::Duration wait);

  pid_t pid_ = 0;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
  std::string out_;
  std::string err_;
  bool reaped_ = false;
  RunResult result_;
};

// Absolute path of a system program ("srun", "slurmd"): `name` itself if
// it is an absolute path to an executable, else the first executable file
// of that name in $PATH, then /usr/sbin, /usr/bin, /sbin, /bin,
// /usr/local/sbin, /usr/local/bin; "" if there is none.
std::string FindProgram(const std::string& name);

// Runs `argv` (argv[0] a program name found by FindProgram, or an absolute
// path) with the whole environment `env` ("K=V"), `input` on its stdin, in
// `cwd` if not empty, until it exits (its group is SIGKILLed after
// `timeout`). FAILED_PRECONDITION if the program is not installed; an
// error if it cannot be started; otherwise how it ended.
absl::StatusOr<RunResult> RunCommand(std::vector<std::string> argv,
                                     const std::vector<std::string>& env,
                                     absl::Duration timeout,
                                     const std::string& input = "",
                                     const std::string& cwd = "");

// This process's environment as "K=V" entries, without the variables
// `drop` says to (e.g. those naming another job).
std::vector<std::string> CurrentEnvironment(
    bool (*drop)(absl::string_view name) = nullptr);

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_RUN_COMMAND_H_
