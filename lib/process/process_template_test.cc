#include "lib/process/process_template.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/cgroup.h"
#include "lib/process/testing.h"
#include "lib/testing/skip.h"

namespace mesh {
namespace {

using testing::ChildGuard;
using testing::PidfdExited;
using testing::SubtreeGuard;
using testing::UniqueName;

std::unique_ptr<ProcessTemplate> StartTemplate() {
  auto started = ProcessTemplate::Start(testing::TemplateChildPath());
  REQUIRE(started.ok());
  return std::move(*started);
}

// A pipe whose write end a child gets as stdout; Line() reads its line.
class OutputPipe {
 public:
  OutputPipe() { REQUIRE(pipe2(fds_, O_CLOEXEC) == 0); }
  ~OutputPipe() {
    close(fds_[0]);
    CloseWriteEnd();
  }
  int write_end() const { return fds_[1]; }
  void CloseWriteEnd() {
    if (fds_[1] >= 0) close(fds_[1]);
    fds_[1] = -1;
  }
  std::string Line() {
    std::string line;
    char c;
    while (read(fds_[0], &c, 1) == 1 && c != '\n') line += c;
    return line;
  }

 private:
  int fds_[2];
};

// Waits for the child behind `pidfd` (a child of this process) and returns
// its exit code, or -1.
int ExitCode(int pidfd) {
  siginfo_t info = {};
  if (waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED) != 0) {
    return -1;
  }
  return info.si_code == CLD_EXITED ? info.si_status : -1;
}

TEST_CASE(
    "a forked child is this process's child, leads its own group, and holds "
    "only the descriptors and environment it was given") {
  setenv("TEMPLATE_TEST_VAR", "from-the-parent", 1);
  auto tmpl = StartTemplate();
  unsetenv("TEMPLATE_TEST_VAR");
  OutputPipe out;
  const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  REQUIRE(devnull >= 0);

  TemplateFork request;
  request.argv = {testing::TemplateChildPath(), "7"};
  request.envp = {"TEMPLATE_TEST_VAR=asked-for", "PATH=/usr/bin:/bin"};
  request.fds = {
      {devnull, 0}, {out.write_end(), 1}, {devnull, 2}, {devnull, 5}};
  auto child = tmpl->Fork(request);
  REQUIRE(child.ok());
  ChildGuard guard = ChildGuard::OfPidfd(dup(child->pidfd));
  out.CloseWriteEnd();
  CHECK(out.Line() ==
        absl::StrCat("ppid=", getpid(), " pgid=", child->pid,
                     " pid=", child->pid,
                     " var=asked-for fds=0,1,2,5 blocked=0 sigterm=0 "
                     "comm=template_child cmdline=1"));
  CHECK(ExitCode(child->pidfd) == 7);
  close(child->pidfd);

  // Nothing asked for: not even the template's own environment.
  OutputPipe second_out;
  request.argv = {testing::TemplateChildPath()};
  request.envp = {};
  request.fds = {{devnull, 0}, {second_out.write_end(), 1}, {devnull, 2}};
  auto second = tmpl->Fork(request);
  REQUIRE(second.ok());
  second_out.CloseWriteEnd();
  CHECK_THAT(second_out.Line(), Catch::Contains("var=- fds=0,1,2 blocked=0"));
  CHECK(ExitCode(second->pidfd) == 0);
  close(second->pidfd);
  close(devnull);
}

TEST_CASE("a child forked into a cgroup leaf runs in it from its start") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("template"));
  auto parent = root->Create(guard.dir());
  REQUIRE(parent.ok());
  auto leaf = ProcCgroup::Create(*parent, "proc");
  REQUIRE(leaf.ok());
  auto tmpl = StartTemplate();
  const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  REQUIRE(devnull >= 0);
  TemplateFork request;
  request.argv = {testing::TemplateChildPath(), "sleep"};
  request.fds = {{devnull, 0}, {devnull, 1}, {devnull, 2}};
  request.cgroup_fd = leaf->dir_fd();
  auto child = tmpl->Fork(request);
  REQUIRE(child.ok());
  guard.Adopt(child->pidfd);
  CHECK(testing::PidsIn(leaf->dir()) == std::vector<pid_t>{child->pid});
  CHECK(CgroupOfPid(child->pid).value_or("") == root->PathOf(leaf->dir()));
  close(devnull);
}

TEST_CASE(
    "a request the template refuses is an error and the template stays "
    "usable") {
  auto tmpl = StartTemplate();
  const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  REQUIRE(devnull >= 0);
  TemplateFork repeated;
  repeated.argv = {testing::TemplateChildPath()};
  repeated.fds = {{devnull, 1}, {devnull, 1}};
  auto refused = tmpl->Fork(repeated);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(std::string(refused.status().message()),
             Catch::Contains("refused the request"));

  TemplateFork fine;
  fine.argv = {testing::TemplateChildPath(), "3"};
  fine.fds = {{devnull, 0}, {devnull, 1}, {devnull, 2}};
  auto child = tmpl->Fork(fine);
  REQUIRE(child.ok());
  CHECK(ExitCode(child->pidfd) == 3);
  close(child->pidfd);
  close(devnull);
}

TEST_CASE(
    "a template that was killed is started again by a later fork, and its "
    "children outlive it") {
  auto tmpl = StartTemplate();
  const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  REQUIRE(devnull >= 0);
  TemplateFork request;
  request.argv = {testing::TemplateChildPath(), "sleep"};
  request.fds = {{devnull, 0}, {devnull, 1}, {devnull, 2}};
  auto sleeper = tmpl->Fork(request);
  REQUIRE(sleeper.ok());
  ChildGuard guard = ChildGuard::OfPidfd(sleeper->pidfd);

  const pid_t first = tmpl->pid();
  const int template_pidfd = testing::PidfdOpen(first);
  REQUIRE(template_pidfd >= 0);
  REQUIRE(syscall(SYS_pidfd_send_signal, template_pidfd, SIGKILL, nullptr, 0) ==
          0);
  REQUIRE(PidfdExited(template_pidfd, absl::Seconds(10)));
  close(template_pidfd);
  CHECK_FALSE(PidfdExited(sleeper->pidfd));

  // Past the restart interval, the next fork starts a new template.
  absl::SleepFor(ProcessTemplate::kRestartEvery + absl::Milliseconds(100));
  auto after = tmpl->Fork(request);
  REQUIRE(after.ok());
  ChildGuard after_guard = ChildGuard::OfPidfd(after->pidfd);
  CHECK(tmpl->restarts() == 1);
  CHECK(tmpl->pid() != first);
  CHECK(tmpl->pid() > 0);
  tmpl.reset();
  CHECK_FALSE(PidfdExited(sleeper->pidfd));
  close(devnull);
}

}  // namespace
}  // namespace mesh
