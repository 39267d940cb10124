#include "hostd/proc_service.h"

#include <glog/logging.h>

#include <atomic>
#include <chrono>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "hostd/audit.h"
#include "lib/grpc_status.h"
#include "lib/names.h"
#include "lib/verb_timeouts.h"

namespace mesh {
namespace {

// How long a verb that does not wait may take at the proc; waits add their
// own timeout to it.
constexpr absl::Duration kVerbBound = absl::Seconds(30);

// One relayed call. Deletes itself in OnDone; Finish runs once, from the
// ProcChannels callback (which always runs: response, deadline, cancel,
// proc gone or hostd shutting down).
class RelayedCall final : public grpc::ServerUnaryReactor {
 public:
  explicit RelayedCall(ProcChannels* channels) : channels_(channels) {}

  void set_request_id(uint64_t id) { request_id_ = id; }

  void OnCancel() override {
    uint64_t id = request_id_.load();
    if (id != 0) channels_->Cancel(id);
  }
  void OnDone() override { delete this; }

 private:
  ProcChannels* const channels_;
  std::atomic<uint64_t> request_id_{0};
};

grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* context,
                                 const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

ProcService::ProcService(ProcManager* manager, ProcChannels* channels,
                         const ServerAuth* auth)
    : manager_(manager), channels_(channels), auth_(auth) {}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* ProcService::Relay(
    grpc::CallbackServerContext* context, const Request& request,
    Request* (v1::ProcRequest::*put)(), bool (v1::ProcResponse::*has)() const,
    Response* (v1::ProcResponse::*take)(), absl::Duration wait,
    Response* response) {
  const std::string& proc = request.proc();
  // "CreateOrUpdateActorRequest" -> "CreateOrUpdateActor".
  const std::string verb(
      absl::StripSuffix(Request::descriptor()->name(), "Request"));
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
  if (!caller.ok()) return Refuse(context, caller.status());
  if (absl::Status allowed = Authorize(*caller, verb, {Role::kClient});
      !allowed.ok()) {
    return Refuse(context, allowed);
  }
  if (absl::Status valid = ValidateName(proc, "proc"); !valid.ok()) {
    return Refuse(context, valid);
  }
  absl::StatusOr<v1::ProcState> state = manager_->GetState(proc);
  if (!state.ok()) return Refuse(context, state.status());
  if (absl::Status may = AuthorizeOwner(*caller, verb, proc, state->owner());
      !may.ok()) {
    return Refuse(context, may);
  }
  if constexpr (std::is_same_v<Request, v1::StopAllRequest>) {
    // The proc exits next: its end is one its owner asked for, if it is
    // the owner asking.
    if (request.exit_proc()) {
      manager_->OwnerAskedToExit(proc, caller->identity);
    }
  }
  if constexpr (std::is_same_v<Request, v1::CreateOrUpdateActorRequest>) {
    Audit(*caller, context->peer(), verb,
          {{"proc", AuditQuote(proc)},
           {"actor", AuditQuote(request.name())},
           {"type", AuditQuote(request.type())},
           {"rank", absl::StrCat(request.rank())}});
  } else if constexpr (std::is_same_v<Request, v1::StopActorRequest>) {
    Audit(*caller, context->peer(), verb,
          {{"proc", AuditQuote(proc)},
           {"actor", AuditQuote(request.name())},
           {"reason", AuditQuote(request.reason())}});
  } else if constexpr (std::is_same_v<Request, v1::StopAllRequest>) {
    Audit(*caller, context->peer(), verb,
          {{"proc", AuditQuote(proc)},
           {"reason", AuditQuote(request.reason())},
           {"exit_proc", request.exit_proc() ? "true" : "false"}});
  }
  if (state->status() != v1::RUNNING) {
    std::string why = absl::StrCat(
        "proc \"", proc, "\" is ", v1::Status_Name(state->status()),
        state->reason().empty() ? "" : ": ", state->reason());
    return Refuse(context, state->status() == v1::INITIALIZING
                               ? absl::UnavailableError(why)
                               : absl::FailedPreconditionError(why));
  }
  v1::ProcRequest relayed;
  Request* relayed_request = (relayed.*put)();
  *relayed_request = request;
  // A verb that waits (WaitActors, CallActor) is told to answer before the
  // call's deadline, with what it has; the relay itself gives up at it.
  if constexpr (requires { relayed_request->set_timeout_ms(1u); }) {
    wait = WaitBudget(*context, wait);
    relayed_request->set_timeout_ms(
        static_cast<uint32_t>(absl::ToInt64Milliseconds(wait)));
  }
  absl::Time deadline = absl::Now() + wait + kVerbBound;
  absl::Time call_deadline = absl::FromChrono(context->deadline());
  if (call_deadline < deadline) deadline = call_deadline;
  auto* reactor = new RelayedCall(channels_);
  uint64_t id = channels_->Request(
      proc, std::move(relayed), deadline,
      [reactor, response, has, take, proc](absl::StatusOr<v1::ProcResponse> r) {
        if (r.ok()) {
          if (((*r).*has)()) {
            *response = std::move(*((*r).*take)());
          } else {
            r = absl::InternalError(absl::StrCat(
                "proc \"", proc, "\" answered with the wrong response"));
          }
        }
        reactor->Finish(ToGrpcStatus(r.status()));
      });
  reactor->set_request_id(id);
  return reactor;
}

grpc::ServerUnaryReactor* ProcService::CreateOrUpdateActor(
    grpc::CallbackServerContext* context,
    const v1::CreateOrUpdateActorRequest* request, v1::ActorState* response) {
  return Relay(context, *request, &v1::ProcRequest::mutable_create_actor,
               &v1::ProcResponse::has_actor, &v1::ProcResponse::mutable_actor,
               absl::ZeroDuration(), response);
}

grpc::ServerUnaryReactor* ProcService::GetActorState(
    grpc::CallbackServerContext* context,
    const v1::GetActorStateRequest* request, v1::ActorState* response) {
  return Relay(context, *request, &v1::ProcRequest::mutable_get_actor,
               &v1::ProcResponse::has_actor, &v1::ProcResponse::mutable_actor,
               absl::ZeroDuration(), response);
}

grpc::ServerUnaryReactor* ProcService::StopActor(
    grpc::CallbackServerContext* context, const v1::StopActorRequest* request,
    v1::ActorState* response) {
  return Relay(context, *request, &v1::ProcRequest::mutable_stop_actor,
               &v1::ProcResponse::has_actor, &v1::ProcResponse::mutable_actor,
               absl::ZeroDuration(), response);
}

grpc::ServerUnaryReactor* ProcService::StopAll(
    grpc::CallbackServerContext* context, const v1::StopAllRequest* request,
    v1::StopAllResponse* response) {
  return Relay(context, *request, &v1::ProcRequest::mutable_stop_all,
               &v1::ProcResponse::has_stop_all,
               &v1::ProcResponse::mutable_stop_all, absl::ZeroDuration(),
               response);
}

grpc::ServerUnaryReactor* ProcService::ListActors(
    grpc::CallbackServerContext* context, const v1::ListActorsRequest* request,
    v1::ListActorsResponse* response) {
  return Relay(context, *request, &v1::ProcRequest::mutable_list_actors,
               &v1::ProcResponse::has_list_actors,
               &v1::ProcResponse::mutable_list_actors, absl::ZeroDuration(),
               response);
}

grpc::ServerUnaryReactor* ProcService::WaitActors(
    grpc::CallbackServerContext* context, const v1::WaitActorsRequest* request,
    v1::WaitActorsResponse* response) {
  return Relay(context, *request, &v1::ProcRequest::mutable_wait_actors,
               &v1::ProcResponse::has_wait_actors,
               &v1::ProcResponse::mutable_wait_actors,
               TimeoutOr(request->timeout_ms(), kDefaultWaitTimeout), response);
}

grpc::ServerUnaryReactor* ProcService::GetProcInfo(
    grpc::CallbackServerContext* context, const v1::GetProcInfoRequest* request,
    v1::ProcInfo* response) {
  return Relay(context, *request, &v1::ProcRequest::mutable_get_info,
               &v1::ProcResponse::has_info, &v1::ProcResponse::mutable_info,
               absl::ZeroDuration(), response);
}

grpc::ServerUnaryReactor* ProcService::CallActor(
    grpc::CallbackServerContext* context, const v1::CallActorRequest* request,
    v1::CallActorResponse* response) {
  return Relay(context, *request, &v1::ProcRequest::mutable_call_actor,
               &v1::ProcResponse::has_call_actor,
               &v1::ProcResponse::mutable_call_actor,
               TimeoutOr(request->timeout_ms(), kDefaultCallTimeout), response);
}

}  // namespace mesh
