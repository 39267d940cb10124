#include "tests/testing/restartable_host.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "lib/process/cgroup.h"
#include "lib/process/process_identity.h"
#include "lib/testing/sockets.h"
#include "tests/testing/test_host.h"

namespace mesh::testing {

struct RestartableHost::Run {
  pid_t pid = 0;
  std::string log_dir;
  absl::Notification exited;
  ExitInfo info;  // Written before `exited` is notified.
};

namespace {

int PidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

// A random lowercase hex string of `n` digits.
std::string RandomHex(int n) {
  std::random_device random;
  std::string out;
  for (int i = 0; i < n; ++i) out.push_back("0123456789abcdef"[random() % 16]);
  return out;
}

bool WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok =
      write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  fchmod(fd, mode);
  return close(fd) == 0 && ok;
}

}  // namespace

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool WaitGone(pid_t pid, absl::Duration timeout) {
  int fd = PidfdOpen(pid);
  if (fd < 0) return errno == ESRCH;
  pollfd poll_fd{fd, POLLIN, 0};
  int ready =
      poll(&poll_fd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  close(fd);
  return ready == 1;
}

RestartableHost::RestartableHost(Options options)
    : options_(std::move(options)) {}

std::unique_ptr<RestartableHost> RestartableHost::Create(Options options) {
  // Orphaned procs come to the test (which reaps), not to pid 1 (which here
  // does not).
  REQUIRE(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0);
  std::unique_ptr<RestartableHost> host(
      new RestartableHost(std::move(options)));
  host->state_dir_ = host->dir_.path() + "/state";
  host->runtime_dir_ = host->dir_.path() + "/run";
  host->address_ = ClosedLoopbackAddress();
  auto hostds = ProcessSupervisor::Create();
  REQUIRE(hostds.ok());
  host->hostds_ = *std::move(hostds);
  if (host->options_.cgroup) {
    absl::StatusOr<CgroupRoot> root = CgroupRoot::Find();
    if (root.ok() &&
        access((root->own_dir() + "/cgroup.procs").c_str(), W_OK) == 0) {
      host->cgroup_dir_ = absl::StrCat(root->own_dir(), "/hostmesh-test-",
                                       getpid(), "-", RandomHex(8));
    }
  }
  if (host->options_.tokens_file) {
    host->tokens_file_ = host->dir_.path() + "/tokens";
    host->config_file_ = host->dir_.path() + "/hostd.conf";
    host->credentials_.token = "t" + RandomHex(40);
    REQUIRE(WriteFile(host->tokens_file_,
                      "test-admin admin " + host->credentials_.token + "\n",
                      0600));
    REQUIRE(WriteFile(host->config_file_,
                      "tokens-file = " + host->tokens_file_ + "\n", 0600));
  }
  return host;
}

RestartableHost::~RestartableHost() { Cleanup(); }

bool RestartableHost::running() const {
  return run_ != nullptr && !run_->exited.HasBeenNotified();
}

std::optional<ExitInfo> RestartableHost::exit() const {
  if (run_ == nullptr || !run_->exited.HasBeenNotified()) return std::nullopt;
  return run_->info;
}

std::string RestartableHost::LogDir(const std::string& name) const {
  return absl::StrCat(state_dir_, "/procs/", name);
}

std::string RestartableHost::HostdLog() const {
  if (run_ == nullptr) return "";
  std::string text = ReadText(run_->log_dir + "/stderr.log");
  // The end says most; keep INFO messages readable.
  constexpr size_t kMax = 16384;
  if (text.size() > kMax) text = "..." + text.substr(text.size() - kMax);
  return text;
}

std::shared_ptr<grpc::Channel> RestartableHost::ChannelWith(
    const ClientCredentials& credentials) const {
  grpc::ChannelArguments args;
  // A restarted hostd is reached at once, not after a long backoff. (Not
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC uses it as the connect timeout,
  // and 100 ms to a SETTINGS frame fails calls to a busy hostd.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return NewAuthedChannel(address_, credentials, args);
}

std::shared_ptr<grpc::Channel> RestartableHost::channel() const {
  absl::MutexLock lock(&mu_);
  return channel_;
}

v1::Host::Stub& RestartableHost::stub() const {
  absl::MutexLock lock(&mu_);
  return *stub_;
}

v1::Proc::Stub& RestartableHost::procs() const {
  absl::MutexLock lock(&mu_);
  return *procs_;
}

absl::Status RestartableHost::Start(const std::vector<std::string>& once_args,
                                    absl::Duration timeout) {
  if (running()) {
    return absl::FailedPreconditionError(
        absl::StrCat("hostd ", pid_, " is still running"));
  }
  for (int attempt = 0;; ++attempt) {
    ++starts_;
    // The token file of an earlier start must not be mistaken for this
    // one's.
    const std::string token_path = runtime_dir_ + "/admin.token";
    if (!options_.tokens_file) unlink(token_path.c_str());
    auto run = std::make_shared<Run>();
    run->log_dir = absl::StrCat(dir_.path(), "/hostd.", starts_);
    SpawnOptions spawn;
    spawn.path = BinaryPath("hostd");
    spawn.log_dir = run->log_dir;
    spawn.args = {
        "--listen=" + address_,
        "--state-dir=" + state_dir_,
        "--runtime-dir=" + runtime_dir_,
        "--procd=" + BinaryPath("procd"),
        "--allow-any-command",
        "--orphan-timeout=" + absl::FormatDuration(options_.orphan_timeout),
        "--registration-timeout=" +
            absl::FormatDuration(options_.registration_timeout),
        "--stop-grace=" + absl::FormatDuration(options_.stop_grace),
        "--owner-lease=" + absl::FormatDuration(options_.owner_lease),
        "--cgroup=" + (cgroup_dir_.empty() ? std::string("none") : cgroup_dir_),
    };
    if (!config_file_.empty()) spawn.args.push_back("--config=" + config_file_);
    spawn.args.insert(spawn.args.end(), options_.args.begin(),
                      options_.args.end());
    spawn.args.insert(spawn.args.end(), once_args.begin(), once_args.end());
    spawn.env = options_.env;
    if (options_.watchdog_pid) {
      spawn.args.insert(
          spawn.args.begin(),
          {"-c", "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"", spawn.path});
      spawn.path = "/bin/sh";
    }
    absl::StatusOr<pid_t> pid = hostds_->Spawn(spawn, [run](const ExitInfo& e) {
      run->info = e;
      run->exited.Notify();
    });
    if (!pid.ok()) return pid.status();
    run->pid = *pid;
    run_ = run;
    pid_ = *pid;

    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      if (run->exited.WaitForNotificationWithTimeout(absl::Milliseconds(20))) {
        std::string log = HostdLog();
        // Only the first start may find the port taken (by anyone): pick
        // another one then. Later starts must come back where they were.
        if (!served_ && attempt < 3 &&
            absl::StrContains(log, "cannot listen")) {
          address_ = ClosedLoopbackAddress();
          break;
        }
        return absl::AbortedError(absl::StrCat(
            "hostd ", run->pid, " exited before serving (",
            run->info.exit_code.has_value()
                ? absl::StrCat("exit code ", *run->info.exit_code)
                : absl::StrCat("signal ", run->info.term_signal.value_or(0)),
            "): ", log));
      }
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("hostd ", run->pid, " did not serve within ",
                         absl::FormatDuration(timeout), ": ", HostdLog()));
      }
      ClientCredentials credentials = credentials_;
      if (!options_.tokens_file) {
        credentials.token =
            std::string(absl::StripAsciiWhitespace(ReadText(token_path)));
        if (credentials.token.empty()) continue;
      }
      std::shared_ptr<grpc::Channel> channel = ChannelWith(credentials);
      auto stub = v1::Host::NewStub(channel);
      v1::HostInfo info;
      grpc::Status status = stub->GetHostInfo(Context(absl::Seconds(2)).get(),
                                              v1::GetHostInfoRequest(), &info);
      if (!status.ok() || info.pid() != run->pid) continue;
      credentials_ = credentials;
      served_ = true;
      absl::MutexLock lock(&mu_);
      channel_ = channel;
      stub_ = std::move(stub);
      procs_ = v1::Proc::NewStub(channel);
      return absl::OkStatus();
    }
  }
}

absl::Status RestartableHost::Kill9() {
  if (!running()) {
    return absl::FailedPreconditionError("no hostd is running");
  }
  // Not reaped until the supervisor sees it exit: the pid is still hostd's.
  if (kill(pid_, SIGKILL) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("kill -9 ", pid_));
  }
  return WaitExit().status();
}

absl::Status RestartableHost::Signal(int sig) {
  if (!running()) return absl::FailedPreconditionError("no hostd is running");
  if (kill(pid_, sig) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("kill -", sig, " ", pid_));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExitInfo> RestartableHost::WaitExit(absl::Duration timeout) {
  if (run_ == nullptr) return absl::FailedPreconditionError("never started");
  if (!run_->exited.WaitForNotificationWithTimeout(timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("hostd ", pid_, " did not exit within ",
                     absl::FormatDuration(timeout)));
  }
  return run_->info;
}

grpc::Status RestartableHost::Create(const std::string& name, uint64_t rank,
                                     const v1::ProcSpec& spec,
                                     v1::ProcState* state,
                                     absl::Duration timeout) {
  v1::CreateOrUpdateProcRequest request;
  request.set_name(name);
  request.set_rank(rank);
  *request.mutable_spec() = spec;
  return stub().CreateOrUpdateProc(Context(timeout).get(), request, state);
}

grpc::Status RestartableHost::Get(const std::string& name,
                                  v1::ProcState* state) {
  v1::GetProcStateRequest request;
  request.set_name(name);
  return stub().GetProcState(Context().get(), request, state);
}

grpc::Status RestartableHost::Stop(const std::string& name,
                                   v1::ProcState* state, absl::Duration grace) {
  v1::StopProcRequest request;
  request.set_name(name);
  request.set_reason("test stop");
  request.set_grace_ms(absl::ToInt64Milliseconds(grace));
  return stub().StopProc(Context(absl::Seconds(60)).get(), request, state);
}

grpc::Status RestartableHost::List(v1::ListProcsResponse* list) {
  return stub().ListProcs(Context().get(), v1::ListProcsRequest(), list);
}

v1::WaitProcsResponse RestartableHost::Wait(
    const std::vector<std::string>& names, v1::Status min_status,
    absl::Duration timeout) {
  v1::WaitProcsRequest request;
  for (const auto& name : names) request.add_names(name);
  request.set_min_status(min_status);
  request.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  v1::WaitProcsResponse response;
  grpc::Status status = stub().WaitProcs(
      Context(timeout + absl::Seconds(5)).get(), request, &response);
  if (!status.ok()) response.set_timed_out(true);
  return response;
}

bool RestartableHost::Track(pid_t pid) {
  absl::StatusOr<uint64_t> start = ProcessStartTime(pid);
  if (!start.ok()) return false;
  tracked_.emplace_back(pid, *start);
  return true;
}

bool RestartableHost::Reap(pid_t pid) {
  if (hostds_ != nullptr) {
    std::vector<pid_t> live = hostds_->LivePids();
    if (std::find(live.begin(), live.end(), pid) != live.end()) return false;
  }
  int status = 0;
  pid_t reaped = waitpid(pid, &status, WNOHANG);
  return reaped == pid || (reaped < 0 && errno == ECHILD);
}

void RestartableHost::ReapOrphans() {
  std::set<pid_t> supervised;
  if (hostds_ != nullptr) {
    for (pid_t pid : hostds_->LivePids()) supervised.insert(pid);
  }
  const pid_t self = getpid();
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return;
  while (dirent* entry = readdir(dir)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || supervised.count(pid)) {
      continue;
    }
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
    if (stat.ok() && stat->state == 'Z' && stat->ppid == self) {
      waitpid(pid, nullptr, WNOHANG);
    }
  }
  closedir(dir);
}

std::vector<pid_t> RestartableHost::CgroupPids() const {
  if (cgroup_dir_.empty()) return {};
  absl::StatusOr<ProcCgroup> subtree = ProcCgroup::Open(cgroup_dir_);
  absl::StatusOr<std::vector<pid_t>> pids =
      subtree.ok() ? subtree->Procs() : subtree.status();
  return pids.ok() ? *pids : std::vector<pid_t>();
}

void RestartableHost::Cleanup() {
  // hostd first, so it starts nothing more: gracefully if it serves (its
  // procs are stopped and reaped by it), then by force.
  if (running()) {
    v1::ShutdownHostRequest request;
    request.set_reason("test cleanup");
    request.set_grace_ms(500);
    request.set_stay_down(true);
    v1::ShutdownHostResponse response;
    stub().ShutdownHost(Context(absl::Seconds(20)).get(), request, &response);
    if (!WaitExit(absl::Seconds(10)).ok()) {
      kill(pid_, SIGKILL);
      WaitExit(absl::Seconds(30)).IgnoreError();
    }
  }
  // What the test recorded, only if it is still the same process.
  for (const auto& [pid, start] : tracked_) {
    int fd = PidfdOpen(pid);
    if (fd < 0) continue;
    if (ProcessStartTime(pid).value_or(0) == start) {
      syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0);
    }
    close(fd);
  }
  // Everything in the subtree given to hostd (setsid escapees included):
  // cgroup.kill (or a frozen leaf and pidfds), then every cgroup in it.
  if (!cgroup_dir_.empty() && access(cgroup_dir_.c_str(), F_OK) == 0) {
    absl::StatusOr<ProcCgroup> subtree = ProcCgroup::Open(cgroup_dir_);
    absl::Status removed = subtree.status();
    if (subtree.ok()) {
      removed = subtree->Kill(absl::Seconds(10));
      if (removed.ok()) removed = subtree->Remove(absl::Seconds(10));
    }
    if (!removed.ok()) {
      fprintf(stderr, "restartable_host: cannot remove cgroup %s: %s\n",
              cgroup_dir_.c_str(), std::string(removed.message()).c_str());
    }
  }
  for (const auto& [pid, start] : tracked_) {
    WaitGone(pid, absl::Seconds(5));
    Reap(pid);
  }
  ReapOrphans();
  hostds_.reset();
}

}  // namespace mesh::testing
