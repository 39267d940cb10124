// decoy: a process that records every signal it gets, for tests that a
// restarted hostd never signals a process merely because it has a dead
// proc's pid (issue 9, "tracking that cannot be fooled"). The test starts it
// with that pid (SpawnWithPid, lib/process/testing.h: clone3 with set_tid).
// Usage:
//
//   decoy <dir>
//
// Makes itself a process group leader (pgid = pid, as the proc was, so even
// a signal to the proc's process group would reach it), catches every
// catchable signal but SIGCHLD, appending "<signo>\n" to <dir>/signals for
// each, writes "<pid>\n" to <dir>/ready (temp file + rename) and waits
// until SIGKILLed. Exit 2: usage; 1: cannot write <dir>/ready.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
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
  if (argc != 2) {
    fprintf(stderr, "usage: decoy <dir>\n");
    return 2;
  }
  Decoy(argv[1]);
}
