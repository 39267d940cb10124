// decoy: a process that takes a given pid, for tests that a restarted hostd
// never signals a process merely because it has a dead proc's pid (issue 9,
// "tracking that cannot be fooled"). Usage:
//
//   decoy <pid> <dir>
//
// Forks a child with exactly pid <pid> (clone3 with set_tid: needs
// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, i.e. root, and the pid free: a
// dead process's pid must have been reaped). The child makes itself a
// process group leader (pgid = pid, as the proc was, so even a signal to the
// proc's process group would reach it), catches every catchable signal but
// SIGCHLD, appending "<signo>\n" to <dir>/signals for each, writes
// "<pid>\n" to <dir>/ready (temp file + rename) and waits until SIGKILLed.
// The parent waits for the child and then exits 0.
//
// Exit codes: 0 the decoy ran (and was killed); 3 not permitted (EPERM: not
// root); 4 the pid is taken (EEXIST); 5 another clone3 error (named on
// stderr); 2 usage.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static char signals_path[4096];

static void Record(int signo) {
  int saved = errno;
  int fd = open(signals_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    char text[16];
    int len = 0;
    char digits[12];
    int n = 0;
    unsigned value = (unsigned)signo;
    do {
      digits[n++] = (char)('0' + value % 10);
      value /= 10;
    } while (value > 0);
    while (n > 0) text[len++] = digits[--n];
    text[len++] = '\n';
    if (write(fd, text, (size_t)len) < 0) {
      // Nothing more a signal handler can do.
    }
    close(fd);
  }
  errno = saved;
}

static void Decoy(const char* dir) {
  setpgid(0, 0);
  snprintf(signals_path, sizeof(signals_path), "%s/signals", dir);
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = Record;
  sigemptyset(&action.sa_mask);
  for (int signo = 1; signo < NSIG; ++signo) {
    if (signo == SIGKILL || signo == SIGSTOP || signo == SIGCHLD) continue;
    sigaction(signo, &action, NULL);  // Fails harmlessly for 32/33.
  }
  char temp[4096], ready[4096];
  snprintf(temp, sizeof(temp), "%s/ready.tmp", dir);
  snprintf(ready, sizeof(ready), "%s/ready", dir);
  int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) _exit(1);
  char text[32];
  int len = snprintf(text, sizeof(text), "%d\n", (int)getpid());
  if (write(fd, text, (size_t)len) != len || close(fd) != 0 ||
      rename(temp, ready) != 0) {
    _exit(1);
  }
  for (;;) pause();
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: decoy <pid> <dir>\n");
    return 2;
  }
  pid_t wanted = (pid_t)atoi(argv[1]);
  if (wanted <= 1) {
    fprintf(stderr, "decoy: bad pid %s\n", argv[1]);
    return 2;
  }
  struct clone_args args;
  memset(&args, 0, sizeof(args));
  args.exit_signal = SIGCHLD;
  args.set_tid = (uint64_t)(uintptr_t)&wanted;
  args.set_tid_size = 1;
  long child = syscall(SYS_clone3, &args, sizeof(args));
  if (child < 0) {
    int error = errno;
    fprintf(stderr, "decoy: clone3 with set_tid=%d: %s\n", (int)wanted,
            strerror(error));
    return error == EPERM ? 3 : error == EEXIST ? 4 : 5;
  }
  if (child == 0) Decoy(argv[2]);
  int status = 0;
  while (waitpid((pid_t)child, &status, 0) < 0 && errno == EINTR) {
  }
  return 0;
}
