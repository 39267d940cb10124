#include "lib/process/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"

extern char** environ;

namespace mesh {
namespace {

// Bytes read from one pipe per readiness event before returning to the loop
// (level-triggered epoll brings us back), so one chatty child cannot starve
// the others.
constexpr size_t kReadChunk = 64 * 1024;
constexpr int kReadsPerEvent = 16;
// Upper bound on reads when draining a pipe after its child exited, in case
// a writer that escaped the group kill keeps writing.
constexpr int kDrainReads = 64;

std::string ErrnoText(int err) { return std::strerror(err); }

// Maps an errno from a setup step to an Abseil status naming `what`.
absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string message = absl::StrCat(what, ": ", ErrnoText(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case ENOEXEC:
    case EISDIR:
    case ELOOP:
    case ETXTBSY:
    case ENAMETOOLONG:
      return absl::FailedPreconditionError(message);
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOSPC:
      return absl::ResourceExhaustedError(message);
    case EAGAIN:
      return absl::UnavailableError(message);
    case EINVAL:
    case EBADF:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

void CloseFd(int& fd) {
  if (fd < 0) return;
  if (close(fd) != 0 && errno != EINTR) {
    LOG(WARNING) << "close(" << fd << ") failed: " << ErrnoText(errno);
  }
  fd = -1;
}

// Owns a descriptor until released.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ~ScopedFd() { CloseFd(fd_); }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd) {
    CloseFd(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// Gives a directory (by path) or an open file (fd >= 0) exactly `mode` and,
// if set, `group`, whatever the umask or what it had. Group first: chown
// may clear mode bits. No setgid bit is ever set (systemd's
// RestrictSUIDSGID= would refuse it).
absl::Status SetModeAndGroup(const std::string& path, int fd, mode_t mode,
                             std::optional<gid_t> group) {
  struct stat st;
  if ((fd >= 0 ? fstat(fd, &st) : stat(path.c_str(), &st)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot stat \"", path, "\""));
  }
  if (group.has_value() && st.st_gid != *group &&
      (fd >= 0 ? fchown(fd, static_cast<uid_t>(-1), *group)
               : chown(path.c_str(), static_cast<uid_t>(-1), *group)) != 0) {
    return ErrnoStatus(
        errno, absl::StrCat("cannot give \"", path, "\" to group ", *group));
  }
  if ((st.st_mode & 07777) != mode &&
      (fd >= 0 ? fchmod(fd, mode) : chmod(path.c_str(), mode)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot chmod \"", path, "\""));
  }
  return absl::OkStatus();
}

// mkdir -p; each created component and `dir` itself (even if it existed)
// get exactly `mode` and `group`.
absl::Status MakeDirs(const std::string& dir, mode_t mode,
                      std::optional<gid_t> group) {
  if (dir.empty()) return absl::OkStatus();
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    std::string prefix = dir.substr(0, pos);
    if (prefix.empty()) continue;
    if (mkdir(prefix.c_str(), mode) == 0) {
      absl::Status set = SetModeAndGroup(prefix, -1, mode, group);
      if (!set.ok()) return set;
      continue;
    }
    int err = errno;
    if (err != EEXIST) {
      return ErrnoStatus(
          err, absl::StrCat("cannot create directory \"", prefix, "\""));
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot stat \"", dir, "\""));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("log_dir \"", dir, "\" is not a directory"));
  }
  return SetModeAndGroup(dir, -1, mode, group);
}

// Opens a log for appending (never through a symlink) with exactly `mode`
// and `group`, also if it existed.
absl::StatusOr<int> OpenLog(const std::string& path, mode_t mode,
                            std::optional<gid_t> group) {
  int fd = open(path.c_str(),
                O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot open \"", path, "\""));
  }
  absl::Status set = SetModeAndGroup(path, fd, mode, group);
  if (!set.ok()) {
    close(fd);
    return set;
  }
  return fd;
}

bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

// Checks what posix_spawn would misread. Returns the highest destination
// descriptor of the child (at least 2).
absl::StatusOr<int> CheckOptions(const SpawnOptions& options) {
  const std::string& path = options.path;
  if (path.empty() || path[0] != '/' || HasNul(path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("executable path \"", path, "\" is not absolute"));
  }
  for (const std::string& arg : options.args) {
    if (HasNul(arg)) {
      return absl::InvalidArgumentError(
          absl::StrCat("argument of \"", path, "\" contains NUL"));
    }
  }
  for (const auto& [key, value] : options.env) {
    if (key.empty() || key.find('=') != std::string::npos || HasNul(key) ||
        HasNul(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad environment variable \"", key, "\""));
    }
  }
  // Destinations must be distinct and above stdio; sources must be open.
  int max_dst = 2;
  for (size_t i = 0; i < options.inherit_fds.size(); ++i) {
    auto [src, dst] = options.inherit_fds[i];
    if (dst < 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("inherit_fds destination ", dst, " is below 3"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (options.inherit_fds[j].second == dst) {
        return absl::InvalidArgumentError(
            absl::StrCat("inherit_fds destination ", dst, " is repeated"));
      }
    }
    if (src < 0 || fcntl(src, F_GETFD) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("inherit_fds source ", src, " is not open"));
    }
    max_dst = std::max(max_dst, dst);
  }
  return max_dst;
}

// This process's environment with `overrides` applied, as KEY=VALUE.
std::vector<std::string> Environment(
    const std::map<std::string, std::string>& overrides) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq == nullptr) continue;
    env[std::string(*e, static_cast<size_t>(eq - *e))] = std::string(eq + 1);
  }
  for (const auto& [key, value] : overrides) env[key] = value;
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [key, value] : env) {
    out.push_back(absl::StrCat(key, "=", value));
  }
  return out;
}

// A null-terminated array of pointers into `strings` (which must outlive it).
std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Owns posix_spawn attributes and file actions for one spawn.
struct SpawnArgs {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  bool attr_init = false;
  bool actions_init = false;
  ~SpawnArgs() {
    if (actions_init) posix_spawn_file_actions_destroy(&actions);
    if (attr_init) posix_spawnattr_destroy(&attr);
  }
};

enum class WatchKind : uint32_t {
  kWakeup = 0,
  kPidfd = 1,
  kStdout = 2,
  kStderr = 3
};

uint64_t WatchKey(WatchKind kind, pid_t pid) {
  return (static_cast<uint64_t>(kind) << 32) | static_cast<uint32_t>(pid);
}

}  // namespace

// The supervisor thread owns the epoll set, every pipe and log descriptor
// and every pidfd; other threads only queue spawn requests and read or
// signal children under mutex_.
class ProcessSupervisor::Impl {
 public:
  Impl() = default;
  ~Impl();

  absl::Status Start();
  absl::StatusOr<pid_t> Spawn(const SpawnOptions& options,
                              ExitCallback on_exit);
  absl::Status SignalGroup(pid_t pid, int sig);
  std::string StderrTail(pid_t pid);
  std::vector<pid_t> LivePids();

 private:
  // A Spawn() call waiting for the supervisor thread.
  struct Request {
    const SpawnOptions* options;
    ExitCallback on_exit;
    absl::StatusOr<pid_t> result = absl::UnknownError("not run");
    absl::Notification done;
  };

  // One tracked child. Descriptors and log state are touched only by the
  // supervisor thread, except that SignalGroup reads `pidfd` under mutex_
  // while `reaped` is false (it is closed only after). `tail` and `reaped`
  // are guarded by Impl::mutex_.
  struct Child {
    pid_t pid = 0;
    int pidfd = -1;
    int out_fd = -1;  // Read end of the stdout pipe.
    int err_fd = -1;  // Read end of the stderr pipe.
    int out_log = -1;
    int err_log = -1;
    bool out_log_failed = false;
    bool err_log_failed = false;
    size_t tail_limit = 0;
    ExitCallback on_exit;
    std::string tail;     // Guarded by Impl::mutex_.
    bool reaped = false;  // Guarded by Impl::mutex_.
  };

  void Run();
  void ServeRequests();
  // Runs on the supervisor thread: spawns and starts watching a child.
  absl::StatusOr<pid_t> DoSpawn(const SpawnOptions& options,
                                ExitCallback on_exit);
  // Kills and synchronously reaps a child that could not be set up.
  void AbortChild(pid_t pid, int pidfd);
  // Reads what is available on one pipe; returns false at EOF or error (the
  // fd is then closed and unwatched). With `drain`, reads until EAGAIN
  // (bounded by kDrainReads).
  bool ReadPipe(Child& child, bool is_stderr, bool drain);
  // Kills the rest of the group, reaps, drains the pipes, calls on_exit.
  void HandleExit(pid_t pid);
  void Unwatch(int fd);
  Child* FindChild(pid_t pid) ABSL_LOCKS_EXCLUDED(mutex_);

  int epoll_fd_ = -1;
  int wakeup_fd_ = -1;
  std::thread thread_;
  std::thread::id thread_id_;
  std::vector<char> buffer_ = std::vector<char>(kReadChunk);

  absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::deque<Request*> pending_ ABSL_GUARDED_BY(mutex_);
  std::map<pid_t, std::unique_ptr<Child>> children_ ABSL_GUARDED_BY(mutex_);
};

absl::Status ProcessSupervisor::Impl::Start() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return ErrnoStatus(errno, "epoll_create1");
  wakeup_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakeup_fd_ < 0) return ErrnoStatus(errno, "eventfd");
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = WatchKey(WatchKind::kWakeup, 0);
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wakeup_fd_, &ev) != 0) {
    return ErrnoStatus(errno, "epoll_ctl(eventfd)");
  }
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot start the supervisor thread: ", e.what()));
  }
  thread_id_ = thread_.get_id();
  return absl::OkStatus();
}

ProcessSupervisor::Impl::~Impl() {
  if (thread_.joinable()) {
    {
      absl::MutexLock lock(&mutex_);
      stopping_ = true;
    }
    uint64_t one = 1;
    while (write(wakeup_fd_, &one, sizeof(one)) < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;  // Counter full: a wakeup is pending.
      LOG(WARNING) << "eventfd write failed: " << ErrnoText(errno);
      break;
    }
    thread_.join();
  }
  CloseFd(wakeup_fd_);
  CloseFd(epoll_fd_);
}

absl::StatusOr<pid_t> ProcessSupervisor::Impl::Spawn(
    const SpawnOptions& options, ExitCallback on_exit) {
  if (std::this_thread::get_id() == thread_id_) {
    return absl::FailedPreconditionError(
        "Spawn called from a supervisor callback");
  }
  Request request;
  request.options = &options;
  request.on_exit = std::move(on_exit);
  {
    absl::MutexLock lock(&mutex_);
    if (stopping_) {
      return absl::FailedPreconditionError("supervisor is shutting down");
    }
    pending_.push_back(&request);
  }
  uint64_t one = 1;
  while (write(wakeup_fd_, &one, sizeof(one)) < 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN) break;  // Counter full: a wakeup is pending.
    int err = errno;
    LOG(WARNING) << "eventfd write failed: " << ErrnoText(err);
    absl::MutexLock lock(&mutex_);
    auto it = std::find(pending_.begin(), pending_.end(), &request);
    if (it != pending_.end()) {
      pending_.erase(it);
      return ErrnoStatus(err, "cannot wake the supervisor thread");
    }
    break;  // Already taken by the thread: wait for it.
  }
  request.done.WaitForNotification();
  return std::move(request.result);
}

absl::Status ProcessSupervisor::Impl::SignalGroup(pid_t pid, int sig) {
  // Holding the lock keeps the supervisor thread from reaping `pid` (and so
  // freeing its pid and pgid for reuse) while we signal it.
  absl::MutexLock lock(&mutex_);
  auto it = children_.find(pid);
  if (it == children_.end() || it->second->reaped) {
    return absl::NotFoundError(absl::StrCat("no live child with pid ", pid));
  }
  if (kill(-pid, sig) == 0) return absl::OkStatus();
  int err = errno;
  if (err == ESRCH) {
    // The leader moved to another group; signal at least the leader.
    if (syscall(SYS_pidfd_send_signal, it->second->pidfd, sig, nullptr, 0) ==
        0) {
      return absl::OkStatus();
    }
    err = errno;
  }
  return ErrnoStatus(err, absl::StrCat("kill(-", pid, ", ", sig, ")"));
}

std::string ProcessSupervisor::Impl::StderrTail(pid_t pid) {
  absl::MutexLock lock(&mutex_);
  auto it = children_.find(pid);
  if (it == children_.end()) return "";
  return it->second->tail;
}

std::vector<pid_t> ProcessSupervisor::Impl::LivePids() {
  absl::MutexLock lock(&mutex_);
  std::vector<pid_t> pids;
  for (const auto& [pid, child] : children_) {
    if (!child->reaped) pids.push_back(pid);
  }
  return pids;
}

ProcessSupervisor::Impl::Child* ProcessSupervisor::Impl::FindChild(pid_t pid) {
  absl::MutexLock lock(&mutex_);
  auto it = children_.find(pid);
  return it == children_.end() ? nullptr : it->second.get();
}

void ProcessSupervisor::Impl::Run() {
  constexpr int kMaxEvents = 64;
  struct epoll_event events[kMaxEvents];
  bool killed_all = false;
  for (;;) {
    bool stopping;
    bool empty;
    {
      absl::MutexLock lock(&mutex_);
      stopping = stopping_;
      empty = children_.empty();
    }
    if (stopping) {
      ServeRequests();  // Fails whatever is still queued.
      if (empty) break;
      if (!killed_all) {
        absl::MutexLock lock(&mutex_);
        for (const auto& [pid, child] : children_) {
          if (child->reaped) continue;
          if (kill(-pid, SIGKILL) != 0 && errno != ESRCH) {
            LOG(WARNING) << "kill(-" << pid
                         << ", SIGKILL) failed: " << ErrnoText(errno);
          }
        }
        killed_all = true;
      }
    }
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, stopping ? 5000 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      LOG(ERROR) << "epoll_wait failed: " << ErrnoText(errno);
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    if (n == 0 && stopping) {
      LOG(WARNING) << "children still not reaped after SIGKILL; waiting";
      continue;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t key = events[i].data.u64;
      auto kind = static_cast<WatchKind>(key >> 32);
      auto pid = static_cast<pid_t>(key & 0xffffffffu);
      switch (kind) {
        case WatchKind::kWakeup: {
          uint64_t value;
          if (read(wakeup_fd_, &value, sizeof(value)) < 0 && errno != EAGAIN &&
              errno != EINTR) {
            LOG(WARNING) << "eventfd read failed: " << ErrnoText(errno);
          }
          ServeRequests();
          break;
        }
        case WatchKind::kPidfd:
          HandleExit(pid);
          break;
        case WatchKind::kStdout:
        case WatchKind::kStderr: {
          // The child may have been reaped earlier in this batch.
          Child* child = FindChild(pid);
          if (child == nullptr) break;
          ReadPipe(*child, kind == WatchKind::kStderr, /*drain=*/false);
          break;
        }
      }
    }
  }
}

void ProcessSupervisor::Impl::ServeRequests() {
  for (;;) {
    Request* request;
    bool stopping;
    {
      absl::MutexLock lock(&mutex_);
      if (pending_.empty()) return;
      request = pending_.front();
      pending_.pop_front();
      stopping = stopping_;
    }
    if (stopping) {
      request->result =
          absl::FailedPreconditionError("supervisor is shutting down");
    } else {
      request->result = DoSpawn(*request->options, std::move(request->on_exit));
    }
    request->done.Notify();
  }
}

absl::StatusOr<pid_t> ProcessSupervisor::Impl::DoSpawn(
    const SpawnOptions& options, ExitCallback on_exit) {
  const std::string& path = options.path;
  absl::StatusOr<int> max_dst_or = CheckOptions(options);
  if (!max_dst_or.ok()) return max_dst_or.status();
  const int max_dst = *max_dst_or;
  std::vector<std::string> env_strings = Environment(options.env);
  std::vector<char*> envp = CStrings(env_strings);
  std::vector<std::string> argv_strings = {path};
  argv_strings.insert(argv_strings.end(), options.args.begin(),
                      options.args.end());
  std::vector<char*> argv = CStrings(argv_strings);

  // Log files.
  ScopedFd out_log, err_log;
  if (!options.log_dir.empty()) {
    const std::optional<gid_t> group = options.log_group;
    const mode_t dir_mode = group.has_value() ? 0750 : 0700;
    const mode_t file_mode = group.has_value() ? 0640 : 0600;
    absl::Status made = MakeDirs(options.log_dir, dir_mode, group);
    if (!made.ok()) return made;
    auto out =
        OpenLog(absl::StrCat(options.log_dir, "/stdout.log"), file_mode, group);
    if (!out.ok()) return out.status();
    out_log.reset(*out);
    auto err =
        OpenLog(absl::StrCat(options.log_dir, "/stderr.log"), file_mode, group);
    if (!err.ok()) return err.status();
    err_log.reset(*err);
  }

  // Pipes: read ends stay here (non-blocking), write ends go to the child.
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  ScopedFd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  ScopedFd err_read(err_pipe[0]), err_write(err_pipe[1]);
  for (int fd : {out_read.get(), err_read.get()}) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
      return ErrnoStatus(errno, "fcntl(O_NONBLOCK)");
    }
  }

  // Every source is first duplicated (close-on-exec) above every
  // destination, so no dup2 in the child clobbers a later source, and each
  // dup2 has src != dst and so clears close-on-exec on the destination.
  std::vector<std::pair<int, int>> moves = {{out_write.get(), 1},
                                            {err_write.get(), 2}};
  moves.insert(moves.end(), options.inherit_fds.begin(),
               options.inherit_fds.end());
  std::vector<std::unique_ptr<ScopedFd>> temps;
  for (auto& [src, dst] : moves) {
    int tmp = fcntl(src, F_DUPFD_CLOEXEC, max_dst + 1);
    if (tmp < 0) {
      return ErrnoStatus(errno,
                         absl::StrCat("fcntl(F_DUPFD_CLOEXEC, ", src, ")"));
    }
    temps.push_back(std::make_unique<ScopedFd>(tmp));
    src = tmp;
  }

  SpawnArgs spawn;
  int rc = posix_spawnattr_init(&spawn.attr);
  if (rc != 0) return ErrnoStatus(rc, "posix_spawnattr_init");
  spawn.attr_init = true;
  rc = posix_spawn_file_actions_init(&spawn.actions);
  if (rc != 0) return ErrnoStatus(rc, "posix_spawn_file_actions_init");
  spawn.actions_init = true;
  sigset_t empty_mask, all_signals;
  sigemptyset(&empty_mask);
  sigfillset(&all_signals);
  short flags =
      POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if ((rc = posix_spawnattr_setflags(&spawn.attr, flags)) != 0 ||
      (rc = posix_spawnattr_setpgroup(&spawn.attr, 0)) != 0 ||
      (rc = posix_spawnattr_setsigmask(&spawn.attr, &empty_mask)) != 0 ||
      (rc = posix_spawnattr_setsigdefault(&spawn.attr, &all_signals)) != 0) {
    return ErrnoStatus(rc, "posix_spawnattr");
  }
  for (const auto& [src, dst] : moves) {
    rc = posix_spawn_file_actions_adddup2(&spawn.actions, src, dst);
    if (rc != 0) return ErrnoStatus(rc, "posix_spawn_file_actions_adddup2");
  }
  rc = posix_spawn_file_actions_addopen(&spawn.actions, 0, "/dev/null",
                                        O_RDONLY, 0);
  if (rc != 0) return ErrnoStatus(rc, "posix_spawn_file_actions_addopen");
  // Close everything else the child would inherit, including descriptors
  // other code in this process opened without close-on-exec.
  for (int fd = 3; fd <= max_dst; ++fd) {
    bool wanted = false;
    for (const auto& [src, dst] : options.inherit_fds) wanted |= dst == fd;
    if (wanted) continue;
    rc = posix_spawn_file_actions_addclose(&spawn.actions, fd);
    if (rc != 0) return ErrnoStatus(rc, "posix_spawn_file_actions_addclose");
  }
  rc = posix_spawn_file_actions_addclosefrom_np(&spawn.actions, max_dst + 1);
  if (rc != 0) {
    return ErrnoStatus(rc, "posix_spawn_file_actions_addclosefrom_np");
  }

  pid_t pid = 0;
  rc = posix_spawn(&pid, path.c_str(), &spawn.actions, &spawn.attr, argv.data(),
                   envp.data());
  if (rc != 0) {
    return ErrnoStatus(rc, absl::StrCat("cannot execute \"", path, "\""));
  }
  // Until it is reaped, `pid` and its pgid cannot be reused.
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int err = errno;
    LOG(WARNING) << "pidfd_open(" << pid << ") failed: " << ErrnoText(err);
    if (kill(-pid, SIGKILL) != 0 && errno != ESRCH) {
      LOG(WARNING) << "kill(-" << pid << ") failed: " << ErrnoText(errno);
    }
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return ErrnoStatus(err, absl::StrCat("pidfd_open for \"", path, "\""));
  }
  temps.clear();
  out_write.reset(-1);
  err_write.reset(-1);

  auto child = std::make_unique<Child>();
  child->pid = pid;
  child->pidfd = pidfd;
  child->tail_limit = options.stderr_tail_bytes;
  child->on_exit = std::move(on_exit);
  struct Watch {
    int fd;
    WatchKind kind;
  };
  for (Watch w : {Watch{pidfd, WatchKind::kPidfd},
                  Watch{out_read.get(), WatchKind::kStdout},
                  Watch{err_read.get(), WatchKind::kStderr}}) {
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u64 = WatchKey(w.kind, pid);
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w.fd, &ev) != 0) {
      int err = errno;
      LOG(WARNING) << "epoll_ctl(ADD) for pid " << pid
                   << " failed: " << ErrnoText(err);
      Unwatch(pidfd);
      Unwatch(out_read.get());
      Unwatch(err_read.get());
      AbortChild(pid, pidfd);
      return ErrnoStatus(err, absl::StrCat("cannot watch \"", path, "\""));
    }
  }
  child->out_fd = out_read.release();
  child->err_fd = err_read.release();
  child->out_log = out_log.release();
  child->err_log = err_log.release();
  {
    absl::MutexLock lock(&mutex_);
    children_[pid] = std::move(child);
  }
  return pid;
}

void ProcessSupervisor::Impl::AbortChild(pid_t pid, int pidfd) {
  if (kill(-pid, SIGKILL) != 0 && errno != ESRCH) {
    LOG(WARNING) << "kill(-" << pid
                 << ", SIGKILL) failed: " << ErrnoText(errno);
  }
  siginfo_t info;
  while (waitid(static_cast<idtype_t>(P_PIDFD), pidfd, &info, WEXITED) != 0) {
    if (errno == EINTR) continue;
    LOG(WARNING) << "waitid for pid " << pid << " failed: " << ErrnoText(errno);
    break;
  }
  CloseFd(pidfd);
}

void ProcessSupervisor::Impl::Unwatch(int fd) {
  if (fd < 0) return;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr) != 0 &&
      errno != ENOENT) {
    LOG(WARNING) << "epoll_ctl(DEL, " << fd << ") failed: " << ErrnoText(errno);
  }
}

bool ProcessSupervisor::Impl::ReadPipe(Child& child, bool is_stderr,
                                       bool drain) {
  int& fd = is_stderr ? child.err_fd : child.out_fd;
  int& log = is_stderr ? child.err_log : child.out_log;
  bool& log_failed = is_stderr ? child.err_log_failed : child.out_log_failed;
  if (fd < 0) return false;
  const int max_reads = drain ? kDrainReads : kReadsPerEvent;
  for (int reads = 0; reads < max_reads; ++reads) {
    ssize_t n = read(fd, buffer_.data(), buffer_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return true;
      LOG(WARNING) << "read of " << (is_stderr ? "stderr" : "stdout")
                   << " of pid " << child.pid
                   << " failed: " << ErrnoText(errno);
      n = 0;  // Treat as EOF.
    }
    if (n == 0) {
      Unwatch(fd);
      CloseFd(fd);
      return false;
    }
    const char* data = buffer_.data();
    size_t size = static_cast<size_t>(n);
    if (log >= 0 && !log_failed) {
      size_t written = 0;
      while (written < size) {
        ssize_t w = write(log, data + written, size - written);
        if (w < 0) {
          if (errno == EINTR) continue;
          LOG(WARNING) << "writing the " << (is_stderr ? "stderr" : "stdout")
                       << " log of pid " << child.pid
                       << " failed: " << ErrnoText(errno)
                       << "; dropping further output";
          log_failed = true;
          break;
        }
        written += static_cast<size_t>(w);
      }
    }
    if (is_stderr && child.tail_limit > 0) {
      absl::MutexLock lock(&mutex_);
      std::string& tail = child.tail;
      if (size >= child.tail_limit) {
        tail.assign(data + size - child.tail_limit, child.tail_limit);
      } else {
        tail.append(data, size);
        if (tail.size() > child.tail_limit) {
          tail.erase(0, tail.size() - child.tail_limit);
        }
      }
    }
  }
  return true;
}

void ProcessSupervisor::Impl::HandleExit(pid_t pid) {
  Child* child;
  {
    absl::MutexLock lock(&mutex_);
    auto it = children_.find(pid);
    if (it == children_.end() || it->second->reaped) return;
    child = it->second.get();
    // Guard against a stale event for an earlier child with the same pid:
    // act only if this child's pidfd says it exited.
    struct pollfd p = {child->pidfd, POLLIN, 0};
    int ready;
    while ((ready = poll(&p, 1, 0)) < 0 && errno == EINTR) {
    }
    if (ready <= 0) return;
    // The leader is a zombie now, so its pgid cannot have been reused: kill
    // what is left of the group before reaping frees the id. Holding the
    // lock orders this against SignalGroup.
    if (kill(-pid, SIGKILL) != 0 && errno != ESRCH) {
      LOG(WARNING) << "kill(-" << pid
                   << ", SIGKILL) failed: " << ErrnoText(errno);
    }
    child->reaped = true;
  }
  ExitInfo info;
  info.pid = pid;
  siginfo_t si = {};
  int rc;
  while ((rc = waitid(static_cast<idtype_t>(P_PIDFD), child->pidfd, &si,
                      WEXITED)) != 0 &&
         errno == EINTR) {
  }
  if (rc != 0) {
    // Someone else reaped it (e.g. SIGCHLD ignored); the status is lost.
    LOG(WARNING) << "waitid for pid " << pid << " failed: " << ErrnoText(errno);
    info.exit_code = -1;
  } else if (si.si_code == CLD_EXITED) {
    info.exit_code = si.si_status;
  } else {
    info.term_signal = si.si_status;
  }
  Unwatch(child->pidfd);
  CloseFd(child->pidfd);
  // Drain what the pipes hold; a writer that escaped the group kill may
  // keep them open, so stop at EAGAIN instead of waiting for EOF.
  ReadPipe(*child, /*is_stderr=*/false, /*drain=*/true);
  ReadPipe(*child, /*is_stderr=*/true, /*drain=*/true);
  for (int* fd : {&child->out_fd, &child->err_fd}) {
    Unwatch(*fd);
    CloseFd(*fd);
  }
  CloseFd(child->out_log);
  CloseFd(child->err_log);
  {
    absl::MutexLock lock(&mutex_);
    info.stderr_tail = child->tail;
  }
  if (child->on_exit) child->on_exit(info);
  absl::MutexLock lock(&mutex_);
  children_.erase(pid);
}

absl::StatusOr<std::unique_ptr<ProcessSupervisor>> ProcessSupervisor::Create() {
  auto impl = std::make_unique<Impl>();
  absl::Status status = impl->Start();
  if (!status.ok()) return status;
  return std::unique_ptr<ProcessSupervisor>(
      new ProcessSupervisor(std::move(impl)));
}

ProcessSupervisor::ProcessSupervisor(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

ProcessSupervisor::~ProcessSupervisor() = default;

absl::StatusOr<pid_t> ProcessSupervisor::Spawn(const SpawnOptions& options,
                                               ExitCallback on_exit) {
  return impl_->Spawn(options, std::move(on_exit));
}

absl::Status ProcessSupervisor::SignalGroup(pid_t pid, int sig) {
  return impl_->SignalGroup(pid, sig);
}

std::string ProcessSupervisor::StderrTail(pid_t pid) {
  return impl_->StderrTail(pid);
}

std::vector<pid_t> ProcessSupervisor::LivePids() { return impl_->LivePids(); }

}  // namespace mesh
