// A program for process_template_test: as a template (HOSTMESH_TEMPLATE_FD
// set) it serves forks; each child (or the program run plainly) writes one
// line on stdout describing itself, then exits with argv[1] as its code, or
// with argv[1] == "sleep" waits to be killed.
//   ppid=<ppid> pgid=<pgid> pid=<pid> var=<$TEMPLATE_TEST_VAR or -> fds=<open
//   descriptors, ascending> blocked=<1 if any signal is blocked> sigterm=<1
//   if SIGTERM is ignored> comm=<comm> cmdline=<how many arguments
//   /proc/self/cmdline holds: a fork shows the template's one>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "lib/process/process_template.h"

namespace {

int ChildMain(int argc, char** argv) {
  std::string fds;
  if (DIR* dir = opendir("/proc/self/fd")) {
    const int own = dirfd(dir);
    std::vector<int> open;
    while (struct dirent* e = readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      const int fd = atoi(e->d_name);
      if (fd != own) open.push_back(fd);
    }
    closedir(dir);
    std::sort(open.begin(), open.end());
    for (int fd : open) fds += (fds.empty() ? "" : ",") + std::to_string(fd);
  }
  sigset_t mask;
  sigprocmask(SIG_SETMASK, nullptr, &mask);
  bool blocked = false;
  for (int sig = 1; sig < NSIG; ++sig) blocked |= sigismember(&mask, sig) == 1;
  struct sigaction term;
  sigaction(SIGTERM, nullptr, &term);
  char comm[17] = {};
  prctl(PR_GET_NAME, comm, 0, 0, 0);
  int cmdline_args = 0;
  if (FILE* cmdline = fopen("/proc/self/cmdline", "r")) {
    int c;
    while ((c = fgetc(cmdline)) != EOF) cmdline_args += c == '\0' ? 1 : 0;
    fclose(cmdline);
  }
  const char* var = getenv("TEMPLATE_TEST_VAR");
  printf(
      "ppid=%d pgid=%d pid=%d var=%s fds=%s blocked=%d sigterm=%d comm=%s "
      "cmdline=%d\n",
      getppid(), getpgid(0), getpid(), var != nullptr ? var : "-", fds.c_str(),
      blocked ? 1 : 0, term.sa_handler == SIG_IGN ? 1 : 0, comm, cmdline_args);
  fflush(stdout);
  if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
    for (;;) pause();
  }
  return argc > 1 ? atoi(argv[1]) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // As a template, ignore SIGTERM: a child must not inherit that.
  const int control = mesh::TemplateFdFromEnv();
  if (control == -2) return 2;
  if (control >= 0) {
    signal(SIGTERM, SIG_IGN);
    return mesh::ServeForks(control, ChildMain);
  }
  return ChildMain(argc, argv);
}
