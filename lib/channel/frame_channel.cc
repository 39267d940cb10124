#include "lib/channel/frame_channel.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace mesh {
namespace {

constexpr size_t kHeaderBytes = 4;
// Reads ask for at least this much (more when a larger frame is arriving).
constexpr size_t kReadChunk = 64 << 10;
// A read buffer grown past this for a large frame shrinks back afterwards.
constexpr size_t kShrinkAbove = 1 << 20;
// Reads per poll wake-up, so a fast sender cannot starve our writes.
constexpr int kMaxReadsPerWakeup = 16;
// Reads when draining what a peer sent before a write to it failed.
constexpr int kMaxDrainReads = 1024;
// Small queued frames share chunks of this size.
constexpr size_t kQueueChunk = 64 << 10;
// Chunks per sendmsg when flushing the queue.
constexpr int kMaxIov = 64;

// The thread-local marker for "running on this channel's thread".
thread_local const FrameChannel* current_channel = nullptr;

void EncodeLength(uint32_t length, char* out) {
  out[0] = static_cast<char>(length & 0xff);
  out[1] = static_cast<char>((length >> 8) & 0xff);
  out[2] = static_cast<char>((length >> 16) & 0xff);
  out[3] = static_cast<char>((length >> 24) & 0xff);
}

uint32_t DecodeLength(const char* in) {
  const auto* p = reinterpret_cast<const unsigned char*>(in);
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

bool WouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

}  // namespace

absl::StatusOr<std::unique_ptr<FrameChannel>> FrameChannel::Create(
    int fd, Options options, Callbacks callbacks) {
  const std::string prefix = absl::StrCat("channel \"", options.name, "\"");
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": invalid fd ", fd));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    close(fd);
    return absl::ErrnoToStatus(error, absl::StrCat(prefix, ": fstat"));
  }
  int type = 0;
  socklen_t type_len = sizeof(type);
  if (!S_ISSOCK(st.st_mode) ||
      getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 ||
      type != SOCK_STREAM) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": fd ", fd, " is not a stream socket"));
  }
  return Start(fd, fd, std::move(options), std::move(callbacks));
}

absl::StatusOr<std::unique_ptr<FrameChannel>> FrameChannel::CreateOnPipes(
    int read_fd, int write_fd, Options options, Callbacks callbacks) {
  const std::string prefix = absl::StrCat("channel \"", options.name, "\"");
  auto fail = [read_fd, write_fd](absl::Status status) {
    if (read_fd >= 0) close(read_fd);
    if (write_fd >= 0 && write_fd != read_fd) close(write_fd);
    return status;
  };
  if (read_fd < 0 || write_fd < 0 || read_fd == write_fd) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat(prefix, ": needs two distinct fds, one read and one ",
                     "written (got ", read_fd, " and ", write_fd, ")")));
  }
  struct Want {
    int fd;
    const char* role;
    int wrong_access;  // The O_ACCMODE that cannot serve this role.
  };
  for (Want want :
       {Want{read_fd, "read", O_WRONLY}, Want{write_fd, "written", O_RDONLY}}) {
    struct stat st;
    if (fstat(want.fd, &st) != 0) {
      return fail(absl::ErrnoToStatus(
          errno, absl::StrCat(prefix, ": fstat of fd ", want.fd)));
    }
    if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) &&
        !(S_ISCHR(st.st_mode) && isatty(want.fd) == 1)) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat(prefix, ": fd ", want.fd, " (to be ", want.role,
                       ") is not a pipe, socket or terminal")));
    }
    const int flags = fcntl(want.fd, F_GETFL);
    if (flags < 0) {
      return fail(absl::ErrnoToStatus(
          errno, absl::StrCat(prefix, ": fcntl of fd ", want.fd)));
    }
    if ((flags & O_ACCMODE) == want.wrong_access) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat(prefix, ": fd ", want.fd, " cannot be ", want.role,
                       " (it is the other end of its pipe)")));
    }
  }
  return Start(read_fd, write_fd, std::move(options), std::move(callbacks));
}

absl::StatusOr<std::unique_ptr<FrameChannel>> FrameChannel::Start(
    int read_fd, int write_fd, Options options, Callbacks callbacks) {
  const std::string prefix = absl::StrCat("channel \"", options.name, "\"");
  auto fail = [read_fd, write_fd](absl::Status status) {
    close(read_fd);
    if (write_fd != read_fd) close(write_fd);
    return status;
  };
  if (options.max_frame_bytes > std::numeric_limits<uint32_t>::max()) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat(prefix, ": max_frame_bytes ", options.max_frame_bytes,
                     " does not fit the 4-byte frame length")));
  }
  for (int fd : {read_fd, write_fd}) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
      return fail(absl::ErrnoToStatus(errno, absl::StrCat(prefix, ": fcntl")));
    }
  }
  int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    return fail(absl::ErrnoToStatus(errno, absl::StrCat(prefix, ": eventfd")));
  }
  std::unique_ptr<FrameChannel> channel(new FrameChannel(
      read_fd, write_fd, wake_fd, std::move(options), std::move(callbacks)));
  channel->thread_ = std::thread([c = channel.get()] { c->Run(); });
  return channel;
}

FrameChannel::FrameChannel(int read_fd, int write_fd, int wake_fd,
                           Options options, Callbacks callbacks)
    : options_(std::move(options)),
      max_frame_bytes_(options_.max_frame_bytes),
      callbacks_(std::move(callbacks)),
      read_fd_(read_fd),
      write_fd_(write_fd),
      wake_fd_(wake_fd) {}

ssize_t FrameChannel::WriteSome(const struct iovec* iov, int iovcnt) {
  if (!pair()) {
    struct msghdr msg = {};
    msg.msg_iov = const_cast<struct iovec*>(iov);
    msg.msg_iovlen = iovcnt;
    return sendmsg(write_fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  // A pipe has no MSG_NOSIGNAL: a write to a reader that is gone raises
  // SIGPIPE at this thread. Blocked for the call, and taken back if this
  // write raised it, so the process only ever sees EPIPE.
  sigset_t pipe_set, old_mask;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  sigset_t pending;
  sigemptyset(&pending);
  const bool was_pending =
      sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
  const ssize_t n = writev(write_fd_, iov, iovcnt);
  const int error = errno;
  if (n < 0 && error == EPIPE && !was_pending) {
    const struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = error;
  return n;
}

FrameChannel::~FrameChannel() {
  CHECK(!InChannelThread())
      << "channel \"" << options_.name << "\" destroyed from its own callback";
  Close();
  thread_.join();
  close(wake_fd_);
}

bool FrameChannel::InChannelThread() const { return current_channel == this; }

void FrameChannel::Wake() {
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;  // EAGAIN only if the counter is full: the thread is woken anyway
}

absl::Status FrameChannel::SetMaxFrameBytes(size_t max_frame_bytes) {
  if (max_frame_bytes > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel \"", options_.name, "\": max_frame_bytes ",
                     max_frame_bytes, " does not fit the 4-byte frame length"));
  }
  max_frame_bytes_.store(max_frame_bytes, std::memory_order_relaxed);
  return absl::OkStatus();
}

bool FrameChannel::closed() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

absl::Status FrameChannel::SendFrame(std::string_view frame) {
  const size_t max_frame_bytes = this->max_frame_bytes();
  if (frame.size() > max_frame_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel \"", options_.name, "\": frame of ", frame.size(),
                     " bytes is over max_frame_bytes ", max_frame_bytes));
  }
  char header[kHeaderBytes];
  EncodeLength(static_cast<uint32_t>(frame.size()), header);
  struct iovec iov[2] = {{header, kHeaderBytes},
                         {const_cast<char*>(frame.data()), frame.size()}};
  return SendFramed(iov, frame.empty() ? 1 : 2, kHeaderBytes + frame.size(),
                    nullptr);
}

absl::Status FrameChannel::Send(const google::protobuf::MessageLite& message) {
  return SendMessage(message, /*write_now=*/true);
}

absl::Status FrameChannel::Queue(const google::protobuf::MessageLite& message) {
  return SendMessage(message, /*write_now=*/false);
}

void FrameChannel::WriteQueued() {
  absl::MutexLock lock(&mu_);
  if (ended_ || pending_bytes_ == 0) return;
  if (absl::Status status = WritePendingLocked(); !status.ok()) {
    EndLocked(std::move(status));
    return;
  }
  // The thread polls for POLLOUT once it sees bytes queued.
  if (pending_bytes_ > 0) Wake();
}

absl::Status FrameChannel::SendMessage(
    const google::protobuf::MessageLite& message, bool write_now) {
  const size_t size = message.ByteSizeLong();
  // Protobuf itself serializes at most 2 GiB.
  const size_t max_frame_bytes = this->max_frame_bytes();
  if (size > max_frame_bytes ||
      size > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channel \"", options_.name, "\": ", message.GetTypeName(), " of ",
        size, " bytes is over max_frame_bytes ", max_frame_bytes));
  }
  std::string buffer(kHeaderBytes + size, '\0');
  EncodeLength(static_cast<uint32_t>(size), buffer.data());
  message.SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(buffer.data() + kHeaderBytes));
  struct iovec iov = {buffer.data(), buffer.size()};
  return SendFramed(&iov, 1, buffer.size(), &buffer, write_now);
}

absl::Status FrameChannel::CheckSendable(size_t frame_bytes) {
  if (ended_) {
    if (close_called_) {
      return absl::FailedPreconditionError(
          absl::StrCat("channel \"", options_.name, "\" is closed"));
    }
    if (end_status_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "channel \"", options_.name, "\" was closed by the peer"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "channel \"", options_.name, "\" has ended: ", end_status_.ToString()));
  }
  if (pending_bytes_ > 0 &&
      pending_bytes_ + frame_bytes > options_.max_pending_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("channel \"", options_.name, "\": ", pending_bytes_,
                     " bytes are queued and ", frame_bytes,
                     " more would pass max_pending_bytes ",
                     options_.max_pending_bytes, " (the peer is not reading)"));
  }
  return absl::OkStatus();
}

absl::Status FrameChannel::SendFramed(const struct iovec* iov, int iovcnt,
                                      size_t total, std::string* owned,
                                      bool write_now) {
  absl::MutexLock lock(&mu_);
  if (absl::Status status = CheckSendable(total); !status.ok()) return status;
  size_t written = 0;
  if (pending_bytes_ == 0 && write_now) {
    // The fast path: nothing queued, so this frame goes straight out.
    for (;;) {
      ssize_t n = WriteSome(iov, iovcnt);
      if (n >= 0) {
        written = static_cast<size_t>(n);
        break;
      }
      if (errno == EINTR) continue;
      if (WouldBlock(errno)) break;
      absl::Status cause = absl::ErrnoToStatus(
          errno, absl::StrCat("channel \"", options_.name, "\": send"));
      EndLocked(cause);
      return cause;
    }
    if (written == total) return absl::OkStatus();
  }
  const bool was_empty = pending_bytes_ == 0;
  // A queued-only frame is not worth a chunk of its own: small ones share.
  if (owned != nullptr && (was_empty || total - written >= kQueueChunk) &&
      (write_now || total >= kQueueChunk)) {
    // Queue the caller's buffer itself.
    if (was_empty) pending_offset_ = written;
    pending_.push_back(std::move(*owned));
    pending_bytes_ += total - written;
  } else {
    size_t skip = written;
    for (int i = 0; i < iovcnt; ++i) {
      if (skip >= iov[i].iov_len) {
        skip -= iov[i].iov_len;
        continue;
      }
      Enqueue(static_cast<const char*>(iov[i].iov_base) + skip,
              iov[i].iov_len - skip);
      skip = 0;
    }
  }
  // The thread now polls for POLLOUT; a queued-only frame waits for
  // WriteQueued instead.
  if (was_empty && write_now) Wake();
  return absl::OkStatus();
}

void FrameChannel::Enqueue(const char* data, size_t size) {
  if (size == 0) return;
  if (pending_.empty() || pending_.back().size() + size > kQueueChunk) {
    pending_.emplace_back();
    pending_.back().reserve(std::max(size, kQueueChunk));
  }
  pending_.back().append(data, size);
  pending_bytes_ += size;
}

absl::Status FrameChannel::WritePendingLocked() {
  while (pending_bytes_ > 0) {
    struct iovec iov[kMaxIov];
    int count = 0;
    size_t offset = pending_offset_;
    for (const std::string& chunk : pending_) {
      if (count == kMaxIov) break;
      iov[count++] = {const_cast<char*>(chunk.data()) + offset,
                      chunk.size() - offset};
      offset = 0;
    }
    ssize_t n = WriteSome(iov, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (WouldBlock(errno)) return absl::OkStatus();
      return absl::ErrnoToStatus(
          errno, absl::StrCat("channel \"", options_.name, "\": send"));
    }
    size_t left = static_cast<size_t>(n);
    pending_bytes_ -= left;
    while (left > 0) {
      size_t front = pending_.front().size() - pending_offset_;
      if (left < front) {
        pending_offset_ += left;
        break;
      }
      left -= front;
      pending_.pop_front();
      pending_offset_ = 0;
    }
  }
  return absl::OkStatus();
}

void FrameChannel::EndLocked(absl::Status cause) {
  if (ended_) return;
  ended_ = true;
  end_status_ = std::move(cause);
  if (pending_bytes_ > 0) dropped_ = true;
  pending_.clear();
  pending_offset_ = 0;
  pending_bytes_ = 0;
  Wake();
}

bool FrameChannel::FlushDone() const { return pending_bytes_ == 0 || ended_; }

bool FrameChannel::Flush(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  if (InChannelThread()) {
    // Called from a callback: the thread cannot flush for us, so write here.
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        if (FlushDone()) return pending_bytes_ == 0 && !dropped_;
        if (absl::Status status = WritePendingLocked(); !status.ok()) {
          EndLocked(std::move(status));
          return false;
        }
        if (pending_bytes_ == 0) return true;
      }
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      struct pollfd pfd = {write_fd_, POLLOUT, 0};
      poll(&pfd, 1,
           static_cast<int>(
               std::min<int64_t>(absl::ToInt64Milliseconds(
                                     absl::Ceil(left, absl::Milliseconds(1))),
                                 std::numeric_limits<int>::max())));
    }
  }
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithDeadline(absl::Condition(this, &FrameChannel::FlushDone),
                        deadline);
  return pending_bytes_ == 0 && !dropped_;
}

void FrameChannel::Close() {
  closing_.store(true, std::memory_order_release);
  absl::MutexLock lock(&mu_);
  if (close_called_) return;
  close_called_ = true;
  EndLocked(absl::OkStatus());
  if (!pair()) {
    if (fd_open_) shutdown(read_fd_, SHUT_RDWR);
  } else if (write_fd_open_) {
    // The peer reads EOF; the thread stops reading and closes read_fd_.
    close(write_fd_);
    write_fd_open_ = false;
  }
  Wake();
}

void FrameChannel::Run() {
  current_channel = this;
  std::string thread_name = "ch:" + options_.name.substr(0, 12);
  pthread_setname_np(pthread_self(), thread_name.c_str());

  std::optional<absl::Status> cause = Loop();
  bool report = false;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    // Close() first: no on_closed. Otherwise the first cause wins (a write
    // error may have ended the channel before the loop saw EOF).
    if (!close_called_) {
      DCHECK(cause.has_value());
      EndLocked(cause.value_or(absl::OkStatus()));
      status = end_status_;
      report = true;
    }
    if (!pair()) {
      shutdown(read_fd_, SHUT_RDWR);
    } else if (write_fd_open_) {
      close(write_fd_);
      write_fd_open_ = false;
    }
    close(read_fd_);
    fd_open_ = false;
  }
  in_.reset();
  in_capacity_ = in_begin_ = in_end_ = 0;
  if (report) {
    VLOG(1) << "channel \"" << options_.name << "\" ended: " << status;
    if (callbacks_.on_closed) callbacks_.on_closed(status);
  }
}

std::optional<absl::Status> FrameChannel::Loop() {
  for (;;) {
    bool want_write = false;
    std::optional<absl::Status> write_error;
    {
      absl::MutexLock lock(&mu_);
      if (close_called_) return std::nullopt;
      if (ended_) write_error = end_status_;
      want_write = pending_bytes_ > 0;
    }
    if (write_error.has_value()) {
      // A write failed (the peer is gone or stopped reading): deliver what it
      // sent before that, then end with the write error.
      ReadAvailable(/*drain=*/true);
      return write_error;
    }
    // A socket is polled for both; a pair's written fd only while bytes
    // wait (a negative fd is skipped). POLLERR on it: the reader is gone,
    // which the next write reports (EPIPE).
    struct pollfd fds[3] = {
        {read_fd_,
         static_cast<short>(POLLIN | (want_write && !pair() ? POLLOUT : 0)), 0},
        {wake_fd_, POLLIN, 0},
        {want_write && pair() ? write_fd_ : -1, POLLOUT, 0}};
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(
          errno, absl::StrCat("channel \"", options_.name, "\": poll"));
    }
    if (fds[1].revents & POLLIN) {
      uint64_t count;
      ssize_t n = read(wake_fd_, &count, sizeof(count));
      (void)n;
    }
    const short writable = pair() ? fds[2].revents & (POLLOUT | POLLERR)
                                  : fds[0].revents & POLLOUT;
    if (writable) {
      absl::MutexLock lock(&mu_);
      if (!ended_) {
        if (absl::Status status = WritePendingLocked(); !status.ok()) {
          EndLocked(std::move(status));
          continue;
        }
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
      if (std::optional<absl::Status> end = ReadAvailable(/*drain=*/false)) {
        return end;
      }
    }
  }
}

void FrameChannel::PrepareReadBuffer() {
  const size_t have = in_end_ - in_begin_;
  // DeliverFrames left at most one incomplete frame, its length checked.
  size_t want = kReadChunk;
  if (have >= kHeaderBytes) {
    want = std::max(want, kHeaderBytes + DecodeLength(in_.get() + in_begin_));
  }
  const bool shrink = in_capacity_ > kShrinkAbove && want <= kReadChunk;
  if (want > in_capacity_ || shrink) {
    std::unique_ptr<char[]> buffer(new char[want]);
    if (have > 0) std::memcpy(buffer.get(), in_.get() + in_begin_, have);
    in_ = std::move(buffer);
    in_capacity_ = want;
  } else if (in_begin_ + want > in_capacity_) {
    std::memmove(in_.get(), in_.get() + in_begin_, have);
  } else {
    return;
  }
  in_begin_ = 0;
  in_end_ = have;
}

std::optional<absl::Status> FrameChannel::ReadAvailable(bool drain) {
  const int max_reads = drain ? kMaxDrainReads : kMaxReadsPerWakeup;
  for (int reads = 0; reads < max_reads; ++reads) {
    PrepareReadBuffer();
    const size_t room = in_capacity_ - in_end_;
    ssize_t n = read(read_fd_, in_.get() + in_end_, room);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (WouldBlock(errno)) return std::nullopt;
      return absl::ErrnoToStatus(
          errno, absl::StrCat("channel \"", options_.name, "\": read"));
    }
    if (n == 0) {
      const size_t have = in_end_ - in_begin_;
      if (have == 0) return absl::OkStatus();
      if (have < kHeaderBytes) {
        return absl::DataLossError(absl::StrCat(
            "channel \"", options_.name, "\": the peer closed the stream in ",
            "a frame header (", have, " of ", kHeaderBytes, " bytes)"));
      }
      return absl::DataLossError(absl::StrCat(
          "channel \"", options_.name, "\": the peer closed the stream in a ",
          "frame of ", DecodeLength(in_.get() + in_begin_), " bytes (got ",
          have - kHeaderBytes, ")"));
    }
    in_end_ += static_cast<size_t>(n);
    if (std::optional<absl::Status> end = DeliverFrames()) return end;
    if (closing_.load(std::memory_order_acquire)) return std::nullopt;
    if (!drain && static_cast<size_t>(n) < room) return std::nullopt;
  }
  return std::nullopt;
}

std::optional<absl::Status> FrameChannel::DeliverFrames() {
  while (in_end_ - in_begin_ >= kHeaderBytes) {
    const uint32_t length = DecodeLength(in_.get() + in_begin_);
    const size_t max_frame_bytes = this->max_frame_bytes();
    if (length > max_frame_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "channel \"", options_.name, "\": incoming frame of ", length,
          " bytes is over max_frame_bytes ", max_frame_bytes));
    }
    if (in_end_ - in_begin_ - kHeaderBytes < length) break;
    if (closing_.load(std::memory_order_acquire)) return std::nullopt;
    if (callbacks_.on_frame) {
      callbacks_.on_frame(
          std::string_view(in_.get() + in_begin_ + kHeaderBytes, length));
    }
    in_begin_ += kHeaderBytes + length;
  }
  if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
  return std::nullopt;
}

}  // namespace mesh
