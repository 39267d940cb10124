#include "procd/proc_verbs.h"

#include <glog/logging.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lib/mailbox/mailbox.h"
#include "lib/names.h"
#include "lib/status.h"
#include "lib/verb_timeouts.h"

namespace mesh {
namespace {

v1::ProcResponse ErrorResponse(const absl::Status& error) {
  v1::ProcResponse response;
  *response.mutable_error() = ToErrorProto(error);
  return response;
}

// The answer to a verb that yields one actor's state.
v1::ProcResponse ActorResponse(absl::StatusOr<v1::ActorState> state) {
  if (!state.ok()) return ErrorResponse(state.status());
  v1::ProcResponse response;
  *response.mutable_actor() = *std::move(state);
  return response;
}

}  // namespace

// The waiting requests by id. Shared with their Pending entries (which hold
// it weakly), so a late callback never touches a destroyed ProcVerbs.
struct ProcVerbs::Table {
  absl::Mutex mu;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Pending>> pending
      ABSL_GUARDED_BY(mu);
};

// One waiting request. Whatever ends it first (its answer, or Cancel) wins:
// it takes the request out of the table, releases what the request held (a
// runtime wait, a port of the proc's mailbox, a runtime timer) and, if it is
// an answer, calls `done`. Later attempts find it finished and do nothing.
// Thread-safe.
class ProcVerbs::Pending {
 public:
  Pending(uint64_t id, ProcRuntime* runtime, std::weak_ptr<Table> table,
          Done done, std::function<void()> after_answer)
      : id_(id),
        runtime_(runtime),
        table_(std::move(table)),
        done_(std::move(done)),
        after_answer_(std::move(after_answer)) {}

  // What the request holds. Each returns false if the request is finished
  // already: the caller then releases the thing itself.
  bool SetWait(uint64_t wait) { return Hold(&Held::wait, wait); }
  bool SetPort(uint64_t port) { return Hold(&Held::port, port); }
  bool SetTimer(uint64_t timer) { return Hold(&Held::timer, timer); }

  // Answers with `response` (its id set here) unless finished.
  void Answer(v1::ProcResponse response) {
    if (!Finish()) return;
    response.set_id(id_);
    done_(std::move(response));
    if (after_answer_) after_answer_();
  }

  // Ends the request without an answer unless finished. Runs after_answer
  // if `run_after`.
  void Drop(bool run_after) {
    if (!Finish()) return;
    VLOG(1) << "proc " << runtime_->proc_name() << ": dropped request " << id_;
    if (run_after && after_answer_) after_answer_();
  }

 private:
  struct Held {
    std::optional<uint64_t> wait;
    std::optional<uint64_t> port;
    std::optional<uint64_t> timer;
  };

  bool Hold(std::optional<uint64_t> Held::*field, uint64_t value) {
    absl::MutexLock lock(&mu_);
    if (finished_) return false;
    held_.*field = value;
    return true;
  }

  // Marks the request finished, takes it out of the table and releases what
  // it held; false if it was finished already.
  bool Finish() {
    Held held;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return false;
      finished_ = true;
      held = held_;
    }
    if (std::shared_ptr<Table> table = table_.lock()) {
      absl::MutexLock lock(&table->mu);
      auto it = table->pending.find(id_);
      if (it != table->pending.end() && it->second.get() == this) {
        table->pending.erase(it);
      }
    }
    if (held.wait.has_value()) runtime_->CancelWait(*held.wait);
    if (held.port.has_value()) runtime_->mailbox()->ClosePort(*held.port);
    if (held.timer.has_value()) runtime_->CancelTimer(*held.timer);
    return true;
  }

  const uint64_t id_;
  ProcRuntime* const runtime_;
  const std::weak_ptr<Table> table_;
  // Called by the one Finish that wins.
  const Done done_;
  const std::function<void()> after_answer_;

  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  Held held_ ABSL_GUARDED_BY(mu_);
};

ProcVerbs::ProcVerbs(ProcRuntime* runtime, Options options)
    : runtime_(runtime),
      options_(std::move(options)),
      table_(std::make_shared<Table>()) {}

ProcVerbs::~ProcVerbs() {
  std::vector<std::shared_ptr<Pending>> left;
  {
    absl::MutexLock lock(&table_->mu);
    for (auto& [id, pending] : table_->pending) left.push_back(pending);
  }
  for (auto& pending : left) pending->Drop(/*run_after=*/false);
}

size_t ProcVerbs::pending() const {
  absl::MutexLock lock(&table_->mu);
  return table_->pending.size();
}

void ProcVerbs::Cancel(uint64_t id) {
  std::shared_ptr<Pending> pending;
  {
    absl::MutexLock lock(&table_->mu);
    auto it = table_->pending.find(id);
    if (it == table_->pending.end()) return;
    pending = it->second;
  }
  pending->Drop(/*run_after=*/true);
}

std::shared_ptr<ProcVerbs::Pending> ProcVerbs::Register(
    uint64_t id, Done& done, std::function<void()> after_answer) {
  absl::Status refused;
  {
    absl::MutexLock lock(&table_->mu);
    if (table_->pending.contains(id)) {
      refused = absl::AlreadyExistsError(
          absl::StrCat("proc \"", runtime_->proc_name(), "\": request ", id,
                       " is already pending"));
    } else if (table_->pending.size() >= options_.max_pending) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "proc \"", runtime_->proc_name(), "\" has ", table_->pending.size(),
          " requests waiting, its limit; not waiting for request ", id));
    } else {
      auto pending = std::make_shared<Pending>(
          id, runtime_, table_, std::move(done), std::move(after_answer));
      table_->pending.emplace(id, pending);
      return pending;
    }
  }
  v1::ProcResponse response = ErrorResponse(refused);
  response.set_id(id);
  done(std::move(response));
  return nullptr;
}

void ProcVerbs::StartWait(const std::shared_ptr<Pending>& pending,
                          std::vector<std::string> names, v1::Status min_status,
                          absl::Duration timeout, Fill fill) {
  uint64_t wait = runtime_->WaitActors(
      std::move(names), min_status, timeout,
      [pending, fill = std::move(fill)](WaitResult result) {
        v1::ProcResponse response;
        fill(std::move(result), &response);
        pending->Answer(std::move(response));
      });
  // Answered at once, or cancelled meanwhile: the wait is over or must go.
  if (!pending->SetWait(wait)) runtime_->CancelWait(wait);
}

void ProcVerbs::Handle(v1::ProcRequest request, Done done) {
  const uint64_t id = request.id();
  auto answer = [id, &done](v1::ProcResponse response) {
    response.set_id(id);
    done(std::move(response));
  };
  switch (request.request_case()) {
    case v1::ProcRequest::kCreateActor:
      answer(
          ActorResponse(runtime_->CreateOrUpdateActor(request.create_actor())));
      return;
    case v1::ProcRequest::kGetActor:
      answer(
          ActorResponse(runtime_->GetActorState(request.get_actor().name())));
      return;
    case v1::ProcRequest::kStopActor:
      StopActor(id, request.stop_actor(), std::move(done));
      return;
    case v1::ProcRequest::kStopAll:
      StopAll(id, request.stop_all(), std::move(done));
      return;
    case v1::ProcRequest::kListActors: {
      v1::ProcResponse response;
      for (v1::ActorState& state : runtime_->ListActors()) {
        *response.mutable_list_actors()->add_actors() = std::move(state);
      }
      answer(std::move(response));
      return;
    }
    case v1::ProcRequest::kWaitActors:
      WaitActors(id, request.wait_actors(), std::move(done));
      return;
    case v1::ProcRequest::kGetInfo: {
      v1::ProcResponse response;
      *response.mutable_info() = runtime_->GetProcInfo();
      answer(std::move(response));
      return;
    }
    case v1::ProcRequest::kCallActor:
      CallActor(id, request.call_actor(), std::move(done));
      return;
    case v1::ProcRequest::REQUEST_NOT_SET:
      break;
  }
  answer(ErrorResponse(absl::InvalidArgumentError(
      absl::StrCat("request ", id, " to proc \"", runtime_->proc_name(),
                   "\" names no verb (or one this proc does not know)"))));
}

void ProcVerbs::StopActor(uint64_t id, const v1::StopActorRequest& request,
                          Done done) {
  std::shared_ptr<Pending> pending = Register(id, done, nullptr);
  if (pending == nullptr) return;
  absl::StatusOr<v1::ActorState> state =
      runtime_->StopActor(request.name(), request.reason());
  if (!state.ok()) {
    pending->Answer(ErrorResponse(state.status()));
    return;
  }
  StartWait(pending, {request.name()}, v1::STOPPED, options_.stop_wait,
            [initial = *std::move(state)](WaitResult result,
                                          v1::ProcResponse* response) {
              if (result.ok() && result->actors_size() == 1) {
                *response->mutable_actor() = result->actors(0);
              } else {
                *response->mutable_actor() = initial;
              }
            });
}

void ProcVerbs::StopAll(uint64_t id, const v1::StopAllRequest& request,
                        Done done) {
  std::string reason =
      request.reason().empty() ? "StopAll" : BoundText(request.reason());
  LOG(INFO) << "proc " << runtime_->proc_name() << ": StopAll ("
            << QuoteForError(reason, kMaxReasonBytes)
            << (request.exit_proc() ? ", then exit" : "") << ")";
  std::function<void()> after_answer;
  if (request.exit_proc()) after_answer = options_.on_exit_requested;
  std::shared_ptr<Pending> pending =
      Register(id, done, std::move(after_answer));
  if (pending == nullptr) return;
  std::vector<v1::ActorState> states =
      runtime_->StopAll(reason, /*proc_ending=*/request.exit_proc());
  std::vector<std::string> names;
  names.reserve(states.size());
  for (const v1::ActorState& state : states) names.push_back(state.name());
  // With no actors, names is empty and the wait answers at once (every one
  // of zero actors is stopped).
  StartWait(pending, std::move(names), v1::STOPPED, options_.stop_wait,
            [states = std::move(states)](WaitResult result,
                                         v1::ProcResponse* response) {
              auto* stopped = response->mutable_stop_all()->mutable_stopped();
              if (result.ok()) {
                stopped->Assign(result->actors().begin(),
                                result->actors().end());
              } else {
                stopped->Assign(states.begin(), states.end());
              }
            });
}

void ProcVerbs::WaitActors(uint64_t id, const v1::WaitActorsRequest& request,
                           Done done) {
  for (const std::string& name : request.names()) {
    if (absl::Status valid = ValidateName(name, "actor name"); !valid.ok()) {
      v1::ProcResponse response = ErrorResponse(valid);
      response.set_id(id);
      done(std::move(response));
      return;
    }
  }
  std::shared_ptr<Pending> pending = Register(id, done, nullptr);
  if (pending == nullptr) return;
  StartWait(pending, {request.names().begin(), request.names().end()},
            request.min_status(),
            TimeoutOr(request.timeout_ms(), kDefaultWaitTimeout),
            [](WaitResult result, v1::ProcResponse* response) {
              if (!result.ok()) {
                *response = ErrorResponse(result.status());
                return;
              }
              *response->mutable_wait_actors() = *std::move(result);
            });
}

// Three things race to end a CallActor: the actor's reply on a one-shot
// port of the proc's mailbox, a runtime timer that only the call's timeout
// or the runtime's Shutdown ends, and Cancel. Pending lets the first through
// and releases the port and the timer.
void ProcVerbs::CallActor(uint64_t id, const v1::CallActorRequest& request,
                          Done done) {
  absl::Status invalid = ValidateName(request.actor(), "actor name");
  if (invalid.ok() &&
      (!request.has_payload() || request.payload().type_url().empty())) {
    invalid = absl::InvalidArgumentError(
        absl::StrCat("CallActor to actor \"", request.actor(), "\" on proc \"",
                     runtime_->proc_name(), "\" has no payload"));
  }
  if (!invalid.ok()) {
    v1::ProcResponse response = ErrorResponse(invalid);
    response.set_id(id);
    done(std::move(response));
    return;
  }
  std::shared_ptr<Pending> pending = Register(id, done, nullptr);
  if (pending == nullptr) return;

  Mailbox* mailbox = runtime_->mailbox();
  v1::PortRef port = mailbox->OpenPort([pending](v1::Envelope reply) {
    v1::ProcResponse response;
    if (CarriesError(reply)) {
      *response.mutable_error() = reply.error();
    } else {
      *response.mutable_call_actor()->mutable_reply() =
          std::move(*reply.mutable_payload());
    }
    pending->Answer(std::move(response));
  });
  if (!pending->SetPort(port.port())) {  // Cancelled meanwhile.
    mailbox->ClosePort(port.port());
    return;
  }
  const absl::Duration timeout =
      TimeoutOr(request.timeout_ms(), kDefaultCallTimeout);
  // The reply's deadline, which the proc's shutdown ends early.
  uint64_t timer = runtime_->After(
      timeout, [pending, actor = request.actor(), proc = runtime_->proc_name(),
                timeout](absl::Status status) {
        if (status.ok()) {
          status = absl::DeadlineExceededError(absl::StrCat(
              "actor \"", actor, "\" on proc \"", proc,
              "\" did not reply within ", absl::FormatDuration(timeout)));
        }
        pending->Answer(ErrorResponse(status));
      });
  if (!pending->SetTimer(timer)) {  // Timed out, shut down or cancelled.
    runtime_->CancelTimer(timer);
    return;
  }
  v1::ActorRef self;
  self.set_host(mailbox->host());
  self.set_proc(mailbox->id());
  self.set_actor(request.actor());
  v1::Envelope envelope;
  AddressTo(self, &envelope);
  *envelope.mutable_payload() = request.payload();
  *envelope.mutable_reply_to() = port;
  // To this very mailbox: its local FIFO, then the actor sink, whose
  // refusals (unknown, failed or stopped actor) come back as error replies
  // to the port.
  mailbox->Send(std::move(envelope));
}

}  // namespace mesh
