#include "lib/bootstrap/registrar.h"

#include <errno.h>
#include <fcntl.h>
#include <glog/logging.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <limits>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lib/channel/frame_channel.h"
#include "lib/net/host_port.h"
#include "lib/status.h"
#include "proto/bootstrap.pb.h"

namespace mesh {
namespace {

// Frames on this channel are a few hundred bytes.
constexpr size_t kMaxFrameBytes = 64 << 10;
// Stop requests and refusals are rare; more than this queued means the child
// is not reading its channel.
constexpr size_t kMaxPendingBytes = 256 << 10;

uint32_t ClampToMillis(absl::Duration d) {
  const int64_t ms = absl::ToInt64Milliseconds(d);
  if (ms <= 0) return 0;
  if (ms > std::numeric_limits<uint32_t>::max()) {
    return std::numeric_limits<uint32_t>::max();
  }
  return static_cast<uint32_t>(ms);
}

// One expected child: its end of the channel and what it said on it.
//
// Threads: OnFrame/OnClosed run on the channel's thread; the user's
// callbacks run there under cb_mu_, so that MarkForgotten (which sets
// forgotten_ under cb_mu_) waits for a running callback and no callback
// starts afterwards. SendStop and TakeChannel run on any thread.
//
// Owners: the channel's callbacks hold the Child, and the Child holds the
// channel until TakeChannel hands it to whoever destroys it (never the
// channel's own thread), which ends that cycle.
class Child {
 public:
  Child(uint64_t id, std::string name, Registrar::ChildCallbacks callbacks)
      : id_(id), name_(std::move(name)), callbacks_(std::move(callbacks)) {}

  uint64_t id() const { return id_; }
  const std::string& name() const { return name_; }

  // Called once, before the channel's other end is handed out.
  void SetChannel(std::unique_ptr<FrameChannel> channel) {
    absl::MutexLock l(&mu_);
    channel_ = std::move(channel);
  }

  // Closes the channel (the child sees EOF) without waiting and returns it
  // for the caller to destroy, or null if it was taken already.
  std::unique_ptr<FrameChannel> TakeChannel() {
    absl::MutexLock l(&mu_);
    if (channel_ != nullptr) channel_->Close();
    return std::move(channel_);
  }

  // True on the channel's thread (i.e. inside one of this child's
  // callbacks).
  bool OnChannelThread() const {
    return channel_thread_.load() == std::this_thread::get_id();
  }

  void OnFrame(std::string_view data) {
    channel_thread_.store(std::this_thread::get_id());
    v1::ChildFrame frame;
    absl::Status status;
    if (!frame.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "child \"", name_, "\" sent a frame that is not a ChildFrame"));
    } else if (!frame.has_register_()) {
      status = absl::InvalidArgumentError(
          absl::StrCat("child \"", name_, "\" sent an empty or unknown frame"));
    } else {
      status = CheckRequest(frame.register_());
    }
    const v1::RegisterRequest& request = frame.register_();
    {
      absl::MutexLock l(&mu_);
      if (channel_ == nullptr) return;  // Forgotten meanwhile.
      if (status.ok() && registered_) {
        status = absl::AlreadyExistsError(absl::StrCat(
            "child \"", name_, "\" registered already (at ", address_, ", pid ",
            pid_, "); a second register (at ", request.address(), ", pid ",
            request.pid(), ") is refused"));
      }
      v1::ParentFrame answer;
      if (!status.ok()) {
        answer.mutable_refused()->set_code(static_cast<int>(status.code()));
        answer.mutable_refused()->set_reason(std::string(status.message()));
        channel_->Send(answer).IgnoreError();  // It may have gone meanwhile.
      } else {
        answer.mutable_accepted();
        // Sent under mu_, so that no StopRequest gets ahead of it.
        absl::Status sent = channel_->Send(answer);
        if (!sent.ok()) {
          LOG(WARNING) << "cannot accept child \"" << name_ << "\": " << sent;
          return;  // The channel has ended; OnClosed follows.
        }
        registered_ = true;
        address_ = request.address();
        pid_ = request.pid();
      }
    }
    if (!status.ok()) {
      LOG(WARNING) << "refused: " << status.message();
      return;
    }
    LOG(INFO) << "child \"" << name_ << "\" registered at " << request.address()
              << " (pid " << request.pid() << ")";
    absl::MutexLock l(&cb_mu_);
    if (forgotten_) return;
    Invoke([&] {
      if (callbacks_.on_registered) {
        callbacks_.on_registered(request.address(), request.pid());
      }
    });
  }

  void OnClosed(const absl::Status& status) {
    channel_thread_.store(std::this_thread::get_id());
    bool registered;
    {
      absl::MutexLock l(&mu_);
      closed_ = true;
      registered = registered_;
    }
    if (!registered) {
      LOG(INFO) << "child \"" << name_
                << "\" closed its channel before registering: " << status;
      return;
    }
    LOG(INFO) << "child \"" << name_ << "\" closed its channel: " << status;
    absl::MutexLock l(&cb_mu_);
    if (forgotten_ || disconnect_reported_) return;
    disconnect_reported_ = true;
    Invoke([&] {
      if (callbacks_.on_disconnected) callbacks_.on_disconnected();
    });
  }

  absl::Status SendStop(const std::string& reason, absl::Duration grace) {
    absl::MutexLock l(&mu_);
    if (!registered_) {
      return absl::FailedPreconditionError(
          absl::StrCat("child \"", name_, "\" has not registered"));
    }
    if (closed_ || channel_ == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("channel of child \"", name_, "\" is closed"));
    }
    v1::ParentFrame frame;
    frame.mutable_stop()->set_reason(reason);
    frame.mutable_stop()->set_grace_ms(ClampToMillis(grace));
    return Annotate(channel_->Send(frame),
                    absl::StrCat("stop child \"", name_, "\""));
  }

  // Waits for a running callback of this child (unless called from inside
  // it), after which no callback of this child starts.
  void MarkForgotten() {
    if (cb_thread_.load() == std::this_thread::get_id()) {
      // Re-entered from this child's own callback: cb_mu_ is held by us.
      MarkForgottenFromCallback();
      return;
    }
    absl::MutexLock l(&cb_mu_);
    forgotten_ = true;
  }

 private:
  absl::Status CheckRequest(const v1::RegisterRequest& request) const {
    if (request.protocol_version() != v1::BOOTSTRAP_VERSION_CURRENT) {
      return absl::FailedPreconditionError(absl::StrCat(
          "child \"", name_, "\" speaks bootstrap protocol version ",
          request.protocol_version(), ", this parent speaks version ",
          static_cast<int>(v1::BOOTSTRAP_VERSION_CURRENT),
          ": refused (run a hostd built with this client)"));
    }
    if (absl::Status address =
            ParseHostPort(request.address(), "address").status();
        !address.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("register of \"", name_, "\": ", address.message()));
    }
    // Only checked for being a pid: over pipes through srun it is the
    // child's pid on its own machine, never compared with a local one.
    if (request.pid() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("register of \"", name_, "\": bad pid ", request.pid()));
    }
    return absl::OkStatus();
  }

  template <typename F>
  void Invoke(F&& f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cb_mu_) {
    cb_thread_.store(std::this_thread::get_id());
    f();
    cb_thread_.store(std::thread::id());
  }

  void MarkForgottenFromCallback() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    forgotten_ = true;
  }

  const uint64_t id_;
  const std::string name_;
  const Registrar::ChildCallbacks callbacks_;

  absl::Mutex mu_;
  std::unique_ptr<FrameChannel> channel_ ABSL_GUARDED_BY(mu_);
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::string address_ ABSL_GUARDED_BY(mu_);
  int32_t pid_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex cb_mu_;
  bool forgotten_ ABSL_GUARDED_BY(cb_mu_) = false;
  bool disconnect_reported_ ABSL_GUARDED_BY(cb_mu_) = false;
  // The thread running a callback of this child, if any.
  std::atomic<std::thread::id> cb_thread_{};
  // The channel's thread, once it ran OnFrame or OnClosed.
  std::atomic<std::thread::id> channel_thread_{};
};

}  // namespace

class Registrar::Impl {
 public:
  explicit Impl(Options options) : options_(std::move(options)) {}

  ~Impl() {
    std::vector<std::shared_ptr<Child>> children;
    std::vector<Doomed> doomed;
    {
      absl::MutexLock l(&mu_);
      for (auto& [id, child] : children_) children.push_back(std::move(child));
      children_.clear();
      doomed = std::move(doomed_);
      doomed_.clear();
    }
    // Close every channel first, so that all children see EOF at once.
    std::vector<std::unique_ptr<FrameChannel>> channels;
    for (const std::shared_ptr<Child>& child : children) {
      child->MarkForgotten();
      channels.push_back(child->TakeChannel());
    }
    channels.clear();  // Joins their threads.
    doomed.clear();
  }

  absl::StatusOr<Ticket> Expect(const std::string& name, uint64_t rank,
                                ChildCallbacks callbacks) {
    if (name.empty()) {
      return absl::InvalidArgumentError("expected child has an empty name");
    }
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      return absl::ErrnoToStatus(
          errno, absl::StrCat("socketpair for child \"", name, "\""));
    }
    absl::StatusOr<uint64_t> id =
        Open(name, rank, std::move(callbacks), fds[0], -1);
    if (!id.ok()) {
      close(fds[1]);
      return id.status();
    }
    return Ticket{*id, fds[1]};
  }

  absl::StatusOr<PipeTicket> ExpectOnPipes(const std::string& name,
                                           uint64_t rank,
                                           ChildCallbacks callbacks) {
    if (name.empty()) {
      return absl::InvalidArgumentError("expected child has an empty name");
    }
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0) {
      return absl::ErrnoToStatus(errno,
                                 absl::StrCat("pipe for child \"", name, "\""));
    }
    if (pipe2(from_child, O_CLOEXEC) != 0) {
      const int error = errno;
      close(to_child[0]);
      close(to_child[1]);
      return absl::ErrnoToStatus(error,
                                 absl::StrCat("pipe for child \"", name, "\""));
    }
    absl::StatusOr<uint64_t> id =
        Open(name, rank, std::move(callbacks), from_child[0], to_child[1]);
    if (!id.ok()) {
      close(to_child[0]);
      close(from_child[1]);
      return id.status();
    }
    return PipeTicket{*id, to_child[0], from_child[1]};
  }
  void Forget(uint64_t id) {
    std::shared_ptr<Child> child;
    {
      absl::MutexLock l(&mu_);
      auto it = children_.find(id);
      if (it == children_.end()) return;
      child = std::move(it->second);
      children_.erase(it);
    }
    child->MarkForgotten();
    std::unique_ptr<FrameChannel> channel = child->TakeChannel();
    if (channel != nullptr && child->OnChannelThread()) {
      // From the child's own callback: its thread cannot join itself.
      absl::MutexLock l(&mu_);
      doomed_.push_back(Doomed{std::move(channel), std::this_thread::get_id()});
      return;
    }
    channel.reset();  // Joins its thread.
    ReapDoomed();
  }

  absl::Status SendStop(uint64_t id, const std::string& reason,
                        absl::Duration grace) {
    std::shared_ptr<Child> child;
    {
      absl::MutexLock l(&mu_);
      auto it = children_.find(id);
      if (it == children_.end()) {
        return absl::NotFoundError(absl::StrCat("no expected child ", id));
      }
      child = it->second;
    }
    return child->SendStop(reason, grace);
  }

 private:
  // Opens the parent's end of child `name`'s channel (the socket `fd`, or
  // with a `write_fd` the pipes read from `fd` and written to `write_fd`;
  // both owned from here on, closed on error), writes its BootstrapInfo
  // and starts expecting it. Returns the child's id.
  absl::StatusOr<uint64_t> Open(const std::string& name, uint64_t rank,
                                ChildCallbacks callbacks, int fd,
                                int write_fd) {
    ReapDoomed();
    uint64_t id;
    {
      absl::MutexLock l(&mu_);
      id = next_id_++;
    }
    auto child = std::make_shared<Child>(id, name, std::move(callbacks));
    FrameChannel::Options channel_options;
    channel_options.name = name;
    channel_options.max_frame_bytes = kMaxFrameBytes;
    channel_options.max_pending_bytes = kMaxPendingBytes;
    FrameChannel::Callbacks channel_callbacks;
    channel_callbacks.on_frame = [child](std::string_view frame) {
      child->OnFrame(frame);
    };
    channel_callbacks.on_closed = [child](const absl::Status& status) {
      child->OnClosed(status);
    };
    absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
        write_fd >= 0 ? FrameChannel::CreateOnPipes(
                            fd, write_fd, std::move(channel_options),
                            std::move(channel_callbacks))
                      : FrameChannel::Create(fd, std::move(channel_options),
                                             std::move(channel_callbacks));
    if (!channel.ok()) {
      return Annotate(channel.status(), absl::StrCat("child \"", name, "\""));
    }
    v1::ParentFrame frame;
    v1::BootstrapInfo* info = frame.mutable_info();
    info->set_protocol_version(v1::BOOTSTRAP_VERSION_CURRENT);
    info->set_name(name);
    info->set_rank(rank);
    info->set_orphan_timeout_ms(ClampToMillis(options_.orphan_timeout));
    info->set_admin_token(options_.admin_token);
    info->set_peer_token(options_.peer_token);
    // The socket (or pipe) is empty: this goes straight into it.
    absl::Status sent = (*channel)->Send(frame);
    if (!sent.ok()) {
      channel->reset();
      return Annotate(sent,
                      absl::StrCat("bootstrap info of child \"", name, "\""));
    }
    child->SetChannel(*std::move(channel));
    absl::MutexLock l(&mu_);
    children_.emplace(id, std::move(child));
    return id;
  }

  // A closed channel of a child forgotten from its own callback, waiting to
  // be joined by another thread.
  struct Doomed {
    std::unique_ptr<FrameChannel> channel;
    std::thread::id thread;
  };

  // Destroys the doomed channels, except one whose thread is this one. At
  // most one channel per child forgotten from its own callback waits here,
  // until the next Expect or Forget from another thread (or destruction).
  void ReapDoomed() {
    std::vector<Doomed> reap;
    {
      absl::MutexLock l(&mu_);
      for (auto it = doomed_.begin(); it != doomed_.end();) {
        if (it->thread == std::this_thread::get_id()) {
          ++it;
        } else {
          reap.push_back(std::move(*it));
          it = doomed_.erase(it);
        }
      }
    }
    reap.clear();  // Joins outside mu_.
  }

  const Options options_;

  absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Child>> children_
      ABSL_GUARDED_BY(mu_);
  std::vector<Doomed> doomed_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<Registrar>> Registrar::Create(Options options) {
  if (options.orphan_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("registrar: negative orphan timeout ",
                     absl::FormatDuration(options.orphan_timeout)));
  }
  return std::unique_ptr<Registrar>(
      new Registrar(std::make_unique<Impl>(std::move(options))));
}

Registrar::Registrar(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Registrar::~Registrar() = default;

absl::StatusOr<Registrar::Ticket> Registrar::Expect(const std::string& name,
                                                    uint64_t rank,
                                                    ChildCallbacks callbacks) {
  return impl_->Expect(name, rank, std::move(callbacks));
}

absl::StatusOr<Registrar::PipeTicket> Registrar::ExpectOnPipes(
    const std::string& name, uint64_t rank, ChildCallbacks callbacks) {
  return impl_->ExpectOnPipes(name, rank, std::move(callbacks));
}

void Registrar::Forget(uint64_t id) { impl_->Forget(id); }

absl::Status Registrar::SendStop(uint64_t id, const std::string& reason,
                                 absl::Duration grace) {
  return impl_->SendStop(id, reason, grace);
}

}  // namespace mesh
