#include "lib/process/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "lib/process/process_identity.h"

extern char** environ;

namespace mesh {
namespace {

// How deep Procs/Remove follow cgroups a proc made below its leaf.
constexpr int kMaxDepth = 32;

// Owns a descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::string Quote(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

// Reads a whole (small) file; returns 0 or an errno.
int ReadAll(int fd, std::string* out) {
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return 0;
    out->append(buf, static_cast<size_t>(n));
  }
}

// Reads `name` under `dirfd` (AT_FDCWD: a path); returns 0 or an errno.
int ReadFileAt(int dirfd, const std::string& name, std::string* out) {
  Fd fd(openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return errno;
  return ReadAll(fd.get(), out);
}

// Writes `value` to the cgroup interface file `name` under `dirfd` in one
// write (the kernel takes each write as one command); returns 0 or an errno.
int WriteFileAt(int dirfd, const std::string& name, absl::string_view value) {
  Fd fd(openat(dirfd, name.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) return errno;
  for (;;) {
    ssize_t n = write(fd.get(), value.data(), value.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    return static_cast<size_t>(n) == value.size() ? 0 : EIO;
  }
}

bool Exists(int dirfd, const char* name) {
  return faccessat(dirfd, name, F_OK, 0) == 0;
}

bool IsCgroup2(int fd) {
  struct statfs fs;
  return fstatfs(fd, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

// One path component a cgroup may be named.
absl::Status CheckName(absl::string_view name) {
  if (name.empty() || name == "." || name == ".." ||
      name.find('/') != absl::string_view::npos ||
      name.find('\0') != absl::string_view::npos || name.size() > 255) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad cgroup name ", Quote(name), " (one path component, not . or ..)"));
  }
  return absl::OkStatus();
}

// Undoes mountinfo's octal escapes (\040 for a space, ...).
std::string Unescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' &&
        s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
        s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 +
                                      (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// True if `path` is `prefix` or below it ("/" holds everything).
bool IsWithin(absl::string_view path, absl::string_view prefix) {
  if (prefix == "/") return !path.empty() && path[0] == '/';
  return path == prefix ||
         (absl::StartsWith(path, prefix) && path.size() > prefix.size() &&
          path[prefix.size()] == '/');
}

// The "0::" line of a /proc/<pid>/cgroup text.
absl::StatusOr<std::string> UnifiedPath(absl::string_view proc_cgroup,
                                        absl::string_view where) {
  for (absl::string_view line : absl::StrSplit(proc_cgroup, '\n')) {
    if (!absl::ConsumePrefix(&line, "0::")) continue;
    if (absl::EndsWith(line, " (deleted)")) {
      return absl::FailedPreconditionError(
          absl::StrCat("the cgroup v2 of ", where, " was removed: ", line));
    }
    if (line.empty() || line[0] != '/') {
      return absl::FailedPreconditionError(absl::StrCat(
          "unexpected cgroup v2 path of ", where, ": ", Quote(line)));
    }
    return std::string(line);
  }
  return absl::NotFoundError(absl::StrCat(
      where, " has no cgroup v2 path (no \"0::\" line in its cgroup file)"));
}

// The names of the directories (child cgroups) in `dirfd`. 0 or an errno.
int ListSubdirs(int dirfd, std::vector<std::string>* out) {
  int list_fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (list_fd < 0) return errno;
  DIR* d = fdopendir(list_fd);
  if (d == nullptr) {
    int err = errno;
    close(list_fd);
    return err;
  }
  while (struct dirent* e = readdir(d)) {
    if (e->d_type != DT_DIR) continue;
    absl::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    out->emplace_back(name);
  }
  closedir(d);
  return 0;
}

// Pids listed in `dirfd`'s cgroup.procs and, recursively, in cgroups below.
absl::Status CollectProcs(int dirfd, const std::string& dir, int depth,
                          std::vector<pid_t>* out) {
  std::string text;
  int err = ReadFileAt(dirfd, "cgroup.procs", &text);
  if (err == ENOENT || err == ENODEV) {
    if (depth > 0) return absl::OkStatus();  // Removed meanwhile.
    return absl::NotFoundError(absl::StrCat("cgroup ", Quote(dir), " is gone"));
  }
  if (err != 0) {
    return absl::ErrnoToStatus(
        err, absl::StrCat("cannot read ", dir, "/cgroup.procs"));
  }
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    int pid;
    if (absl::SimpleAtoi(line, &pid) && pid > 0) out->push_back(pid);
  }
  if (depth >= kMaxDepth) return absl::OkStatus();
  std::vector<std::string> subdirs;
  if (ListSubdirs(dirfd, &subdirs) != 0) return absl::OkStatus();
  for (const std::string& name : subdirs) {
    Fd sub(openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (sub.get() < 0) continue;
    absl::Status s =
        CollectProcs(sub.get(), absl::StrCat(dir, "/", name), depth + 1, out);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// rmdir every cgroup below `dirfd`, deepest first. Returns 0 or the first
// errno other than ENOENT.
int RemoveBelow(int dirfd, int depth) {
  if (depth >= kMaxDepth) return EBUSY;
  std::vector<std::string> subdirs;
  if (int err = ListSubdirs(dirfd, &subdirs); err != 0) {
    return err == ENOENT ? 0 : err;
  }
  int first_err = 0;
  for (const std::string& name : subdirs) {
    Fd sub(openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (sub.get() >= 0) {
      int err = RemoveBelow(sub.get(), depth + 1);
      if (err != 0 && first_err == 0) first_err = err;
    }
    if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT &&
        first_err == 0) {
      first_err = errno;
    }
  }
  return first_err;
}

// "populated N" of a cgroup.events text; nullopt if absent.
std::optional<bool> Populated(absl::string_view events) {
  for (absl::string_view line : absl::StrSplit(events, '\n')) {
    if (absl::ConsumePrefix(&line, "populated ")) return line != "0";
  }
  return std::nullopt;
}

absl::Status MissingControllers(const std::vector<std::string>& missing,
                                const std::string& what, const std::string& dir,
                                const std::string& controllers) {
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot ", what, " cgroup ", Quote(dir), ": the ",
      absl::StrJoin(missing, " and "), " controller",
      missing.size() > 1 ? "s are" : " is",
      " not enabled for it (its cgroup.controllers is ",
      Quote(absl::StripAsciiWhitespace(controllers)),
      "; the parent's cgroup.subtree_control must enable it, which needs it "
      "in every ancestor's)"));
}

}  // namespace

// ---------------------------------------------------------------------------
// CgroupRoot

absl::StatusOr<CgroupRoot> CgroupRoot::FromProcFiles(
    absl::string_view mountinfo, absl::string_view proc_cgroup) {
  absl::StatusOr<std::string> own = UnifiedPath(proc_cgroup, "this process");
  if (!own.ok()) return own.status();
  bool any = false;
  std::vector<std::string> roots;
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n')) {
    // id parent major:minor root mount-point options [optional...] - fstype
    // source super-options
    size_t sep = line.find(" - ");
    if (sep == absl::string_view::npos) continue;
    std::vector<absl::string_view> after =
        absl::StrSplit(line.substr(sep + 3), ' ');
    if (after.empty() || after[0] != "cgroup2") continue;
    std::vector<absl::string_view> before =
        absl::StrSplit(line.substr(0, sep), ' ');
    if (before.size() < 5) continue;
    any = true;
    std::string root = Unescape(before[3]);
    std::string mount_point = Unescape(before[4]);
    if (IsWithin(*own, root)) {
      return CgroupRoot(std::move(mount_point), std::move(root),
                        std::move(*own));
    }
    roots.push_back(absl::StrCat(mount_point, " (root ", root, ")"));
  }
  if (!any) {
    return absl::NotFoundError(
        "no cgroup v2 file system is mounted (no fstype cgroup2 in "
        "/proc/self/mountinfo)");
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "this process's cgroup ", Quote(*own),
      " is outside every cgroup2 mount: ", absl::StrJoin(roots, ", ")));
}

absl::StatusOr<CgroupRoot> CgroupRoot::Find() {
  std::string mountinfo, proc_cgroup;
  if (int err = ReadFileAt(AT_FDCWD, "/proc/self/mountinfo", &mountinfo)) {
    return absl::ErrnoToStatus(err, "cannot read /proc/self/mountinfo");
  }
  if (int err = ReadFileAt(AT_FDCWD, "/proc/self/cgroup", &proc_cgroup)) {
    return absl::ErrnoToStatus(err, "cannot read /proc/self/cgroup");
  }
  absl::StatusOr<CgroupRoot> root = FromProcFiles(mountinfo, proc_cgroup);
  if (!root.ok()) return root.status();
  std::string dir = root->own_dir();
  Fd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot open this process's cgroup directory ",
                            Quote(dir)));
  }
  if (!IsCgroup2(fd.get())) {
    return absl::FailedPreconditionError(
        absl::StrCat(Quote(dir), " is not on a cgroup2 file system"));
  }
  return root;
}

std::string CgroupRoot::DirOf(absl::string_view cgroup_path) const {
  absl::string_view rel = cgroup_path;
  if (mount_root_ != "/") absl::ConsumePrefix(&rel, mount_root_);
  if (rel.empty() || rel == "/") return mount_point_;
  return absl::StrCat(mount_point_ == "/" ? "" : mount_point_, rel);
}

std::string CgroupRoot::PathOf(absl::string_view dir) const {
  while (dir.size() > 1 && dir.back() == '/') dir.remove_suffix(1);
  if (!IsWithin(dir, mount_point_)) return "";
  absl::string_view rel =
      mount_point_ == "/" ? dir : dir.substr(mount_point_.size());
  if (rel.empty() || rel == "/") return mount_root_;
  return absl::StrCat(mount_root_ == "/" ? "" : mount_root_, rel);
}

absl::StatusOr<std::string> CgroupRoot::Create(
    absl::string_view dir_or_name) const {
  std::string dir;
  if (!dir_or_name.empty() && dir_or_name[0] == '/') {
    dir = std::string(dir_or_name);
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (PathOf(dir).empty() || dir == mount_point_) {
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup directory ", Quote(dir),
                       " is not below the cgroup2 mount ", mount_point_));
    }
  } else {
    absl::Status name_ok = CheckName(dir_or_name);
    if (!name_ok.ok()) return name_ok;
    dir = absl::StrCat(own_dir(), "/", dir_or_name);
  }
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot create cgroup directory ", Quote(dir)));
  }
  Fd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot open cgroup directory ", Quote(dir)));
  }
  if (!IsCgroup2(fd.get())) {
    return absl::FailedPreconditionError(
        absl::StrCat(Quote(dir), " is not a cgroup v2 directory"));
  }
  // Hand the controllers the subtree has on to its leaves.
  std::string controllers;
  if (ReadFileAt(fd.get(), "cgroup.controllers", &controllers) == 0) {
    std::set<absl::string_view> have = absl::StrSplit(
        absl::StripAsciiWhitespace(controllers), ' ', absl::SkipEmpty());
    for (const char* c : {"memory", "pids"}) {
      if (!have.contains(c)) continue;
      if (int err = WriteFileAt(fd.get(), "cgroup.subtree_control",
                                absl::StrCat("+", c))) {
        LOG(WARNING) << "cannot enable the " << c << " controller in " << dir
                     << "/cgroup.subtree_control: " << std::strerror(err);
      }
    }
  }
  return dir;
}

absl::StatusOr<std::string> CgroupOfPid(pid_t pid) {
  std::string text;
  std::string path = absl::StrCat("/proc/", pid, "/cgroup");
  if (int err = ReadFileAt(AT_FDCWD, path, &text)) {
    return absl::ErrnoToStatus(err, absl::StrCat("cannot read ", path));
  }
  return UnifiedPath(text, absl::StrCat("pid ", pid));
}

// ---------------------------------------------------------------------------
// ProcCgroup

absl::StatusOr<ProcCgroup> ProcCgroup::Create(const std::string& parent_dir,
                                              absl::string_view name) {
  absl::Status name_ok = CheckName(name);
  if (!name_ok.ok()) return name_ok;
  {
    Fd parent(open(parent_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (parent.get() < 0) {
      return absl::ErrnoToStatus(
          errno,
          absl::StrCat("cannot open cgroup directory ", Quote(parent_dir)));
    }
    if (!IsCgroup2(parent.get())) {
      return absl::FailedPreconditionError(
          absl::StrCat(Quote(parent_dir), " is not a cgroup v2 directory"));
    }
  }
  std::string dir = absl::StrCat(parent_dir, "/", name);
  if (mkdir(dir.c_str(), 0755) != 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot create cgroup ", Quote(dir)));
  }
  return Open(dir);
}

absl::StatusOr<ProcCgroup> ProcCgroup::Open(const std::string& dir) {
  Fd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("cannot open cgroup ", Quote(dir)));
  }
  if (!IsCgroup2(fd.get())) {
    return absl::FailedPreconditionError(
        absl::StrCat(Quote(dir), " is not a cgroup v2 directory"));
  }
  return ProcCgroup(dir, fd.release());
}

ProcCgroup::ProcCgroup(ProcCgroup&& other) noexcept
    : dir_(std::move(other.dir_)), dir_fd_(std::exchange(other.dir_fd_, -1)) {}

ProcCgroup& ProcCgroup::operator=(ProcCgroup&& other) noexcept {
  if (this != &other) {
    if (dir_fd_ >= 0) close(dir_fd_);
    dir_ = std::move(other.dir_);
    dir_fd_ = std::exchange(other.dir_fd_, -1);
  }
  return *this;
}

ProcCgroup::~ProcCgroup() {
  if (dir_fd_ >= 0) close(dir_fd_);
}

absl::StatusOr<std::vector<pid_t>> ProcCgroup::Procs() const {
  std::vector<pid_t> pids;
  absl::Status s = CollectProcs(dir_fd_, dir_, 0, &pids);
  if (!s.ok()) return s;
  return pids;
}

absl::StatusOr<std::string> ProcCgroup::Read(const std::string& name) const {
  std::string text;
  int err = ReadFileAt(dir_fd_, name, &text);
  if (err == ENOENT || err == ENODEV) {
    return absl::NotFoundError(
        absl::StrCat("cgroup ", Quote(dir_), " is gone"));
  }
  if (err != 0) {
    return absl::ErrnoToStatus(err,
                               absl::StrCat("cannot read ", dir_, "/", name));
  }
  return text;
}

absl::StatusOr<bool> ProcCgroup::Empty() const {
  absl::StatusOr<std::string> events = Read("cgroup.events");
  if (!events.ok()) return events.status();
  std::optional<bool> populated = Populated(*events);
  if (!populated.has_value()) {
    return absl::InternalError(
        absl::StrCat("no \"populated\" in ", dir_, "/cgroup.events"));
  }
  return !*populated;
}

absl::Status ProcCgroup::WaitEmpty(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  // cgroup.events signals POLLPRI when it changes; the poll is also capped
  // so a missed notification costs at most that long.
  Fd events(openat(dir_fd_, "cgroup.events", O_RDONLY | O_CLOEXEC));
  if (events.get() < 0) {
    if (errno == ENOENT || errno == ENODEV) {
      return absl::NotFoundError(
          absl::StrCat("cgroup ", Quote(dir_), " is gone"));
    }
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot open ", dir_, "/cgroup.events"));
  }
  for (;;) {
    char buf[512];
    ssize_t n = pread(events.get(), buf, sizeof(buf) - 1, 0);
    if (n < 0 && errno != EINTR) {
      return absl::ErrnoToStatus(
          errno, absl::StrCat("cannot read ", dir_, "/cgroup.events"));
    }
    if (n >= 0) {
      std::optional<bool> populated =
          Populated(absl::string_view(buf, static_cast<size_t>(n)));
      if (populated.has_value() && !*populated) return absl::OkStatus();
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    struct pollfd p = {events.get(), POLLPRI, 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(
        std::min(left + absl::Milliseconds(1), absl::Milliseconds(50))));
    poll(&p, 1, ms);
  }
  absl::StatusOr<std::vector<pid_t>> left = Procs();
  return absl::DeadlineExceededError(absl::StrCat(
      "cgroup ", Quote(dir_), " still holds processes after ",
      absl::FormatDuration(timeout), ": pids ",
      left.ok() ? absl::StrJoin(*left, " ") : left.status().ToString()));
}

absl::Status ProcCgroup::Kill(absl::Duration timeout) const {
  if (!Exists(dir_fd_, "cgroup.procs")) {
    return absl::NotFoundError(
        absl::StrCat("cgroup ", Quote(dir_), " is gone"));
  }
  if (!Exists(dir_fd_, "cgroup.kill")) return KillBySignals(timeout);
  if (int err = WriteFileAt(dir_fd_, "cgroup.kill", "1")) {
    return absl::ErrnoToStatus(
        err, absl::StrCat("cannot write 1 to ", dir_, "/cgroup.kill"));
  }
  return WaitEmpty(timeout);
}

absl::Status ProcCgroup::KillBySignals(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  bool frozen = false;
  if (Exists(dir_fd_, "cgroup.freeze")) {
    int err = WriteFileAt(dir_fd_, "cgroup.freeze", "1");
    if (err == 0) {
      frozen = true;
    } else {
      LOG(WARNING) << "cannot freeze " << dir_ << ": " << std::strerror(err);
    }
  }
  absl::Status result;
  for (;;) {
    absl::StatusOr<bool> empty = Empty();
    if (!empty.ok()) {
      result = empty.status();
      break;
    }
    if (*empty) break;
    // A pid is signalled only if it is still in the cgroup after its pidfd
    // was opened: then the pidfd is that process, or that process died and
    // the signal goes nowhere (ESRCH).
    absl::StatusOr<std::vector<pid_t>> before = Procs();
    if (!before.ok()) {
      result = before.status();
      break;
    }
    std::vector<std::pair<pid_t, int>> pidfds;
    for (pid_t pid : *before) {
      int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
      if (pidfd >= 0) pidfds.emplace_back(pid, pidfd);
    }
    absl::StatusOr<std::vector<pid_t>> after = Procs();
    if (after.ok()) {
      std::set<pid_t> still(after->begin(), after->end());
      for (auto [pid, pidfd] : pidfds) {
        if (!still.contains(pid)) continue;
        if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) != 0 &&
            errno != ESRCH) {
          LOG(WARNING) << "cannot SIGKILL pid " << pid << " in " << dir_ << ": "
                       << std::strerror(errno);
        }
      }
    }
    for (auto [pid, pidfd] : pidfds) close(pidfd);
    if (!after.ok()) {
      result = after.status();
      break;
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      result = WaitEmpty(absl::ZeroDuration());
      break;
    }
    if (WaitEmpty(std::min(left, absl::Milliseconds(20))).ok()) break;
  }
  if (frozen) {
    if (int err = WriteFileAt(dir_fd_, "cgroup.freeze", "0");
        err != 0 && err != ENOENT && err != ENODEV) {
      LOG(WARNING) << "cannot thaw " << dir_ << ": " << std::strerror(err);
    }
  }
  return result;
}

absl::Status ProcCgroup::StartKill() const {
  if (!Exists(dir_fd_, "cgroup.procs")) {
    return absl::NotFoundError(
        absl::StrCat("cgroup ", Quote(dir_), " is gone"));
  }
  if (!Exists(dir_fd_, "cgroup.kill")) return Signal(SIGKILL);
  if (int err = WriteFileAt(dir_fd_, "cgroup.kill", "1")) {
    return absl::ErrnoToStatus(
        err, absl::StrCat("cannot write 1 to ", dir_, "/cgroup.kill"));
  }
  return absl::OkStatus();
}

absl::Status ProcCgroup::Signal(int sig, pid_t except_pgrp) const {
  absl::StatusOr<std::vector<pid_t>> before = Procs();
  if (!before.ok()) return before.status();
  std::vector<std::pair<pid_t, int>> pidfds;
  for (pid_t pid : *before) {
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pidfd >= 0) pidfds.emplace_back(pid, pidfd);
  }
  absl::StatusOr<std::vector<pid_t>> after = Procs();
  absl::Status result = after.status();
  if (after.ok()) {
    std::set<pid_t> still(after->begin(), after->end());
    for (auto [pid, pidfd] : pidfds) {
      if (!still.contains(pid)) continue;
      if (except_pgrp > 0) {
        absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
        if (stat.ok() && stat->pgrp == except_pgrp) continue;
      }
      if (syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) != 0 &&
          errno != ESRCH) {
        int err = errno;
        LOG(WARNING) << "cannot send signal " << sig << " to pid " << pid
                     << " in " << dir_ << ": " << std::strerror(err);
        if (result.ok()) {
          result = absl::ErrnoToStatus(
              err, absl::StrCat("cannot send signal ", sig, " to pid ", pid,
                                " in cgroup ", Quote(dir_)));
        }
      }
    }
  }
  for (auto [pid, pidfd] : pidfds) close(pidfd);
  return result;
}

absl::Status ProcCgroup::Remove(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int err = RemoveBelow(dir_fd_, 0);
    if (err == 0) {
      if (rmdir(dir_.c_str()) == 0 || errno == ENOENT) return absl::OkStatus();
      err = errno;
    }
    if (err != EBUSY) {
      return absl::ErrnoToStatus(
          err, absl::StrCat("cannot remove cgroup ", Quote(dir_)));
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    // Busy: processes still inside (or just leaving).
    absl::Status waited = WaitEmpty(std::min(left, absl::Milliseconds(50)));
    if (absl::IsNotFound(waited)) return absl::OkStatus();
    if (waited.ok()) absl::SleepFor(absl::Milliseconds(1));
  }
  absl::StatusOr<std::vector<pid_t>> left = Procs();
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot remove cgroup ", Quote(dir_), " after ",
      absl::FormatDuration(timeout), ": still busy (pids ",
      left.ok() ? absl::StrJoin(*left, " ") : left.status().ToString(), ")"));
}

absl::StatusOr<std::vector<std::string>> ProcCgroup::Controllers() const {
  absl::StatusOr<std::string> text = Read("cgroup.controllers");
  if (!text.ok()) return text.status();
  return std::vector<std::string>(absl::StrSplit(
      absl::StripAsciiWhitespace(*text), ' ', absl::SkipEmpty()));
}

absl::StatusOr<CgroupMemoryEvents> ProcCgroup::MemoryEvents() const {
  std::string text;
  int err = ReadFileAt(dir_fd_, "memory.events", &text);
  if (err == ENOENT) {
    absl::StatusOr<std::string> controllers = Read("cgroup.controllers");
    if (!controllers.ok()) return controllers.status();
    return MissingControllers({"memory"}, "read memory.events of", dir_,
                              *controllers);
  }
  if (err == ENODEV) {
    return absl::NotFoundError(
        absl::StrCat("cgroup ", Quote(dir_), " is gone"));
  }
  if (err != 0) {
    return absl::ErrnoToStatus(
        err, absl::StrCat("cannot read ", dir_, "/memory.events"));
  }
  CgroupMemoryEvents events;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, ' ');
    uint64_t value = 0;
    if (!absl::SimpleAtoi(kv.second, &value)) continue;
    if (kv.first == "low") events.low = value;
    if (kv.first == "high") events.high = value;
    if (kv.first == "max") events.max = value;
    if (kv.first == "oom") events.oom = value;
    if (kv.first == "oom_kill") events.oom_kill = value;
    if (kv.first == "oom_group_kill") events.oom_group_kill = value;
  }
  return events;
}

absl::Status ProcCgroup::SetLimits(const CgroupLimits& limits) const {
  struct Wanted {
    const char* controller;
    const char* file;
    int64_t value;
  };
  std::vector<Wanted> wanted;
  if (limits.memory_max.has_value()) {
    wanted.push_back({"memory", "memory.max", *limits.memory_max});
  }
  if (limits.pids_max.has_value()) {
    wanted.push_back({"pids", "pids.max", *limits.pids_max});
  }
  if (wanted.empty()) return absl::OkStatus();
  std::vector<std::string> files, missing;
  for (const Wanted& w : wanted) {
    files.push_back(w.file);
    if (w.value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(w.file, " must not be negative (", w.value, ")"));
    }
  }
  absl::StatusOr<std::string> controllers = Read("cgroup.controllers");
  if (!controllers.ok()) return controllers.status();
  std::set<absl::string_view> have = absl::StrSplit(
      absl::StripAsciiWhitespace(*controllers), ' ', absl::SkipEmpty());
  for (const Wanted& w : wanted) {
    if (!have.contains(w.controller)) missing.push_back(w.controller);
  }
  if (!missing.empty()) {
    return MissingControllers(
        missing, absl::StrCat("set ", absl::StrJoin(files, " and "), " of"),
        dir_, *controllers);
  }
  for (const Wanted& w : wanted) {
    if (int werr = WriteFileAt(dir_fd_, w.file, absl::StrCat(w.value))) {
      return absl::ErrnoToStatus(werr, absl::StrCat("cannot write ", w.value,
                                                    " to ", dir_, "/", w.file));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// SpawnIntoCgroup

namespace {

// What the child reports through the close-on-exec pipe when a step fails.
enum ChildStep : int32_t { kSetpgid = 1, kDup2 = 2, kExecve = 3 };
struct ChildReport {
  int32_t step;
  int32_t err;
};

// Everything the child needs, prepared before the clone: the child only
// reads it (no allocation, no locks).
struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  const std::pair<int, int>* moves;  // {source above max_dst, destination}
  size_t num_moves;
  const int* closes;  // 3..max_dst that are no destination
  size_t num_closes;
  int max_dst;
  int fd_limit;  // For the close_range fallback.
  int report_fd;
  bool new_process_group;
};

[[noreturn]] void ChildFail(const ChildPlan& plan, ChildStep step, int err) {
  ChildReport report = {step, err};
  while (write(plan.report_fd, &report, sizeof(report)) < 0 && errno == EINTR) {
  }
  _exit(127);
}

// Runs in the child between clone3 and execve: async-signal-safe calls only.
// All signals are blocked on entry (the parent blocked them for the clone).
[[noreturn]] void ChildExec(const ChildPlan& plan) {
  if (plan.new_process_group && setpgid(0, 0) != 0) {
    ChildFail(plan, kSetpgid, errno);
  }
  for (size_t i = 0; i < plan.num_moves; ++i) {
    // src > max_dst >= dst, so dup2 clears close-on-exec on dst.
    if (dup2(plan.moves[i].first, plan.moves[i].second) < 0) {
      ChildFail(plan, kDup2, errno);
    }
  }
  for (size_t i = 0; i < plan.num_closes; ++i) close(plan.closes[i]);
  // Everything above the destinations (the parent's descriptors, the
  // temporary copies, the report pipe) is closed by the exec.
  if (syscall(SYS_close_range, static_cast<unsigned>(plan.max_dst + 1), ~0U,
              CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = plan.max_dst + 1; fd < plan.fd_limit; ++fd) {
      fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
  }
  // Default dispositions (ignored ones would survive the exec), then an
  // empty mask.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &dfl, nullptr);  // Fails harmlessly for glibc's own.
  }
  uint64_t none = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof(none));
  execve(plan.path, plan.argv, plan.envp);
  ChildFail(plan, kExecve, errno);
}

bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

absl::StatusOr<CgroupChild> SpawnIntoCgroup(const ProcCgroup& leaf,
                                            const CgroupSpawnOptions& options) {
  const std::string& path = options.path;
  if (path.empty() || path[0] != '/' || HasNul(path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("executable path ", Quote(path), " is not absolute"));
  }
  if (leaf.dir_fd() < 0) {
    return absl::FailedPreconditionError("the ProcCgroup was moved from");
  }
  std::vector<std::string> argv_strings = options.argv;
  if (argv_strings.empty()) argv_strings.push_back(path);
  std::vector<std::string> env_strings;
  if (options.envp.has_value()) {
    env_strings = *options.envp;
  } else {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      env_strings.emplace_back(*e);
    }
  }
  for (const auto* strings : {&argv_strings, &env_strings}) {
    for (const std::string& s : *strings) {
      if (HasNul(s)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "argument or environment of ", Quote(path), " contains NUL"));
      }
    }
  }
  std::vector<char*> argv = CStrings(argv_strings);
  std::vector<char*> envp = CStrings(env_strings);

  // Descriptors: every source is first copied (close-on-exec) above every
  // destination, so no dup2 in the child clobbers a later source.
  int max_dst = 2;
  std::set<int> dsts;
  for (auto [src, dst] : options.fds) {
    if (dst < 0 || !dsts.insert(dst).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("fds destination ", dst, " is negative or repeated"));
    }
    if (src < 0 || fcntl(src, F_GETFD) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("fds source ", src, " is not open"));
    }
    max_dst = std::max(max_dst, dst);
  }
  std::vector<std::unique_ptr<Fd>> temps;
  std::vector<std::pair<int, int>> moves;
  for (auto [src, dst] : options.fds) {
    int tmp = fcntl(src, F_DUPFD_CLOEXEC, max_dst + 1);
    if (tmp < 0) {
      return absl::ErrnoToStatus(
          errno, absl::StrCat("fcntl(F_DUPFD_CLOEXEC, ", src, ")"));
    }
    temps.push_back(std::make_unique<Fd>(tmp));
    moves.emplace_back(tmp, dst);
  }
  std::vector<int> closes;
  for (int fd = 3; fd <= max_dst; ++fd) {
    if (!dsts.contains(fd)) closes.push_back(fd);
  }
  int report_pipe[2];
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    return absl::ErrnoToStatus(errno, "pipe2");
  }
  Fd report_read(report_pipe[0]);
  Fd report_write(fcntl(report_pipe[1], F_DUPFD_CLOEXEC, max_dst + 1));
  int dup_err = errno;
  close(report_pipe[1]);
  if (report_write.get() < 0) {
    return absl::ErrnoToStatus(dup_err, "fcntl(F_DUPFD_CLOEXEC) for the pipe");
  }
  long open_max = sysconf(_SC_OPEN_MAX);

  ChildPlan plan;
  plan.path = path.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.moves = moves.data();
  plan.num_moves = moves.size();
  plan.closes = closes.data();
  plan.num_closes = closes.size();
  plan.max_dst = max_dst;
  plan.fd_limit = open_max > 0 && open_max < (1 << 20)
                      ? static_cast<int>(open_max)
                      : (1 << 20);
  plan.report_fd = report_write.get();
  plan.new_process_group = options.new_process_group;

  int pidfd = -1;
  struct clone_args args;
  std::memset(&args, 0, sizeof(args));
  args.flags = CLONE_INTO_CGROUP | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = static_cast<uint64_t>(leaf.dir_fd());

  // Every signal (glibc's own included) stays blocked across the clone, so
  // no handler of this process runs in the child before it resets them.
  uint64_t all = ~uint64_t{0}, old = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, sizeof(all));
  long rc = syscall(SYS_clone3, &args, sizeof(args));
  if (rc == 0) ChildExec(plan);
  int clone_err = errno;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, nullptr, sizeof(old));

  if (rc < 0) {
    const std::string where =
        absl::StrCat("clone3 into cgroup ", Quote(leaf.dir()));
    switch (clone_err) {
      case ENOSYS:
        return absl::UnimplementedError(
            absl::StrCat(where, ": this kernel has no clone3 (Linux >= 5.3)"));
      case E2BIG:
      case EINVAL:
        return absl::UnimplementedError(absl::StrCat(
            where, ": ", std::strerror(clone_err),
            " (CLONE_INTO_CGROUP | CLONE_PIDFD needs Linux >= 5.7 and a "
            "cgroup v2 directory)"));
      case EBUSY:
      case EOPNOTSUPP:
        return absl::FailedPreconditionError(absl::StrCat(
            where, ": ", std::strerror(clone_err),
            " (the target must be a leaf: no controllers enabled in its "
            "cgroup.subtree_control, not threaded)"));
      default:
        return absl::ErrnoToStatus(clone_err, where);
    }
  }
  const pid_t pid = static_cast<pid_t>(rc);
  report_write.reset();
  temps.clear();

  ChildReport report;
  size_t got = 0;
  while (got < sizeof(report)) {
    ssize_t n = read(report_read.get(), reinterpret_cast<char*>(&report) + got,
                     sizeof(report) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got < sizeof(report)) return CgroupChild{pid, pidfd};  // Exec'd.

  // The child failed before exec: reap it and say why.
  siginfo_t info;
  while (waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED) != 0 &&
         errno == EINTR) {
  }
  close(pidfd);
  switch (report.step) {
    case kExecve:
      return absl::ErrnoToStatus(report.err,
                                 absl::StrCat("cannot execute ", Quote(path)));
    case kSetpgid:
      return absl::ErrnoToStatus(
          report.err, absl::StrCat("setpgid in the child for ", Quote(path)));
    default:
      return absl::ErrnoToStatus(
          report.err, absl::StrCat("dup2 in the child for ", Quote(path)));
  }
}

}  // namespace mesh
