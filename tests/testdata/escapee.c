// escapee: a proc bootstrap command that leaves a process behind the way a
// careless daemon does, then becomes the proc (issue 9: "Stop leaves no
// descendant"). Usage:
//
//   escapee <pid-file> <command> [args...]
//
// It forks a child that forks a grandchild and exits at once, so the
// grandchild is orphaned (reparented to the nearest subreaper). The
// grandchild calls setsid (a session and process group of its own: a signal
// to the proc's process group misses it), ignores SIGTERM, SIGINT and
// SIGHUP, closes every descriptor but 0-2 (it does not hold the proc's
// channel, so the proc's end is still seen), writes its pid to <pid-file>
// (a temp file renamed over it: a reader sees all of it or nothing) and
// sleeps until SIGKILLed. Once the pid file exists, escapee execs <command>
// (e.g. procd), which inherits the proc's channel and registers: by the
// time the proc is RUNNING, the pid file is there.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void Grandchild(const char* pid_file) {
  setsid();
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  syscall(SYS_close_range, 3U, ~0U, 0U);
  char temp[4096];
  snprintf(temp, sizeof(temp), "%s.tmp", pid_file);
  int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) _exit(1);
  char text[32];
  int len = snprintf(text, sizeof(text), "%d\n", (int)getpid());
  if (write(fd, text, (size_t)len) != len || close(fd) != 0 ||
      rename(temp, pid_file) != 0) {
    _exit(1);
  }
  for (;;) pause();
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: escapee <pid-file> <command> [args...]\n");
    return 2;
  }
  const char* pid_file = argv[1];
  unlink(pid_file);
  pid_t child = fork();
  if (child < 0) {
    perror("escapee: fork");
    return 1;
  }
  if (child == 0) {
    pid_t grandchild = fork();
    if (grandchild == 0) Grandchild(pid_file);
    _exit(grandchild < 0 ? 1 : 0);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "escapee: could not fork the grandchild\n");
    return 1;
  }
  // The grandchild writes its pid file at once; give it 10 s at most.
  for (int i = 0; i < 1000 && access(pid_file, F_OK) != 0; ++i) {
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  if (access(pid_file, F_OK) != 0) {
    fprintf(stderr, "escapee: the grandchild wrote no %s\n", pid_file);
    return 1;
  }
  fprintf(stderr, "escapee: left a grandchild behind (pid file %s)\n",
          pid_file);
  execv(argv[2], argv + 2);
  fprintf(stderr, "escapee: exec %s: %s\n", argv[2], strerror(errno));
  return 127;
}
