#include "lib/process/process_identity.h"

#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/testing.h"
#include "lib/testing/skip.h"

namespace mesh {
namespace {

using testing::ChildGuard;
using testing::KillAndReap;
using testing::PidfdExited;
using testing::ReadFile;
using testing::StartSleeper;

TEST_CASE(
    "/proc/<pid>/stat is read after the last parenthesis: state, parent, "
    "group, session, threads (field 20), the start time (field 22) and "
    "memory (fields 23 and 24)") {
  // A command name may hold spaces and ")".
  std::string stat = "4242 (a) b (c)) S 17 4243 4244 0 -1 4194560";
  for (int field = 10; field <= 21; ++field) {
    absl::StrAppend(&stat, field == 20 ? " 3" : " 0");
  }
  absl::StrAppend(&stat, " 987654321 1000 200\n");
  absl::StatusOr<ProcStat> parsed = ParseProcStat(stat);
  REQUIRE(parsed.ok());
  CHECK(parsed->state == 'S');
  CHECK(parsed->ppid == 17);
  CHECK(parsed->pgrp == 4243);
  CHECK(parsed->session == 4244);
  CHECK(parsed->num_threads == 3);
  CHECK(parsed->start_time == 987654321);
  CHECK(parsed->virtual_bytes == 1000);
  CHECK(parsed->resident_pages == 200);
  CHECK(absl::IsInternal(ParseProcStat("4242 (short) S 1 2").status()));
  CHECK(absl::IsInternal(ParseProcStat("no parenthesis").status()));
}

TEST_CASE("ProcessStartTime reads /proc and says NOT_FOUND for no process") {
  auto own = ProcessStartTime(getpid());
  REQUIRE(own.ok());
  CHECK(*own > 0);
  pid_t child = StartSleeper();
  ChildGuard guard(child);
  auto child_start = ProcessStartTime(child);
  KillAndReap(child);
  REQUIRE(child_start.ok());
  CHECK(*child_start >= *own);  // Started later.
  auto none = ProcessStartTime(INT_MAX);
  CHECK(absl::IsNotFound(none.status()));
  CHECK_THAT(std::string(none.status().message()), Catch::Contains("gone"));
}

TEST_CASE("BootId is this boot's id, trimmed") {
  auto id = BootId();
  REQUIRE(id.ok());
  CHECK(id->size() == 36);
  CHECK(*id + "\n" == ReadFile("/proc/sys/kernel/random/boot_id"));
  CHECK(BootId().value_or("") == *id);
}

TEST_CASE("OpenPidfdIfSame opens the process that started at that time") {
  pid_t pid = StartSleeper();
  ChildGuard guard(pid);
  auto start = ProcessStartTime(pid);
  REQUIRE(start.ok());

  SECTION("the right start time gives a pidfd of that process") {
    auto pidfd = OpenPidfdIfSame(pid, *start);
    REQUIRE(pidfd.ok());
    CHECK_FALSE(PidfdExited(*pidfd));
    REQUIRE(syscall(SYS_pidfd_send_signal, *pidfd, SIGKILL, nullptr, 0) == 0);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    CHECK(PidfdExited(*pidfd));
    close(*pidfd);
  }
  SECTION("another start time is another process") {
    auto pidfd = OpenPidfdIfSame(pid, *start + 1);
    REQUIRE(absl::IsFailedPrecondition(pidfd.status()));
    CHECK(std::string(pidfd.status().message()) ==
          absl::StrCat("pid ", pid, " is another process (started at ", *start,
                       ", not ", *start + 1, ")"));
    KillAndReap(pid);
  }
  SECTION("a zombie is gone, even unreaped") {
    REQUIRE(kill(pid, SIGKILL) == 0);
    siginfo_t info = {};
    REQUIRE(waitid(P_PID, pid, &info, WEXITED | WNOWAIT) == 0);
    auto pidfd = OpenPidfdIfSame(pid, *start);
    CHECK(absl::IsNotFound(pidfd.status()));
    KillAndReap(pid);
    CHECK(absl::IsNotFound(OpenPidfdIfSame(pid, *start).status()));
  }
}

TEST_CASE("a decoy given a dead process's pid is refused") {
  if (geteuid() != 0) {
    HOSTMESH_SKIP("clone3 set_tid needs root (euid " << geteuid() << ")");
  }
  pid_t pid = StartSleeper();
  auto start = ProcessStartTime(pid);
  KillAndReap(pid);
  REQUIRE(start.ok());
  // A clock tick (at most 10 ms) later, so the start times differ.
  absl::SleepFor(absl::Milliseconds(30));
  int decoy = testing::SpawnDecoyWithPid(pid);
  if (decoy == -EPERM) {
    HOSTMESH_SKIP("clone3 set_tid is not allowed here (EPERM)");
  }
  REQUIRE(decoy >= 0);
  ChildGuard decoy_guard = ChildGuard::OfPidfd(decoy);
  auto decoy_start = ProcessStartTime(pid);
  auto pidfd = OpenPidfdIfSame(pid, *start);
  CHECK(absl::IsFailedPrecondition(pidfd.status()));
  CHECK_THAT(std::string(pidfd.status().message()),
             Catch::Contains(absl::StrCat("pid ", pid, " is another process")));
  REQUIRE(decoy_start.ok());
  CHECK(*decoy_start != *start);
  CHECK(OpenPidfdIfSame(pid, *decoy_start).ok());  // It is itself.
  CHECK_FALSE(PidfdExited(decoy));
}

}  // namespace
}  // namespace mesh
