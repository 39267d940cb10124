#include "procd/proc_service.h"

#include <glog/logging.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lib/status.h"

namespace mesh {
namespace {

using WaitResult = absl::StatusOr<v1::WaitActorsResponse>;

// Answers a unary call when a ProcRuntime wait completes, or CANCELLED when
// the client cancels first. Deletes itself in OnDone.
//
// The wait's callback may run before WaitActors returns, or on another thread
// at any time; Finish is called exactly once and, since OnDone (and so
// deletion) may follow it at once, nothing touches the reactor after it.
class WaitReactor final : public grpc::ServerUnaryReactor {
 public:
  // `fill` turns the wait's result into the call's response and status.
  using Fill = std::function<grpc::Status(WaitResult)>;

  WaitReactor(ProcRuntime* runtime, Fill fill,
              std::function<void()> on_done = nullptr)
      : runtime_(runtime),
        fill_(std::move(fill)),
        on_done_(std::move(on_done)) {}

  void Start(std::vector<std::string> names, v1::Status min_status,
             absl::Time deadline) {
    uint64_t id = runtime_->WaitActors(
        std::move(names), min_status, deadline,
        [this](WaitResult result) { Complete(std::move(result)); });
    grpc::Status pending;
    bool has_pending;
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      started_ = true;
      id_ = id;
      has_pending = has_pending_;
      pending = pending_;
      cancelled = cancelled_;
    }
    if (has_pending) {
      FinishOnce(pending);
    } else if (cancelled && runtime_->CancelWait(id)) {
      FinishOnce(grpc::Status::CANCELLED);
    }
  }

  void OnCancel() override {
    uint64_t id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      if (!started_ || finished_) return;
      id = id_;
    }
    if (runtime_->CancelWait(id)) FinishOnce(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    if (on_done_) on_done_();
    delete this;
  }

 private:
  void Complete(WaitResult result) {
    grpc::Status status = fill_(std::move(result));
    {
      absl::MutexLock lock(&mu_);
      if (!started_) {  // Still inside Start's WaitActors: it finishes.
        has_pending_ = true;
        pending_ = status;
        return;
      }
    }
    FinishOnce(status);
  }

  void FinishOnce(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(status);
  }

  ProcRuntime* const runtime_;
  const Fill fill_;
  const std::function<void()> on_done_;
  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t id_ ABSL_GUARDED_BY(mu_) = 0;
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status pending_ ABSL_GUARDED_BY(mu_);
};

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace

ProcService::ProcService(ProcRuntime* runtime, Options options)
    : runtime_(runtime), options_(std::move(options)) {}

grpc::ServerUnaryReactor* ProcService::CreateOrUpdateActor(
    grpc::CallbackServerContext* context,
    const v1::CreateOrUpdateActorRequest* request, v1::ActorState* response) {
  absl::StatusOr<v1::ActorState> state =
      runtime_->CreateOrUpdateActor(*request);
  if (state.ok()) *response = std::move(state).value();
  return FinishNow(context, ToGrpcStatus(state.status()));
}

grpc::ServerUnaryReactor* ProcService::GetActorState(
    grpc::CallbackServerContext* context,
    const v1::GetActorStateRequest* request, v1::ActorState* response) {
  absl::StatusOr<v1::ActorState> state =
      runtime_->GetActorState(request->name());
  if (state.ok()) *response = std::move(state).value();
  return FinishNow(context, ToGrpcStatus(state.status()));
}

grpc::ServerUnaryReactor* ProcService::StopActor(
    grpc::CallbackServerContext* context, const v1::StopActorRequest* request,
    v1::ActorState* response) {
  absl::StatusOr<v1::ActorState> state =
      runtime_->StopActor(request->name(), request->reason());
  if (!state.ok()) return FinishNow(context, ToGrpcStatus(state.status()));
  auto* reactor = new WaitReactor(
      runtime_, [response, initial = *state](WaitResult result) {
        if (result.ok() && result->actors_size() == 1) {
          *response = result->actors(0);
        } else {
          *response = initial;
        }
        return grpc::Status::OK;
      });
  reactor->Start({request->name()}, v1::STOPPED,
                 absl::Now() + options_.stop_wait);
  return reactor;
}

grpc::ServerUnaryReactor* ProcService::StopAll(
    grpc::CallbackServerContext* context, const v1::StopAllRequest* request,
    v1::StopAllResponse* response) {
  std::string reason =
      request->reason().empty() ? "StopAll" : request->reason();
  LOG(INFO) << "proc " << runtime_->proc_name() << ": StopAll (" << reason
            << (request->exit_proc() ? ", then exit" : "") << ")";
  std::vector<v1::ActorState> states = runtime_->StopAll(reason);
  std::vector<std::string> names;
  for (const v1::ActorState& state : states) names.push_back(state.name());
  std::function<void()> on_done;
  if (request->exit_proc() && options_.on_exit_requested) {
    on_done = options_.on_exit_requested;
  }
  auto* reactor = new WaitReactor(
      runtime_,
      [response, states = std::move(states)](WaitResult result) {
        if (result.ok()) {
          response->mutable_stopped()->Assign(result->actors().begin(),
                                              result->actors().end());
        } else {
          response->mutable_stopped()->Assign(states.begin(), states.end());
        }
        return grpc::Status::OK;
      },
      std::move(on_done));
  // With no actors, names is empty and the wait answers at once (every one
  // of zero actors is stopped).
  reactor->Start(std::move(names), v1::STOPPED,
                 absl::Now() + options_.stop_wait);
  return reactor;
}

grpc::ServerUnaryReactor* ProcService::ListActors(
    grpc::CallbackServerContext* context,
    const v1::ListActorsRequest* /*request*/,
    v1::ListActorsResponse* response) {
  for (v1::ActorState& state : runtime_->ListActors()) {
    *response->add_actors() = std::move(state);
  }
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ProcService::WaitActors(
    grpc::CallbackServerContext* /*context*/,
    const v1::WaitActorsRequest* request, v1::WaitActorsResponse* response) {
  auto* reactor = new WaitReactor(runtime_, [response](WaitResult result) {
    if (!result.ok()) return ToGrpcStatus(result.status());
    *response = std::move(result).value();
    return grpc::Status::OK;
  });
  reactor->Start({request->names().begin(), request->names().end()},
                 request->min_status(),
                 absl::Now() + absl::Milliseconds(request->timeout_ms()));
  return reactor;
}

grpc::ServerUnaryReactor* ProcService::GetProcInfo(
    grpc::CallbackServerContext* context,
    const v1::GetProcInfoRequest* /*request*/, v1::ProcInfo* response) {
  *response = runtime_->GetProcInfo();
  return FinishNow(context, grpc::Status::OK);
}

}  // namespace mesh
