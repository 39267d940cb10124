#include "hostd/host_service.h"

#include <glog/logging.h>
#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "hostd/audit.h"
#include "hostd/host_metrics.h"
#include "lib/grpc_status.h"
#include "lib/names.h"
#include "lib/resource/status_waiters.h"
#include "lib/status.h"
#include "lib/time/clock.h"
#include "lib/verb_timeouts.h"
#include "lib/version.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;

// Finishes `reactor` with `result`, copying the value into `response`.
template <typename T>
void FinishWith(grpc::ServerUnaryReactor* reactor, T* response,
                absl::StatusOr<T> result) {
  if (result.ok()) *response = *std::move(result);
  reactor->Finish(ToGrpcStatus(result.status()));
}

// A client sees its own procs only; an admin every one.
void KeepOwned(const Principal& caller,
               google::protobuf::RepeatedPtrField<v1::ProcState>* procs) {
  if (caller.role == Role::kAdmin) return;
  procs->erase(std::remove_if(procs->begin(), procs->end(),
                              [&](const v1::ProcState& state) {
                                return state.owner() != caller.identity;
                              }),
               procs->end());
}

// One WaitProcs call. A wait the caller cancels (or whose connection goes)
// is dropped from the manager at once, freeing the call, instead of being
// held until its own deadline. Finish runs exactly once: from the wait's
// answer, or from OnCancel if that dropped the wait unanswered. Deletes
// itself in OnDone, once the handler has let go of it too.
class WaitCall final : public grpc::ServerUnaryReactor {
 public:
  explicit WaitCall(ProcManager* manager) : manager_(manager) {}

  // The manager's id of the wait (ProcManager::Wait's; 0: none, the call
  // was refused), once it is known; cancels it at once if the call was
  // cancelled meanwhile. Then the handler lets go of the call.
  void Started(uint64_t wait_id) {
    bool cancel;
    {
      absl::MutexLock lock(&mu_);
      wait_id_ = wait_id;
      cancel = cancelled_;
    }
    if (cancel && wait_id != 0) DropWait(wait_id);
    Unref();
  }

  void OnCancel() override {
    uint64_t id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = wait_id_;
    }
    if (id != 0) DropWait(id);
  }
  void OnDone() override { Unref(); }

 private:
  void DropWait(uint64_t id) {
    // False: the answer is on its way and finishes the call.
    if (manager_->CancelWait(id)) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                          "the caller cancelled the wait"));
    }
  }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  ProcManager* const manager_;
  // The handler's and gRPC's (until OnDone).
  std::atomic<int> refs_{2};
  absl::Mutex mu_;
  uint64_t wait_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// The names (not the values: they may hold secrets) of a spec's
// environment, for the audit line.
std::vector<std::string> EnvNames(const v1::ProcSpec& spec) {
  std::vector<std::string> names;
  for (const auto& [name, value] : spec.env()) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

// A WatchHost refused before it starts.
class RefusedWatch final : public grpc::ServerWriteReactor<v1::HostEvent> {
 public:
  explicit RefusedWatch(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

// One WatchHost stream over a HostWatch::Watcher: at most one write in
// flight; when the watcher has nothing, it is armed and its Ready wakes the
// call. Finish runs once: at the watcher's end (OK once the host closed the
// watch and the queue is sent; CANCELLED once the caller cancelled or the
// stream broke). Deletes itself once gRPC is done with it (OnDone), the
// handler has let go, and no Ready is pending (refs_).
class HostService::WatchCall final
    : public grpc::ServerWriteReactor<v1::HostEvent> {
 public:
  explicit WatchCall(HostService* service) : service_(service) {}

  // Registers with the manager (snapshot first) and starts sending; or
  // ends at once if refused. Then the handler lets go of the call.
  void Start(HostWatch::Visible visible) {
    absl::StatusOr<std::shared_ptr<HostWatch::Watcher>> watcher =
        service_->manager_->Watch(std::move(visible), [this] { Ready(); });
    if (!watcher.ok()) {
      FinishOnce(ToGrpcStatus(watcher.status()));
    } else {
      bool cancelled;
      {
        absl::MutexLock lock(&mu_);
        watcher_ = *watcher;
        cancelled = cancelled_;
      }
      if (cancelled) service_->manager_->Unwatch(**watcher);
      Pump();
    }
    Unref();
  }

  void OnWriteDone(bool ok) override {
    // Not ok: the stream is broken (cancelled, or the server is stopping).
    if (!ok) service_->manager_->Unwatch(*watcher());
    Pump();
  }

  void OnCancel() override {
    std::shared_ptr<HostWatch::Watcher> current;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      current = watcher_;
    }
    // An armed watcher's Ready runs now and finishes the call; a write in
    // flight finishes it from OnWriteDone.
    if (current != nullptr) service_->manager_->Unwatch(*current);
  }

  void OnDone() override {
    if (std::shared_ptr<HostWatch::Watcher> current = watcher()) {
      service_->manager_->Unwatch(*current);
    }
    Unref();
  }

 private:
  std::shared_ptr<HostWatch::Watcher> watcher() {
    absl::MutexLock lock(&mu_);
    return watcher_;
  }

  // Sends the watcher's next event, or arms it, or finishes. Never runs
  // twice at once: it runs from Start, from OnWriteDone (a write was in
  // flight) or from Ready (the watcher was armed), one at a time.
  void Pump() {
    std::shared_ptr<HostWatch::Watcher> current = watcher();
    for (;;) {
      absl::Status end;
      Ref();  // Held while armed, for its Ready.
      const HostWatch::Watcher::Next next = current->Take(&event_, &end);
      if (next != HostWatch::Watcher::Next::kIdle) Unref();
      switch (next) {
        case HostWatch::Watcher::Next::kEvent:
          if (event_.has_host()) service_->FillHostInfo(event_.mutable_host());
          StartWrite(&event_);
          return;
        case HostWatch::Watcher::Next::kResync:
          service_->manager_->Resync(*current);
          continue;
        case HostWatch::Watcher::Next::kIdle:
          return;
        case HostWatch::Watcher::Next::kEnd:
          FinishOnce(ToGrpcStatus(end));
          return;
      }
    }
  }

  void Ready() {
    Pump();
    Unref();
  }

  void FinishOnce(const grpc::Status& status) {
    if (!finished_.exchange(true)) Finish(status);
  }
  void Ref() { refs_.fetch_add(1); }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  HostService* const service_;
  // The handler's and gRPC's (until OnDone), and one while armed.
  std::atomic<int> refs_{2};
  std::atomic<bool> finished_{false};
  absl::Mutex mu_;
  std::shared_ptr<HostWatch::Watcher> watcher_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // The event being written (one at a time).
  v1::HostEvent event_;
};

HostService::HostService(ProcManager* manager, const ProcChannels* channels,
                         const ServerAuth* auth, SenderClaims* claims,
                         OwnerLeases* leases, Info info,
                         ShutdownHooks on_shutdown)
    : manager_(manager),
      channels_(channels),
      auth_(auth),
      claims_(claims),
      leases_(leases),
      info_(std::move(info)),
      started_at_(absl::Now()),
      on_shutdown_(std::move(on_shutdown)) {}

std::optional<Principal> HostService::Admit(
    grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
    absl::string_view verb, std::initializer_list<Role> roles) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
  absl::Status allowed =
      caller.ok() ? Authorize(*caller, verb, roles) : caller.status();
  if (!allowed.ok()) {
    if (caller.ok()) {
      LOG(WARNING) << verb << " refused to " << caller->ToString() << ": "
                   << allowed.message();
    }
    reactor->Finish(ToGrpcStatus(allowed));
    return std::nullopt;
  }
  return *std::move(caller);
}

absl::Status HostService::MayActOn(const Principal& caller,
                                   absl::string_view verb,
                                   const std::string& name) {
  if (caller.role == Role::kAdmin) return absl::OkStatus();
  absl::StatusOr<v1::ProcState> state = manager_->GetState(name);
  if (!state.ok()) return absl::OkStatus();  // The verb says NOT_FOUND.
  return AuthorizeOwner(caller, verb, name, state->owner());
}

void HostService::set_address(const std::string& address) {
  absl::MutexLock lock(&mu_);
  info_.address = address;
}

grpc::ServerUnaryReactor* HostService::CreateOrUpdateProc(
    grpc::CallbackServerContext* context,
    const v1::CreateOrUpdateProcRequest* request, v1::ProcState* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller =
      Admit(context, reactor, "CreateOrUpdateProc", {Role::kClient});
  if (!caller.has_value()) return reactor;
  if (absl::Status may =
          MayActOn(*caller, "CreateOrUpdateProc", request->name());
      !may.ok()) {
    reactor->Finish(ToGrpcStatus(may));
    return reactor;
  }
  v1::CreateOrUpdateProcRequest owned = *request;
  owned.set_owner(caller->identity);
  absl::StatusOr<v1::ProcState> existing =
      caller->role == Role::kAdmin ? manager_->GetState(request->name())
                                   : absl::NotFoundError("not looked up");
  // An admin re-sending a client's request gets that client's proc (the
  // same request), not a conflict over whose it is or, while it lives, who
  // holds its lease.
  if (existing.ok()) owned.set_owner(existing->owner());
  const bool live = existing.ok() && !IsTerminal(existing->status());
  if (live) owned.set_client(existing->client());
  const bool claim = !live && !owned.client().empty();
  // Valid and allowed before the client id is claimed: a refused request
  // claims nothing.
  absl::Status admitted = manager_->Admissible(owned);
  if (admitted.ok() && claim) {
    // The lease holder is one of the owner's own relay ids, pinned while
    // the proc is created (its lease then pins it).
    admitted = leases_->MayHold(owned.client(), owned.owner());
    if (admitted.ok()) {
      admitted =
          claims_->Claim(owned.client(), owned.owner(), "client", /*pin=*/true);
    }
  }
  if (!admitted.ok()) {
    reactor->Finish(ToGrpcStatus(admitted));
    return reactor;
  }
  Audit(*caller, context->peer(), "CreateOrUpdateProc",
        {{"proc", AuditQuote(request->name())},
         {"rank", absl::StrCat(request->rank())},
         {"command", AuditQuote(request->spec().command())},
         {"args", AuditList(request->spec().args())},
         {"env", AuditList(EnvNames(request->spec()))},
         {"owner", AuditQuote(owned.owner())},
         {"client", owned.client().empty() ? std::string("detached")
                                           : AuditQuote(owned.client())}});
  manager_->CreateOrUpdate(
      owned, [this, reactor, response,
              pinned = claim ? owned.client()
                             : std::string()](absl::StatusOr<v1::ProcState> r) {
        if (!pinned.empty()) claims_->Unpin(pinned);
        FinishWith(reactor, response, std::move(r));
      });
  return reactor;
}

grpc::ServerUnaryReactor* HostService::GetProcState(
    grpc::CallbackServerContext* context,
    const v1::GetProcStateRequest* request, v1::ProcState* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller =
      Admit(context, reactor, "GetProcState", {Role::kClient});
  if (!caller.has_value()) return reactor;
  absl::StatusOr<v1::ProcState> state = manager_->GetState(request->name());
  if (state.ok()) {
    absl::Status may = AuthorizeOwner(*caller, "GetProcState", request->name(),
                                      state->owner());
    if (!may.ok()) {
      state = may;
    } else {
      AddProcUsage(&*state);
    }
  }
  FinishWith(reactor, response, std::move(state));
  return reactor;
}

grpc::ServerUnaryReactor* HostService::StopProc(
    grpc::CallbackServerContext* context, const v1::StopProcRequest* request,
    v1::ProcState* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller =
      Admit(context, reactor, "StopProc", {Role::kClient});
  if (!caller.has_value()) return reactor;
  if (absl::Status may = MayActOn(*caller, "StopProc", request->name());
      !may.ok()) {
    reactor->Finish(ToGrpcStatus(may));
    return reactor;
  }
  Audit(*caller, context->peer(), "StopProc",
        {{"proc", AuditQuote(request->name())},
         {"reason", AuditQuote(request->reason())},
         {"grace_ms", absl::StrCat(request->grace_ms())}});
  manager_->Stop(
      *request,
      [reactor, response](absl::StatusOr<v1::ProcState> r) {
        FinishWith(reactor, response, std::move(r));
      },
      ProcManager::StopBy{.identity = caller->identity});
  return reactor;
}

grpc::ServerUnaryReactor* HostService::ListProcs(
    grpc::CallbackServerContext* context, const v1::ListProcsRequest* request,
    v1::ListProcsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller =
      Admit(context, reactor, "ListProcs", {Role::kClient});
  if (!caller.has_value()) return reactor;
  *response = manager_->List();
  KeepOwned(*caller, response->mutable_procs());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* HostService::WaitProcs(
    grpc::CallbackServerContext* context, const v1::WaitProcsRequest* request,
    v1::WaitProcsResponse* response) {
  auto* call = new WaitCall(manager_);
  std::optional<Principal> caller =
      Admit(context, call, "WaitProcs", {Role::kClient});
  absl::Status valid = absl::OkStatus();
  for (int i = 0; caller.has_value() && valid.ok() && i < request->names_size();
       ++i) {
    const std::string& name = request->names(i);
    valid = ValidateName(name, "proc name");
    if (valid.ok()) valid = MayActOn(*caller, "WaitProcs", name);
  }
  if (!caller.has_value() || !valid.ok()) {
    if (!valid.ok()) call->Finish(ToGrpcStatus(valid));
    call->Started(0);
    return call;
  }
  const absl::Duration timeout = WaitBudget(
      *context, TimeoutOr(request->timeout_ms(), kDefaultWaitTimeout));
  // A proc created by another owner while this waited is not shown: a named
  // one refuses the wait, an unnamed one (waiting on all) is left out.
  const bool named = request->names_size() > 0;
  uint64_t wait_id = manager_->Wait(
      *request, timeout,
      [call, response, named,
       caller = *std::move(caller)](v1::WaitProcsResponse r) {
        if (named) {
          for (const v1::ProcState& state : r.procs()) {
            absl::Status may = AuthorizeOwner(caller, "WaitProcs", state.name(),
                                              state.owner());
            if (!may.ok()) {
              call->Finish(ToGrpcStatus(may));
              return;
            }
          }
        }
        KeepOwned(caller, r.mutable_procs());
        *response = std::move(r);
        call->Finish(grpc::Status::OK);
      });
  call->Started(wait_id);
  return call;
}

grpc::ServerUnaryReactor* HostService::ShutdownHost(
    grpc::CallbackServerContext* context,
    const v1::ShutdownHostRequest* request,
    v1::ShutdownHostResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller = Admit(context, reactor, "ShutdownHost", {});
  if (!caller.has_value()) return reactor;
  Audit(*caller, context->peer(), "ShutdownHost",
        {{"reason", AuditQuote(request->reason())},
         {"grace_ms", absl::StrCat(request->grace_ms())},
         {"stay_down", request->stay_down() ? "true" : "false"}});
  absl::Duration grace = absl::Milliseconds(request->grace_ms());
  if (request->grace_ms() == 0) {
    absl::MutexLock lock(&mu_);
    grace = info_.stop_grace;
  }
  std::string reason =
      request->reason().empty() ? "host shutdown requested" : request->reason();
  if (on_shutdown_.started) on_shutdown_.started(*request);
  manager_->Shutdown(
      reason, grace, caller->identity,
      [this, reactor, request, response](v1::ShutdownHostResponse r) {
        *response = std::move(r);
        // Copied first: the request is gone once the call finishes.
        const v1::ShutdownHostRequest asked = *request;
        reactor->Finish(grpc::Status::OK);
        if (on_shutdown_.answered) on_shutdown_.answered(asked);
      });
  return reactor;
}

grpc::ServerUnaryReactor* HostService::ListOwners(
    grpc::CallbackServerContext* context, const v1::ListOwnersRequest* request,
    v1::ListOwnersResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller =
      Admit(context, reactor, "ListOwners", {Role::kClient});
  if (!caller.has_value()) return reactor;
  for (v1::OwnerLease& lease : leases_->List(
           caller->role == Role::kAdmin ? std::nullopt
                                        : std::optional(caller->identity))) {
    *response->add_owners() = std::move(lease);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* HostService::GetHostInfo(
    grpc::CallbackServerContext* context, const v1::GetHostInfoRequest* request,
    v1::HostInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(context, reactor, "GetHostInfo", {Role::kClient, Role::kPeer})
           .has_value()) {
    return reactor;
  }
  *response = manager_->HostState();
  FillHostInfo(response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

void HostService::FillHostInfo(v1::HostInfo* info) {
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  info->set_hostname(hostname);
  info->set_pid(getpid());
  *info->mutable_started_at() =
      TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(started_at_));
  info->set_version(kHostmeshVersion);
  info->set_held_waits(static_cast<uint32_t>(manager_->HeldWaits()));
  info->set_relayed_calls(static_cast<uint32_t>(channels_->PendingRequests()));
  info->set_heap_bytes(HeapBytes());
  absl::MutexLock lock(&mu_);
  info->set_address(info_.address);
  info->set_max_procs(info_.max_procs);
  info->set_state_dir(info_.state_dir);
}

grpc::ServerUnaryReactor* HostService::DrainHost(
    grpc::CallbackServerContext* context, const v1::DrainHostRequest* request,
    v1::DrainHostResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller = Admit(context, reactor, "DrainHost", {});
  if (!caller.has_value()) return reactor;
  absl::Duration grace = absl::Milliseconds(request->grace_ms());
  if (request->grace_ms() == 0) {
    absl::MutexLock lock(&mu_);
    grace = info_.stop_grace;
  }
  Audit(*caller, context->peer(), "DrainHost",
        {{"reason", AuditQuote(request->reason())},
         {"stop", request->stop() ? "true" : "false"},
         {"grace_ms", absl::StrCat(request->grace_ms())},
         {"undrain", request->undrain() ? "true" : "false"}});
  manager_->Drain(*request, grace, caller->identity,
                  [reactor, response](absl::StatusOr<v1::DrainHostResponse> r) {
                    FinishWith(reactor, response, std::move(r));
                  });
  // The drain (or undrain) is in effect now, before any stop ends.
  if (on_shutdown_.drain_changed) on_shutdown_.drain_changed();
  return reactor;
}

grpc::ServerWriteReactor<v1::HostEvent>* HostService::WatchHost(
    grpc::CallbackServerContext* context, const v1::WatchHostRequest* request) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
  absl::Status allowed = caller.ok()
                             ? Authorize(*caller, "WatchHost", {Role::kClient})
                             : caller.status();
  for (int i = 0; allowed.ok() && i < request->procs_size(); ++i) {
    allowed = ValidateName(request->procs(i), "procs");
  }
  if (!allowed.ok()) {
    LOG_IF(WARNING, caller.ok())
        << "WatchHost refused to " << caller->ToString() << ": "
        << allowed.message();
    return new RefusedWatch(ToGrpcStatus(allowed));
  }
  VLOG(1) << "WatchHost by " << caller->ToString();
  // What ListProcs shows the caller, and only the procs it named.
  std::set<std::string> names(request->procs().begin(), request->procs().end());
  HostWatch::Visible visible =
      [names = std::move(names), admin = caller->role == Role::kAdmin,
       identity = caller->identity](const v1::ProcState& state) {
        return (admin || state.owner() == identity) &&
               (names.empty() || names.count(state.name()) > 0);
      };
  auto* call = new WatchCall(this);
  call->Start(std::move(visible));
  return call;
}

// ---- StreamLogs ----
namespace {

// One StreamLogs call over a LogStream: one chunk in flight at a time (the
// next is read once gRPC took the last: a slow reader holds one chunk),
// and, when the stream has nothing, asleep until ProcLogs' poller wakes it.
// Exactly one party runs Pump at a time (state_); Finish runs once. Owned
// by itself (self_) until OnDone; the wake function holds a weak_ptr, so a
// wake that races OnDone finds the call finished and does nothing.
class LogsCall final : public grpc::ServerWriteReactor<v1::LogChunk> {
 public:
  static std::shared_ptr<LogsCall> Create() {
    std::shared_ptr<LogsCall> call(new LogsCall());
    call->self_ = call;
    return call;
  }

  std::function<void()> WakeFunction() {
    return [weak = std::weak_ptr<LogsCall>(self_)] {
      if (std::shared_ptr<LogsCall> call = weak.lock()) call->Wake();
    };
  }

  void Start(std::unique_ptr<LogStream> stream) {
    stream_ = std::move(stream);
    {
      absl::MutexLock lock(&mu_);
      state_ = State::kPumping;
    }
    Pump();
  }

  // Ends the call with `status` (nothing else runs it then).
  void FinishNow(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      state_ = State::kFinished;
    }
    // The stream's slot is free from now, not from OnDone.
    stream_.reset();
    Finish(status);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      FinishNow(grpc::Status(grpc::StatusCode::CANCELLED,
                             "the caller stopped reading"));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      state_ = State::kPumping;
    }
    Pump();
  }

  void OnCancel() override {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      if (state_ == State::kWaiting) {
        state_ = State::kPumping;
        finish = true;
      }
    }
    if (finish) {
      FinishNow(grpc::Status(grpc::StatusCode::CANCELLED,
                             "the caller cancelled the stream"));
    }
  }

  void OnDone() override { self_.reset(); }

 private:
  enum class State { kIdle, kPumping, kWriting, kWaiting, kFinished };

  LogsCall() = default;

  void Wake() {
    {
      absl::MutexLock lock(&mu_);
      if (state_ != State::kWaiting) {
        woken_ = true;
        return;
      }
      state_ = State::kPumping;
    }
    Pump();
  }

  // Runs with state_ kPumping, on one thread at a time.
  void Pump() {
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        woken_ = false;
        if (cancelled_) break;
      }
      chunk_.Clear();
      const LogStream::Next next = stream_->Read(&chunk_);
      if (next == LogStream::Next::kEnd) {
        FinishNow(ToGrpcStatus(stream_->status()));
        return;
      }
      {
        absl::MutexLock lock(&mu_);
        if (cancelled_) break;
        if (next == LogStream::Next::kWait) {
          if (woken_) continue;
          state_ = State::kWaiting;
          return;
        }
        state_ = State::kWriting;
      }
      StartWrite(&chunk_);
      return;
    }
    FinishNow(grpc::Status(grpc::StatusCode::CANCELLED,
                           "the caller cancelled the stream"));
  }

  std::shared_ptr<LogsCall> self_;
  // Used by whoever is pumping (state_), and by FinishNow.
  std::unique_ptr<LogStream> stream_;
  v1::LogChunk chunk_;
  absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kIdle;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerWriteReactor<v1::LogChunk>* HostService::StreamLogs(
    grpc::CallbackServerContext* context,
    const v1::StreamLogsRequest* request) {
  std::shared_ptr<LogsCall> call = LogsCall::Create();
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
  absl::Status allowed = caller.ok()
                             ? Authorize(*caller, "StreamLogs", {Role::kClient})
                             : caller.status();
  if (allowed.ok() && proc_logs_ == nullptr) {
    allowed = absl::UnimplementedError("this host serves no logs");
  }
  // The procs: each named one if the caller may see it (as GetProcState),
  // else every one it may see (as ListProcs).
  std::vector<ProcLogs::Target> targets;
  std::set<std::string> named;
  for (int i = 0; allowed.ok() && i < request->names_size(); ++i) {
    const std::string& name = request->names(i);
    allowed = ValidateName(name, "proc name");
    if (!allowed.ok() || !named.insert(name).second) continue;
    absl::StatusOr<v1::ProcState> state = manager_->GetState(name);
    allowed = state.ok()
                  ? AuthorizeOwner(*caller, "StreamLogs", name, state->owner())
                  : state.status();
    if (allowed.ok()) {
      targets.push_back(
          ProcLogs::TargetOf(*state, caller->role == Role::kAdmin));
    }
  }
  if (allowed.ok() && request->names_size() == 0) {
    v1::ListProcsResponse list = manager_->List();
    KeepOwned(*caller, list.mutable_procs());
    for (const v1::ProcState& state : list.procs()) {
      targets.push_back(
          ProcLogs::TargetOf(state, caller->role == Role::kAdmin));
    }
  }
  absl::StatusOr<std::unique_ptr<LogStream>> stream =
      allowed.ok()
          ? proc_logs_->Open(*request, std::move(targets), call->WakeFunction())
          : allowed;
  if (!stream.ok()) {
    LOG_IF(WARNING, caller.ok())
        << "StreamLogs refused to " << caller->ToString() << ": "
        << stream.status().message();
    call->FinishNow(ToGrpcStatus(stream.status()));
    return call.get();
  }
  VLOG(1) << "StreamLogs by " << caller->ToString()
          << (request->follow() ? " (following)" : "");
  call->Start(*std::move(stream));
  return call.get();
}

}  // namespace mesh
