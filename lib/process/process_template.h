// ProcessTemplate: a pre-loaded, single-threaded copy of a program that
// forks new processes of that program on request. A fork skips exec, the
// dynamic loader and every static initializer, so 64 procds come up in a
// fraction of the time 64 exec'd ones take (README "Performance").
//
// Two halves, one per process:
//  - ProcessTemplate (the parent, e.g. hostd): Start() runs the program with
//    a control socket at fd 3 and HOSTMESH_TEMPLATE_FD=3 in its environment;
//    Fork() asks it for a child.
//  - ServeForks (the program): called first thing in main() when that
//    variable is set, before any thread exists. It answers Fork requests
//    until its parent closes the control socket (or dies: PDEATHSIG).
//
// What a forked child is, and promises:
//  - Its parent is the template's parent (clone3 with CLONE_PARENT): the
//    caller of Fork gets its SIGCHLD, waits for it through the pidfd that
//    comes back over SCM_RIGHTS (CLONE_PIDFD), and finds it in its own
//    children, exactly as a child it spawned itself. The template keeps no
//    child and holds no descriptor of one after answering.
//  - With a cgroup directory descriptor it runs inside that cgroup v2 leaf
//    from its first instruction (CLONE_INTO_CGROUP).
//  - Before the program's code runs in it (child_main): it leads a new
//    process group; it holds exactly the descriptors asked for at the
//    destinations asked for (0-2 included) and nothing else, the control
//    socket included; every signal has its default disposition and none is
//    blocked; its environment is exactly the one asked for (`environ`
//    replaced: what a fresh exec would see, except what the program read
//    during its static initialization, e.g. GLOG_* and LD_*: callers that
//    need those take the exec path). Fork returns only after the child
//    has done all this (a setup failure is Fork's error, and the child is
//    reaped by Fork).
//  - The template is not dumpable (a process of the same user cannot
//    ptrace it, and so every child to come); each child is, as after exec.
//  - /proc/<pid>/cmdline and /proc/<pid>/environ still show the template's
//    (they name the memory the kernel set up at exec): the child's comm is
//    set to its argv[0]'s base name.
//
// Threads and owners: a ProcessTemplate is thread-safe; one Fork runs at a
// time (a request and its answer are one exchange on the socket). Its
// destructor closes the socket (the template exits), then waits up to 1 s
// and SIGKILLs it. Children are not affected by the template's end.
#ifndef HOSTMESH_LIB_PROCESS_PROCESS_TEMPLATE_H_
#define HOSTMESH_LIB_PROCESS_PROCESS_TEMPLATE_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mesh {

// Set in the template's environment: the control socket's descriptor.
inline constexpr char kTemplateFdEnv[] = "HOSTMESH_TEMPLATE_FD";

// One child to fork.
struct TemplateFork {
  // argv[0] first; becomes the child's comm (base name).
  std::vector<std::string> argv;
  // The whole environment, KEY=VALUE.
  std::vector<std::string> envp;
  // {descriptor in the caller, destination in the child}; destinations
  // distinct and >= 0, at most 32 of them.
  std::vector<std::pair<int, int>> fds;
  // A cgroup v2 leaf directory's descriptor, or -1: the template's cgroup.
  int cgroup_fd = -1;
};

struct ForkedChild {
  pid_t pid = 0;
  int pidfd = -1;  // The caller's (close-on-exec); it must reap the child.
};

class ProcessTemplate {
 public:
  // Runs `path` (absolute) as a template: argv {path}, this process's
  // environment minus `unset_env`, plus kTemplateFdEnv and LD_BIND_NOW=1
  // (every symbol bound once, before any fork); stdin /dev/null,
  // stdout and stderr this process's. Returns at once (the template loads
  // while the first Fork is on its way).
  static absl::StatusOr<std::unique_ptr<ProcessTemplate>> Start(
      const std::string& path, const std::vector<std::string>& unset_env = {});
  ~ProcessTemplate();
  ProcessTemplate(const ProcessTemplate&) = delete;
  ProcessTemplate& operator=(const ProcessTemplate&) = delete;

  // The program this template forks.
  const std::string& path() const { return path_; }
  // The template's own pid (while it runs).
  pid_t pid() const;

  // A template that ended (killed, crashed) is started again by the next
  // Fork, at most once per this long since its last start; meanwhile Forks
  // are UNAVAILABLE.
  static constexpr absl::Duration kRestartEvery = absl::Seconds(1);

  // Forks a child (see the promises above). UNAVAILABLE if the template is
  // gone and not restarted yet (see kRestartEvery) or did not answer within
  // `timeout` (it is then killed, to be restarted): callers fall back to
  // exec; other errors name what failed (clone3 or a setup step in the
  // child) and leave the template usable.
  absl::StatusOr<ForkedChild> Fork(const TemplateFork& request,
                                   absl::Duration timeout = absl::Seconds(5));
  // How many times it was started again.
  int restarts() const;

 private:
  ProcessTemplate(std::string path, std::vector<std::string> unset_env);
  // Runs the program as the template (see Start).
  absl::Status SpawnLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK if the template runs (started again if it ended; see kRestartEvery).
  absl::Status EnsureRunningLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void KillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const std::vector<std::string> unset_env_;
  mutable absl::Mutex mu_;
  pid_t pid_ ABSL_GUARDED_BY(mu_) = 0;
  int pidfd_ ABSL_GUARDED_BY(mu_) = -1;
  int control_fd_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Time started_at_ ABSL_GUARDED_BY(mu_);
  int restarts_ ABSL_GUARDED_BY(mu_) = 0;
};

// The template's side: serves Fork requests on `control_fd` until EOF.
// In each child, after the setup above, calls child_main(argc, argv) and
// exit()s with what it returns. Returns 0 when the parent closed the
// socket, 1 on a broken request stream (after saying why on stderr). Call
// it before any thread starts.
int ServeForks(int control_fd,
               const std::function<int(int argc, char** argv)>& child_main);

// True if `env` sets a variable read before main() — by the dynamic loader,
// libc or a library's static initialization (LD_*, GLIBC_TUNABLES,
// MALLOC_*, *SAN_OPTIONS, glog's GLOG_*) — which a fork of a pre-loaded
// template would not honour: such a child must be exec'd.
bool NeedsFreshExec(const std::map<std::string, std::string>& env);

// The descriptor from kTemplateFdEnv (the variable is then unset), or -1
// when this process is not a template; -2 if the variable is malformed.
int TemplateFdFromEnv();

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_PROCESS_TEMPLATE_H_
