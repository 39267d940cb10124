#include "hostd/proc_channels.h"

#include <glog/logging.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/channel/frame_channel.h"
#include "lib/status.h"

namespace mesh {

struct ProcChannels::Child {
  // The channel is closed here and destroyed on `loop` (never on its own
  // thread, where the last reference may drop); ~ProcChannels destroys the
  // remaining ones itself before the loop goes.
  ~Child() {
    if (channel == nullptr) return;
    FrameChannel* raw = channel.release();
    raw->Close();
    loop->Post([raw] { delete raw; });
  }

  uint64_t id = 0;
  std::string name;
  ChildCallbacks callbacks;
  EventLoop* loop = nullptr;
  // Set before the child is shared, then only read.
  std::unique_ptr<FrameChannel> channel;
  // Guarded by ProcChannels::mu_.
  bool registered = false;
  bool closed = false;
  bool forgotten = false;
  // Set by Forget of a registered child still open: runs once it closed.
  std::function<void()> on_drained;
};

ProcChannels::ProcChannels(Options options)
    : options_(std::move(options)), loop_(std::make_unique<EventLoop>()) {}

ProcChannels::~ProcChannels() {
  std::vector<std::shared_ptr<Child>> children;
  std::vector<ResponseCallback> pending;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    for (auto& [id, child] : children_) {
      child->forgotten = true;
      children.push_back(child);
    }
    children_.clear();
    by_name_.clear();
    for (auto& [id, request] : pending_) {
      if (request.timer != 0) loop_->Cancel(request.timer);
      pending.push_back(std::move(request.done));
    }
    pending_.clear();
  }
  for (auto& child : children) child->channel.reset();  // joins its thread
  loop_.reset();
  for (auto& done : pending) {
    done(absl::UnavailableError("hostd is shutting down"));
  }
}

void ProcChannels::Start(std::string host_address, EnvelopeSink on_envelope) {
  absl::MutexLock lock(&mu_);
  host_address_ = std::move(host_address);
  on_envelope_ = std::move(on_envelope);
}

absl::StatusOr<ProcChannels::Ticket> ProcChannels::Expect(
    const std::string& name, uint64_t rank, ChildCallbacks callbacks) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair for a proc channel");
  }
  auto child = std::make_shared<Child>();
  child->name = name;
  child->loop = loop_.get();
  child->callbacks = std::move(callbacks);
  v1::HostFrame welcome;
  {
    absl::MutexLock lock(&mu_);
    if (closing_) {
      close(fds[0]);
      close(fds[1]);
      return absl::UnavailableError("hostd is shutting down");
    }
    child->id = next_id_++;
    v1::Welcome* w = welcome.mutable_welcome();
    w->set_protocol_version(v1::PROC_CHANNEL_VERSION_CURRENT);
    w->set_name(name);
    w->set_rank(rank);
    w->set_host(host_address_);
    w->set_orphan_timeout_ms(static_cast<uint32_t>(
        absl::ToInt64Milliseconds(options_.orphan_timeout)));
  }
  const uint64_t id = child->id;
  FrameChannel::Options channel_options;
  channel_options.name = absl::StrCat("proc \"", name, "\"");
  channel_options.max_frame_bytes = options_.max_frame_bytes;
  channel_options.max_pending_bytes = options_.max_pending_bytes;
  FrameChannel::Callbacks channel_callbacks;
  channel_callbacks.on_frame = [this, id](std::string_view frame) {
    OnFrame(id, frame);
  };
  channel_callbacks.on_closed = [this, id](const absl::Status& status) {
    OnClosed(id, status);
  };
  // Registered before the channel starts, so its first frame finds it.
  {
    absl::MutexLock lock(&mu_);
    children_[id] = child;
  }
  absl::StatusOr<std::unique_ptr<FrameChannel>> channel = FrameChannel::Create(
      fds[0], std::move(channel_options), std::move(channel_callbacks));
  if (!channel.ok()) {
    close(fds[1]);
    absl::MutexLock lock(&mu_);
    children_.erase(id);
    return channel.status();
  }
  absl::Status sent = (*channel)->Send(welcome);
  {
    absl::MutexLock lock(&mu_);
    child->channel = *std::move(channel);
  }
  if (!sent.ok()) {
    Forget(id);
    close(fds[1]);
    return sent;
  }
  return Ticket{id, fds[1]};
}

void ProcChannels::Forget(uint64_t id, std::function<void()> on_drained) {
  std::shared_ptr<Child> child;  // unset: closed and forgotten before
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it != children_.end()) {
      child = it->second;
      child->forgotten = true;
      if (child->registered && !child->closed) {
        // Let its last frames and EOF through (OnClosed runs on_drained);
        // cut it if EOF does not come.
        child->on_drained = std::move(on_drained);
        loop_->PostAfter(options_.drain_timeout, [this, id] {
          std::shared_ptr<Child> late;
          {
            absl::MutexLock lock(&mu_);
            auto it = children_.find(id);
            if (it == children_.end() || it->second->closed) return;
            late = it->second;
          }
          late->channel->Close();  // no on_closed after this: do its work
          OnClosed(id, absl::DeadlineExceededError(
                           "the proc exited but its channel stayed open"));
        });
        return;
      }
      children_.erase(it);
      auto named = by_name_.find(child->name);
      if (named != by_name_.end() && named->second == child) {
        by_name_.erase(named);
      }
    }
  }
  if (child != nullptr && child->channel != nullptr) child->channel->Close();
  if (on_drained) on_drained();
}

absl::Status ProcChannels::SendStop(uint64_t id, const std::string& reason,
                                    absl::Duration grace) {
  std::shared_ptr<Child> child;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end()) {
      return absl::NotFoundError(absl::StrCat("no proc channel ", id));
    }
    child = it->second;
    if (!child->registered || child->closed) {
      return absl::FailedPreconditionError(absl::StrCat(
          "proc \"", child->name, "\" has no open channel to stop it with"));
    }
  }
  v1::HostFrame frame;
  frame.mutable_stop()->set_reason(reason);
  frame.mutable_stop()->set_grace_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(grace)));
  return child->channel->Send(frame);
}

absl::Status ProcChannels::SendEnvelope(const std::string& proc,
                                        v1::Envelope& envelope) {
  std::shared_ptr<Child> child;
  std::string host;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = by_name_.find(proc);
    if (it == by_name_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "no proc \"", proc, "\" is running on host ", host_address_));
    }
    child = it->second;
    host = host_address_;
  }
  // The frame is built around the envelope without copying it.
  v1::HostFrame frame;
  frame.set_allocated_envelope(&envelope);
  absl::Status sent = child->channel->Send(frame);
  v1::Envelope* released = frame.release_envelope();  // still `envelope`
  (void)released;
  if (!sent.ok() && sent.code() == absl::StatusCode::kFailedPrecondition) {
    return absl::UnavailableError(absl::StrCat(
        "proc \"", proc, "\" on host ", host, " is gone: ", sent.message()));
  }
  return sent;
}

uint64_t ProcChannels::Request(const std::string& proc, v1::ProcRequest request,
                               absl::Time deadline, ResponseCallback done) {
  std::shared_ptr<Child> child;
  uint64_t id;
  std::string not_running;
  {
    absl::MutexLock lock(&mu_);
    id = next_request_++;
    auto it = by_name_.find(proc);
    if (closing_ || it == by_name_.end() || it->second->closed) {
      not_running = absl::StrCat("proc \"", proc, "\" on host ", host_address_,
                                 " is not running");
    } else {
      child = it->second;
    }
  }
  if (child == nullptr) {
    done(absl::UnavailableError(not_running));
    return id;
  }
  {
    absl::MutexLock lock(&mu_);
    Pending& pending = pending_[id];
    pending.proc = proc;
    pending.done = std::move(done);
    pending.timer = loop_->PostAt(deadline, [this, id, proc] {
      SendCancel(proc, id);
      Finish(id, absl::DeadlineExceededError(absl::StrCat(
                     "proc \"", proc, "\" did not answer in time")));
    });
  }
  request.set_id(id);
  v1::HostFrame frame;
  *frame.mutable_request() = std::move(request);
  absl::Status sent = child->channel->Send(frame);
  if (!sent.ok()) Finish(id, sent);
  return id;
}

void ProcChannels::Cancel(uint64_t id) {
  std::string proc;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(id);
    if (it != pending_.end()) proc = it->second.proc;
  }
  if (proc.empty()) return;
  Finish(id, absl::CancelledError("the caller is gone"));
  SendCancel(proc, id);
}

void ProcChannels::SendCancel(const std::string& proc, uint64_t id) {
  std::shared_ptr<Child> child;
  {
    absl::MutexLock lock(&mu_);
    auto it = by_name_.find(proc);
    if (it == by_name_.end()) return;
    child = it->second;
  }
  v1::HostFrame frame;
  frame.mutable_cancel()->set_id(id);
  child->channel->Send(frame).IgnoreError();
}

void ProcChannels::Finish(uint64_t request_id,
                          absl::StatusOr<v1::ProcResponse> result) {
  ResponseCallback done;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(request_id);
    if (it == pending_.end()) return;
    done = std::move(it->second.done);
    if (it->second.timer != 0) loop_->Cancel(it->second.timer);
    pending_.erase(it);
  }
  done(std::move(result));
}

void ProcChannels::OnFrame(uint64_t id, std::string_view bytes) {
  v1::ProcFrame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    LOG(WARNING) << "proc channel " << id << ": dropping a malformed frame ("
                 << bytes.size() << " bytes)";
    return;
  }
  switch (frame.frame_case()) {
    case v1::ProcFrame::kHello:
      OnHello(id, frame.hello());
      return;
    case v1::ProcFrame::kResponse:
      OnResponse(std::move(*frame.mutable_response()));
      return;
    case v1::ProcFrame::kEnvelope: {
      EnvelopeSink sink;
      std::string proc;
      {
        absl::ReaderMutexLock lock(&mu_);
        auto it = children_.find(id);
        if (it == children_.end() || !it->second->registered) {
          VLOG(1) << "dropping an envelope from unregistered proc channel "
                  << id;
          return;
        }
        sink = on_envelope_;
        proc = it->second->name;
      }
      if (sink) sink(proc, std::move(*frame.mutable_envelope()));
      return;
    }
    case v1::ProcFrame::FRAME_NOT_SET:
      LOG(WARNING) << "proc channel " << id << ": empty frame";
      return;
  }
}

void ProcChannels::OnHello(uint64_t id, const v1::Hello& hello) {
  std::shared_ptr<Child> child;
  std::shared_ptr<Child> replaced;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end() || it->second->registered) return;
    child = it->second;
  }
  if (hello.protocol_version() != v1::PROC_CHANNEL_VERSION_CURRENT) {
    std::string why = absl::StrCat(
        "proc \"", child->name, "\" speaks proc channel protocol version ",
        hello.protocol_version(), ", this hostd version ",
        static_cast<int>(v1::PROC_CHANNEL_VERSION_CURRENT),
        ": refused (run a procd built with this hostd)");
    LOG(WARNING) << why;
    v1::HostFrame refused;
    refused.mutable_refused()->set_reason(why);
    child->channel->Send(refused).IgnoreError();
    child->channel->Flush(absl::Milliseconds(100));
    child->channel->Close();
    if (child->callbacks.on_refused) child->callbacks.on_refused(why);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (child->forgotten || child->closed) return;
    child->registered = true;
    by_name_[child->name] = child;
  }
  if (child->callbacks.on_registered)
    child->callbacks.on_registered(hello.pid());
}

void ProcChannels::OnResponse(v1::ProcResponse response) {
  uint64_t id = response.id();
  if (CarriesError(response)) {
    Finish(id, FromErrorProto(response.error()));
  } else {
    Finish(id, std::move(response));
  }
}

std::vector<ProcChannels::ResponseCallback> ProcChannels::TakePendingLocked(
    const std::string& proc) {
  std::vector<ResponseCallback> taken;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.proc == proc) {
      if (it->second.timer != 0) loop_->Cancel(it->second.timer);
      taken.push_back(std::move(it->second.done));
      pending_.erase(it++);
    } else {
      ++it;
    }
  }
  return taken;
}

void ProcChannels::OnClosed(uint64_t id, const absl::Status& status) {
  std::shared_ptr<Child> child;
  std::vector<ResponseCallback> pending;
  std::function<void()> on_drained;
  bool was_registered = false;
  bool forgotten = false;
  std::string host;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end()) return;
    child = it->second;
    child->closed = true;
    was_registered = child->registered;
    forgotten = child->forgotten;
    on_drained = std::move(child->on_drained);
    child->on_drained = nullptr;
    if (forgotten) children_.erase(it);
    auto named = by_name_.find(child->name);
    if (named != by_name_.end() && named->second == child) {
      by_name_.erase(named);
      pending = TakePendingLocked(child->name);
    }
    host = host_address_;
  }
  absl::Status gone = absl::UnavailableError(absl::StrCat(
      "proc \"", child->name, "\" on host ", host, " is gone (its channel ",
      status.ok() ? std::string("closed") : std::string(status.message()),
      ")"));
  for (auto& done : pending) done(gone);
  if (on_drained) on_drained();
  if (!was_registered) return;
  if (child->callbacks.on_disconnected && !forgotten) {
    child->callbacks.on_disconnected();
  }
}

}  // namespace mesh
