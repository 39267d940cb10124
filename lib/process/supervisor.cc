#include "lib/process/supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <set>
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
#include "lib/process/cgroup.h"
#include "lib/process/errno_status.h"
#include "lib/process/log_file.h"
#include "lib/process/proc_log.h"
#include "lib/process/process_identity.h"

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
  for (const auto& [fd, what] : {std::pair{options.stdin_fd, "stdin_fd"},
                                 std::pair{options.stdout_fd, "stdout_fd"}}) {
    if (fd != -1 && (fd < 0 || fcntl(fd, F_GETFD) < 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", fd, " is not open"));
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

// This process's environment without `unset`, with `overrides` applied, as
// KEY=VALUE.
std::vector<std::string> Environment(
    const std::map<std::string, std::string>& overrides,
    const std::vector<std::string>& unset) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq == nullptr) continue;
    env[std::string(*e, static_cast<size_t>(eq - *e))] = std::string(eq + 1);
  }
  for (const std::string& key : unset) env.erase(key);
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

// How long a leaf may take to empty after its leader ended and it was
// killed, and to be removed after that.
constexpr absl::Duration kLeafEmptyTimeout = absl::Seconds(5);
constexpr absl::Duration kLeafRemoveTimeout = absl::Seconds(1);
// How often a subreaper looks for untracked zombie children.
constexpr absl::Duration kReapInterval = absl::Seconds(1);

// What every ProcessSupervisor of this process shares: the pids each
// tracks (a subreaper never reaps another supervisor's child) and who
// asked for the process-wide subreaper flag.
struct Registry {
  absl::Mutex mu;
  std::multiset<pid_t> tracked ABSL_GUARDED_BY(mu);
  int subreaper_users ABSL_GUARDED_BY(mu) = 0;
  // The flag was set before the first user set it (then it stays set).
  bool subreaper_was_set ABSL_GUARDED_BY(mu) = false;
};

Registry& GlobalRegistry() {
  static Registry* registry = new Registry;
  return *registry;
}

void Register(pid_t pid) {
  Registry& r = GlobalRegistry();
  absl::MutexLock lock(&r.mu);
  r.tracked.insert(pid);
}

void Unregister(pid_t pid) {
  Registry& r = GlobalRegistry();
  absl::MutexLock lock(&r.mu);
  auto it = r.tracked.find(pid);
  if (it != r.tracked.end()) r.tracked.erase(it);
}

bool TrackedByAnySupervisor(pid_t pid) {
  Registry& r = GlobalRegistry();
  absl::MutexLock lock(&r.mu);
  return r.tracked.contains(pid);
}

absl::Status AcquireSubreaper() {
  Registry& r = GlobalRegistry();
  absl::MutexLock lock(&r.mu);
  if (r.subreaper_users == 0) {
    int was = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &was, 0, 0, 0) != 0) was = 0;
    if (!was && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
      return ErrnoStatus(errno, "prctl(PR_SET_CHILD_SUBREAPER)");
    }
    r.subreaper_was_set = was != 0;
  }
  ++r.subreaper_users;
  return absl::OkStatus();
}

void ReleaseSubreaper() {
  Registry& r = GlobalRegistry();
  absl::MutexLock lock(&r.mu);
  if (--r.subreaper_users > 0 || r.subreaper_was_set) return;
  if (prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) != 0) {
    LOG(WARNING) << "prctl(PR_SET_CHILD_SUBREAPER, 0) failed: "
                 << ErrnoText(errno);
  }
}

// True once the process behind `pidfd` has exited.
bool PidfdExited(int pidfd) {
  struct pollfd p = {pidfd, POLLIN, 0};
  int ready;
  while ((ready = poll(&p, 1, 0)) < 0 && errno == EINTR) {
  }
  return ready > 0;
}

// Pids of this process's children (of every thread), from
// /proc/self/task/*/children.
std::vector<pid_t> OwnChildren() {
  std::vector<pid_t> out;
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return out;
  while (struct dirent* e = readdir(tasks)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(absl::StrCat("/proc/self/task/", e->d_name, "/children"));
    for (pid_t pid; in >> pid;) out.push_back(pid);
  }
  closedir(tasks);
  return out;
}

// Status `status` with " (<context>)" added to its message.
absl::Status WithContext(const absl::Status& status,
                         const std::string& context) {
  return absl::Status(status.code(),
                      absl::StrCat(status.message(), " (", context, ")"));
}

}  // namespace

// The supervisor thread owns the epoll set, every pipe, log and pidfd
// descriptor and every leaf; other threads only queue work for it and read
// or signal tracked processes under mutex_.
class ProcessSupervisor::Impl {
 public:
  explicit Impl(const Options& options) : options_(options) {}
  ~Impl();

  absl::Status Start();
  absl::StatusOr<pid_t> Spawn(const SpawnOptions& options,
                              ExitCallback on_exit);
  absl::Status Adopt(const AdoptOptions& options, ExitCallback on_exit);
  std::optional<AdoptOptions> AdoptOptionsFor(pid_t pid);
  void Release();
  absl::Status SignalGroup(pid_t pid, int sig);
  std::string StderrTail(pid_t pid);
  std::vector<pid_t> LivePids();

 private:
  // Work a caller waits for, run on the supervisor thread.
  struct Request {
    std::function<absl::StatusOr<pid_t>()> work;
    absl::StatusOr<pid_t> result = absl::UnknownError("not run");
    absl::Notification done;
  };

  // One tracked process: a child or an adopted one. Descriptors are
  // touched only by the supervisor thread, except that SignalGroup uses
  // `pidfd` and `leaf`, and StderrTail `tail_file`, under mutex_ while the
  // process is in children_ and not `ended` (pidfd) / at all (tail_file,
  // closed under mutex_). `tail` and `ended` are guarded by Impl::mutex_.
  struct Child {
    pid_t pid = 0;
    int pidfd = -1;
    bool adopted = false;
    uint64_t start_time = 0;
    // Without a log_dir: read ends of the stdout/stderr pipes.
    int out_fd = -1;
    int err_fd = -1;
    // With a log_dir: stderr.log opened for reading; its tail starts at
    // stderr_offset.
    std::string log_dir;
    int tail_file = -1;
    uint64_t stderr_offset = 0;
    size_t tail_limit = 0;
    std::optional<ProcCgroup> leaf;
    ExitCallback on_exit;
    std::string tail;    // Pipe mode. Guarded by Impl::mutex_.
    bool ended = false;  // Guarded by Impl::mutex_.
  };

  void Run();
  void ServeRequests();
  // Queues `work` for the supervisor thread and waits for its result.
  absl::StatusOr<pid_t> RunOnThread(
      const char* what, std::function<absl::StatusOr<pid_t>()> work);
  // On the supervisor thread: spawns / adopts and starts watching.
  absl::StatusOr<pid_t> DoSpawn(const SpawnOptions& options,
                                ExitCallback on_exit);
  absl::StatusOr<pid_t> DoAdopt(const AdoptOptions& options,
                                ExitCallback on_exit);
  // Starts watching a set-up process (its pidfd and pipes) and tracks it.
  absl::Status Track(std::unique_ptr<Child> child);
  // Kills and synchronously reaps a child that could not be set up.
  void AbortChild(pid_t pid, int pidfd, const ProcCgroup* leaf);
  // Reads what is available on one pipe; returns false at EOF or error (the
  // fd is then closed and unwatched). With `drain`, reads until EAGAIN
  // (bounded by kDrainReads).
  bool ReadPipe(Child& child, bool is_stderr, bool drain);
  // The leader ended: kills the rest of its group and leaf, reaps a child,
  // drains, calls on_exit.
  void HandleExit(pid_t pid);
  // Sends `sig` to what `child` leads (see SignalGroup).
  absl::Status SignalLocked(Child& child, int sig)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  std::string TailLocked(const Child& child)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Stops watching everything (Release).
  void DropAll();
  // Reaps zombie children no supervisor tracks (subreaper).
  void ReapOrphans();
  void Unwatch(int fd);
  Child* FindChild(pid_t pid) ABSL_LOCKS_EXCLUDED(mutex_);

  const Options options_;
  bool subreaper_acquired_ = false;
  int epoll_fd_ = -1;
  int wakeup_fd_ = -1;
  std::thread thread_;
  std::thread::id thread_id_;
  std::vector<char> buffer_ = std::vector<char>(kReadChunk);
  // Supervisor thread only: untracked zombie children seen by the last
  // scan, and when it ran.
  std::set<pid_t> zombies_seen_;
  absl::Time last_reap_scan_ = absl::InfinitePast();

  absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  // Release was called; drop_pending_: the drop is still to be done (a
  // Release from a callback).
  bool released_ ABSL_GUARDED_BY(mutex_) = false;
  bool drop_pending_ ABSL_GUARDED_BY(mutex_) = false;
  std::deque<Request*> pending_ ABSL_GUARDED_BY(mutex_);
  std::map<pid_t, std::unique_ptr<Child>> children_ ABSL_GUARDED_BY(mutex_);
};

absl::Status ProcessSupervisor::Impl::Start() {
  if (options_.subreaper) {
    absl::Status acquired = AcquireSubreaper();
    if (!acquired.ok()) return acquired;
    subreaper_acquired_ = true;
  }
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
  if (subreaper_acquired_) ReleaseSubreaper();
}

absl::StatusOr<pid_t> ProcessSupervisor::Impl::RunOnThread(
    const char* what, std::function<absl::StatusOr<pid_t>()> work) {
  if (std::this_thread::get_id() == thread_id_) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " called from a supervisor callback"));
  }
  Request request;
  request.work = std::move(work);
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

absl::StatusOr<pid_t> ProcessSupervisor::Impl::Spawn(
    const SpawnOptions& options, ExitCallback on_exit) {
  return RunOnThread(
      "Spawn", [&]() mutable { return DoSpawn(options, std::move(on_exit)); });
}

absl::Status ProcessSupervisor::Impl::Adopt(const AdoptOptions& options,
                                            ExitCallback on_exit) {
  return RunOnThread(
             "Adopt",
             [&]() mutable { return DoAdopt(options, std::move(on_exit)); })
      .status();
}

void ProcessSupervisor::Impl::Release() {
  if (std::this_thread::get_id() == thread_id_) {
    // From a callback: the loop drops everything once it returns.
    absl::MutexLock lock(&mutex_);
    released_ = true;
    drop_pending_ = true;
    return;
  }
  absl::StatusOr<pid_t> done = RunOnThread("Release", [this] {
    {
      absl::MutexLock lock(&mutex_);
      released_ = true;
    }
    DropAll();
    return absl::StatusOr<pid_t>(0);
  });
  if (!done.ok()) {
    // Shutting down: the destructor runs; mark it released anyway.
    absl::MutexLock lock(&mutex_);
    released_ = true;
  }
}

std::optional<AdoptOptions> ProcessSupervisor::Impl::AdoptOptionsFor(
    pid_t pid) {
  absl::MutexLock lock(&mutex_);
  auto it = children_.find(pid);
  if (it == children_.end()) return std::nullopt;
  const Child& child = *it->second;
  AdoptOptions out;
  out.pid = pid;
  out.start_time = child.start_time;
  if (child.leaf.has_value()) out.cgroup_dir = child.leaf->dir();
  out.log_dir = child.log_dir;
  out.stderr_offset = child.stderr_offset;
  out.stderr_tail_bytes = child.tail_limit;
  return out;
}

absl::Status ProcessSupervisor::Impl::SignalLocked(Child& child, int sig) {
  const pid_t pid = child.pid;
  absl::Status result;
  // A child's pid (and so pgid) is not reused before it is reaped; an
  // adopted process's only while it is alive.
  if (!child.adopted || !PidfdExited(child.pidfd)) {
    if (kill(-pid, sig) != 0) {
      int err = errno;
      if (err == ESRCH) {
        // The leader moved to another group (or an adopted one just
        // ended): signal at least the leader.
        err = syscall(SYS_pidfd_send_signal, child.pidfd, sig, nullptr, 0) == 0
                  ? 0
                  : errno;
      }
      if (err != 0 && !(err == ESRCH && child.adopted)) {
        result = ErrnoStatus(err, absl::StrCat("kill(-", pid, ", ", sig, ")"));
      }
    }
  }
  if (child.leaf.has_value()) {
    absl::Status leaf =
        sig == SIGKILL ? child.leaf->StartKill() : child.leaf->Signal(sig, pid);
    if (!leaf.ok() && !absl::IsNotFound(leaf) && result.ok()) result = leaf;
  }
  return result;
}

absl::Status ProcessSupervisor::Impl::SignalGroup(pid_t pid, int sig) {
  // Holding the lock keeps the supervisor thread from reaping `pid` (and so
  // freeing its pid and pgid for reuse) while we signal it.
  absl::MutexLock lock(&mutex_);
  auto it = children_.find(pid);
  if (it == children_.end() || it->second->ended) {
    return absl::NotFoundError(absl::StrCat("no live child with pid ", pid));
  }
  return SignalLocked(*it->second, sig);
}

std::string ProcessSupervisor::Impl::TailLocked(const Child& child) {
  if (child.tail_file >= 0) {
    // Logical offsets (lib/process/proc_log.h): the tail may begin in
    // stderr.log.1 if hostd rotated the file since.
    return ReadLogTail(absl::StrCat(child.log_dir, "/stderr.log"),
                       child.stderr_offset, child.tail_limit, child.tail_file);
  }
  return child.tail;
}

std::string ProcessSupervisor::Impl::StderrTail(pid_t pid) {
  absl::MutexLock lock(&mutex_);
  auto it = children_.find(pid);
  if (it == children_.end()) return "";
  return TailLocked(*it->second);
}

std::vector<pid_t> ProcessSupervisor::Impl::LivePids() {
  absl::MutexLock lock(&mutex_);
  std::vector<pid_t> pids;
  for (const auto& [pid, child] : children_) {
    if (!child->ended) pids.push_back(pid);
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
  auto drop_if_released = [this] {
    bool drop;
    {
      absl::MutexLock lock(&mutex_);
      drop = std::exchange(drop_pending_, false);
    }
    if (drop) DropAll();
  };
  for (;;) {
    drop_if_released();
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
          if (child->ended) continue;
          absl::Status killed = SignalLocked(*child, SIGKILL);
          if (!killed.ok()) {
            LOG(WARNING) << "cannot kill pid " << pid << ": " << killed;
          }
        }
        killed_all = true;
      }
    }
    int timeout_ms = -1;
    if (options_.subreaper) {
      absl::Duration until_scan = last_reap_scan_ + kReapInterval - absl::Now();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          absl::ToInt64Milliseconds(until_scan) + 1, 0, 1000));
    }
    if (stopping && (timeout_ms < 0 || timeout_ms > 5000)) timeout_ms = 5000;
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      LOG(ERROR) << "epoll_wait failed: " << ErrnoText(errno);
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    if (n == 0 && stopping && !options_.subreaper) {
      LOG(WARNING) << "children still not reaped after SIGKILL; waiting";
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
      drop_if_released();
    }
    if (options_.subreaper && absl::Now() >= last_reap_scan_ + kReapInterval) {
      ReapOrphans();
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
      request->result = request->work();
    }
    request->done.Notify();
  }
}

absl::StatusOr<pid_t> ProcessSupervisor::Impl::DoSpawn(
    const SpawnOptions& options, ExitCallback on_exit) {
  {
    absl::MutexLock lock(&mutex_);
    if (released_) {
      return absl::FailedPreconditionError(
          "the supervisor was released (hostd is restarting)");
    }
  }
  const std::string& path = options.path;
  absl::StatusOr<int> max_dst_or = CheckOptions(options);
  if (!max_dst_or.ok()) return max_dst_or.status();
  const int max_dst = *max_dst_or;
  const bool in_leaf = !options.cgroup_parent.empty();
  if (in_leaf != !options.cgroup_name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cgroup_parent \"", options.cgroup_parent, "\" and cgroup_name \"",
        options.cgroup_name, "\" must be set together"));
  }
  std::vector<std::string> env_strings =
      Environment(options.env, options.unset_env);
  std::vector<std::string> argv_strings = {path};
  argv_strings.insert(argv_strings.end(), options.args.begin(),
                      options.args.end());

  auto child = std::make_unique<Child>();
  child->tail_limit = options.stderr_tail_bytes;
  child->on_exit = std::move(on_exit);

  // stdout/stderr: the log files themselves, or pipes whose read ends stay
  // here (non-blocking) and whose write ends go to the child.
  ScopedFd out_write, err_write, out_read, err_read, tail_file;
  if (!options.log_dir.empty()) {
    const std::optional<gid_t> group = options.log_group;
    const mode_t dir_mode = group.has_value() ? 0750 : 0700;
    const mode_t file_mode = group.has_value() ? 0640 : 0600;
    absl::Status made = MakeDirs(options.log_dir, dir_mode, group);
    if (!made.ok()) return made;
    if (options.stdout_fd < 0) {
      auto out = OpenLogFile(absl::StrCat(options.log_dir, "/stdout.log"),
                             file_mode, group);
      if (!out.ok()) return out.status();
      out_write.reset(*out);
    }
    const std::string err_path = absl::StrCat(options.log_dir, "/stderr.log");
    auto err = OpenLogFile(err_path, file_mode, group);
    if (!err.ok()) return err.status();
    err_write.reset(*err);
    // A logical offset: bytes rotated out of stderr.log count too.
    child->stderr_offset = LogSpanOf(err_path).end;
    tail_file.reset(
        open(err_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY));
    if (tail_file.get() < 0) {
      return ErrnoStatus(
          errno, absl::StrCat("cannot open \"", err_path, "\" to read"));
    }
    child->log_dir = options.log_dir;
  } else {
    int out_pipe[2], err_pipe[2];
    if (options.stdout_fd < 0) {
      if (pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
      out_read.reset(out_pipe[0]);
      out_write.reset(out_pipe[1]);
    }
    if (pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
    err_read.reset(err_pipe[0]);
    err_write.reset(err_pipe[1]);
    for (int fd : {out_read.get(), err_read.get()}) {
      if (fd < 0) continue;
      int flags = fcntl(fd, F_GETFL);
      if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        return ErrnoStatus(errno, "fcntl(O_NONBLOCK)");
      }
    }
  }

  if (options.stdout_fd >= 0) {
    // The caller's descriptor, as the child's stdout (a copy of ours).
    out_write.reset(fcntl(options.stdout_fd, F_DUPFD_CLOEXEC, 0));
    if (out_write.get() < 0) return ErrnoStatus(errno, "dup of stdout_fd");
  }

  pid_t pid = 0;
  int pidfd = -1;
  std::optional<ProcCgroup> leaf;
  if (in_leaf) {
    absl::StatusOr<ProcCgroup> made =
        ProcCgroup::Create(options.cgroup_parent, options.cgroup_name);
    if (absl::IsAlreadyExists(made.status())) {
      // A leftover of an earlier proc of that name: reused if empty.
      const std::string dir =
          absl::StrCat(options.cgroup_parent, "/", options.cgroup_name);
      made = ProcCgroup::Open(dir);
      if (made.ok()) {
        absl::StatusOr<bool> empty = made->Empty();
        if (!empty.ok()) {
          made = empty.status();
        } else if (!*empty) {
          made = absl::AlreadyExistsError(absl::StrCat(
              "cgroup leaf \"", dir, "\" exists and holds processes"));
        }
      }
    }
    if (!made.ok()) {
      return WithContext(
          made.status(),
          absl::StrCat("cannot make the cgroup leaf for \"", path, "\""));
    }
    leaf = std::move(*made);
  }
  auto remove_leaf = [&leaf] {
    if (!leaf.has_value()) return;
    absl::Status removed = leaf->Remove(kLeafRemoveTimeout);
    if (!removed.ok()) LOG(WARNING) << removed;
  };
  ScopedFd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (devnull.get() < 0) {
    remove_leaf();
    return ErrnoStatus(errno, "open(/dev/null)");
  }
  const int stdin_src =
      options.stdin_fd >= 0 ? options.stdin_fd : devnull.get();
  std::vector<std::pair<int, int>> child_fds = {
      {stdin_src, 0}, {out_write.get(), 1}, {err_write.get(), 2}};
  child_fds.insert(child_fds.end(), options.inherit_fds.begin(),
                   options.inherit_fds.end());
  bool started = false;
  if (options.from_template != nullptr) {
    // A fork of the pre-loaded program (lib/process/process_template.h):
    // our child all the same. A template that is gone means exec instead
    // (until it is started again: ProcessTemplate::kRestartEvery).
    TemplateFork fork;
    fork.argv = argv_strings;
    fork.envp = env_strings;
    fork.fds = child_fds;
    fork.cgroup_fd = leaf.has_value() ? leaf->dir_fd() : -1;
    absl::StatusOr<ForkedChild> forked = options.from_template->Fork(fork);
    if (forked.ok()) {
      pid = forked->pid;
      pidfd = forked->pidfd;
      started = true;
    } else if (!absl::IsUnavailable(forked.status())) {
      remove_leaf();
      return WithContext(forked.status(),
                         absl::StrCat("cannot fork \"", path, "\""));
    } else {
      LOG_EVERY_N(WARNING, 100)
          << forked.status() << "; starting \"" << path << "\" by exec";
    }
  }
  if (started) {
    // Forked from the template above.
  } else if (leaf.has_value()) {
    CgroupSpawnOptions spawn;
    spawn.path = path;
    spawn.argv = argv_strings;
    spawn.envp = env_strings;
    spawn.fds = child_fds;
    spawn.new_process_group = true;
    absl::StatusOr<CgroupChild> spawned = SpawnIntoCgroup(*leaf, spawn);
    if (!spawned.ok()) {
      remove_leaf();
      return WithContext(spawned.status(),
                         absl::StrCat("in cgroup leaf \"", leaf->dir(), "\""));
    }
    pid = spawned->pid;
    pidfd = spawned->pidfd;
  } else {
    std::vector<char*> envp = CStrings(env_strings);
    std::vector<char*> argv = CStrings(argv_strings);
    // Every source is first duplicated (close-on-exec) above every
    // destination, so no dup2 in the child clobbers a later source, and
    // each dup2 has src != dst and so clears close-on-exec on the
    // destination.
    std::vector<std::pair<int, int>> moves = {{out_write.get(), 1},
                                              {err_write.get(), 2}};
    if (options.stdin_fd >= 0) moves.emplace_back(options.stdin_fd, 0);
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
    if (options.stdin_fd < 0) {
      rc = posix_spawn_file_actions_addopen(&spawn.actions, 0, "/dev/null",
                                            O_RDONLY, 0);
      if (rc != 0) return ErrnoStatus(rc, "posix_spawn_file_actions_addopen");
    }
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
    rc = posix_spawn(&pid, path.c_str(), &spawn.actions, &spawn.attr,
                     argv.data(), envp.data());
    if (rc != 0) {
      return ErrnoStatus(rc, absl::StrCat("cannot execute \"", path, "\""));
    }
    // Until it is reaped, `pid` and its pgid cannot be reused.
    pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
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
  }
  // The child holds its own copies now.
  out_write.reset(-1);
  err_write.reset(-1);

  child->pid = pid;
  child->pidfd = pidfd;
  child->leaf = std::move(leaf);
  // Not reaped yet, so /proc/<pid> is this child (exec keeps it).
  absl::StatusOr<uint64_t> start_time = ProcessStartTime(pid);
  if (start_time.ok()) {
    child->start_time = *start_time;
  } else {
    LOG(WARNING) << "no start time for pid " << pid << ": "
                 << start_time.status();
  }
  child->out_fd = out_read.release();
  child->err_fd = err_read.release();
  child->tail_file = tail_file.release();
  absl::Status tracked = Track(std::move(child));
  if (!tracked.ok()) {
    return WithContext(tracked, absl::StrCat("cannot watch \"", path, "\""));
  }
  return pid;
}

absl::Status ProcessSupervisor::Impl::Track(std::unique_ptr<Child> child) {
  const pid_t pid = child->pid;
  struct Watch {
    int fd;
    WatchKind kind;
  };
  std::vector<int> added;
  for (Watch w : {Watch{child->pidfd, WatchKind::kPidfd},
                  Watch{child->out_fd, WatchKind::kStdout},
                  Watch{child->err_fd, WatchKind::kStderr}}) {
    if (w.fd < 0) continue;
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u64 = WatchKey(w.kind, pid);
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w.fd, &ev) != 0) {
      int err = errno;
      LOG(WARNING) << "epoll_ctl(ADD) for pid " << pid
                   << " failed: " << ErrnoText(err);
      for (int fd : added) Unwatch(fd);
      if (!child->adopted) {
        AbortChild(pid, child->pidfd,
                   child->leaf.has_value() ? &*child->leaf : nullptr);
      } else {
        CloseFd(child->pidfd);
      }
      CloseFd(child->out_fd);
      CloseFd(child->err_fd);
      CloseFd(child->tail_file);
      return ErrnoStatus(err, "epoll_ctl");
    }
    added.push_back(w.fd);
  }
  Register(pid);
  absl::MutexLock lock(&mutex_);
  children_[pid] = std::move(child);
  return absl::OkStatus();
}

absl::StatusOr<pid_t> ProcessSupervisor::Impl::DoAdopt(
    const AdoptOptions& options, ExitCallback on_exit) {
  const pid_t pid = options.pid;
  {
    absl::MutexLock lock(&mutex_);
    if (released_) {
      return absl::FailedPreconditionError(
          "the supervisor was released (hostd is restarting)");
    }
    if (children_.contains(pid)) {
      return absl::AlreadyExistsError(
          absl::StrCat("pid ", pid, " is tracked already"));
    }
  }
  absl::StatusOr<int> pidfd_or = OpenPidfdIfSame(pid, options.start_time);
  if (!pidfd_or.ok()) return pidfd_or.status();
  ScopedFd pidfd(*pidfd_or);
  auto child = std::make_unique<Child>();
  child->pid = pid;
  child->adopted = true;
  child->start_time = options.start_time;
  child->tail_limit = options.stderr_tail_bytes;
  child->on_exit = std::move(on_exit);
  if (!options.cgroup_dir.empty()) {
    absl::StatusOr<ProcCgroup> leaf = ProcCgroup::Open(options.cgroup_dir);
    if (!leaf.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("pid ", pid, " is not in cgroup \"", options.cgroup_dir,
                       "\": ", leaf.status().message()));
    }
    absl::StatusOr<std::vector<pid_t>> procs = leaf->Procs();
    if (!procs.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("pid ", pid, " is not in cgroup \"", options.cgroup_dir,
                       "\": ", procs.status().message()));
    }
    if (std::find(procs->begin(), procs->end(), pid) == procs->end()) {
      if (PidfdExited(pidfd.get())) {
        return absl::NotFoundError(absl::StrCat("pid ", pid, " is gone"));
      }
      absl::StatusOr<std::string> actual = CgroupOfPid(pid);
      return absl::FailedPreconditionError(
          absl::StrCat("pid ", pid, " is not in cgroup \"", options.cgroup_dir,
                       "\" (it is in ",
                       actual.ok() ? absl::StrCat("\"", *actual, "\"")
                                   : actual.status().ToString(),
                       ")"));
    }
    child->leaf = std::move(*leaf);
  }
  if (!options.log_dir.empty()) {
    const std::string err_path = absl::StrCat(options.log_dir, "/stderr.log");
    int fd =
        open(err_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
      LOG(WARNING) << "adopting pid " << pid << " without its stderr tail: "
                   << "cannot open \"" << err_path
                   << "\": " << ErrnoText(errno);
    }
    child->tail_file = fd;
    child->log_dir = options.log_dir;
    child->stderr_offset = options.stderr_offset;
  }
  child->pidfd = pidfd.release();
  absl::Status tracked = Track(std::move(child));
  if (!tracked.ok()) {
    return WithContext(tracked, absl::StrCat("cannot watch pid ", pid));
  }
  return pid;
}

void ProcessSupervisor::Impl::AbortChild(pid_t pid, int pidfd,
                                         const ProcCgroup* leaf) {
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
  if (leaf != nullptr) {
    absl::Status killed = leaf->Kill(kLeafEmptyTimeout);
    if (!killed.ok()) LOG(WARNING) << killed;
    absl::Status removed = leaf->Remove(kLeafRemoveTimeout);
    if (!removed.ok()) LOG(WARNING) << removed;
  }
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
    if (it == children_.end() || it->second->ended) return;
    child = it->second.get();
    // Guard against a stale event for an earlier process with the same pid:
    // act only if this one's pidfd says it exited.
    if (!PidfdExited(child->pidfd)) return;
    // A child is a zombie now, so its pgid cannot have been reused: kill
    // what is left of the group before reaping frees the id. Holding the
    // lock orders this against SignalGroup.
    if (!child->adopted && kill(-pid, SIGKILL) != 0 && errno != ESRCH) {
      LOG(WARNING) << "kill(-" << pid
                   << ", SIGKILL) failed: " << ErrnoText(errno);
    }
    child->ended = true;
  }
  ExitInfo info;
  info.pid = pid;
  if (child->adopted) {
    info.status_unknown = true;
  } else {
    siginfo_t si = {};
    int rc;
    while ((rc = waitid(static_cast<idtype_t>(P_PIDFD), child->pidfd, &si,
                        WEXITED)) != 0 &&
           errno == EINTR) {
    }
    if (rc != 0) {
      // Someone else reaped it (e.g. SIGCHLD ignored); the status is lost.
      LOG(WARNING) << "waitid for pid " << pid
                   << " failed: " << ErrnoText(errno);
      info.exit_code = -1;
    } else if (si.si_code == CLD_EXITED) {
      info.exit_code = si.si_status;
    } else {
      info.term_signal = si.si_status;
    }
  }
  Unwatch(child->pidfd);
  CloseFd(child->pidfd);
  if (child->leaf.has_value()) {
    // Nothing of the proc may outlive its on_exit: escapees included.
    const ProcCgroup& leaf = *child->leaf;
    absl::Status killed = leaf.Kill(kLeafEmptyTimeout);
    if (!killed.ok() && !absl::IsNotFound(killed)) {
      LOG(WARNING) << "the leaf of pid " << pid << ": " << killed;
    }
    absl::StatusOr<CgroupMemoryEvents> events = leaf.MemoryEvents();
    if (events.ok()) info.oom_kills = events->oom_kill;
    absl::Status removed = leaf.Remove(kLeafRemoveTimeout);
    if (!removed.ok()) {
      LOG(WARNING) << "the leaf of pid " << pid << ": " << removed;
    }
  }
  // Drain what the pipes hold; a writer that escaped the group kill may
  // keep them open, so stop at EAGAIN instead of waiting for EOF.
  ReadPipe(*child, /*is_stderr=*/false, /*drain=*/true);
  ReadPipe(*child, /*is_stderr=*/true, /*drain=*/true);
  for (int* fd : {&child->out_fd, &child->err_fd}) {
    Unwatch(*fd);
    CloseFd(*fd);
  }
  {
    absl::MutexLock lock(&mutex_);
    info.stderr_tail = TailLocked(*child);
  }
  if (child->on_exit) child->on_exit(info);
  std::unique_ptr<Child> done;
  {
    absl::MutexLock lock(&mutex_);
    auto it = children_.find(pid);
    if (it == children_.end()) return;
    done = std::move(it->second);
    children_.erase(it);
    CloseFd(done->tail_file);
  }
  Unregister(pid);
}

void ProcessSupervisor::Impl::DropAll() {
  std::map<pid_t, std::unique_ptr<Child>> dropped;
  {
    absl::MutexLock lock(&mutex_);
    dropped.swap(children_);
  }
  for (auto& [pid, child] : dropped) {
    for (int* fd : {&child->pidfd, &child->out_fd, &child->err_fd}) {
      Unwatch(*fd);
      CloseFd(*fd);
    }
    CloseFd(child->tail_file);
    Unregister(pid);
  }
  if (!dropped.empty()) {
    LOG(INFO) << "released " << dropped.size()
              << " processes without signalling them";
  }
}

void ProcessSupervisor::Impl::ReapOrphans() {
  last_reap_scan_ = absl::Now();
  std::set<pid_t> zombies;
  for (pid_t pid : OwnChildren()) {
    if (TrackedByAnySupervisor(pid)) continue;
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
    if (!stat.ok() || stat->state != 'Z') continue;
    // Seen as a zombie by the last scan too: whoever else in this process
    // might wait for it (code that forked it) had a second to do so.
    if (!zombies_seen_.contains(pid)) {
      zombies.insert(pid);
      continue;
    }
    int status = 0;
    pid_t reaped;
    while ((reaped = waitpid(pid, &status, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (reaped == pid) {
      VLOG(1) << "reaped orphaned descendant " << pid << " (status " << status
              << ")";
    }
  }
  zombies_seen_ = std::move(zombies);
}

absl::StatusOr<std::unique_ptr<ProcessSupervisor>> ProcessSupervisor::Create() {
  return Create(Options());
}

absl::StatusOr<std::unique_ptr<ProcessSupervisor>> ProcessSupervisor::Create(
    const Options& options) {
  auto impl = std::make_unique<Impl>(options);
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

absl::Status ProcessSupervisor::Adopt(const AdoptOptions& options,
                                      ExitCallback on_exit) {
  return impl_->Adopt(options, std::move(on_exit));
}

std::optional<AdoptOptions> ProcessSupervisor::AdoptOptionsFor(pid_t pid) {
  return impl_->AdoptOptionsFor(pid);
}

void ProcessSupervisor::Release() { impl_->Release(); }

absl::Status ProcessSupervisor::SignalGroup(pid_t pid, int sig) {
  return impl_->SignalGroup(pid, sig);
}

std::string ProcessSupervisor::StderrTail(pid_t pid) {
  return impl_->StderrTail(pid);
}

std::vector<pid_t> ProcessSupervisor::LivePids() { return impl_->LivePids(); }

}  // namespace mesh
