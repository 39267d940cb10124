#include "hostd/host_service.h"

#include <glog/logging.h>
#include <google/protobuf/util/time_util.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

// malloc's count of bytes in use (glibc mallinfo2). It walks every arena
// under that arena's lock, so it runs at most 4 times a second whoever asks.
uint64_t HeapBytes() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::Duration read_at ABSL_GUARDED_BY(mu) = -absl::InfiniteDuration();
  static uint64_t bytes ABSL_GUARDED_BY(mu) = 0;
  absl::MutexLock lock(&mu);
  const absl::Duration now = MonotonicClock::Real().Now();
  if (now - read_at >= absl::Milliseconds(250)) {
    const struct mallinfo2 heap = mallinfo2();
    bytes = heap.uordblks + heap.hblkhd;
    read_at = now;
  }
  return bytes;
}

}  // namespace

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
  LOG(INFO) << "CreateOrUpdateProc " << QuoteForError(request->name()) << " by "
            << caller->ToString()
            << (owned.client().empty() ? std::string(" (detached)")
                                       : " for " + owned.client());
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
    if (!may.ok()) state = may;
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
  LOG(INFO) << "StopProc " << QuoteForError(request->name()) << " by "
            << caller->ToString();
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
  LOG(WARNING) << "ShutdownHost by " << caller->ToString() << ": "
               << QuoteForError(request->reason())
               << (request->stay_down()
                       ? std::string(" (to stay down)")
                       : absl::StrCat(" (exit ", kShutdownRestartExitCode,
                                      ": to be restarted)"));
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
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  absl::MutexLock lock(&mu_);
  response->set_address(info_.address);
  response->set_hostname(hostname);
  response->set_pid(getpid());
  *response->mutable_started_at() =
      TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(started_at_));
  response->set_num_procs(manager_->LiveProcs());
  response->set_max_procs(info_.max_procs);
  response->set_state_dir(info_.state_dir);
  response->set_version(kHostmeshVersion);
  response->set_held_waits(static_cast<uint32_t>(manager_->HeldWaits()));
  response->set_relayed_calls(
      static_cast<uint32_t>(channels_->PendingRequests()));
  response->set_heap_bytes(HeapBytes());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace mesh
