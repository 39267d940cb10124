#include "hostd/host_service.h"

#include <glog/logging.h>
#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/grpc_status.h"
#include "lib/names.h"
#include "lib/resource/status_waiters.h"
#include "lib/status.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;

constexpr absl::Duration kDefaultWait = absl::Seconds(30);

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

}  // namespace

HostService::HostService(ProcManager* manager, const ServerAuth* auth,
                         SenderClaims* claims, OwnerLeases* leases, Info info,
                         std::function<void()> on_shutdown)
    : manager_(manager),
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
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller =
      Admit(context, reactor, "WaitProcs", {Role::kClient});
  if (!caller.has_value()) return reactor;
  for (const std::string& name : request->names()) {
    absl::Status valid = ValidateName(name, "proc name");
    if (valid.ok()) valid = MayActOn(*caller, "WaitProcs", name);
    if (!valid.ok()) {
      reactor->Finish(ToGrpcStatus(valid));
      return reactor;
    }
  }
  absl::Duration timeout = request->timeout_ms() == 0
                               ? kDefaultWait
                               : absl::Milliseconds(request->timeout_ms());
  absl::Time deadline = absl::Now() + timeout;
  // Answer a little before the caller's own deadline, so it gets the states.
  absl::Time call_deadline =
      absl::FromChrono(context->deadline()) - absl::Milliseconds(50);
  if (call_deadline < deadline) deadline = call_deadline;
  // A proc created by another owner while this waited is not shown: a named
  // one refuses the wait, an unnamed one (waiting on all) is left out.
  const bool named = request->names_size() > 0;
  manager_->Wait(*request, deadline,
                 [reactor, response, named,
                  caller = *std::move(caller)](v1::WaitProcsResponse r) {
                   if (named) {
                     for (const v1::ProcState& state : r.procs()) {
                       absl::Status may = AuthorizeOwner(
                           caller, "WaitProcs", state.name(), state.owner());
                       if (!may.ok()) {
                         reactor->Finish(ToGrpcStatus(may));
                         return;
                       }
                     }
                   }
                   KeepOwned(caller, r.mutable_procs());
                   *response = std::move(r);
                   reactor->Finish(grpc::Status::OK);
                 });
  return reactor;
}

grpc::ServerUnaryReactor* HostService::ShutdownHost(
    grpc::CallbackServerContext* context,
    const v1::ShutdownHostRequest* request,
    v1::ShutdownHostResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> caller = Admit(context, reactor, "ShutdownHost", {});
  if (!caller.has_value()) return reactor;
  LOG(WARNING) << "ShutdownHost by " << caller->ToString() << ": "
               << QuoteForError(request->reason());
  absl::Duration grace = absl::Milliseconds(request->grace_ms());
  if (request->grace_ms() == 0) {
    absl::MutexLock lock(&mu_);
    grace = info_.stop_grace;
  }
  std::string reason =
      request->reason().empty() ? "host shutdown requested" : request->reason();
  manager_->Shutdown(reason, grace, caller->identity,
                     [this, reactor, response](v1::ShutdownHostResponse r) {
                       *response = std::move(r);
                       reactor->Finish(grpc::Status::OK);
                       on_shutdown_();
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
  response->set_version("0.1.0");
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace mesh
