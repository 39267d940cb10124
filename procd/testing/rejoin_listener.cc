#include "procd/testing/rejoin_listener.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "lib/channel/unix_socket.h"

namespace mesh::testing {

absl::StatusOr<std::unique_ptr<RejoinListener>> RejoinListener::Listen(
    std::string path, Options options) {
  auto listener = absl::WrapUnique(new RejoinListener());
  absl::StatusOr<int> fd = ListenUnix(path, 0600);
  if (!fd.ok()) return fd.status();
  listener->path_ = std::move(path);
  listener->options_ = options;
  listener->listen_fd_ = *fd;
  RejoinListener* raw = listener.get();
  listener->accept_thread_ = std::thread([raw] { raw->AcceptLoop(); });
  return listener;
}

RejoinListener::~RejoinListener() {
  stopping_ = true;
  if (accept_thread_.joinable()) accept_thread_.join();
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    unlink(path_.c_str());
  }
  std::vector<std::unique_ptr<FrameChannel>> channels;
  {
    absl::MutexLock lock(&mu_);
    for (auto& connection : connections_) {
      channels.push_back(std::move(connection->channel));
    }
  }
  channels.clear();  // Joins their threads outside mu_.
}

void RejoinListener::AcceptLoop() {
  while (!stopping_) {
    pollfd ready{listen_fd_, POLLIN, 0};
    if (poll(&ready, 1, 20) <= 0) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    absl::MutexLock lock(&mu_);
    const size_t index = connections_.size();
    connections_.push_back(std::make_unique<Connection>());
    FrameChannel::Callbacks callbacks;
    callbacks.on_frame = [this, index](std::string_view bytes) {
      v1::ProcFrame frame;
      frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
      absl::MutexLock lock(&mu_);
      Connection& connection = *connections_[index];
      connection.frames.push_back(std::move(frame));
      if (options_.hang_up && connection.frames.size() == 1) {
        connection.channel->Close();
        connection.closed = true;
      }
    };
    callbacks.on_closed = [this, index](const absl::Status&) {
      absl::MutexLock lock(&mu_);
      connections_[index]->closed = true;
    };
    FrameChannel::Options channel_options;
    channel_options.name = absl::StrCat("rejoin connection ", index + 1);
    absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
        FrameChannel::Create(fd, std::move(channel_options),
                             std::move(callbacks));
    if (channel.ok()) {
      connections_[index]->channel = *std::move(channel);
    } else {
      connections_[index]->closed = true;
    }
  }
}

size_t RejoinListener::connections() const {
  absl::MutexLock lock(&mu_);
  return connections_.size();
}

bool RejoinListener::WaitConnections(size_t n, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto enough = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return connections_.size() >= n;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

absl::StatusOr<v1::ProcFrame> RejoinListener::WaitFrame(
    size_t n, size_t k, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto arrived = [this, n, k]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return connections_.size() >= n && connections_[n - 1]->frames.size() >= k;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&arrived), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("no frame #", k, " on rejoin connection ", n, " within ",
                     absl::FormatDuration(timeout), " (", connections_.size(),
                     " connections)"));
  }
  return connections_[n - 1]->frames[k - 1];
}

absl::Status RejoinListener::Send(size_t n, const v1::HostFrame& frame) {
  absl::MutexLock lock(&mu_);
  if (connections_.size() < n || connections_[n - 1]->channel == nullptr) {
    return absl::NotFoundError(absl::StrCat("no rejoin connection ", n));
  }
  return connections_[n - 1]->channel->Send(frame);
}

void RejoinListener::Close(size_t n) {
  absl::MutexLock lock(&mu_);
  if (connections_.size() < n) return;
  Connection& connection = *connections_[n - 1];
  if (connection.channel != nullptr) connection.channel->Close();
  connection.closed = true;
}

bool RejoinListener::WaitClosed(size_t n, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto closed = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return connections_.size() >= n && connections_[n - 1]->closed;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&closed), timeout);
}

}  // namespace mesh::testing
