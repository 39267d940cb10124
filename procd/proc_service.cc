#include "procd/proc_service.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lib/mailbox/mailbox.h"
#include "lib/names.h"
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

// How long CallActor waits for the reply when the request does not say.
constexpr absl::Duration kDefaultCallTimeout = absl::Seconds(10);

// Answers one CallActor. Three things race to end it: the actor's reply on a
// one-shot port of the proc's mailbox, a ProcRuntime wait that only its
// deadline (the call's timeout) or the runtime's Shutdown can end, and the
// client's cancellation. The first finishes the call, closes the port and
// cancels the wait; the others then find the call finished and do nothing.
// Deletes itself in OnDone.
//
// The port handler and the wait callback may run on other threads after
// Finish, and so after the reactor is deleted: they hold the shared Call,
// never the reactor, and reach the reactor (and the response) only through
// Call::Complete, which lets exactly one caller through.
class CallReactor final : public grpc::ServerUnaryReactor {
 public:
  CallReactor(ProcRuntime* runtime, const v1::CallActorRequest& request,
              absl::Duration timeout, v1::CallActorResponse* response)
      : call_(std::make_shared<Call>(runtime, request.actor(), timeout, this,
                                     response)) {}

  // Sends the request and starts the wait. May finish the call before it
  // returns; it touches no member of the reactor, so that is safe.
  void Start(const v1::CallActorRequest& request, absl::Time deadline) {
    Call::Start(call_, request, deadline);
  }

  void OnCancel() override {
    call_->Complete(grpc::Status::CANCELLED, nullptr);
  }

  void OnDone() override { delete this; }

 private:
  class Call {
   public:
    Call(ProcRuntime* runtime, std::string actor, absl::Duration timeout,
         grpc::ServerUnaryReactor* reactor, v1::CallActorResponse* response)
        : runtime_(runtime),
          actor_(std::move(actor)),
          timeout_(timeout),
          reactor_(reactor),
          response_(response) {}

    // Takes `call` by value: the reactor holding call_ may be gone by the
    // time this returns.
    static void Start(std::shared_ptr<Call> call,
                      const v1::CallActorRequest& request,
                      absl::Time deadline) {
      ProcRuntime* runtime = call->runtime_;
      Mailbox* mailbox = runtime->mailbox();
      v1::PortRef port = mailbox->OpenPort(
          [call](v1::Envelope envelope) { call->OnReply(envelope); });
      if (!call->SetPort(port.port())) {  // Cancelled meanwhile.
        mailbox->ClosePort(port.port());
        return;
      }
      // The reply's deadline, which the proc's shutdown ends early.
      uint64_t timer = runtime->After(deadline, [call](absl::Status status) {
        call->OnTimerFired(status);
      });
      if (!call->SetTimer(timer)) {  // Timed out, shut down or cancelled.
        runtime->CancelTimer(timer);
        return;
      }
      v1::Envelope envelope;
      envelope.set_actor(request.actor());
      *envelope.mutable_payload() = request.payload();
      *envelope.mutable_reply_to() = port;
      // To our own address: the mailbox's local FIFO, then the actor sink,
      // whose refusals (unknown, failed or stopped actor) come back as error
      // replies to the port.
      mailbox->Send(port.address(), std::move(envelope));
    }

    // Finishes the call with `status` (and `reply`, if given) unless it is
    // finished already.
    void Complete(const grpc::Status& status,
                  const google::protobuf::Any* reply) {
      std::optional<uint64_t> port;
      std::optional<uint64_t> timer;
      {
        absl::MutexLock lock(&mu_);
        if (finished_) return;
        finished_ = true;
        port = port_;
        timer = timer_;
      }
      if (port.has_value()) runtime_->mailbox()->ClosePort(*port);
      if (timer.has_value()) runtime_->CancelTimer(*timer);
      if (reply != nullptr) *response_->mutable_reply() = *reply;
      reactor_->Finish(status);
    }

   private:
    // False if the call is already finished (the caller closes the port).
    bool SetPort(uint64_t port) {
      absl::MutexLock lock(&mu_);
      if (finished_) return false;
      port_ = port;
      return true;
    }

    // False if the call is already finished (the caller cancels the timer).
    bool SetTimer(uint64_t timer) {
      absl::MutexLock lock(&mu_);
      if (finished_) return false;
      timer_ = timer;
      return true;
    }

    void OnReply(const v1::Envelope& envelope) {
      if (envelope.has_error() && envelope.error().code() != 0) {
        Complete(ToGrpcStatus(FromErrorProto(envelope.error())), nullptr);
        return;
      }
      Complete(grpc::Status::OK, &envelope.payload());
    }

    void OnTimerFired(const absl::Status& status) {
      if (!status.ok()) {  // The runtime is shutting down.
        Complete(ToGrpcStatus(status), nullptr);
        return;
      }
      Complete(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            absl::StrCat("actor \"", actor_, "\" on proc \"",
                                         runtime_->proc_name(),
                                         "\" did not reply within ",
                                         absl::FormatDuration(timeout_))),
               nullptr);
    }

    ProcRuntime* const runtime_;
    const std::string actor_;
    const absl::Duration timeout_;
    // Used only by the one Complete that finishes the call.
    grpc::ServerUnaryReactor* const reactor_;
    v1::CallActorResponse* const response_;

    absl::Mutex mu_;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
    std::optional<uint64_t> port_ ABSL_GUARDED_BY(mu_);
    std::optional<uint64_t> timer_ ABSL_GUARDED_BY(mu_);
  };

  const std::shared_ptr<Call> call_;
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

grpc::ServerUnaryReactor* ProcService::CallActor(
    grpc::CallbackServerContext* context, const v1::CallActorRequest* request,
    v1::CallActorResponse* response) {
  if (absl::Status valid = ValidateName(request->actor(), "actor name");
      !valid.ok()) {
    return FinishNow(context, ToGrpcStatus(valid));
  }
  if (!request->has_payload() || request->payload().type_url().empty()) {
    return FinishNow(
        context,
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     absl::StrCat("CallActor to actor \"", request->actor(),
                                  "\" on proc \"", runtime_->proc_name(),
                                  "\" has no payload")));
  }
  if (runtime_->mailbox()->address().empty()) {
    return FinishNow(
        context, grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              absl::StrCat("proc \"", runtime_->proc_name(),
                                           "\" has no mailbox address yet")));
  }
  absl::Duration timeout = request->timeout_ms() > 0
                               ? absl::Milliseconds(request->timeout_ms())
                               : kDefaultCallTimeout;
  // The call's own deadline (far future if it has none) caps the timeout.
  const absl::Time now = absl::Now();
  timeout = std::max(
      absl::ZeroDuration(),
      std::min(timeout, absl::Trunc(absl::FromChrono(context->deadline()) - now,
                                    absl::Milliseconds(1))));
  auto* reactor = new CallReactor(runtime_, *request, timeout, response);
  reactor->Start(*request, now + timeout);
  return reactor;
}

}  // namespace mesh
