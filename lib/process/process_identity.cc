#include "lib/process/process_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mesh {
namespace {

// Reads a small file; 0 or an errno.
int ReadSmallFile(const std::string& path, std::string* out) {
  out->clear();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[4096];
  int err = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return err;
}

absl::Status Gone(pid_t pid) {
  return absl::NotFoundError(absl::StrCat("pid ", pid, " is gone"));
}

}  // namespace

absl::StatusOr<ProcStat> ParseProcStat(absl::string_view stat) {
  size_t paren = stat.rfind(')');
  if (paren == absl::string_view::npos) {
    return absl::InternalError("no ')' in a /proc/<pid>/stat");
  }
  // Index 0 is field 3 (state): field N is at N - 3.
  std::vector<absl::string_view> fields =
      absl::StrSplit(stat.substr(paren + 1), ' ', absl::SkipWhitespace());
  ProcStat out;
  if (fields.size() <= 24 - 3 || fields[0].empty() ||
      !absl::SimpleAtoi(fields[4 - 3], &out.ppid) ||
      !absl::SimpleAtoi(fields[5 - 3], &out.pgrp) ||
      !absl::SimpleAtoi(fields[6 - 3], &out.session) ||
      !absl::SimpleAtoi(fields[20 - 3], &out.num_threads) ||
      !absl::SimpleAtoi(fields[22 - 3], &out.start_time) ||
      !absl::SimpleAtoi(fields[23 - 3], &out.virtual_bytes) ||
      !absl::SimpleAtoi(fields[24 - 3], &out.resident_pages)) {
    return absl::InternalError(absl::StrCat("cannot parse /proc/<pid>/stat \"",
                                            stat.substr(0, 200), "\""));
  }
  out.state = fields[0][0];
  return out;
}

absl::StatusOr<ProcStat> ReadProcStat(pid_t pid) {
  if (pid <= 0) return Gone(pid);
  std::string text;
  int err = ReadSmallFile(absl::StrCat("/proc/", pid, "/stat"), &text);
  if (err == ENOENT || err == ESRCH) return Gone(pid);
  if (err != 0) {
    return absl::ErrnoToStatus(
        err, absl::StrCat("cannot read /proc/", pid, "/stat"));
  }
  return ParseProcStat(text);
}

absl::StatusOr<uint64_t> ProcessStartTime(pid_t pid) {
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  if (!stat.ok()) return stat.status();
  return stat->start_time;
}

absl::StatusOr<std::string> BootId() {
  std::string text;
  if (int err = ReadSmallFile("/proc/sys/kernel/random/boot_id", &text)) {
    return absl::ErrnoToStatus(err,
                               "cannot read /proc/sys/kernel/random/boot_id");
  }
  absl::string_view id = absl::StripAsciiWhitespace(text);
  if (id.empty()) {
    return absl::InternalError("/proc/sys/kernel/random/boot_id is empty");
  }
  return std::string(id);
}

absl::StatusOr<int> OpenPidfdIfSame(pid_t pid, uint64_t start_time) {
  if (pid <= 0) return Gone(pid);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    if (errno == ESRCH) return Gone(pid);
    return absl::ErrnoToStatus(errno, absl::StrCat("pidfd_open(", pid, ")"));
  }
  // Readable once the process behind the pidfd has exited.
  auto exited = [pidfd] {
    struct pollfd p = {pidfd, POLLIN, 0};
    int ready;
    while ((ready = poll(&p, 1, 0)) < 0 && errno == EINTR) {
    }
    return ready > 0;
  };
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  absl::Status read = stat.status();
  const uint64_t actual = stat.ok() ? stat->start_time : 0;
  const char state = stat.ok() ? stat->state : '?';
  if (read.ok() && actual != start_time) {
    // The pidfd's process may have died and its pid been reused since.
    read = exited() ? Gone(pid)
                    : absl::FailedPreconditionError(absl::StrCat(
                          "pid ", pid, " is another process (started at ",
                          actual, ", not ", start_time, ")"));
  } else if (read.ok() && (state == 'Z' || state == 'X' || exited())) {
    read =
        absl::NotFoundError(absl::StrCat("pid ", pid, " is gone (it exited)"));
  }
  if (!read.ok()) {
    close(pidfd);
    return read;
  }
  return pidfd;
}

}  // namespace mesh
