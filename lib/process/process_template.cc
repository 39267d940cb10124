#include "lib/process/process_template.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/process/errno_status.h"

extern char** environ;

namespace mesh {
namespace {

// The exchange on the control socket (both ends are one build: no
// versioning beyond the magic).
//   request: Header, then `length` bytes: u32 argc, u32 envc, u32 nfds,
//            i32 cgroup (1: the last descriptor is the cgroup's), nfds x
//            i32 destination, then argc + envc strings as u32 length +
//            bytes; the descriptors ride SCM_RIGHTS on the header.
//   reply:   Reply, with the child's pidfd on SCM_RIGHTS when pid > 0.
constexpr uint32_t kRequestMagic = 0x464d4854;  // "THMF"
constexpr uint32_t kReplyMagic = 0x524d4854;    // "THMR"
constexpr uint32_t kMaxRequestBytes = 64u << 20;
constexpr size_t kMaxFds = 32;

struct Header {
  uint32_t magic;
  uint32_t length;
};

// Where a fork failed.
enum Step : int32_t {
  kOk = 0,
  kBadRequest = 1,
  kClone = 2,
  kSetpgid = 3,
  kDup2 = 4,
  kDiedInSetup = 5,
};

struct Reply {
  uint32_t magic;
  int32_t pid;
  int32_t step;
  int32_t err;
};

struct ChildReport {
  int32_t step;
  int32_t err;
};

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, char* data, size_t size) {
  while (size > 0) {
    ssize_t n = read(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Sends `data` with `fds` attached to its first byte.
bool SendWithFds(int socket, const std::string& data,
                 const std::vector<int>& fds) {
  size_t first = std::min<size_t>(data.size(), 4096);
  struct iovec iov = {const_cast<char*>(data.data()), first};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(
      CMSG_SPACE(sizeof(int) * std::max<size_t>(1, fds.size())));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent;
  do {
    sent = sendmsg(socket, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent <= 0) return false;
  return WriteAll(socket, data.data() + sent, data.size() - sent);
}

// Reads exactly `size` bytes into `data`, the first of them with recvmsg,
// collecting descriptors (close-on-exec) into `fds`. False on EOF/error.
bool RecvWithFds(int socket, char* data, size_t size, std::vector<int>* fds) {
  struct iovec iov = {data, size};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * (kMaxFds + 1))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t got;
  do {
    got = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  if (got <= 0) return false;
  for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr;
       cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
      continue;
    }
    size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* received = reinterpret_cast<const int*>(CMSG_DATA(cmsg));
    for (size_t i = 0; i < n; ++i) fds->push_back(received[i]);
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    for (int fd : *fds) close(fd);
    fds->clear();
    return false;
  }
  return ReadAll(socket, data + got, size - static_cast<size_t>(got));
}

void PutU32(std::string& out, uint32_t v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// A bounds-checked reader of the request body.
class Reader {
 public:
  Reader(const char* data, size_t size) : data_(data), size_(size) {}
  bool U32(uint32_t* v) {
    if (size_ - pos_ < sizeof(*v)) return false;
    std::memcpy(v, data_ + pos_, sizeof(*v));
    pos_ += sizeof(*v);
    return true;
  }
  bool String(std::string* s) {
    uint32_t n;
    if (!U32(&n) || size_ - pos_ < n) return false;
    s->assign(data_ + pos_, n);
    pos_ += n;
    return s->find('\0') == std::string::npos;
  }
  bool AtEnd() const { return pos_ == size_; }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

struct ParsedRequest {
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  std::vector<int> dsts;
  bool cgroup = false;
};

bool Parse(const std::string& body, size_t num_fds, ParsedRequest* out) {
  Reader reader(body.data(), body.size());
  uint32_t argc, envc, nfds, cgroup;
  if (!reader.U32(&argc) || !reader.U32(&envc) || !reader.U32(&nfds) ||
      !reader.U32(&cgroup) || argc == 0 || nfds > kMaxFds || cgroup > 1 ||
      nfds + cgroup != num_fds) {
    return false;
  }
  std::set<int> seen;
  for (uint32_t i = 0; i < nfds; ++i) {
    uint32_t dst;
    if (!reader.U32(&dst) || dst > 1024 || !seen.insert(dst).second) {
      return false;
    }
    out->dsts.push_back(static_cast<int>(dst));
  }
  out->argv.resize(argc);
  for (std::string& s : out->argv) {
    if (!reader.String(&s)) return false;
  }
  out->envp.resize(envc);
  for (std::string& s : out->envp) {
    if (!reader.String(&s)) return false;
  }
  out->cgroup = cgroup == 1;
  return reader.AtEnd();
}

[[noreturn]] void ChildFail(int report_fd, Step step, int err) {
  ChildReport report = {step, err};
  while (write(report_fd, &report, sizeof(report)) < 0 && errno == EINTR) {
  }
  _exit(127);
}

// In the forked child (a copy of the single-threaded template; signals
// blocked): the setup the header promises, then the program.
[[noreturn]] void RunChild(
    const ParsedRequest& request, const std::vector<int>& sources,
    int report_fd,
    const std::function<int(int argc, char** argv)>& child_main) {
  if (setpgid(0, 0) != 0) ChildFail(report_fd, kSetpgid, errno);
  int max_dst = 2;
  for (int dst : request.dsts) max_dst = std::max(max_dst, dst);
  // Every source above every destination first (report_fd already is), so
  // no dup2 clobbers a later source.
  std::vector<int> moved;
  for (int src : sources) {
    int tmp = fcntl(src, F_DUPFD_CLOEXEC, std::max(max_dst + 1, report_fd + 1));
    if (tmp < 0) ChildFail(report_fd, kDup2, errno);
    moved.push_back(tmp);
  }
  for (size_t i = 0; i < request.dsts.size(); ++i) {
    if (dup2(moved[i], request.dsts[i]) < 0) ChildFail(report_fd, kDup2, errno);
  }
  std::set<int> keep(request.dsts.begin(), request.dsts.end());
  for (int fd = 0; fd <= max_dst; ++fd) {
    if (!keep.contains(fd)) close(fd);
  }
  // Everything above: the control socket, what was received, the copies.
  if (report_fd > max_dst + 1) {
    syscall(SYS_close_range, static_cast<unsigned>(max_dst + 1),
            static_cast<unsigned>(report_fd - 1), 0);
  }
  syscall(SYS_close_range, static_cast<unsigned>(report_fd + 1), ~0U, 0);

  // The environment asked for (the strings live as long as the process:
  // this frame never returns).
  static std::vector<char*> env;
  env.clear();
  for (const std::string& e : request.envp)
    env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  environ = env.data();

  static std::vector<char*> argv;
  argv.clear();
  for (const std::string& a : request.argv)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string& arg0 = request.argv[0];
  const size_t slash = arg0.rfind('/');
  const std::string comm =
      (slash == std::string::npos ? arg0 : arg0.substr(slash + 1))
          .substr(0, 15);
  prctl(PR_SET_NAME, comm.c_str(), 0, 0, 0);
  prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);

  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &dfl, nullptr);
  }
  ChildReport ok = {kOk, 0};
  while (write(report_fd, &ok, sizeof(ok)) < 0 && errno == EINTR) {
  }
  close(report_fd);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  exit(child_main(static_cast<int>(request.argv.size()), argv.data()));
}

// Forks one child for `request`; fills `reply` and returns the pidfd to
// pass back (or -1).
int ForkOne(const ParsedRequest& request, const std::vector<int>& fds,
            const std::function<int(int argc, char** argv)>& child_main,
            Reply* reply) {
  std::vector<int> sources(fds.begin(), fds.begin() + request.dsts.size());
  int report_pipe[2];
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    *reply = {kReplyMagic, 0, kClone, errno};
    return -1;
  }
  int max_dst = 2;
  for (int dst : request.dsts) max_dst = std::max(max_dst, dst);
  int report_write = fcntl(report_pipe[1], F_DUPFD_CLOEXEC, max_dst + 1);
  int dup_err = errno;
  close(report_pipe[1]);
  if (report_write < 0) {
    close(report_pipe[0]);
    *reply = {kReplyMagic, 0, kClone, dup_err};
    return -1;
  }

  int pidfd = -1;
  struct clone_args args;
  std::memset(&args, 0, sizeof(args));
  args.flags = CLONE_PARENT | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  if (request.cgroup) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = static_cast<uint64_t>(fds.back());
  }
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &old);
  long rc = syscall(SYS_clone3, &args, sizeof(args));
  if (rc == 0) RunChild(request, sources, report_write, child_main);
  const int clone_err = errno;
  sigprocmask(SIG_SETMASK, &old, nullptr);
  close(report_write);
  if (rc < 0) {
    close(report_pipe[0]);
    *reply = {kReplyMagic, 0, kClone, clone_err};
    return -1;
  }
  ChildReport report = {kDiedInSetup, 0};
  ChildReport got;
  if (ReadAll(report_pipe[0], reinterpret_cast<char*>(&got), sizeof(got))) {
    report = got;
  }
  close(report_pipe[0]);
  *reply = {kReplyMagic, static_cast<int32_t>(rc), report.step, report.err};
  return pidfd;
}

std::string StepText(int32_t step) {
  switch (step) {
    case kBadRequest:
      return "the template refused the request";
    case kClone:
      return "clone3 in the template";
    case kSetpgid:
      return "setpgid in the forked child";
    case kDup2:
      return "placing descriptors in the forked child";
    case kDiedInSetup:
      return "the forked child died during its setup";
    default:
      return absl::StrCat("step ", step);
  }
}

}  // namespace

bool NeedsFreshExec(const std::map<std::string, std::string>& env) {
  for (const auto& [name, value] : env) {
    if (absl::StartsWith(name, "LD_") || absl::StartsWith(name, "MALLOC_") ||
        absl::StartsWith(name, "GLOG_") || name == "GLIBC_TUNABLES" ||
        absl::EndsWith(name, "SAN_OPTIONS")) {
      return true;
    }
  }
  return false;
}

int TemplateFdFromEnv() {
  const char* value = getenv(kTemplateFdEnv);
  if (value == nullptr) return -1;
  int fd = -1;
  const bool valid =
      absl::SimpleAtoi(value, &fd) && fd >= 3 && fcntl(fd, F_GETFD) >= 0;
  unsetenv(kTemplateFdEnv);
  if (!valid) return -2;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

int ServeForks(int control_fd,
               const std::function<int(int argc, char** argv)>& child_main) {
  // Procs of the same user cannot ptrace the template (and so every proc
  // it will fork); each child is dumpable again, as an exec'd one is.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  for (;;) {
    Header header;
    std::vector<int> fds;
    if (!RecvWithFds(control_fd, reinterpret_cast<char*>(&header),
                     sizeof(header), &fds)) {
      for (int fd : fds) close(fd);
      return 0;  // The parent closed the socket (or went away).
    }
    absl::Cleanup close_fds = [&fds] {
      for (int fd : fds) close(fd);
    };
    if (header.magic != kRequestMagic || header.length > kMaxRequestBytes) {
      fprintf(stderr, "process template: malformed request; exiting\n");
      return 1;
    }
    std::string body(header.length, '\0');
    if (!ReadAll(control_fd, body.data(), body.size())) return 0;
    ParsedRequest request;
    Reply reply = {kReplyMagic, 0, kBadRequest, EINVAL};
    int pidfd = -1;
    if (Parse(body, fds.size(), &request)) {
      pidfd = ForkOne(request, fds, child_main, &reply);
    }
    std::string out(reinterpret_cast<const char*>(&reply), sizeof(reply));
    std::vector<int> pass;
    if (pidfd >= 0) pass.push_back(pidfd);
    const bool sent = SendWithFds(control_fd, out, pass);
    if (pidfd >= 0) close(pidfd);
    if (!sent) return 0;
  }
}

absl::StatusOr<std::unique_ptr<ProcessTemplate>> ProcessTemplate::Start(
    const std::string& path, const std::vector<std::string>& unset_env) {
  auto tmpl =
      std::unique_ptr<ProcessTemplate>(new ProcessTemplate(path, unset_env));
  absl::MutexLock lock(&tmpl->mu_);
  if (absl::Status spawned = tmpl->SpawnLocked(); !spawned.ok()) {
    return spawned;
  }
  return tmpl;
}

absl::Status ProcessTemplate::SpawnLocked() {
  const std::string& path = path_;
  const std::vector<std::string>& unset_env = unset_env_;
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("template program \"", path, "\" is not absolute"));
  }
  if (access(path.c_str(), X_OK) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot execute \"", path, "\""));
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus(errno, "socketpair");
  }
  absl::Cleanup close_child_end = [&sv] { close(sv[1]); };
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    if (name == kTemplateFdEnv || name == "LD_BIND_NOW" ||
        std::find(unset_env.begin(), unset_env.end(), name) !=
            unset_env.end()) {
      continue;
    }
    env_strings.push_back(std::move(entry));
  }
  env_strings.push_back(absl::StrCat(kTemplateFdEnv, "=3"));
  // Every symbol bound once, at the template's load: no child resolves
  // one again (a child's environment is its own, without this).
  env_strings.push_back("LD_BIND_NOW=1");
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string arg0 = path;
  char* argv[] = {arg0.data(), nullptr};

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  absl::Cleanup destroy = [&] {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  };
  sigset_t empty_mask, all_signals;
  sigemptyset(&empty_mask);
  sigfillset(&all_signals);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setsigmask(&attr, &empty_mask);
  posix_spawnattr_setsigdefault(&attr, &all_signals);
  posix_spawn_file_actions_adddup2(&actions, sv[1], 3);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&actions, 4);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, path.c_str(), &actions, &attr, argv, envp.data());
  if (rc != 0) {
    close(sv[0]);
    return ErrnoStatus(rc, absl::StrCat("cannot execute \"", path, "\""));
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    const int err = errno;
    kill(pid, SIGKILL);
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    close(sv[0]);
    return ErrnoStatus(err, "pidfd_open for the template");
  }
  pid_ = pid;
  pidfd_ = pidfd;
  control_fd_ = sv[0];
  started_at_ = absl::Now();
  return absl::OkStatus();
}

ProcessTemplate::ProcessTemplate(std::string path,
                                 std::vector<std::string> unset_env)
    : path_(std::move(path)), unset_env_(std::move(unset_env)) {}

absl::Status ProcessTemplate::EnsureRunningLocked() {
  if (pidfd_ >= 0) {
    // Readable once it has ended.
    struct pollfd p = {pidfd_, POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return absl::OkStatus();
    KillLocked();  // reaps it
  }
  if (absl::Now() - started_at_ < kRestartEvery) {
    return absl::UnavailableError(absl::StrCat(
        "the template of \"", path_, "\" is gone (restarted at most every ",
        absl::FormatDuration(kRestartEvery), ")"));
  }
  absl::Status spawned = SpawnLocked();
  if (!spawned.ok()) {
    started_at_ = absl::Now();  // the next try waits too
    return absl::UnavailableError(absl::StrCat(
        "the template is gone and cannot be restarted: ", spawned.message()));
  }
  ++restarts_;
  return absl::OkStatus();
}

int ProcessTemplate::restarts() const {
  absl::MutexLock lock(&mu_);
  return restarts_;
}

ProcessTemplate::~ProcessTemplate() {
  absl::MutexLock lock(&mu_);
  if (control_fd_ >= 0) {
    close(control_fd_);
    control_fd_ = -1;
    // It exits at EOF; a stuck one is killed.
    struct pollfd p = {pidfd_, POLLIN, 0};
    if (poll(&p, 1, 1000) != 1) {
      syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0);
    }
  }
  KillLocked();
}

pid_t ProcessTemplate::pid() const {
  absl::MutexLock lock(&mu_);
  return pid_;
}

void ProcessTemplate::KillLocked() {
  if (control_fd_ >= 0) {
    close(control_fd_);
    control_fd_ = -1;
  }
  if (pidfd_ >= 0) {
    syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0);
    siginfo_t info;
    // ECHILD if a subreaper scan of this process reaped it first.
    while (waitid(P_PIDFD, static_cast<id_t>(pidfd_), &info, WEXITED) != 0 &&
           errno == EINTR) {
    }
    close(pidfd_);
    pidfd_ = -1;
  }
  pid_ = 0;
}

absl::StatusOr<ForkedChild> ProcessTemplate::Fork(const TemplateFork& request,
                                                  absl::Duration timeout) {
  if (request.argv.empty()) {
    return absl::InvalidArgumentError("a forked child needs an argv[0]");
  }
  if (request.fds.size() > kMaxFds) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxFds, " descriptors per child"));
  }
  std::string body;
  PutU32(body, static_cast<uint32_t>(request.argv.size()));
  PutU32(body, static_cast<uint32_t>(request.envp.size()));
  PutU32(body, static_cast<uint32_t>(request.fds.size()));
  PutU32(body, request.cgroup_fd >= 0 ? 1 : 0);
  std::vector<int> fds;
  for (const auto& [src, dst] : request.fds) {
    PutU32(body, static_cast<uint32_t>(dst));
    fds.push_back(src);
  }
  if (request.cgroup_fd >= 0) fds.push_back(request.cgroup_fd);
  for (const auto* strings : {&request.argv, &request.envp}) {
    for (const std::string& s : *strings) {
      if (s.find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(
            "argument or environment contains NUL");
      }
      PutU32(body, static_cast<uint32_t>(s.size()));
      body += s;
    }
  }
  if (body.size() > kMaxRequestBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "arguments and environment exceed ", kMaxRequestBytes, " bytes"));
  }
  std::string message;
  PutU32(message, kRequestMagic);
  PutU32(message, static_cast<uint32_t>(body.size()));
  message += body;

  absl::MutexLock lock(&mu_);
  if (absl::Status running = EnsureRunningLocked(); !running.ok()) {
    return running;
  }
  // Called with mu_ held (the analysis cannot see into a lambda).
  auto broken = [&](const std::string& why) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    KillLocked();
    return absl::UnavailableError(
        absl::StrCat("the template of \"", path_, "\" ", why, "; killed it"));
  };
  if (!SendWithFds(control_fd_, message, fds)) {
    return broken("does not take requests");
  }
  struct pollfd p = {control_fd_, POLLIN, 0};
  int ready;
  do {
    ready = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  } while (ready < 0 && errno == EINTR);
  if (ready != 1) {
    return broken(
        absl::StrCat("did not answer within ", absl::FormatDuration(timeout)));
  }
  Reply reply;
  std::vector<int> got;
  if (!RecvWithFds(control_fd_, reinterpret_cast<char*>(&reply), sizeof(reply),
                   &got) ||
      reply.magic != kReplyMagic || got.size() > 1 ||
      (reply.pid > 0) != (got.size() == 1)) {
    for (int fd : got) close(fd);
    return broken("answered out of turn or ended");
  }
  const int pidfd = got.empty() ? -1 : got[0];
  if (reply.step == kOk) return ForkedChild{reply.pid, pidfd};
  if (pidfd >= 0) {
    // It is our child (CLONE_PARENT): reap it.
    siginfo_t info;
    while (waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED) != 0 &&
           errno == EINTR) {
    }
    close(pidfd);
  }
  return ErrnoStatus(reply.err, StepText(reply.step));
}

}  // namespace mesh
