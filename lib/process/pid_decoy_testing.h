// For tests: a decoy process given a chosen (dead) process's pid, the way a
// recycled pid would look to a daemon re-adopting by pid.
#ifndef HOSTMESH_LIB_PROCESS_PID_DECOY_TESTING_H_
#define HOSTMESH_LIB_PROCESS_PID_DECOY_TESTING_H_

#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

namespace mesh::testing {

// Starts `sleep 1000` as pid `pid`, leading its own process group, with
// clone3's set_tid (needs CAP_SYS_ADMIN over this pid namespace: root here).
// Returns its pidfd (the caller kills and reaps it) or -errno (EEXIST: the
// pid is taken; EPERM: not allowed).
inline int SpawnDecoyWithPid(pid_t pid) {
  static char sleep_path[] = "/bin/sleep";
  static char arg0[] = "sleep";
  static char arg1[] = "1000";
  static char* const argv[] = {arg0, arg1, nullptr};
  static char* const envp[] = {nullptr};
  pid_t tids[1] = {pid};
  int pidfd = -1;
  struct clone_args args;
  std::memset(&args, 0, sizeof(args));
  args.flags = CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.set_tid = reinterpret_cast<uint64_t>(tids);
  args.set_tid_size = 1;
  long rc = syscall(SYS_clone3, &args, sizeof(args));
  if (rc == 0) {
    setpgid(0, 0);
    execve(sleep_path, argv, envp);
    _exit(127);
  }
  if (rc < 0) return -errno;
  return pidfd;
}

}  // namespace mesh::testing

#endif  // HOSTMESH_LIB_PROCESS_PID_DECOY_TESTING_H_
