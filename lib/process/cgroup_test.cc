#include "lib/process/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/process_identity.h"
#include "lib/process/testing.h"
#include "lib/testing/skip.h"

namespace mesh {
namespace {

using testing::Eventually;
using testing::IgnoresSigterm;
using testing::PathExists;
using testing::PidfdExited;
using testing::PidfdOpen;
using testing::ReadFile;
using testing::SessionOf;
using testing::SubtreeGuard;
using testing::UniqueName;

// The process group of a live pid, or -1.
pid_t PgrpOf(pid_t pid) {
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  return stat.ok() ? stat->pgrp : -1;
}

const std::vector<std::string> kEnv = {"PATH=/usr/local/bin:/usr/bin:/bin"};

// ---------------------------------------------------------------------------

TEST_CASE("CgroupRoot finds the cgroup2 mount and this process's cgroup") {
  const std::string hybrid =
      "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
      "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup "
      "rw,memory\n"
      "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
  const std::string v1_and_v2 = "4:memory:/x\n0::/hostmesh-ci-7\n";

  SECTION("hybrid machine, own cgroup below the root") {
    auto root = CgroupRoot::FromProcFiles(hybrid, v1_and_v2);
    REQUIRE(root.ok());
    CHECK(root->mount_point() == "/sys/fs/cgroup/unified");
    CHECK(root->own_path() == "/hostmesh-ci-7");
    CHECK(root->own_dir() == "/sys/fs/cgroup/unified/hostmesh-ci-7");
    CHECK(root->PathOf("/sys/fs/cgroup/unified/hostmesh-ci-7/a/b") ==
          "/hostmesh-ci-7/a/b");
    CHECK(root->PathOf("/sys/fs/cgroup/unified") == "/");
    CHECK(root->PathOf("/sys/fs/cgroup/unifiedx") == "");
    CHECK(root->PathOf("/tmp") == "");
  }
  SECTION("own cgroup is the root") {
    auto root = CgroupRoot::FromProcFiles(hybrid, "0::/\n");
    REQUIRE(root.ok());
    CHECK(root->own_dir() == "/sys/fs/cgroup/unified");
    CHECK(root->DirOf("/a") == "/sys/fs/cgroup/unified/a");
  }
  SECTION("a container: the mount shows part of the hierarchy") {
    auto root = CgroupRoot::FromProcFiles(
        "1 0 0:1 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "0::/kubepods/pod1/c1\n");
    REQUIRE(root.ok());
    CHECK(root->own_dir() == "/sys/fs/cgroup/c1");
    CHECK(root->PathOf("/sys/fs/cgroup/c1/leaf") == "/kubepods/pod1/c1/leaf");
  }
  SECTION("escaped mount point, optional fields") {
    auto root = CgroupRoot::FromProcFiles(
        "1 0 0:1 / /mnt/c\\040g rw shared:5 master:1 - cgroup2 none rw\n",
        "0::/s\n");
    REQUIRE(root.ok());
    CHECK(root->own_dir() == "/mnt/c g/s");
  }
  SECTION("no cgroup2 mount") {
    auto root = CgroupRoot::FromProcFiles(
        "34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        v1_and_v2);
    REQUIRE(absl::IsNotFound(root.status()));
    CHECK_THAT(std::string(root.status().message()),
               Catch::Contains("no fstype cgroup2"));
  }
  SECTION("no cgroup v2 path") {
    auto root = CgroupRoot::FromProcFiles(hybrid, "4:memory:/x\n");
    REQUIRE(absl::IsNotFound(root.status()));
    CHECK_THAT(std::string(root.status().message()), Catch::Contains("0::"));
  }
  SECTION("own cgroup outside the mount") {
    auto root = CgroupRoot::FromProcFiles(
        "1 0 0:1 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "0::/system.slice\n");
    REQUIRE(absl::IsFailedPrecondition(root.status()));
    CHECK_THAT(std::string(root.status().message()),
               Catch::Contains("/system.slice"));
  }
}

TEST_CASE("CgroupRoot::Create makes the daemon's subtree, clear refusals") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  const std::string name = UniqueName("root");
  SubtreeGuard guard(root->own_dir() + "/" + name);

  auto dir = root->Create(name);
  REQUIRE(dir.ok());
  CHECK(*dir == guard.dir());
  CHECK(PathExists(*dir + "/cgroup.procs"));
  auto again = root->Create(*dir);  // Reused after a restart.
  REQUIRE(again.ok());
  CHECK(*again == *dir);

  CHECK(absl::IsInvalidArgument(root->Create("a/b").status()));
  CHECK(absl::IsInvalidArgument(root->Create("..").status()));
  CHECK(absl::IsInvalidArgument(root->Create("/tmp/x").status()));
  auto not_cgroup = ProcCgroup::Create("/tmp", "x");
  CHECK(absl::IsFailedPrecondition(not_cgroup.status()));
  CHECK_THAT(std::string(not_cgroup.status().message()),
             Catch::Contains("\"/tmp\" is not a cgroup v2 directory"));

  auto leaf = ProcCgroup::Create(*dir, "p");
  REQUIRE(leaf.ok());
  auto twice = ProcCgroup::Create(*dir, "p");
  CHECK(absl::IsAlreadyExists(twice.status()));
  CHECK_THAT(std::string(twice.status().message()), Catch::Contains(*dir));
  auto opened = ProcCgroup::Open(*dir + "/p");
  REQUIRE(opened.ok());
  CHECK(opened->Empty().value_or(false));
  CHECK(absl::IsNotFound(ProcCgroup::Open(*dir + "/none").status()));

  // Without permission (another uid): PERMISSION_DENIED naming the path.
  int pipe_fds[2];
  REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
  const std::string denied = UniqueName("denied");
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = -1;
    if (setgid(65534) == 0 && setuid(65534) == 0) {
      code = static_cast<int>(root->Create(denied).status().code());
      auto sub = ProcCgroup::Create(*dir, "q");
      if (!absl::IsPermissionDenied(sub.status())) code = -2;
    }
    (void)!write(pipe_fds[1], &code, sizeof(code));
    _exit(0);
  }
  close(pipe_fds[1]);
  int code = -3;
  CHECK(read(pipe_fds[0], &code, sizeof(code)) == sizeof(code));
  close(pipe_fds[0]);
  int wstatus;
  waitpid(pid, &wstatus, 0);
  CHECK(code == static_cast<int>(absl::StatusCode::kPermissionDenied));
  CHECK_FALSE(PathExists(root->own_dir() + "/" + denied));
  CHECK(leaf->Remove().ok());
}

TEST_CASE("a child spawned into a leaf runs in it from its first instruction") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("spawn"));
  auto dir = root->Create(guard.dir());
  REQUIRE(dir.ok());
  auto leaf = ProcCgroup::Create(*dir, "proc-1");
  REQUIRE(leaf.ok());
  const std::string leaf_path = root->PathOf(leaf->dir());
  REQUIRE(leaf_path == root->PathOf(guard.dir()) + "/proc-1");
  REQUIRE(leaf_path.rfind(root->own_path(), 0) == 0);

  SECTION("what the exec'd program sees first is the leaf") {
    int out[2];
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    CgroupSpawnOptions options;
    options.path = "/bin/cat";
    options.argv = {"cat", "/proc/self/cgroup"};
    options.envp = kEnv;
    options.fds = {{out[1], 1}};
    auto child = SpawnIntoCgroup(*leaf, options);
    REQUIRE(child.ok());
    guard.Adopt(child->pidfd);
    close(out[1]);
    std::string text;
    char buf[512];
    for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;)
      text.append(buf, n);
    close(out[0]);
    CHECK_THAT(text, Catch::Contains("0::" + leaf_path + "\n"));
    siginfo_t info = {};
    REQUIRE(waitid(P_PIDFD, child->pidfd, &info, WEXITED) == 0);
    CHECK(info.si_code == CLD_EXITED);
    CHECK(info.si_status == 0);
  }
  SECTION("a live child is listed, in its own group, and /proc says so") {
    CgroupSpawnOptions options;
    options.path = "/bin/sleep";
    options.argv = {"sleep", "1000"};
    options.envp = kEnv;
    auto child = SpawnIntoCgroup(*leaf, options);
    REQUIRE(child.ok());
    guard.Adopt(child->pidfd);
    CHECK(CgroupOfPid(child->pid).value_or("") == leaf_path);
    CHECK(PgrpOf(child->pid) == child->pid);
    CHECK(leaf->Procs().value_or(std::vector<pid_t>{}) ==
          std::vector<pid_t>{child->pid});
    CHECK_FALSE(leaf->Empty().value_or(true));

    REQUIRE(leaf->Kill().ok());
    CHECK(leaf->Empty().value_or(false));
    siginfo_t info = {};
    REQUIRE(waitid(P_PIDFD, child->pidfd, &info, WEXITED) == 0);
    CHECK(info.si_code == CLD_KILLED);
    CHECK(info.si_status == SIGKILL);
    REQUIRE(leaf->Remove().ok());
    CHECK_FALSE(PathExists(leaf->dir()));
    CHECK(leaf->Remove().ok());  // Already gone.
    CHECK(absl::IsNotFound(leaf->Kill()));
  }
}

TEST_CASE("SpawnIntoCgroup passes fds and environment, nothing else") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("fds"));
  auto dir = root->Create(guard.dir());
  REQUIRE(dir.ok());
  auto leaf = ProcCgroup::Create(*dir, "p");
  REQUIRE(leaf.ok());

  int out[2];
  REQUIRE(pipe2(out, O_CLOEXEC) == 0);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(devnull >= 0);
  // Opened without close-on-exec, as careless code elsewhere might.
  int leaky = fcntl(devnull, F_DUPFD, 200);
  REQUIRE(leaky >= 200);

  CgroupSpawnOptions options;
  options.path = "/bin/sh";
  options.argv = {"sh", "-c",
                  absl::StrCat("echo \"$HM_VALUE\"; "
                               "[ -e /proc/$$/fd/",
                               leaky,
                               " ] && echo leaked || echo clean; "
                               "[ -e /proc/$$/fd/9 ] && echo has9; "
                               "[ -e /proc/$$/fd/",
                               out[0], " ] && echo read-end; exit 3")};
  options.envp = std::vector<std::string>{"HM_VALUE=hello world", kEnv[0]};
  options.fds = {{out[1], 1}, {devnull, 9}};
  auto child = SpawnIntoCgroup(*leaf, options);
  REQUIRE(child.ok());
  guard.Adopt(child->pidfd);
  close(out[1]);
  close(leaky);
  close(devnull);
  std::string text;
  char buf[512];
  for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;)
    text.append(buf, n);
  close(out[0]);
  CHECK(text == "hello world\nclean\nhas9\n");
  siginfo_t info = {};
  REQUIRE(waitid(P_PIDFD, child->pidfd, &info, WEXITED) == 0);
  CHECK(info.si_code == CLD_EXITED);
  CHECK(info.si_status == 3);

  SECTION("a failed exec is an error naming the path; the child is reaped") {
    CgroupSpawnOptions missing;
    missing.path = "/nonexistent/hostmesh-no-such-binary";
    auto failed = SpawnIntoCgroup(*leaf, missing);
    REQUIRE(absl::IsNotFound(failed.status()));
    CHECK_THAT(std::string(failed.status().message()),
               Catch::Contains("/nonexistent/hostmesh-no-such-binary"));
    CHECK(leaf->Empty().value_or(false));
    siginfo_t none = {};
    CHECK(waitid(P_ALL, 0, &none, WEXITED | WNOHANG) != 0);  // ECHILD
  }
  SECTION("bad options") {
    CgroupSpawnOptions relative;
    relative.path = "sh";
    CHECK(absl::IsInvalidArgument(SpawnIntoCgroup(*leaf, relative).status()));
    CgroupSpawnOptions repeated;
    repeated.path = "/bin/true";
    repeated.fds = {{0, 5}, {1, 5}};
    CHECK(absl::IsInvalidArgument(SpawnIntoCgroup(*leaf, repeated).status()));
  }
}

// The escapee: a proc whose grandchild calls setsid and ignores
// SIGTERM. A process-group SIGKILL leaves it; the cgroup kill does not.
void KillsTheEscapee(bool by_signals) {
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("escapee"));
  auto dir = root->Create(guard.dir());
  REQUIRE(dir.ok());
  auto leaf = ProcCgroup::Create(*dir, "proc");
  REQUIRE(leaf.ok());

  CgroupSpawnOptions options;
  options.path = "/bin/sh";
  // 4 processes: sh, its sleep, and in a new session: sh ignoring SIGTERM
  // and its sleep (inheriting the ignored SIGTERM). The trailing ":" keeps
  // each shell from exec'ing its last command.
  options.argv = {
      "sh", "-c",
      "setsid sh -c 'trap \"\" TERM; sleep 1000; :' & sleep 1000; :"};
  options.envp = kEnv;
  auto child = SpawnIntoCgroup(*leaf, options);
  REQUIRE(child.ok());
  guard.Adopt(child->pidfd);

  std::vector<pid_t> before;
  REQUIRE(Eventually(
      [&] {
        before = leaf->Procs().value_or(std::vector<pid_t>{});
        if (before.size() != 4) return false;
        int escaped = 0;
        for (pid_t pid : before) {
          if (SessionOf(pid) != child->pid && IgnoresSigterm(pid)) ++escaped;
        }
        return escaped == 2;
      },
      absl::Seconds(10)));
  INFO("pids in the leaf before the kill: " << absl::StrJoin(before, " "));
  std::vector<int> pidfds;
  for (pid_t pid : before) {
    int pidfd = PidfdOpen(pid);
    REQUIRE(pidfd >= 0);
    pidfds.push_back(pidfd);
  }

  // What a process-group kill (and SIGTERM) leaves behind.
  REQUIRE(kill(-child->pid, SIGKILL) == 0);
  siginfo_t info = {};
  REQUIRE(waitid(P_PIDFD, child->pidfd, &info, WEXITED) == 0);
  for (size_t i = 0; i < before.size(); ++i) {
    if (SessionOf(before[i]) != child->pid) {
      syscall(SYS_pidfd_send_signal, pidfds[i], SIGTERM, nullptr, 0);
    }
  }
  absl::SleepFor(absl::Milliseconds(200));
  int survivors = 0;
  for (int pidfd : pidfds) survivors += PidfdExited(pidfd) ? 0 : 1;
  CHECK(survivors == 2);
  CHECK(leaf->Procs().value_or(std::vector<pid_t>{}).size() == 2);
  CHECK_FALSE(leaf->Empty().value_or(true));

  absl::Status killed = by_signals ? leaf->KillBySignals() : leaf->Kill();
  REQUIRE(killed.ok());
  CHECK(leaf->Empty().value_or(false));
  CHECK(leaf->Procs().value_or(std::vector<pid_t>{1}).empty());
  for (size_t i = 0; i < pidfds.size(); ++i) {
    INFO("pid " << before[i]);
    CHECK(PidfdExited(pidfds[i], absl::Seconds(5)));
    close(pidfds[i]);
  }
  REQUIRE(leaf->Remove().ok());
  CHECK_FALSE(PathExists(leaf->dir()));
}

TEST_CASE("Kill takes a setsid escapee that ignores SIGTERM (cgroup.kill)") {
  HOSTMESH_REQUIRE_CGROUPS();
  KillsTheEscapee(/*by_signals=*/false);
}

TEST_CASE("the fallback kill (freeze, pidfd SIGKILLs) takes it too") {
  HOSTMESH_REQUIRE_CGROUPS();
  KillsTheEscapee(/*by_signals=*/true);
}

TEST_CASE("Remove waits for a leaf to empty and refuses a busy one") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("remove"));
  auto dir = root->Create(guard.dir());
  REQUIRE(dir.ok());
  auto leaf = ProcCgroup::Create(*dir, "p");
  REQUIRE(leaf.ok());
  CgroupSpawnOptions options;
  options.path = "/bin/sleep";
  options.argv = {"sleep", "1000"};
  options.envp = kEnv;
  auto child = SpawnIntoCgroup(*leaf, options);
  REQUIRE(child.ok());
  guard.Adopt(child->pidfd);

  absl::Status busy = leaf->Remove(absl::Milliseconds(100));
  REQUIRE(absl::IsFailedPrecondition(busy));
  CHECK_THAT(std::string(busy.message()),
             Catch::Contains(absl::StrCat(child->pid)));
  CHECK(PathExists(leaf->dir()));
  absl::Status not_yet = leaf->WaitEmpty(absl::Milliseconds(50));
  CHECK(absl::IsDeadlineExceeded(not_yet));

  // A proc (as root) may make cgroups below its leaf; Remove takes them.
  REQUIRE(mkdir((leaf->dir() + "/sub").c_str(), 0755) == 0);
  REQUIRE(kill(child->pid, SIGKILL) == 0);
  REQUIRE(leaf->Remove().ok());  // Waits for the exit.
  CHECK_FALSE(PathExists(leaf->dir()));
}

TEST_CASE("limits and OOM counts need their controllers, or say which") {
  HOSTMESH_REQUIRE_CGROUPS();
  auto root = CgroupRoot::Find();
  REQUIRE(root.ok());
  SubtreeGuard guard(root->own_dir() + "/" + UniqueName("limits"));
  auto dir = root->Create(guard.dir());
  REQUIRE(dir.ok());
  auto leaf = ProcCgroup::Create(*dir, "p");
  REQUIRE(leaf.ok());
  auto controllers = leaf->Controllers();
  REQUIRE(controllers.ok());
  std::set<std::string> have(controllers->begin(), controllers->end());
  const std::string listed = ReadFile(leaf->dir() + "/cgroup.controllers");
  INFO("the leaf's cgroup.controllers: \"" << listed << "\"");

  CHECK(leaf->SetLimits({}).ok());
  CHECK(absl::IsInvalidArgument(leaf->SetLimits({.memory_max = -1})));

  absl::Status memory = leaf->SetLimits({.memory_max = 64 << 20});
  auto events = leaf->MemoryEvents();
  if (!have.contains("memory")) {
    REQUIRE(absl::IsFailedPrecondition(memory));
    CHECK_THAT(std::string(memory.message()),
               Catch::Contains("memory controller is not enabled") &&
                   Catch::Contains("cgroup.controllers is \"") &&
                   Catch::Contains(leaf->dir()));
    REQUIRE(absl::IsFailedPrecondition(events.status()));
    CHECK_THAT(std::string(events.status().message()),
               Catch::Contains("memory controller"));
  } else {
    REQUIRE(memory.ok());
    CHECK(ReadFile(leaf->dir() + "/memory.max") == "67108864\n");
    REQUIRE(events.ok());
    CHECK(events->oom_kill == 0);
  }
  absl::Status both = leaf->SetLimits({.memory_max = 64 << 20, .pids_max = 8});
  if (!have.contains("memory") && !have.contains("pids")) {
    REQUIRE(absl::IsFailedPrecondition(both));
    CHECK_THAT(std::string(both.message()),
               Catch::Contains("memory and pids controllers are not enabled"));
  } else if (have.contains("memory") && have.contains("pids")) {
    CHECK(both.ok());
  } else {
    CHECK(absl::IsFailedPrecondition(both));
  }
  CHECK(leaf->Remove().ok());
}

}  // namespace
}  // namespace mesh
