#include "lib/bootstrap/parent_channel.h"

#include <errno.h>
#include <fcntl.h>
#include <glog/logging.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lib/bootstrap/registrar.h"
#include "lib/channel/frame_channel.h"
#include "lib/process/env.h"
#include "lib/status.h"

namespace mesh {
namespace {

// Frames on this channel are a few hundred bytes.
constexpr size_t kMaxFrameBytes = 64 << 10;
// The child sends one RegisterRequest; nothing queues up.
constexpr size_t kMaxPendingBytes = 64 << 10;
constexpr size_t kHeaderBytes = 4;

// Reads exactly `size` bytes from the non-blocking socket or pipe `fd` by
// `deadline` (never more: what follows belongs to the FrameChannel).
absl::Status ReadExactly(int fd, char* out, size_t size, absl::Time deadline,
                         const char* what) {
  size_t got = 0;
  while (got < size) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no bootstrap info from the parent on fd ", fd, " in time (", got,
          " of ", size, " bytes of its ", what, ")"));
    }
    struct pollfd pfd = {fd, POLLIN, 0};
    const int ms = static_cast<int>(std::min<int64_t>(
        absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
        std::numeric_limits<int>::max()));
    const int ready = poll(&pfd, 1, ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("poll on fd ", fd));
    }
    if (ready == 0) continue;  // The deadline check above ends the loop.
    const ssize_t n = read(fd, out + got, size - got);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return absl::ErrnoToStatus(
          errno, absl::StrCat("read of bootstrap info from fd ", fd));
    }
    if (n == 0) {
      return absl::UnavailableError(absl::StrCat(
          "the parent closed the channel on fd ", fd, " before sending its ",
          "bootstrap info (", got, " of ", size, " bytes of its ", what, ")"));
    }
    got += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusCode CodeFromWire(int32_t code) {
  if (code <= 0 ||
      code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(code);
}

// What the channel's thread shares with its owner. The channel's callbacks
// hold it, so it lives as long as the channel.
struct ChannelState {
  enum class Phase { kRegistering, kAccepted, kFailed };

  ChannelState(v1::BootstrapInfo info, ParentChannel::Callbacks callbacks)
      : info(std::move(info)), callbacks(std::move(callbacks)) {}

  static bool Answered(ChannelState* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) {
    return s->phase != Phase::kRegistering;
  }

  bool OnChannelThread() const {
    return channel_thread.load() == std::this_thread::get_id();
  }

  void OnFrame(std::string_view data) {
    channel_thread.store(std::this_thread::get_id());
    v1::ParentFrame frame;
    if (!frame.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      LOG(WARNING) << "ignoring a frame from the parent of \"" << info.name()
                   << "\" that is not a ParentFrame";
      return;
    }
    {
      absl::MutexLock l(&mu);
      if (closing) return;
      if (phase == Phase::kRegistering) {
        if (frame.has_accepted()) {
          phase = Phase::kAccepted;
        } else if (frame.has_refused()) {
          phase = Phase::kFailed;
          result = absl::Status(
              CodeFromWire(frame.refused().code()),
              absl::StrCat("parent refused the registration of \"", info.name(),
                           "\": ", frame.refused().reason()));
        } else {
          LOG(WARNING) << "ignoring an unexpected frame from the parent of \""
                       << info.name()
                       << "\" before it accepted: " << frame.ShortDebugString();
        }
        return;
      }
      if (!frame.has_stop()) {
        LOG(WARNING) << "ignoring an unexpected frame from the parent of \""
                     << info.name() << "\": " << frame.ShortDebugString();
        return;
      }
    }
    LOG(INFO) << "parent asked \"" << info.name()
              << "\" to stop: " << frame.stop().reason();
    if (callbacks.on_stop) {
      callbacks.on_stop(frame.stop().reason(),
                        absl::Milliseconds(frame.stop().grace_ms()));
    }
  }

  void OnClosed(const absl::Status& status) {
    channel_thread.store(std::this_thread::get_id());
    {
      absl::MutexLock l(&mu);
      if (closing) return;
      if (phase == Phase::kRegistering) {
        phase = Phase::kFailed;
        result = absl::UnavailableError(absl::StrCat(
            "the parent closed the channel before accepting \"", info.name(),
            "\"", status.ok() ? "" : absl::StrCat(": ", status.ToString())));
        return;
      }
      if (phase != Phase::kAccepted) return;
      const absl::Duration orphan_timeout =
          absl::Milliseconds(info.orphan_timeout_ms());
      LOG(WARNING) << "channel of \"" << info.name() << "\" to its parent "
                   << (status.ok() ? "closed" : "broke: " + status.ToString())
                   << "; orphaned in " << orphan_timeout;
      // The channel's thread has nothing else to do: it waits here, and the
      // owner's destructor wakes it.
      if (mu.AwaitWithTimeout(absl::Condition(&closing), orphan_timeout)) {
        return;
      }
    }
    LOG(WARNING) << "\"" << info.name() << "\" is orphaned";
    if (callbacks.on_orphaned) callbacks.on_orphaned();
  }

  const v1::BootstrapInfo info;
  const ParentChannel::Callbacks callbacks;
  // The channel's thread, once it ran OnFrame or OnClosed.
  std::atomic<std::thread::id> channel_thread{};

  absl::Mutex mu;
  Phase phase ABSL_GUARDED_BY(mu) = Phase::kRegistering;
  absl::Status result ABSL_GUARDED_BY(mu);
  // Set by the owner when it gives up (timeout) or closes the channel; no
  // callback starts after the thread sees it.
  bool closing ABSL_GUARDED_BY(mu) = false;
};

}  // namespace

class ParentChannel::Impl {
 public:
  Impl(std::shared_ptr<ChannelState> state,
       std::unique_ptr<FrameChannel> channel)
      : state_(std::move(state)), channel_(std::move(channel)) {}

  // Waits for a running callback, unless called from one: then a helper
  // thread joins the channel's thread once that callback returns.
  ~Impl() {
    {
      absl::MutexLock l(&state_->mu);
      state_->closing = true;  // Also ends an orphan wait.
    }
    if (state_->OnChannelThread()) {
      channel_->Close();
      std::thread([channel = std::move(channel_)]() mutable {
        channel.reset();
      }).detach();
    } else {
      channel_.reset();
    }
  }

 private:
  const std::shared_ptr<ChannelState> state_;
  std::unique_ptr<FrameChannel> channel_;
};

ParentChannel::Inherited::Inherited(int fd, int write_fd,
                                    v1::BootstrapInfo info)
    : fd_(fd), write_fd_(write_fd), info_(std::move(info)) {}

ParentChannel::Inherited::Inherited(Inherited&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      write_fd_(std::exchange(other.write_fd_, -1)),
      info_(std::move(other.info_)) {}

ParentChannel::Inherited& ParentChannel::Inherited::operator=(
    Inherited&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    write_fd_ = std::exchange(other.write_fd_, -1);
    info_ = std::move(other.info_);
  }
  return *this;
}

ParentChannel::Inherited::~Inherited() { Close(); }

void ParentChannel::Inherited::Close() {
  if (fd_ >= 0) close(fd_);
  if (write_fd_ >= 0) close(write_fd_);
  fd_ = write_fd_ = -1;
}

namespace {

// Reads the parent's first frame from `fd` (a socket or a pipe, which the
// caller owns and made close-on-exec): a BootstrapInfo of this protocol
// version with a name. `where` names the channel in errors ("fd 3").
absl::StatusOr<v1::BootstrapInfo> ReadBootstrapInfo(int fd,
                                                    const std::string& where,
                                                    absl::Duration timeout) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("fcntl on parent channel ", where));
  }
  const absl::Time deadline = absl::Now() + timeout;
  char header[kHeaderBytes];
  RETURN_IF_ERROR(
      ReadExactly(fd, header, kHeaderBytes, deadline, "frame header"));
  const auto* h = reinterpret_cast<const unsigned char*>(header);
  const uint32_t length =
      static_cast<uint32_t>(h[0]) | (static_cast<uint32_t>(h[1]) << 8) |
      (static_cast<uint32_t>(h[2]) << 16) | (static_cast<uint32_t>(h[3]) << 24);
  if (length > kMaxFrameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the first frame on parent channel ", where, " is ", length,
        " bytes, over ", kMaxFrameBytes, ": not a bootstrap info"));
  }
  std::string body(length, '\0');
  RETURN_IF_ERROR(ReadExactly(fd, body.data(), length, deadline, "frame"));
  v1::ParentFrame frame;
  if (!frame.ParseFromString(body) || !frame.has_info()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the first frame on parent channel ", where,
                     " is not a bootstrap info"));
  }
  const v1::BootstrapInfo& info = frame.info();
  if (info.protocol_version() != v1::BOOTSTRAP_VERSION_CURRENT) {
    return absl::FailedPreconditionError(
        absl::StrCat("the parent speaks bootstrap protocol version ",
                     info.protocol_version(), ", this child speaks version ",
                     static_cast<int>(v1::BOOTSTRAP_VERSION_CURRENT),
                     ": refused (run a hostd built with this client)"));
  }
  if (info.name().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the bootstrap info on parent channel ", where, " has no name"));
  }
  return info;
}

// True if `fd` is a pipe or a socket.
bool IsPipeOrSocket(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

// Puts the terminal `fd` in raw mode, so that bytes written to it pass as
// they are: `srun --unbuffered` runs its task's stdout on a pty, whose
// default output processing would turn every 0x0a of a frame into 0x0d
// 0x0a. Also clears TOSTOP (a background process group may write), with
// SIGTTOU blocked meanwhile (tcsetattr from one would raise it).
absl::Status MakeRaw(int fd) {
  struct termios mode;
  if (tcgetattr(fd, &mode) != 0) {
    return absl::ErrnoToStatus(errno, "tcgetattr of stdout (a terminal)");
  }
  cfmakeraw(&mode);
  mode.c_lflag &= ~TOSTOP;
  sigset_t ttou, old_mask;
  sigemptyset(&ttou);
  sigaddset(&ttou, SIGTTOU);
  pthread_sigmask(SIG_BLOCK, &ttou, &old_mask);
  const int set = tcsetattr(fd, TCSANOW, &mode);
  const int error = errno;
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  if (set != 0) {
    return absl::ErrnoToStatus(error, "tcsetattr of stdout (a terminal)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParentChannel::Inherited> ParentChannel::ReadFromFd(
    int fd, absl::Duration timeout) {
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad parent channel fd ", fd));
  }
  auto fail = [fd](absl::Status status) {
    close(fd);
    return status;
  };
  struct stat st;
  int type = 0;
  socklen_t type_len = sizeof(type);
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) ||
      getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 ||
      type != SOCK_STREAM) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("parent channel fd ", fd, " is not a stream socket")));
  }
  // Not for the children this child spawns.
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return fail(absl::ErrnoToStatus(
        errno, absl::StrCat("fcntl on parent channel fd ", fd)));
  }
  absl::StatusOr<v1::BootstrapInfo> info =
      ReadBootstrapInfo(fd, absl::StrCat("fd ", fd), timeout);
  if (!info.ok()) return fail(info.status());
  return Inherited(fd, -1, *std::move(info));
}

absl::StatusOr<ParentChannel::Inherited> ParentChannel::ReadFromStdio(
    absl::Duration timeout) {
  // stdout may be a terminal: srun --unbuffered's pty (made raw below).
  const bool out_terminal = isatty(STDOUT_FILENO) == 1;
  for (int fd : {STDIN_FILENO, STDOUT_FILENO}) {
    if (!IsPipeOrSocket(fd) && !(fd == STDOUT_FILENO && out_terminal)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the parent channel on stdio: ",
          fd == STDIN_FILENO ? "stdin" : "stdout",
          fd == STDIN_FILENO ? " is not a pipe or socket"
                             : " is not a pipe, socket or terminal",
          " (this process was not started by a "
          "parent holding its stdin and stdout, e.g. a client through srun)"));
    }
  }
  // Private copies, out of every child's reach.
  const int in = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
  if (in < 0) return absl::ErrnoToStatus(errno, "dup of stdin");
  const int out = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
  if (out < 0) {
    const int error = errno;
    close(in);
    return absl::ErrnoToStatus(error, "dup of stdout");
  }
  Inherited inherited(in, out, v1::BootstrapInfo());
  if (out_terminal) RETURN_IF_ERROR(MakeRaw(out));
  // fd 0 reads nothing; fd 1 is stderr (or /dev/null if there is none).
  const int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) return absl::ErrnoToStatus(errno, "open /dev/null");
  const bool moved = dup2(null, STDIN_FILENO) >= 0 &&
                     (dup2(STDERR_FILENO, STDOUT_FILENO) >= 0 ||
                      dup2(null, STDOUT_FILENO) >= 0);
  const int error = errno;
  close(null);
  if (!moved) return absl::ErrnoToStatus(error, "redirect of stdin/stdout");
  ASSIGN_OR_RETURN(inherited.info_,
                   ReadBootstrapInfo(in, "stdin (a pipe)", timeout));
  return inherited;
}

absl::StatusOr<std::optional<ParentChannel::Inherited>>
ParentChannel::ReadFromEnv(absl::Duration timeout) {
  absl::StatusOr<std::optional<std::string>> taken = TakeEnv(kBootstrapFdEnv);
  if (!taken.ok()) return taken.status();
  if (!taken->has_value()) return std::optional<Inherited>();
  const std::string& fd_string = **taken;
  int fd = -1;
  if (!absl::SimpleAtoi(fd_string, &fd) || fd <= STDERR_FILENO) {
    return absl::InvalidArgumentError(
        absl::StrCat(kBootstrapFdEnv, "=\"", fd_string,
                     "\" is not the number of an inherited fd (3 or more)"));
  }
  ASSIGN_OR_RETURN(Inherited inherited, ReadFromFd(fd, timeout));
  return std::optional<Inherited>(std::move(inherited));
}

absl::StatusOr<std::unique_ptr<ParentChannel>> ParentChannel::Register(
    Inherited inherited, const std::string& address, Callbacks callbacks,
    absl::Duration timeout) {
  const std::string name = inherited.info().name();
  auto state =
      std::make_shared<ChannelState>(inherited.info(), std::move(callbacks));
  FrameChannel::Options options;
  options.name = absl::StrCat("parent of ", name);
  options.max_frame_bytes = kMaxFrameBytes;
  options.max_pending_bytes = kMaxPendingBytes;
  FrameChannel::Callbacks channel_callbacks;
  channel_callbacks.on_frame = [state](std::string_view frame) {
    state->OnFrame(frame);
  };
  channel_callbacks.on_closed = [state](const absl::Status& status) {
    state->OnClosed(status);
  };
  // Over a pair of pipes (stdio) or the one inherited socket.
  const int fd = std::exchange(inherited.fd_, -1);
  const int write_fd = std::exchange(inherited.write_fd_, -1);
  absl::StatusOr<std::unique_ptr<FrameChannel>> created =
      write_fd >= 0
          ? FrameChannel::CreateOnPipes(fd, write_fd, std::move(options),
                                        std::move(channel_callbacks))
          : FrameChannel::Create(fd, std::move(options),
                                 std::move(channel_callbacks));
  if (!created.ok()) {
    return Annotate(created.status(),
                    absl::StrCat("register \"", name, "\" with its parent"));
  }
  std::unique_ptr<FrameChannel> channel = *std::move(created);

  v1::ChildFrame frame;
  v1::RegisterRequest* request = frame.mutable_register_();
  request->set_protocol_version(v1::BOOTSTRAP_VERSION_CURRENT);
  request->set_address(address);
  // This process's pid; a parent that reached it through srun only reports
  // it (it is a pid on another machine).
  request->set_pid(static_cast<int32_t>(getpid()));
  absl::Status sent = channel->Send(frame);

  bool answered = false;
  absl::Status result;
  {
    absl::MutexLock l(&state->mu);
    if (sent.ok()) {
      answered = state->mu.AwaitWithTimeout(
          absl::Condition(&ChannelState::Answered, state.get()), timeout);
      if (answered && state->phase == ChannelState::Phase::kFailed) {
        result = state->result;
      }
    }
    if (!sent.ok() || !answered || !result.ok()) state->closing = true;
  }
  if (!sent.ok()) {
    channel.reset();
    return absl::UnavailableError(absl::StrCat(
        "cannot register \"", name, "\" with its parent: ", sent.message()));
  }
  if (!answered) {
    channel.reset();
    return absl::DeadlineExceededError(
        absl::StrCat("the parent did not accept \"", name, "\" within ",
                     absl::FormatDuration(timeout)));
  }
  if (!result.ok()) {
    channel.reset();
    return result;
  }
  LOG(INFO) << "\"" << name << "\" registered with its parent as " << address;
  return std::unique_ptr<ParentChannel>(new ParentChannel(
      std::make_unique<Impl>(std::move(state), std::move(channel))));
}

ParentChannel::ParentChannel(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

ParentChannel::~ParentChannel() = default;

}  // namespace mesh
