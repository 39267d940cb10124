#include "procd/testing/fake_host.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lib/channel/proc_channel.h"

extern char** environ;

namespace mesh::testing {
namespace {

// The proc's channel fd, as hostd gives it.

absl::Status Errno(const std::string& what) {
  return absl::ErrnoToStatus(errno, what);
}

// Closes an fd at scope exit unless released.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::string OutputPathTemplate() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/fake_host_out.XXXXXX");
}

}  // namespace

v1::Welcome FakeHost::DefaultWelcome() {
  v1::Welcome welcome;
  welcome.set_protocol_version(v1::PROC_CHANNEL_VERSION_CURRENT);
  welcome.set_name("p0");
  welcome.set_rank(0);
  welcome.set_host("fakehost:7450");
  welcome.set_orphan_timeout_ms(30000);
  return welcome;
}

absl::StatusOr<std::unique_ptr<FakeHost>> FakeHost::Start(Options options) {
  auto host = absl::WrapUnique(new FakeHost());
  host->welcome_ = options.welcome;
  host->accept_ = options.accept;

  std::string output_path = OutputPathTemplate();
  int output_fd = mkostemp(output_path.data(), O_CLOEXEC);
  if (output_fd < 0) return Errno("mkostemp");
  FdCloser output_closer(output_fd);
  host->output_path_ = output_path;

  int pair[2] = {-1, -1};
  if (options.give_channel &&
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return Errno("socketpair");
  }
  FdCloser host_end(pair[0]);
  // dup2 onto itself would keep close-on-exec: keep the child's end off 3.
  if (pair[1] == kChannelChildFd) {
    int moved = fcntl(pair[1], F_DUPFD_CLOEXEC, 10);
    if (moved < 0) return Errno("fcntl(F_DUPFD_CLOEXEC)");
    close(pair[1]);
    pair[1] = moved;
  }
  FdCloser proc_end(pair[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, output_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, output_fd, STDERR_FILENO);
  if (options.give_channel) {
    posix_spawn_file_actions_adddup2(&actions, pair[1], kChannelChildFd);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                      POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &defaults);

  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, absl::StrCat(kChannelFdEnv, "="))) {
      env.push_back(*e);
    }
  }
  if (options.give_channel) {
    env.push_back(absl::StrCat(kChannelFdEnv, "=", kChannelChildFd));
  }
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = {options.binary};
  args.insert(args.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  pid_t pid = -1;
  int error = posix_spawn(&pid, options.binary.c_str(), &actions, &attr,
                          argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (error != 0) {
    return absl::ErrnoToStatus(error,
                               absl::StrCat("posix_spawn ", options.binary));
  }
  host->pid_ = pid;
  host->pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (host->pidfd_ < 0) return Errno("pidfd_open");

  if (options.give_channel) {
    FrameChannel::Options channel_options;
    channel_options.name = "fake host's channel to the proc";
    FakeHost* raw = host.get();
    FrameChannel::Callbacks callbacks;
    callbacks.on_frame = [raw](std::string_view frame) { raw->OnFrame(frame); };
    callbacks.on_closed = [raw](const absl::Status& status) {
      raw->OnClosed(status);
    };
    absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
        FrameChannel::Create(host_end.release(), std::move(channel_options),
                             std::move(callbacks));
    if (!channel.ok()) return channel.status();
    host->channel_ = *std::move(channel);
    if (options.welcome.has_value()) {
      v1::HostFrame frame;
      *frame.mutable_welcome() = *options.welcome;
      if (absl::Status sent = host->SendFrame(frame); !sent.ok()) return sent;
    }
  }
  return host;
}

FakeHost::~FakeHost() {
  if (pid_ > 0 && !reaped_) {
    Kill(SIGKILL);
    waitpid(pid_, nullptr, 0);
    reaped_ = true;
  }
  if (pidfd_ >= 0) close(pidfd_);
  channel_.reset();
  if (!output_path_.empty()) unlink(output_path_.c_str());
}

absl::StatusOr<v1::Hello> FakeHost::WaitHello(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return hello_.has_value() || closed_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (hello_.has_value()) return *hello_;
  if (closed_) {
    return absl::UnavailableError("the proc closed its channel without Hello");
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "no Hello from the proc within ", absl::FormatDuration(timeout)));
}

bool FakeHost::WaitReady(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]()
                   ABSL_NO_THREAD_SAFETY_ANALYSIS { return ready_ || closed_; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  return ready_;
}

absl::StatusOr<v1::ProcResponse> FakeHost::Request(v1::ProcRequest request,
                                                   absl::Duration timeout) {
  absl::StatusOr<uint64_t> id = SendRequest(std::move(request));
  if (!id.ok()) return id.status();
  return WaitResponse(*id, timeout);
}

absl::StatusOr<uint64_t> FakeHost::SendRequest(v1::ProcRequest request) {
  if (request.id() == 0) {
    absl::MutexLock lock(&mu_);
    request.set_id(1000000 + next_request_++);
  }
  const uint64_t id = request.id();
  v1::HostFrame frame;
  *frame.mutable_request() = std::move(request);
  absl::Status sent = SendFrame(frame);
  if (!sent.ok()) return sent;
  return id;
}

absl::StatusOr<v1::ProcResponse> FakeHost::WaitResponse(
    uint64_t id, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this, id]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return responses_.count(id) > 0 || closed_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  auto it = responses_.find(id);
  if (it != responses_.end()) {
    v1::ProcResponse response = std::move(it->second);
    responses_.erase(it);
    --collected_;
    return response;
  }
  if (closed_) {
    return absl::UnavailableError(
        absl::StrCat("the channel closed before the response to request ", id));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("no response to request ", id, " within ",
                   absl::FormatDuration(timeout)));
}

bool FakeHost::HasResponse(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  return responses_.count(id) > 0;
}

absl::Status FakeHost::SendEnvelope(v1::Envelope envelope) {
  v1::HostFrame frame;
  *frame.mutable_envelope() = std::move(envelope);
  return SendFrame(frame);
}

absl::Status FakeHost::SendStop(const std::string& reason,
                                absl::Duration grace) {
  v1::HostFrame frame;
  frame.mutable_stop()->set_reason(reason);
  frame.mutable_stop()->set_grace_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(grace)));
  return SendFrame(frame);
}

absl::Status FakeHost::SendCancel(uint64_t id) {
  v1::HostFrame frame;
  frame.mutable_cancel()->set_id(id);
  return SendFrame(frame);
}

absl::Status FakeHost::SendRefused(const std::string& reason) {
  v1::HostFrame frame;
  frame.mutable_refused()->set_reason(reason);
  return SendFrame(frame);
}

absl::Status FakeHost::SendFrame(const v1::HostFrame& frame) {
  if (channel_ == nullptr) {
    return absl::FailedPreconditionError("the proc was started without one");
  }
  return channel_->Send(frame);
}

v1::PortRef FakeHost::OpenPort() {
  v1::PortRef port;
  port.set_host("");
  port.set_mailbox(kClientMailbox);
  absl::MutexLock lock(&mu_);
  port.set_port(next_port_++);
  return port;
}

absl::StatusOr<std::vector<v1::Envelope>> FakeHost::WaitEnvelopes(
    const v1::PortRef& port, size_t n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = port.port();
  auto ready = [this, id, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    auto it = envelopes_.find(id);
    return it != envelopes_.end() && it->second.size() >= n;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    auto it = envelopes_.find(id);
    return absl::DeadlineExceededError(absl::StrCat(
        "port ", id, " got ", it == envelopes_.end() ? 0 : it->second.size(),
        " envelopes within ", absl::FormatDuration(timeout), "; expected ", n));
  }
  const std::vector<v1::Envelope>& got = envelopes_[id];
  return std::vector<v1::Envelope>(got.begin(), got.begin() + n);
}

absl::StatusOr<v1::Envelope> FakeHost::Ask(v1::Envelope envelope,
                                           absl::Duration timeout) {
  v1::PortRef port = OpenPort();
  *envelope.mutable_reply_to() = port;
  envelope.set_sender(kClientMailbox);
  absl::Status sent = SendEnvelope(std::move(envelope));
  if (!sent.ok()) return sent;
  absl::StatusOr<std::vector<v1::Envelope>> replies =
      WaitEnvelopes(port, 1, timeout);
  if (!replies.ok()) return replies.status();
  return (*replies)[0];
}

v1::ActorRef FakeHost::ActorOfProc(const std::string& actor) const {
  v1::ActorRef ref;
  if (welcome_.has_value()) {
    ref.set_host(welcome_->host());
    ref.set_proc(welcome_->name());
  }
  ref.set_actor(actor);
  return ref;
}

void FakeHost::CloseChannel() {
  if (channel_ != nullptr) channel_->Close();
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

bool FakeHost::WaitChannelClosed(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&closed_), timeout);
}

std::optional<int> FakeHost::WaitExit(absl::Duration timeout) {
  if (reaped_) return std::nullopt;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    pollfd ready{pidfd_, POLLIN, 0};
    int polled = poll(&ready, 1, static_cast<int>(std::max<int64_t>(0, left)));
    if (polled < 0 && errno == EINTR) continue;
    if (polled <= 0) return std::nullopt;
    int status = 0;
    pid_t got = waitpid(pid_, &status, 0);
    if (got == pid_) {
      reaped_ = true;
      return status;
    }
    if (got < 0 && errno == EINTR) continue;
    return std::nullopt;
  }
}

void FakeHost::Kill(int sig) {
  if (reaped_ || pidfd_ < 0) return;
  syscall(SYS_pidfd_send_signal, pidfd_, sig, nullptr, 0);
}

std::string FakeHost::Output() const {
  std::ifstream in(output_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void FakeHost::OnFrame(std::string_view bytes) {
  v1::ProcFrame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return;
  }
  if (frame.has_hello() && accept_) {
    // On the channel's thread, before any later frame of the proc.
    bool first = false;
    {
      absl::MutexLock lock(&mu_);
      first = !hello_.has_value();
    }
    if (first) {
      v1::HostFrame accepted;
      accepted.mutable_accepted()->set_secret(kSecret);
      (void)SendFrame(accepted);
    }
  }
  absl::MutexLock lock(&mu_);
  switch (frame.frame_case()) {
    case v1::ProcFrame::kHello:
      if (!hello_.has_value()) hello_ = std::move(*frame.mutable_hello());
      return;
    case v1::ProcFrame::kReady:
      ready_ = true;
      return;
    case v1::ProcFrame::kRejoin:
      return;
    case v1::ProcFrame::kResponse:
      if (collected_ >= kMaxCollected) return;
      ++collected_;
      responses_[frame.response().id()] = std::move(*frame.mutable_response());
      return;
    case v1::ProcFrame::kEnvelope: {
      const v1::Envelope& envelope = frame.envelope();
      if (collected_ >= kMaxCollected || !envelope.to_host().empty() ||
          envelope.to_mailbox() != kClientMailbox ||
          envelope.dest_case() != v1::Envelope::kPort) {
        return;
      }
      ++collected_;
      envelopes_[envelope.port()].push_back(
          std::move(*frame.mutable_envelope()));
      return;
    }
    case v1::ProcFrame::FRAME_NOT_SET:
      return;
  }
}

void FakeHost::OnClosed(const absl::Status& /*status*/) {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

}  // namespace mesh::testing
