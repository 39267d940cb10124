#include "hostd/proc_channels.h"

#include <glog/logging.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "lib/auth/sha256.h"
#include "lib/channel/frame_channel.h"
#include "lib/channel/unix_socket.h"
#include "lib/status.h"

namespace mesh {
namespace {

// kSecretBytes random bytes. A broken random source is not something to run
// on: no proc could be accepted safely.
std::string MakeSecret() {
  std::string secret(ProcChannels::kSecretBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()),
                 static_cast<int>(secret.size())) != 1) {
    LOG(FATAL) << "RAND_bytes failed: cannot make a proc secret";
  }
  return secret;
}

// A name a peer chose, fit for a log line or an error message.
std::string Printable(const std::string& text) {
  constexpr size_t kMax = 256;
  std::string shown = absl::CHexEscape(text.substr(0, kMax));
  if (text.size() > kMax) absl::StrAppend(&shown, "...");
  return shown;
}

std::string VersionMismatch(const std::string& who, uint32_t version) {
  return absl::StrCat(who, " speaks proc channel protocol version ", version,
                      ", this hostd version ",
                      static_cast<int>(v1::PROC_CHANNEL_VERSION_CURRENT),
                      ": refused (run a procd built with this hostd)");
}

}  // namespace

struct ProcChannels::Child {
  // Where a child is in its handshake. Guarded by ProcChannels::mu_.
  enum class Stage {
    // Spawned: the Welcome went out; waiting for Hello.
    kWelcomed,
    // Hello came, on_hello ran: waiting for accept().
    kHello,
    // Accepted (or Rejoined) went out: waiting for Ready.
    kAccepted,
    // Ready came: the proc's channel by name.
    kRegistered,
    // A rejoin connection waiting for its first frame (a Rejoin).
    kRejoinFirst,
    // Its Rejoin went to the handler: waiting for AcceptRejoin/RefuseRejoin.
    kRejoinAsked,
    // Refused or dropped: nothing more happens on it.
    kDone,
  };

  // The channel is closed here and handed to its owner, which destroys it
  // elsewhere (never on its own thread, where the last reference may drop:
  // that would join the thread from itself).
  ~Child() {
    if (channel == nullptr) return;
    channel->Close();
    owner->Bury(std::move(channel));
  }

  uint64_t id = 0;
  // A connection to the rejoin socket (not a spawned child's socketpair).
  bool rejoin = false;
  ProcChannels* owner = nullptr;
  // Set before any callback of the channel runs (they wait for it), then
  // only read; ~ProcChannels resets it.
  std::unique_ptr<FrameChannel> channel;
  // Guarded by ProcChannels::mu_ (a rejoin's name and callbacks are set by
  // AcceptRejoin, before anything reads them).
  std::string name;
  ChildCallbacks callbacks;
  Stage stage = Stage::kWelcomed;
  // The Hello's pid, or a rejoin connection's peer pid and uid.
  pid_t pid = 0;
  uid_t peer_uid = 0;
  // The secret to send with Accepted/Rejoined (then cleared).
  std::string secret;
  EventLoop::TimerId first_frame_timer = 0;
  bool closed = false;
  bool forgotten = false;
  // Set by Forget of a registered child still open: runs once it closed.
  std::function<void()> on_drained;

  bool registered() const { return stage == Stage::kRegistered; }
};

ProcChannels::ProcChannels(Options options)
    : options_(std::move(options)),
      loop_(std::make_unique<EventLoop>()),
      alive_(std::make_shared<Alive>()) {
  absl::MutexLock lock(&alive_->mu);
  alive_->self = this;
}

ProcChannels::~ProcChannels() {
  {
    // accept() closures do nothing from here on (one under way finishes).
    absl::MutexLock lock(&alive_->mu);
    alive_->self = nullptr;
  }
  if (accept_thread_.joinable()) {
    uint64_t one = 1;
    if (write(wake_fd_, &one, sizeof(one)) != sizeof(one)) {
      PLOG(ERROR) << "waking the rejoin accept thread";
    }
    accept_thread_.join();
  }
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    // Unlinked only if it is still the socket we bound.
    struct stat st;
    if (lstat(socket_path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
        st.st_ino == socket_ino_) {
      unlink(socket_path_.c_str());
    }
  }
  if (wake_fd_ >= 0) close(wake_fd_);

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
  children.clear();
  {
    // A channel thread still in a callback (e.g. one whose child was
    // forgotten, holding its last reference) finishes before the loop goes.
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return active_callbacks_ == 0;
    };
    mu_.Await(absl::Condition(&idle));
  }
  {
    absl::MutexLock lock(&graveyard_mu_);
    loop_closed_ = true;
  }
  loop_.reset();
  BuryAll();  // what the loop had not destroyed yet
  for (auto& done : pending) {
    done(absl::UnavailableError("hostd is shutting down"));
  }
}

ProcChannels::InCallback::InCallback(ProcChannels* channels)
    : channels_(channels) {
  absl::MutexLock lock(&channels_->mu_);
  ++channels_->active_callbacks_;
}

ProcChannels::InCallback::~InCallback() {
  absl::MutexLock lock(&channels_->mu_);
  --channels_->active_callbacks_;
}

void ProcChannels::Bury(std::unique_ptr<FrameChannel> channel) {
  absl::MutexLock lock(&graveyard_mu_);
  graveyard_.push_back(std::move(channel));
  if (loop_closed_ || bury_posted_) return;
  bury_posted_ = true;
  loop_->Post([this] { BuryAll(); });
}

void ProcChannels::BuryAll() {
  std::vector<std::unique_ptr<FrameChannel>> dead;
  {
    absl::MutexLock lock(&graveyard_mu_);
    dead.swap(graveyard_);
    bury_posted_ = false;
  }
  dead.clear();  // joins their threads (never from their own)
}

void ProcChannels::Start(std::string host_address, EnvelopeSink on_envelope) {
  absl::MutexLock lock(&mu_);
  host_address_ = std::move(host_address);
  on_envelope_ = std::move(on_envelope);
}

absl::Status ProcChannels::Attach(const std::shared_ptr<Child>& child, int fd,
                                  std::string channel_name) {
  const uint64_t id = child->id;
  // The channel's callbacks wait until `child->channel` is in place.
  auto attached = std::make_shared<absl::Notification>();
  FrameChannel::Options channel_options;
  channel_options.name = std::move(channel_name);
  channel_options.max_frame_bytes = options_.max_frame_bytes;
  channel_options.max_pending_bytes = options_.max_pending_bytes;
  FrameChannel::Callbacks channel_callbacks;
  channel_callbacks.on_frame = [this, id, attached](std::string_view frame) {
    attached->WaitForNotification();
    InCallback counted(this);
    OnFrame(id, frame);
  };
  channel_callbacks.on_closed = [this, id,
                                 attached](const absl::Status& status) {
    attached->WaitForNotification();
    InCallback counted(this);
    OnClosed(id, status);
  };
  absl::StatusOr<std::unique_ptr<FrameChannel>> channel = FrameChannel::Create(
      fd, std::move(channel_options), std::move(channel_callbacks));
  if (!channel.ok()) return channel.status();
  bool closing;
  {
    absl::MutexLock lock(&mu_);
    closing = closing_;
    if (!closing) {
      child->channel = *std::move(channel);
      children_[id] = child;
    }
  }
  attached->Notify();
  if (closing) {
    channel->reset();  // its callbacks find no child
    return absl::UnavailableError("hostd is shutting down");
  }
  return absl::OkStatus();
}

absl::StatusOr<ProcChannels::Ticket> ProcChannels::Expect(
    const std::string& name, uint64_t rank, uint64_t incarnation,
    ChildCallbacks callbacks) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair for a proc channel");
  }
  auto child = std::make_shared<Child>();
  child->name = name;
  child->owner = this;
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
    w->set_rejoin_socket(rejoin_socket_);
    w->set_incarnation(incarnation);
    w->set_max_frame_bytes(options_.max_frame_bytes);
  }
  const uint64_t id = child->id;
  if (absl::Status attached =
          Attach(child, fds[0], absl::StrCat("proc \"", name, "\""));
      !attached.ok()) {
    close(fds[1]);
    return attached;
  }
  if (absl::Status sent = child->channel->Send(welcome); !sent.ok()) {
    Forget(id);
    close(fds[1]);
    return sent;
  }
  return Ticket{id, fds[1]};
}

absl::Status ProcChannels::Listen(const std::string& socket_path, mode_t mode,
                                  RejoinHandler handler) {
  if (!handler) return absl::InvalidArgumentError("Listen needs a handler");
  std::error_code error;
  const std::string path = std::filesystem::absolute(socket_path, error);
  if (socket_path.empty() || error) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad rejoin socket path \"", socket_path, "\""));
  }
  {
    absl::MutexLock lock(&mu_);
    if (listening_ || closing_) {
      return absl::FailedPreconditionError(
          absl::StrCat("already listening for rejoins on ", rejoin_socket_));
    }
    listening_ = true;
  }
  auto fail = [this](absl::Status status) {
    absl::MutexLock lock(&mu_);
    listening_ = false;
    return status;
  };
  // A stale socket of an earlier hostd (one hostd per runtime dir: the dir
  // lock) is replaced; anything else is not ours to remove.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return fail(absl::FailedPreconditionError(absl::StrCat(
          "rejoin socket path ", path, " exists and is not a socket")));
    }
    if (unlink(path.c_str()) != 0) {
      return fail(absl::ErrnoToStatus(
          errno, absl::StrCat("removing the stale rejoin socket ", path)));
    }
  } else if (errno != ENOENT) {
    return fail(absl::ErrnoToStatus(errno, absl::StrCat("lstat ", path)));
  }
  absl::StatusOr<int> listening = ListenUnix(path, mode);
  if (!listening.ok()) {
    return fail(absl::Status(
        listening.status().code(),
        absl::StrCat("rejoin socket: ", listening.status().message())));
  }
  const int fd = *listening;
  auto fail_bound = [&](absl::Status status) {
    close(fd);
    unlink(path.c_str());
    return fail(std::move(status));
  };
  if (lstat(path.c_str(), &st) != 0) {
    return fail_bound(absl::ErrnoToStatus(errno, absl::StrCat("lstat ", path)));
  }
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    return fail_bound(absl::ErrnoToStatus(errno, "eventfd"));
  }
  listen_fd_ = fd;
  wake_fd_ = wake;
  socket_path_ = path;
  socket_dev_ = st.st_dev;
  socket_ino_ = st.st_ino;
  {
    absl::MutexLock lock(&mu_);
    rejoin_socket_ = path;
    on_rejoin_ = std::move(handler);
  }
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  LOG(INFO) << "procs rejoin on " << path;
  return absl::OkStatus();
}

void ProcChannels::AcceptLoop() {
  struct pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      PLOG(ERROR) << "poll on the rejoin socket; no more rejoins";
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    for (;;) {
      int fd =
          accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        AddRejoinConnection(fd);
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // E.g. out of fds: wait a moment instead of spinning (the wakeup fd
      // still ends the thread).
      PLOG(WARNING) << "accept on the rejoin socket " << socket_path_;
      struct pollfd wake = {wake_fd_, POLLIN, 0};
      if (poll(&wake, 1, 100) > 0) return;
      break;
    }
  }
}

void ProcChannels::AddRejoinConnection(int fd) {
  struct ucred peer = {};
  socklen_t length = sizeof(peer);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    PLOG(WARNING) << "SO_PEERCRED on a rejoin connection; closing it";
    close(fd);
    return;
  }
  auto child = std::make_shared<Child>();
  child->rejoin = true;
  child->owner = this;
  child->stage = Child::Stage::kRejoinFirst;
  child->pid = peer.pid;
  child->peer_uid = peer.uid;
  {
    absl::MutexLock lock(&mu_);
    if (closing_) {
      close(fd);
      return;
    }
    if (waiting_rejoins_ >= options_.max_waiting_rejoins) {
      LOG(WARNING) << "closing a rejoin connection from pid " << peer.pid
                   << ": " << waiting_rejoins_
                   << " rejoins are waiting for an answer already";
      close(fd);
      return;
    }
    ++waiting_rejoins_;
    child->id = next_id_++;
  }
  const uint64_t id = child->id;
  absl::Status attached =
      Attach(child, fd,
             absl::StrCat("rejoin connection ", id, " (pid ", peer.pid, ")"));
  if (!attached.ok()) {
    LOG(WARNING) << "rejoin connection from pid " << peer.pid << ": "
                 << attached;
    absl::MutexLock lock(&mu_);
    --waiting_rejoins_;
    return;
  }
  EventLoop::TimerId timer =
      loop_->PostAfter(options_.rejoin_first_frame_timeout, [this, id] {
        Drop(id, /*only_before_rejoin=*/true,
             absl::StrCat(
                 "sent no Rejoin within ",
                 absl::FormatDuration(options_.rejoin_first_frame_timeout)));
      });
  absl::MutexLock lock(&mu_);
  child->first_frame_timer = timer;
}

void ProcChannels::LeaveWaitingLocked(Child& child) {
  if (child.rejoin && (child.stage == Child::Stage::kRejoinFirst ||
                       child.stage == Child::Stage::kRejoinAsked)) {
    --waiting_rejoins_;
    child.stage = Child::Stage::kDone;
  }
}

void ProcChannels::Drop(uint64_t id, bool only_before_rejoin,
                        const std::string& why,
                        std::optional<v1::HostFrame> refused) {
  std::shared_ptr<Child> child;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end()) return;
    child = it->second;
    // Only a rejoin connection not answered yet; the first-frame deadline
    // comes too late once its Rejoin arrived.
    if (child->stage != Child::Stage::kRejoinFirst &&
        (only_before_rejoin || child->stage != Child::Stage::kRejoinAsked)) {
      return;
    }
    if (child->first_frame_timer != 0) loop_->Cancel(child->first_frame_timer);
    LeaveWaitingLocked(*child);
    child->stage = Child::Stage::kDone;
    child->forgotten = true;
    children_.erase(it);
  }
  LOG(WARNING) << "closing " << child->channel->name() << ": " << why;
  if (refused.has_value()) {
    child->channel->Send(*refused).IgnoreError();
    // A fresh connection's socket takes one small frame at once; wait no
    // further (never block on a proc).
    if (!child->channel->Flush(absl::ZeroDuration())) {
      LOG(WARNING) << child->channel->name()
                   << ": its Refused did not go out whole";
    }
  }
  child->channel->Close();
}

void ProcChannels::Forget(uint64_t id, std::function<void()> on_drained) {
  std::shared_ptr<Child> child;  // unset: closed and forgotten before
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it != children_.end()) {
      child = it->second;
      child->forgotten = true;
      if (child->registered() && !child->closed) {
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
      if (child->first_frame_timer != 0) {
        loop_->Cancel(child->first_frame_timer);
      }
      LeaveWaitingLocked(*child);
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
    if (!child->registered() || child->closed) {
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

void ProcChannels::AcceptRejoin(uint64_t id, const std::string& name,
                                uint64_t rank, ChildCallbacks callbacks) {
  std::shared_ptr<Child> child;
  v1::HostFrame frame;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end() || !it->second->rejoin ||
        it->second->stage != Child::Stage::kRejoinAsked || it->second->closed) {
      LOG(INFO) << "rejoin " << id << " of proc \"" << name
                << "\" is not waiting for an answer (its connection closed?)";
      return;
    }
    child = it->second;
    LeaveWaitingLocked(*child);
    child->stage = Child::Stage::kAccepted;
    child->name = name;
    child->callbacks = std::move(callbacks);
    frame.mutable_rejoined()->set_secret(std::move(child->secret));
    child->secret.clear();
    frame.mutable_rejoined()->set_host(host_address_);
    frame.mutable_rejoined()->set_max_frame_bytes(options_.max_frame_bytes);
  }
  LOG(INFO) << "proc \"" << name << "\" (rank " << rank << ", pid "
            << child->pid << ") rejoined; waiting for its Ready";
  if (absl::Status sent = child->channel->Send(frame); !sent.ok()) {
    LOG(WARNING) << "sending Rejoined to proc \"" << name << "\": " << sent;
  }
}

void ProcChannels::RefuseRejoin(uint64_t id, const std::string& reason) {
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end() || !it->second->rejoin ||
        it->second->stage != Child::Stage::kRejoinAsked) {
      return;
    }
  }
  v1::HostFrame refused;
  refused.mutable_refused()->set_reason(reason);
  Drop(id, /*only_before_rejoin=*/false,
       absl::StrCat("rejoin refused: ", reason), std::move(refused));
}

namespace {
// The SendBatch open on this thread, if any.
thread_local ProcChannels::SendBatch* current_batch = nullptr;
}  // namespace

ProcChannels::SendBatch::SendBatch(ProcChannels* channels)
    : channels_(channels), active_(current_batch == nullptr) {
  if (active_) current_batch = this;
}

ProcChannels::SendBatch::~SendBatch() {
  if (!active_) return;
  current_batch = nullptr;
  for (const std::shared_ptr<Child>& child : touched_) {
    child->channel->WriteQueued();
  }
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
  SendBatch* batch = current_batch;
  absl::Status sent;
  if (batch != nullptr && batch->channels_ == this) {
    sent = child->channel->Queue(frame);
    if (sent.ok() && std::find(batch->touched_.begin(), batch->touched_.end(),
                               child) == batch->touched_.end()) {
      batch->touched_.push_back(std::move(child));
    }
  } else {
    sent = child->channel->Send(frame);
  }
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
    // The caller's wall-clock deadline, read once; the timer is monotonic.
    pending.timer = loop_->PostAfter(deadline - absl::Now(), [this, id, proc] {
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

size_t ProcChannels::PendingRequests() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
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
  const bool parsed =
      frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  bool first_of_rejoin;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end()) return;
    first_of_rejoin = it->second->stage == Child::Stage::kRejoinFirst;
  }
  if (first_of_rejoin && (!parsed || !frame.has_rejoin())) {
    Drop(id, /*only_before_rejoin=*/true,
         parsed ? absl::StrCat("its first frame was not a Rejoin (frame ",
                               static_cast<int>(frame.frame_case()), ")")
                : "its first frame was not a ProcFrame");
    return;
  }
  if (!parsed) {
    LOG(WARNING) << "proc channel " << id << ": dropping a malformed frame ("
                 << bytes.size() << " bytes)";
    return;
  }
  switch (frame.frame_case()) {
    case v1::ProcFrame::kHello:
      OnHello(id, frame.hello());
      return;
    case v1::ProcFrame::kReady:
      OnReady(id);
      return;
    case v1::ProcFrame::kRejoin:
      OnRejoin(id, std::move(*frame.mutable_rejoin()));
      return;
    case v1::ProcFrame::kResponse:
      OnResponse(id, std::move(*frame.mutable_response()));
      return;
    case v1::ProcFrame::kEnvelope: {
      EnvelopeSink sink;
      std::string proc;
      {
        absl::ReaderMutexLock lock(&mu_);
        auto it = children_.find(id);
        if (it == children_.end() || !it->second->registered()) {
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
  const bool ours =
      hello.protocol_version() == v1::PROC_CHANNEL_VERSION_CURRENT;
  std::shared_ptr<Child> child;
  std::string verifier;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end() || it->second->stage != Child::Stage::kWelcomed) {
      return;
    }
    child = it->second;
    if (child->forgotten || child->closed) return;
    if (ours) {
      child->stage = Child::Stage::kHello;
      child->pid = hello.pid();
      child->secret = MakeSecret();
      verifier = Sha256(child->secret);
    } else {
      child->stage = Child::Stage::kDone;
    }
  }
  if (!ours) {
    std::string why = VersionMismatch(
        absl::StrCat("proc \"", child->name, "\""), hello.protocol_version());
    LOG(WARNING) << why;
    v1::HostFrame refused;
    refused.mutable_refused()->set_reason(why);
    child->channel->Send(refused).IgnoreError();
    child->channel->Flush(absl::Milliseconds(100));
    child->channel->Close();
    if (child->callbacks.on_refused) child->callbacks.on_refused(why);
    return;
  }
  if (!child->callbacks.on_hello) {
    Accept(id);
    return;
  }
  // The closure may outlive this object: it goes through alive_.
  child->callbacks.on_hello(hello.pid(), std::move(verifier),
                            [alive = alive_, id] {
                              absl::ReaderMutexLock lock(&alive->mu);
                              if (alive->self != nullptr) {
                                alive->self->Accept(id);
                              }
                            });
}

void ProcChannels::Accept(uint64_t id) {
  std::shared_ptr<Child> child;
  v1::HostFrame frame;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end()) return;
    child = it->second;
    if (child->stage != Child::Stage::kHello || child->closed ||
        child->forgotten) {
      return;  // called twice, or the channel is gone
    }
    child->stage = Child::Stage::kAccepted;
    frame.mutable_accepted()->set_secret(std::move(child->secret));
    child->secret.clear();
  }
  if (absl::Status sent = child->channel->Send(frame); !sent.ok()) {
    LOG(WARNING) << "sending Accepted to " << child->channel->name() << ": "
                 << sent;
  }
}

void ProcChannels::OnReady(uint64_t id) {
  std::shared_ptr<Child> child;
  pid_t pid;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end()) return;
    child = it->second;
    if (child->stage != Child::Stage::kAccepted) {
      LOG(WARNING) << child->channel->name()
                   << ": Ready before it was accepted; ignored";
      return;
    }
    if (child->forgotten || child->closed) return;
    child->stage = Child::Stage::kRegistered;
    by_name_[child->name] = child;
    pid = child->pid;
  }
  if (child->callbacks.on_registered) child->callbacks.on_registered(pid);
}

void ProcChannels::OnRejoin(uint64_t id, v1::Rejoin rejoin) {
  const bool ours =
      rejoin.protocol_version() == v1::PROC_CHANNEL_VERSION_CURRENT;
  std::shared_ptr<Child> child;
  RejoinHandler handler;
  RejoinRequest request;
  {
    absl::MutexLock lock(&mu_);
    auto it = children_.find(id);
    if (it == children_.end()) return;
    child = it->second;
    if (child->stage != Child::Stage::kRejoinFirst) {
      LOG(WARNING) << child->channel->name()
                   << ": an unexpected Rejoin; ignored";
      return;
    }
    if (ours) {
      if (child->first_frame_timer != 0) {
        loop_->Cancel(child->first_frame_timer);
        child->first_frame_timer = 0;
      }
      child->stage = Child::Stage::kRejoinAsked;
      child->secret = MakeSecret();
      request.next_verifier = Sha256(child->secret);
      request.peer_pid = child->pid;
      request.peer_uid = child->peer_uid;
      handler = on_rejoin_;
    }
  }
  if (!ours) {
    std::string why =
        VersionMismatch(absl::StrCat("proc \"", Printable(rejoin.name()),
                                     "\" (pid ", child->pid, ")"),
                        rejoin.protocol_version());
    v1::HostFrame refused;
    refused.mutable_refused()->set_reason(why);
    Drop(id, /*only_before_rejoin=*/true, why, std::move(refused));
    return;
  }
  request.id = id;
  request.presented_verifier = Sha256(rejoin.secret());
  rejoin.clear_secret();
  request.rejoin = std::move(rejoin);
  handler(std::move(request));
}

void ProcChannels::OnResponse(uint64_t id, v1::ProcResponse response) {
  const uint64_t request_id = response.id();
  {
    absl::ReaderMutexLock lock(&mu_);
    auto child = children_.find(id);
    auto pending = pending_.find(request_id);
    if (child == children_.end() || !child->second->registered() ||
        pending == pending_.end() ||
        pending->second.proc != child->second->name) {
      VLOG(1) << "proc channel " << id << ": dropping a response to request "
              << request_id << " (not pending for it)";
      return;
    }
  }
  if (CarriesError(response)) {
    Finish(request_id, FromErrorProto(response.error()));
  } else {
    Finish(request_id, std::move(response));
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
    was_registered = child->registered();
    forgotten = child->forgotten;
    on_drained = std::move(child->on_drained);
    child->on_drained = nullptr;
    if (child->rejoin && !was_registered) {
      // Nobody knows this connection as a proc's channel yet: it just goes.
      if (child->first_frame_timer != 0) {
        loop_->Cancel(child->first_frame_timer);
      }
      LeaveWaitingLocked(*child);
      forgotten = true;
    }
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
