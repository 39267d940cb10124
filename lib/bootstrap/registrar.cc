#include "lib/bootstrap/registrar.h"

#include <errno.h>
#include <fcntl.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/optional.h"
#include "lib/status.h"
#include "proto/bootstrap.grpc.pb.h"

namespace mesh {
namespace {

constexpr size_t kSecretBytes = 32;
// Stop requests are rare; more than this many unsent ones means the child
// is not reading its channel.
constexpr size_t kMaxQueuedEvents = 16;

std::string ErrnoMessage(int err) { return std::strerror(err); }

absl::StatusOr<std::string> NewSecret() {
  unsigned char bytes[kSecretBytes];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("getrandom failed: ", ErrnoMessage(errno)));
    }
    got += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

// Compares without an early exit, so the time taken does not depend on how
// many leading characters match. The length is not secret.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = diff | (static_cast<unsigned char>(a[i]) ^
                   static_cast<unsigned char>(b[i]));
  }
  return diff == 0;
}

// "host:port" with a non-empty host (IPv6 in brackets) and a port 1..65535.
bool IsHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  const std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
  } else if (host.find(':') != std::string::npos) {
    return false;
  }
  if (port.empty() || port.size() > 5) return false;
  for (char c : port) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  int value = 0;
  return absl::SimpleAtoi(port, &value) && value >= 1 && value <= 65535;
}

uint32_t ClampToMillis(absl::Duration d) {
  const int64_t ms = absl::ToInt64Milliseconds(d);
  if (ms <= 0) return 0;
  if (ms > std::numeric_limits<uint32_t>::max()) {
    return std::numeric_limits<uint32_t>::max();
  }
  return static_cast<uint32_t>(ms);
}

// mkdir -p `dir`, then makes sure the last component is a directory of ours
// with mode 0700.
absl::Status MakePrivateDir(const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(dir).parent_path();
  if (!parent.empty()) {
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot create directory \"", parent.string(), "\": ", ec.message()));
    }
  }
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create runtime dir \"", dir, "\": ", ErrnoMessage(errno)));
  }
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot stat runtime dir \"", dir, "\": ", ErrnoMessage(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("runtime dir \"", dir, "\" is not a directory"));
  }
  if (st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("runtime dir \"", dir, "\" is owned by uid ", st.st_uid,
                     ", not by this process (uid ", geteuid(), ")"));
  }
  if ((st.st_mode & 07777) != 0700 && chmod(dir.c_str(), 0700) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot chmod runtime dir \"", dir,
                     "\" to 0700: ", ErrnoMessage(errno)));
  }
  return absl::OkStatus();
}

// Removes a socket left behind by an earlier registrar. Refuses to remove
// anything that is not a socket.
absl::Status RemoveStaleSocket(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot stat \"", path, "\": ", ErrnoMessage(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("\"", path, "\" exists and is not a socket"));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot remove stale socket \"", path, "\": ", ErrnoMessage(errno)));
  }
  return absl::OkStatus();
}

// Writes all of `data` to the pipe `fd`, which must be non-blocking.
absl::Status WriteToPipe(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "bootstrap info of ", data.size(), " bytes does not fit a pipe"));
      }
      return absl::InternalError(absl::StrCat(
          "write to bootstrap pipe failed: ", ErrnoMessage(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Counts live reactors so that the registrar outlives every one of them.
class ReactorTracker {
 public:
  void Add() {
    absl::MutexLock l(&mu_);
    ++live_;
  }
  void Remove() {
    absl::MutexLock l(&mu_);
    --live_;
  }
  void WaitForNone() {
    absl::MutexLock l(&mu_);
    while (!mu_.AwaitWithTimeout(
        absl::Condition(&ReactorTracker::NoneLive, this), absl::Seconds(10))) {
      LOG(WARNING) << "still waiting for " << live_
                   << " registration streams to end";
    }
  }

 private:
  static bool NoneLive(ReactorTracker* t)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) {
    return t->live_ == 0;
  }
  absl::Mutex mu_;
  int live_ ABSL_GUARDED_BY(mu_) = 0;
};

// One expected child. Its callbacks run under cb_mu_ so that Forget (which
// sets forgotten_ under cb_mu_) waits for a running callback and no callback
// starts afterwards.
class ChildState {
 public:
  ChildState(uint64_t id, std::string name, std::string secret,
             Registrar::ChildCallbacks callbacks)
      : id_(id),
        name_(std::move(name)),
        secret_(std::move(secret)),
        callbacks_(std::move(callbacks)) {}

  uint64_t id() const { return id_; }
  const std::string& name() const { return name_; }
  const std::string& secret() const { return secret_; }

  void ReportRegistered(const std::string& address, pid_t pid) {
    absl::MutexLock l(&cb_mu_);
    if (forgotten_) return;
    InvokeLocked([&] {
      if (callbacks_.on_registered) callbacks_.on_registered(address, pid);
    });
  }

  // At most once, and never after MarkForgotten.
  void ReportDisconnected() {
    absl::MutexLock l(&cb_mu_);
    if (forgotten_ || disconnect_reported_) return;
    disconnect_reported_ = true;
    InvokeLocked([&] {
      if (callbacks_.on_disconnected) callbacks_.on_disconnected();
    });
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
  template <typename F>
  void InvokeLocked(F&& f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cb_mu_) {
    cb_thread_.store(std::this_thread::get_id());
    f();
    cb_thread_.store(std::thread::id());
  }

  void MarkForgottenFromCallback() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    forgotten_ = true;
  }

  const uint64_t id_;
  const std::string name_;
  const std::string secret_;
  const Registrar::ChildCallbacks callbacks_;

  absl::Mutex cb_mu_;
  bool forgotten_ ABSL_GUARDED_BY(cb_mu_) = false;
  bool disconnect_reported_ ABSL_GUARDED_BY(cb_mu_) = false;
  // The thread running a callback of this child, if any.
  std::atomic<std::thread::id> cb_thread_{};
};

// The server side of one Register stream. Owns itself until OnDone; others
// hold it by shared_ptr, so a late Send/Close is safe (and a no-op once
// finished). At most one write is outstanding; Finish is called once, after
// the outstanding write completes. gRPC operations are started without
// holding mu_.
class RegisterReactor : public grpc::ServerWriteReactor<v1::ParentEvent> {
 public:
  static std::shared_ptr<RegisterReactor> Create(
      std::shared_ptr<ReactorTracker> tracker) {
    std::shared_ptr<RegisterReactor> reactor(
        new RegisterReactor(std::move(tracker)));
    reactor->self_ = reactor;
    return reactor;
  }

  // Binds the accepted child; call before the reactor is returned to gRPC.
  void Attach(std::shared_ptr<ChildState> child) {
    absl::MutexLock l(&mu_);
    child_ = std::move(child);
  }

  // Queues `event`. OK unless the stream is finishing or the queue is full.
  absl::Status Send(v1::ParentEvent event) {
    {
      absl::MutexLock l(&mu_);
      if (finish_status_.has_value()) {
        return absl::FailedPreconditionError("channel is closed");
      }
      if (queue_.size() >= kMaxQueuedEvents) {
        return absl::ResourceExhaustedError(absl::StrCat(
            kMaxQueuedEvents, " events are already queued on the channel"));
      }
      queue_.push_back(std::move(event));
    }
    Pump();
    return absl::OkStatus();
  }

  // Finishes the stream with `status` once the write in flight (if any)
  // completes; drops queued events. Idempotent (the first status wins).
  void Close(grpc::Status status) {
    {
      absl::MutexLock l(&mu_);
      CloseLocked(std::move(status));
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      queue_.pop_front();
      if (!ok) {
        CloseLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                 "write to child failed"));
      }
    }
    Pump();  // Last: may finish, after which `this` may be deleted.
  }

  void OnCancel() override {
    std::shared_ptr<ChildState> child;
    {
      absl::MutexLock l(&mu_);
      CloseLocked(grpc::Status::CANCELLED);
      child = child_;
    }
    if (child != nullptr) {
      LOG(INFO) << "child \"" << child->name() << "\" closed its channel";
      child->ReportDisconnected();
    }
    Pump();  // Last: may finish, after which `this` may be deleted.
  }

  void OnDone() override {
    std::shared_ptr<ReactorTracker> tracker = tracker_;
    std::shared_ptr<ChildState> child;
    {
      absl::MutexLock l(&mu_);
      child = child_;
    }
    if (child != nullptr) child->ReportDisconnected();
    child.reset();
    std::shared_ptr<RegisterReactor> self = std::move(self_);
    self.reset();  // May delete `this`.
    tracker->Remove();
  }

 private:
  explicit RegisterReactor(std::shared_ptr<ReactorTracker> tracker)
      : tracker_(std::move(tracker)) {
    tracker_->Add();
  }

  void CloseLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finish_status_.has_value()) finish_status_ = std::move(status);
    // Keep the event being written: it must live until OnWriteDone.
    while (queue_.size() > (writing_ ? 1u : 0u)) queue_.pop_back();
  }

  // Starts the next write, or Finish when nothing is left to write. Only the
  // caller that flips writing_/finish_called_ starts the operation, so no
  // two operations overlap even though they start outside mu_.
  void Pump() {
    const v1::ParentEvent* to_write = nullptr;
    absl::optional<grpc::Status> to_finish;
    {
      absl::MutexLock l(&mu_);
      if (writing_ || finish_called_) return;
      if (!queue_.empty()) {
        writing_ = true;
        to_write = &queue_.front();  // Stable: only OnWriteDone pops it.
      } else if (finish_status_.has_value()) {
        finish_called_ = true;
        to_finish = *finish_status_;
      } else {
        return;
      }
    }
    if (to_write != nullptr) {
      StartWrite(to_write);
    } else {
      Finish(std::move(*to_finish));
    }
  }

  const std::shared_ptr<ReactorTracker> tracker_;
  std::shared_ptr<RegisterReactor> self_;  // Released in OnDone.

  absl::Mutex mu_;
  std::shared_ptr<ChildState> child_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::ParentEvent> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  absl::optional<grpc::Status> finish_status_ ABSL_GUARDED_BY(mu_);
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

class Registrar::Impl {
 public:
  Impl(Options options, std::string socket_path)
      : options_(std::move(options)),
        socket_path_(std::move(socket_path)),
        service_(this),
        tracker_(std::make_shared<ReactorTracker>()) {}

  ~Impl() {
    std::vector<Entry> entries;
    {
      absl::MutexLock l(&mu_);
      shutting_down_ = true;
      for (auto& [id, entry] : children_) entries.push_back(std::move(entry));
      children_.clear();
      by_name_.clear();
    }
    for (Entry& entry : entries) {
      entry.state->MarkForgotten();
      if (auto reactor = entry.reactor.lock()) {
        reactor->Close(grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            absl::StrCat("registrar at ", socket_path_, " shut down")));
      }
    }
    entries.clear();
    if (server_ != nullptr) {
      // Every stream is finishing already; the deadline bounds stragglers.
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(2));
    }
    tracker_->WaitForNone();
    server_.reset();
    unlink(socket_path_.c_str());
  }

  absl::Status Start() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_path_,
                             grpc::InsecureServerCredentials());
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve on unix:", socket_path_));
    }
    LOG(INFO) << "registrar listening on unix:" << socket_path_;
    return absl::OkStatus();
  }

  const std::string& socket_path() const { return socket_path_; }

  absl::StatusOr<Ticket> Expect(const std::string& name, uint64_t rank,
                                ChildCallbacks callbacks) {
    if (name.empty()) {
      return absl::InvalidArgumentError("expected child has an empty name");
    }
    ASSIGN_OR_RETURN(std::string secret, NewSecret());
    v1::BootstrapInfo info;
    info.set_registry_socket(socket_path_);
    info.set_name(name);
    info.set_rank(rank);
    info.set_secret(secret);
    info.set_advertise_host(options_.advertise_host);
    info.set_orphan_timeout_ms(ClampToMillis(options_.orphan_timeout));
    std::string data;
    if (!info.SerializeToString(&data)) {
      return absl::InternalError(
          absl::StrCat("cannot serialize bootstrap info of \"", name, "\""));
    }

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "pipe for child \"", name, "\" failed: ", ErrnoMessage(errno)));
    }
    absl::Status status;
    if (fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0) {
      status = absl::InternalError(absl::StrCat(
          "fcntl on bootstrap pipe failed: ", ErrnoMessage(errno)));
    } else {
      status = WriteToPipe(fds[1], data);
    }
    close(fds[1]);
    if (!status.ok()) {
      close(fds[0]);
      return Annotate(status, absl::StrCat("child \"", name, "\""));
    }

    absl::MutexLock l(&mu_);
    const uint64_t id = next_id_++;
    children_.emplace(
        id, Entry{std::make_shared<ChildState>(id, name, std::move(secret),
                                               std::move(callbacks))});
    by_name_[name].insert(id);
    return Ticket{id, fds[0]};
  }

  void Forget(uint64_t id) {
    Entry entry;
    {
      absl::MutexLock l(&mu_);
      auto it = children_.find(id);
      if (it == children_.end()) return;
      entry = std::move(it->second);
      children_.erase(it);
      auto by_name = by_name_.find(entry.state->name());
      if (by_name != by_name_.end()) {
        by_name->second.erase(id);
        if (by_name->second.empty()) by_name_.erase(by_name);
      }
    }
    entry.state->MarkForgotten();
    if (auto reactor = entry.reactor.lock()) {
      reactor->Close(
          grpc::Status(grpc::StatusCode::CANCELLED,
                       absl::StrCat("parent closed the channel of \"",
                                    entry.state->name(), "\"")));
    }
  }

  absl::Status SendStop(uint64_t id, const std::string& reason,
                        absl::Duration grace) {
    std::shared_ptr<RegisterReactor> reactor;
    std::string name;
    {
      absl::MutexLock l(&mu_);
      auto it = children_.find(id);
      if (it == children_.end()) {
        return absl::NotFoundError(absl::StrCat("no expected child ", id));
      }
      name = it->second.state->name();
      if (!it->second.used) {
        return absl::FailedPreconditionError(
            absl::StrCat("child \"", name, "\" has not registered"));
      }
      reactor = it->second.reactor.lock();
    }
    if (reactor == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("channel of child \"", name, "\" is closed"));
    }
    v1::ParentEvent event;
    event.mutable_stop()->set_reason(reason);
    event.mutable_stop()->set_grace_ms(ClampToMillis(grace));
    return Annotate(reactor->Send(std::move(event)),
                    absl::StrCat("stop child \"", name, "\""));
  }

 private:
  struct Entry {
    std::shared_ptr<ChildState> state;
    bool used = false;  // The secret was accepted once.
    std::weak_ptr<RegisterReactor> reactor;
  };

  class Service final : public v1::Bootstrap::CallbackService {
   public:
    explicit Service(Impl* impl) : impl_(impl) {}
    grpc::ServerWriteReactor<v1::ParentEvent>* Register(
        grpc::CallbackServerContext* /*context*/,
        const v1::RegisterRequest* request) override {
      return impl_->StartRegister(*request);
    }

   private:
    Impl* const impl_;
  };

  // The Register handler: authenticates, validates, then accepts (writes
  // Accepted and reports on_registered before the reactor is returned, so
  // on_disconnected always comes after it) or finishes with the error.
  grpc::ServerWriteReactor<v1::ParentEvent>* StartRegister(
      const v1::RegisterRequest& request) {
    std::shared_ptr<RegisterReactor> reactor =
        RegisterReactor::Create(tracker_);
    std::shared_ptr<ChildState> child;
    absl::Status status = CheckAndAccept(request, reactor, &child);
    if (!status.ok()) {
      LOG(WARNING) << status.message();
      reactor->Close(ToGrpcStatus(status));
      return reactor.get();  // Kept alive by its self-reference.
    }
    LOG(INFO) << "child \"" << request.name() << "\" registered at "
              << request.address() << " (pid " << request.pid() << ")";
    v1::ParentEvent accepted;
    accepted.mutable_accepted();
    absl::Status sent = reactor->Send(std::move(accepted));
    if (sent.ok()) child->ReportRegistered(request.address(), request.pid());
    return reactor.get();
  }

  absl::Status CheckAndAccept(const v1::RegisterRequest& request,
                              const std::shared_ptr<RegisterReactor>& reactor,
                              std::shared_ptr<ChildState>* child) {
    absl::MutexLock l(&mu_);
    if (shutting_down_) {
      return absl::UnavailableError(
          absl::StrCat("registrar at ", socket_path_, " is shutting down"));
    }
    Entry* match = nullptr;
    auto by_name = by_name_.find(request.name());
    if (by_name != by_name_.end()) {
      for (uint64_t id : by_name->second) {
        Entry& entry = children_.at(id);
        if (ConstantTimeEquals(entry.state->secret(), request.secret()) &&
            !entry.used) {
          match = &entry;
        }
      }
    }
    if (match == nullptr) {
      return absl::PermissionDeniedError(
          absl::StrCat("register of \"", request.name(),
                       "\" rejected: wrong or already used secret"));
    }
    // The secret is consumed only by a valid request.
    if (!IsHostPort(request.address())) {
      return absl::InvalidArgumentError(
          absl::StrCat("register of \"", request.name(), "\": address \"",
                       request.address(), "\" is not host:port"));
    }
    if (request.pid() <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "register of \"", request.name(), "\": bad pid ", request.pid()));
    }
    match->used = true;
    reactor->Attach(match->state);
    match->reactor = reactor;
    *child = match->state;
    return absl::OkStatus();
  }

  const Options options_;
  const std::string socket_path_;
  Service service_;
  const std::shared_ptr<ReactorTracker> tracker_;
  std::unique_ptr<grpc::Server> server_;

  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Entry> children_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, absl::flat_hash_set<uint64_t>> by_name_
      ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<Registrar>> Registrar::Create(Options options) {
  if (options.runtime_dir.empty()) {
    return absl::InvalidArgumentError("registrar needs a runtime dir");
  }
  // Children may run in another working directory: use an absolute path.
  std::error_code ec;
  std::filesystem::path dir =
      std::filesystem::absolute(options.runtime_dir, ec).lexically_normal();
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad runtime dir \"", options.runtime_dir, "\": ", ec.message()));
  }
  std::string dir_string = dir.string();
  while (dir_string.size() > 1 && dir_string.back() == '/') {
    dir_string.pop_back();
  }
  RETURN_IF_ERROR(MakePrivateDir(dir_string));
  std::string socket_path = dir_string + "/registry.sock";
  if (socket_path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path \"", socket_path, "\" is longer than ",
                     sizeof(sockaddr_un::sun_path) - 1, " bytes"));
  }
  RETURN_IF_ERROR(RemoveStaleSocket(socket_path));
  options.runtime_dir = dir_string;
  auto impl = std::make_unique<Impl>(std::move(options), socket_path);
  RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<Registrar>(new Registrar(std::move(impl)));
}

Registrar::Registrar(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Registrar::~Registrar() = default;

const std::string& Registrar::socket_path() const {
  return impl_->socket_path();
}

absl::StatusOr<Registrar::Ticket> Registrar::Expect(const std::string& name,
                                                    uint64_t rank,
                                                    ChildCallbacks callbacks) {
  return impl_->Expect(name, rank, std::move(callbacks));
}

void Registrar::Forget(uint64_t id) { impl_->Forget(id); }

absl::Status Registrar::SendStop(uint64_t id, const std::string& reason,
                                 absl::Duration grace) {
  return impl_->SendStop(id, reason, grace);
}

}  // namespace mesh
