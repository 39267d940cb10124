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

// The fields of /proc/<pid>/stat after the command name: index 0 is field 3
// (state).
absl::StatusOr<std::vector<absl::string_view>> FieldsAfterComm(
    absl::string_view stat) {
  size_t paren = stat.rfind(')');
  if (paren == absl::string_view::npos) {
    return absl::InternalError("no ')' in a /proc/<pid>/stat");
  }
  return std::vector<absl::string_view>(
      absl::StrSplit(stat.substr(paren + 1), ' ', absl::SkipWhitespace()));
}

// State (field 3) and start time (field 22) of a live /proc/<pid>/stat.
absl::Status ReadStat(pid_t pid, char* state, uint64_t* start_time) {
  std::string text;
  int err = ReadSmallFile(absl::StrCat("/proc/", pid, "/stat"), &text);
  if (err == ENOENT || err == ESRCH) return Gone(pid);
  if (err != 0) {
    return absl::ErrnoToStatus(
        err, absl::StrCat("cannot read /proc/", pid, "/stat"));
  }
  absl::StatusOr<uint64_t> start = StartTimeFromStat(text);
  if (!start.ok()) return start.status();
  *start_time = *start;
  *state = (*FieldsAfterComm(text))[0][0];
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> StartTimeFromStat(absl::string_view stat) {
  absl::StatusOr<std::vector<absl::string_view>> fields = FieldsAfterComm(stat);
  if (!fields.ok()) return fields.status();
  // Field 22 is the 20th after the command name (fields 3, 4, ... 22).
  constexpr size_t kStartTime = 22 - 3;
  uint64_t value = 0;
  if (fields->size() <= kStartTime || (*fields)[0].empty() ||
      !absl::SimpleAtoi((*fields)[kStartTime], &value)) {
    return absl::InternalError(
        absl::StrCat("no start time (field 22) in /proc/<pid>/stat \"",
                     stat.substr(0, 200), "\""));
  }
  return value;
}

absl::StatusOr<uint64_t> ProcessStartTime(pid_t pid) {
  if (pid <= 0) return Gone(pid);
  char state;
  uint64_t start_time;
  absl::Status read = ReadStat(pid, &state, &start_time);
  if (!read.ok()) return read;
  return start_time;
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
  char state = '?';
  uint64_t actual = 0;
  absl::Status read = ReadStat(pid, &state, &actual);
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
