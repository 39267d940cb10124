// What the bench binaries share besides the report: finding their helper
// binaries, starting children and ending them by the pid (pidfd) they
// started, a process's memory footprint, and quiet logging.
#ifndef HOSTMESH_BENCH_UTIL_H_
#define HOSTMESH_BENCH_UTIL_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mesh::bench {

// glog: errors only, to stderr (which run.sh keeps out of the table).
void QuietLogging(const char* argv0);

// A bench binary by name: $HOSTMESH_<NAME> (upper case), beside this
// binary, in floors/ beside it, or in its runfiles (bench/<name>,
// bench/floors/<name>); hostd and procd as the client library finds them.
absl::StatusOr<std::string> FindBenchBinary(const std::string& name);

// A child started by Spawn. Move-only; the destructor ends it (End).
class Child {
 public:
  struct Options {
    std::string path;
    std::vector<std::string> args;  // after argv[0]
    // Inherited as fd 3 if >= 0 (e.g. the write end of a report pipe).
    int fd3 = -1;
    // stdout/stderr of the child: these fds if >= 0, else /dev/null.
    int stdout_fd = -1;
    int stderr_fd = -1;
    // Whether the child's stdin is a pipe that this Child holds open (the
    // floors live until it closes); else /dev/null.
    bool hold_stdin = true;
  };

  static absl::StatusOr<Child> Spawn(const Options& options);
  Child() = default;
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  ~Child() { End(); }

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_; }
  // Closes the child's stdin (the floors exit on it).
  void CloseStdin();
  // Waits up to `timeout` for the child to exit; true once it has exited
  // (not yet reaped).
  bool WaitExited(absl::Duration timeout) const;
  // Reaps the child if it exited; true once reaped.
  bool TryReap();
  // Closes its stdin, waits up to `grace` for it to exit, else SIGKILLs it
  // through its pidfd; then reaps it. Idempotent.
  void End(absl::Duration grace = absl::Seconds(5));

 private:
  pid_t pid_ = 0;
  int pidfd_ = -1;
  int stdin_ = -1;
  bool reaped_ = true;
};

// Opens a pidfd for `pid` (a process this bench did not start, e.g. a
// proc): -1 if it is gone.
int OpenPidfd(pid_t pid);
// Whether the process behind `pidfd` has exited (waiting up to `timeout`).
bool PidfdExited(int pidfd, absl::Duration timeout = absl::ZeroDuration());

// From /proc/<pid>/smaps_rollup and /proc/<pid>/status.
struct Footprint {
  double pss_kb = 0;
  double rss_kb = 0;
  double threads = 0;
};
absl::StatusOr<Footprint> ReadFootprint(pid_t pid);

// CPU time used so far, in milliseconds: by this process; by process `pid`
// (all its threads, also those that ended; nullopt once it is gone); by
// cgroup v2 dir `dir` and everything under it, including what has ended
// (cpu.stat).
double SelfCpuMs();
std::optional<double> ProcessCpuMs(pid_t pid);
std::optional<double> CgroupCpuMs(const std::string& dir);
// The cgroup v2 dir of process `pid` (under /sys/fs/cgroup/unified where
// the hierarchy is hybrid, else /sys/fs/cgroup); empty if unknown.
std::string CgroupDirOf(pid_t pid);

// Reads from `fd` until a newline (or EOF) or `timeout`; the line without
// its newline.
absl::StatusOr<std::string> ReadLine(int fd, absl::Duration timeout);

}  // namespace mesh::bench

#endif  // HOSTMESH_BENCH_UTIL_H_
