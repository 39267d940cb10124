#include "hostd/proc_service.h"

#include <atomic>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/grpc_status.h"
#include "lib/names.h"

namespace mesh {
namespace {

// How long a verb that does not wait may take at the proc; waits add their
// own timeout to it.
constexpr absl::Duration kVerbBound = absl::Seconds(30);
constexpr absl::Duration kDefaultWait = absl::Seconds(30);
constexpr absl::Duration kDefaultCall = absl::Seconds(10);

absl::Duration TimeoutOr(uint32_t ms, absl::Duration fallback) {
  return ms == 0 ? fallback : absl::Milliseconds(ms);
}

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

ProcService::ProcService(ProcManager* manager, ProcChannels* channels)
    : manager_(manager), channels_(channels) {}

template <typename Response>
grpc::ServerUnaryReactor* ProcService::Relay(
    grpc::CallbackServerContext* context, const std::string& proc,
    v1::ProcRequest request, absl::Duration wait, Response* response,
    bool (*take)(v1::ProcResponse&, Response*)) {
  if (absl::Status valid = ValidateName(proc, "proc"); !valid.ok()) {
    return Refuse(context, valid);
  }
  absl::StatusOr<v1::ProcState> state = manager_->GetState(proc);
  if (!state.ok()) return Refuse(context, state.status());
  if (state->status() != v1::RUNNING) {
    std::string why = absl::StrCat("proc \"", proc, "\" is ",
                                   v1::Status_Name(state->status()),
                                   state->reason().empty() ? "" : ": ",
                                   state->reason());
    return Refuse(context, state->status() == v1::INITIALIZING
                               ? absl::UnavailableError(why)
                               : absl::FailedPreconditionError(why));
  }
  absl::Time deadline = absl::Now() + wait + kVerbBound;
  absl::Time call_deadline = absl::FromChrono(context->deadline());
  if (call_deadline < deadline) deadline = call_deadline;

  auto* reactor = new RelayedCall(channels_);
  uint64_t id = channels_->Request(
      proc, std::move(request), deadline,
      [reactor, response, take, proc](absl::StatusOr<v1::ProcResponse> r) {
        if (r.ok() && !take(*r, response)) {
          r = absl::InternalError(absl::StrCat(
              "proc \"", proc, "\" answered with the wrong response"));
        }
        reactor->Finish(ToGrpcStatus(r.status()));
      });
  reactor->set_request_id(id);
  return reactor;
}

grpc::ServerUnaryReactor* ProcService::CreateOrUpdateActor(
    grpc::CallbackServerContext* context,
    const v1::CreateOrUpdateActorRequest* request, v1::ActorState* response) {
  v1::ProcRequest relayed;
  *relayed.mutable_create_actor() = *request;
  return Relay<v1::ActorState>(
      context, request->proc(), std::move(relayed), absl::ZeroDuration(),
      response, [](v1::ProcResponse& r, v1::ActorState* out) {
        if (!r.has_actor()) return false;
        *out = std::move(*r.mutable_actor());
        return true;
      });
}

grpc::ServerUnaryReactor* ProcService::GetActorState(
    grpc::CallbackServerContext* context,
    const v1::GetActorStateRequest* request, v1::ActorState* response) {
  v1::ProcRequest relayed;
  *relayed.mutable_get_actor() = *request;
  return Relay<v1::ActorState>(
      context, request->proc(), std::move(relayed), absl::ZeroDuration(),
      response, [](v1::ProcResponse& r, v1::ActorState* out) {
        if (!r.has_actor()) return false;
        *out = std::move(*r.mutable_actor());
        return true;
      });
}

grpc::ServerUnaryReactor* ProcService::StopActor(
    grpc::CallbackServerContext* context, const v1::StopActorRequest* request,
    v1::ActorState* response) {
  v1::ProcRequest relayed;
  *relayed.mutable_stop_actor() = *request;
  return Relay<v1::ActorState>(
      context, request->proc(), std::move(relayed), absl::ZeroDuration(),
      response, [](v1::ProcResponse& r, v1::ActorState* out) {
        if (!r.has_actor()) return false;
        *out = std::move(*r.mutable_actor());
        return true;
      });
}

grpc::ServerUnaryReactor* ProcService::StopAll(
    grpc::CallbackServerContext* context, const v1::StopAllRequest* request,
    v1::StopAllResponse* response) {
  v1::ProcRequest relayed;
  *relayed.mutable_stop_all() = *request;
  return Relay<v1::StopAllResponse>(
      context, request->proc(), std::move(relayed), absl::ZeroDuration(),
      response, [](v1::ProcResponse& r, v1::StopAllResponse* out) {
        if (!r.has_stop_all()) return false;
        *out = std::move(*r.mutable_stop_all());
        return true;
      });
}

grpc::ServerUnaryReactor* ProcService::ListActors(
    grpc::CallbackServerContext* context, const v1::ListActorsRequest* request,
    v1::ListActorsResponse* response) {
  v1::ProcRequest relayed;
  *relayed.mutable_list_actors() = *request;
  return Relay<v1::ListActorsResponse>(
      context, request->proc(), std::move(relayed), absl::ZeroDuration(),
      response, [](v1::ProcResponse& r, v1::ListActorsResponse* out) {
        if (!r.has_list_actors()) return false;
        *out = std::move(*r.mutable_list_actors());
        return true;
      });
}

grpc::ServerUnaryReactor* ProcService::WaitActors(
    grpc::CallbackServerContext* context, const v1::WaitActorsRequest* request,
    v1::WaitActorsResponse* response) {
  v1::ProcRequest relayed;
  *relayed.mutable_wait_actors() = *request;
  return Relay<v1::WaitActorsResponse>(
      context, request->proc(), std::move(relayed),
      TimeoutOr(request->timeout_ms(), kDefaultWait), response,
      [](v1::ProcResponse& r, v1::WaitActorsResponse* out) {
        if (!r.has_wait_actors()) return false;
        *out = std::move(*r.mutable_wait_actors());
        return true;
      });
}

grpc::ServerUnaryReactor* ProcService::GetProcInfo(
    grpc::CallbackServerContext* context, const v1::GetProcInfoRequest* request,
    v1::ProcInfo* response) {
  v1::ProcRequest relayed;
  *relayed.mutable_get_info() = *request;
  return Relay<v1::ProcInfo>(
      context, request->proc(), std::move(relayed), absl::ZeroDuration(),
      response, [](v1::ProcResponse& r, v1::ProcInfo* out) {
        if (!r.has_info()) return false;
        *out = std::move(*r.mutable_info());
        return true;
      });
}

grpc::ServerUnaryReactor* ProcService::CallActor(
    grpc::CallbackServerContext* context, const v1::CallActorRequest* request,
    v1::CallActorResponse* response) {
  v1::ProcRequest relayed;
  *relayed.mutable_call_actor() = *request;
  return Relay<v1::CallActorResponse>(
      context, request->proc(), std::move(relayed),
      TimeoutOr(request->timeout_ms(), kDefaultCall), response,
      [](v1::ProcResponse& r, v1::CallActorResponse* out) {
        if (!r.has_call_actor()) return false;
        *out = std::move(*r.mutable_call_actor());
        return true;
      });
}

}  // namespace mesh
