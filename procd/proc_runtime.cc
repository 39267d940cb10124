#include "procd/proc_runtime.h"

#include <glog/logging.h>
#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "lib/names.h"
#include "lib/status.h"

namespace mesh {
namespace internal {

// One actor: its spec, its status (guarded by ProcRuntime::mu_) and its FIFO
// (guarded by its own mu). Lock order: ProcRuntime::mu_, then ActorCell::mu.
struct ActorCell {
  // Set at creation, then read-only.
  std::string name;
  std::string type;
  uint64_t rank = 0;
  google::protobuf::Any params;
  v1::ActorRef ref;
  absl::Time created_at;

  // Guarded by ProcRuntime::mu_.
  v1::PortRef supervisor;
  v1::Status status = v1::INITIALIZING;
  std::string reason;
  uint64_t generation = 1;
  absl::Time updated_at;

  std::atomic<uint64_t> messages_handled{0};

  absl::Mutex mu;
  absl::CondVar cv;
  std::deque<v1::Envelope> queue ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;

  // Runs ProcRuntime::RunActor; joined by ProcRuntime::Shutdown.
  std::thread thread;
};

}  // namespace internal

namespace {

using internal::ActorCell;

google::protobuf::Timestamp ToProto(absl::Time time) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
      absl::ToUnixNanos(time));
}

bool Accepting(v1::Status status) {
  return status == v1::INITIALIZING || status == v1::RUNNING;
}

bool Final(v1::Status status) {
  return status == v1::STOPPED || status == v1::FAILED;
}

}  // namespace

ProcRuntime::ProcRuntime(Options options, Mailbox* mailbox)
    : options_(std::move(options)), mailbox_(mailbox) {
  mailbox_->SetActorSink(
      [this](v1::Envelope envelope) { return Deliver(std::move(envelope)); });
  timer_thread_ = std::thread([this] { TimerLoop(); });
}

ProcRuntime::~ProcRuntime() {
  Shutdown();
  mailbox_->SetActorSink(nullptr);
}

absl::StatusOr<v1::ActorState> ProcRuntime::CreateOrUpdateActor(
    const v1::CreateOrUpdateActorRequest& request) {
  const std::string& name = request.name();
  RETURN_IF_ERROR(ValidateName(name, "actor name"));
  if (!options_.registry.Contains(request.type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "actor type \"", request.type(), "\" is not registered in proc \"",
        options_.proc_name, "\" (registered: ",
        absl::StrJoin(options_.registry.TypeNames(), ", "), ")"));
  }
  Deferred deferred;
  v1::ActorState state;
  {
    absl::MutexLock lock(&mu_);
    auto it = actors_.find(name);
    if (it != actors_.end()) {
      ActorCell& cell = *it->second;
      bool same_params =
          cell.params.type_url() == request.params().type_url() &&
          cell.params.value() == request.params().value();
      if (cell.type != request.type() || cell.rank != request.rank() ||
          !same_params) {
        return absl::FailedPreconditionError(absl::StrCat(
            "actor \"", name, "\" already exists on proc \"",
            options_.proc_name, "\" with type \"", cell.type, "\", rank ",
            cell.rank, same_params ? "" : " and other params",
            "; asked for type \"", request.type(), "\", rank ",
            request.rank()));
      }
      if (request.has_supervisor()) cell.supervisor = request.supervisor();
      return StateLocked(cell);
    }
    if (stopping_) {
      return absl::FailedPreconditionError(
          absl::StrCat("proc \"", options_.proc_name,
                       "\" is stopping; not creating actor \"", name, "\""));
    }
    auto owned = std::make_unique<ActorCell>();
    ActorCell* cell = owned.get();
    cell->name = name;
    cell->type = request.type();
    cell->rank = request.rank();
    cell->params = request.params();
    cell->supervisor = request.supervisor();
    cell->ref.set_address(mailbox_->address());
    cell->ref.set_proc(options_.proc_name);
    cell->ref.set_actor(name);
    cell->ref.set_rank(request.rank());
    cell->created_at = cell->updated_at = absl::Now();
    actors_.emplace(name, std::move(owned));
    cell->thread = std::thread([this, cell] { RunActor(cell); });
    CollectSatisfiedWaitersLocked(&deferred);
    state = StateLocked(*cell);
  }
  Run(deferred);
  LOG(INFO) << "proc " << options_.proc_name << ": created actor " << name
            << " of type " << request.type() << " (rank " << request.rank()
            << ")";
  return state;
}

absl::StatusOr<v1::ActorState> ProcRuntime::GetActorState(
    const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = actors_.find(name);
  if (it == actors_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "no actor \"", name, "\" on proc \"", options_.proc_name, "\""));
  }
  return StateLocked(*it->second);
}

absl::StatusOr<v1::ActorState> ProcRuntime::StopActor(
    const std::string& name, const std::string& reason) {
  Deferred deferred;
  v1::ActorState state;
  {
    absl::MutexLock lock(&mu_);
    auto it = actors_.find(name);
    if (it == actors_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "no actor \"", name, "\" on proc \"", options_.proc_name, "\""));
    }
    StopCellLocked(it->second.get(), reason, &deferred);
    state = StateLocked(*it->second);
  }
  Run(deferred);
  return state;
}

std::vector<v1::ActorState> ProcRuntime::StopAll(const std::string& reason) {
  Deferred deferred;
  std::vector<v1::ActorState> states;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [name, cell] : actors_) {
      StopCellLocked(cell.get(), reason, &deferred);
      states.push_back(StateLocked(*cell));
    }
  }
  Run(deferred);
  return states;
}

void ProcRuntime::StopCellLocked(ActorCell* cell, const std::string& reason,
                                 Deferred* deferred) {
  if (Accepting(cell->status)) {
    SetStatusLocked(cell, v1::STOPPING,
                    reason.empty() ? "stop requested" : reason, deferred);
  }
  absl::MutexLock lock(&cell->mu);
  if (!cell->stop) {
    cell->stop = true;
    cell->cv.Signal();
  }
}

std::vector<v1::ActorState> ProcRuntime::ListActors() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<v1::ActorState> states;
  states.reserve(actors_.size());
  for (const auto& [name, cell] : actors_) states.push_back(StateLocked(*cell));
  return states;
}

v1::ProcInfo ProcRuntime::GetProcInfo() const {
  v1::ProcInfo info;
  info.set_name(options_.proc_name);
  info.set_rank(options_.rank);
  info.set_address(mailbox_->address());
  info.set_pid(getpid());
  for (const std::string& type : options_.registry.TypeNames()) {
    info.add_actor_types(type);
  }
  absl::ReaderMutexLock lock(&mu_);
  info.set_num_actors(actors_.size());
  return info;
}

uint64_t ProcRuntime::WaitActors(std::vector<std::string> names,
                                 v1::Status min_status, absl::Time deadline,
                                 WaitCallback done) {
  absl::StatusOr<v1::WaitActorsResponse> result;
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    id = next_waiter_++;
    Waiter waiter{std::move(names), min_status, deadline, nullptr};
    v1::WaitActorsResponse response;
    if (shut_down_) {
      result = absl::UnavailableError(
          absl::StrCat("proc \"", options_.proc_name, "\" is shut down"));
    } else if (CheckWaiterLocked(waiter, /*force=*/false, &response)) {
      result = std::move(response);
    } else if (deadline <= absl::Now()) {
      CheckWaiterLocked(waiter, /*force=*/true, &response);
      response.set_timed_out(true);
      result = std::move(response);
    } else {
      waiter.done = std::move(done);
      waiters_.emplace(id, std::move(waiter));
      timer_kick_ = true;
      return id;
    }
  }
  done(std::move(result));
  return id;
}

bool ProcRuntime::CancelWait(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return waiters_.erase(id) > 0;
}

absl::Status ProcRuntime::Deliver(v1::Envelope envelope) {
  absl::ReaderMutexLock lock(&mu_);
  auto it = actors_.find(envelope.actor());
  if (it == actors_.end()) {
    return absl::NotFoundError(absl::StrCat("no actor \"", envelope.actor(),
                                            "\" on proc \"", options_.proc_name,
                                            "\""));
  }
  ActorCell* cell = it->second.get();
  if (!Accepting(cell->status)) return NotAcceptingError(*cell);
  absl::MutexLock cell_lock(&cell->mu);
  cell->queue.push_back(std::move(envelope));
  cell->cv.Signal();
  return absl::OkStatus();
}

void ProcRuntime::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  StopAll("proc shutting down");
  // No actor can be added now (stopping_), so this is every thread.
  std::vector<ActorCell*> cells;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (auto& [name, cell] : actors_) cells.push_back(cell.get());
  }
  for (ActorCell* cell : cells) {
    if (cell->thread.joinable() &&
        cell->thread.get_id() != std::this_thread::get_id()) {
      cell->thread.join();
    }
  }
  std::vector<WaitCallback> abandoned;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    timer_kick_ = true;
    for (auto& [id, waiter] : waiters_) {
      abandoned.push_back(std::move(waiter.done));
    }
    waiters_.clear();
  }
  for (WaitCallback& done : abandoned) {
    done(absl::UnavailableError(
        absl::StrCat("proc \"", options_.proc_name, "\" is shutting down")));
  }
  if (timer_thread_.joinable()) timer_thread_.join();
}

void ProcRuntime::RunActor(ActorCell* cell) {
  const std::string no_sender;
  std::unique_ptr<Actor> actor = options_.registry.Create(cell->type);
  if (actor == nullptr) {
    Fail(cell,
         absl::InternalError(absl::StrCat("the factory of actor type \"",
                                          cell->type, "\" returned no actor")));
  } else {
    ActorContext ctx(*mailbox_, cell->ref, /*cast_rank=*/0, no_sender);
    absl::Status init = actor->Init(cell->params, ctx);
    if (!init.ok()) {
      Fail(cell, Annotate(init, "Init"));
    } else {
      Deferred deferred;
      {
        absl::MutexLock lock(&mu_);
        if (cell->status == v1::INITIALIZING) {
          SetStatusLocked(cell, v1::RUNNING, "", &deferred);
        }
      }
      Run(deferred);
    }
  }

  while (true) {
    v1::Envelope envelope;
    {
      absl::MutexLock lock(&cell->mu);
      while (cell->queue.empty() && !cell->stop) cell->cv.Wait(&cell->mu);
      if (cell->stop) break;
      envelope = std::move(cell->queue.front());
      cell->queue.pop_front();
    }
    HandleEnvelope(cell, actor.get(), std::move(envelope));
  }

  actor.reset();  // The user's destructor runs on the actor's thread.
  std::deque<v1::Envelope> leftover;
  {
    absl::MutexLock lock(&cell->mu);
    leftover.swap(cell->queue);
  }
  Deferred deferred;
  absl::Status refusal;
  {
    absl::MutexLock lock(&mu_);
    SetStatusLocked(cell, v1::STOPPED, cell->reason, &deferred);
    refusal = NotAcceptingError(*cell);
  }
  for (const v1::Envelope& envelope : leftover) ReplyError(envelope, refusal);
  Run(deferred);
  VLOG(1) << "proc " << options_.proc_name << ": actor " << cell->name
          << " thread done";
}

void ProcRuntime::HandleEnvelope(ActorCell* cell, Actor* actor,
                                 v1::Envelope envelope) {
  absl::Status refusal;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (cell->status == v1::FAILED) refusal = NotAcceptingError(*cell);
  }
  if (!refusal.ok()) {
    ReplyError(envelope, refusal);
    return;
  }
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> result;
  if (!internal::ActorDispatcher::Handles(*actor, envelope.payload())) {
    result = absl::InvalidArgumentError(
        absl::StrCat("actor \"", cell->name, "\" of type \"", cell->type,
                     "\" has no handler for message type \"",
                     envelope.payload().type_url(), "\""));
  } else {
    ActorContext ctx(*mailbox_, cell->ref, envelope.cast_rank(),
                     envelope.sender());
    result =
        internal::ActorDispatcher::Dispatch(*actor, envelope.payload(), ctx);
  }
  cell->messages_handled.fetch_add(1, std::memory_order_relaxed);
  if (result.ok()) {
    if (envelope.has_reply_to() && !envelope.reply_to().address().empty()) {
      v1::Envelope reply;
      reply.set_port(envelope.reply_to().port());
      reply.set_correlation(envelope.correlation());
      reply.mutable_payload()->PackFrom(**result);
      mailbox_->Send(envelope.reply_to().address(), std::move(reply));
    }
    return;
  }
  ReplyError(envelope,
             Annotate(result.status(),
                      absl::StrCat("actor \"", cell->name, "\" on proc \"",
                                   options_.proc_name, "\"")));
  Fail(cell, result.status());
}

void ProcRuntime::Fail(ActorCell* cell, const absl::Status& error) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    SetStatusLocked(cell, v1::FAILED,
                    absl::StrCat(absl::StatusCodeToString(error.code()), ": ",
                                 error.message()),
                    &deferred);
  }
  Run(deferred);
}

void ProcRuntime::SetStatusLocked(ActorCell* cell, v1::Status status,
                                  const std::string& reason,
                                  Deferred* deferred) {
  if (Final(cell->status) || cell->status == status) return;
  cell->status = status;
  cell->reason = reason;
  ++cell->generation;
  cell->updated_at = absl::Now();
  if (status == v1::FAILED) {
    LOG(WARNING) << "proc " << options_.proc_name << ": actor " << cell->name
                 << " failed: " << reason;
  } else {
    VLOG(1) << "proc " << options_.proc_name << ": actor " << cell->name
            << " is " << v1::Status_Name(status);
  }
  if (Final(status) && !cell->supervisor.address().empty()) {
    v1::SupervisionEvent event;
    *event.mutable_actor() = StateLocked(*cell);
    deferred->push_back([this, supervisor = cell->supervisor,
                         event = std::move(event)] {
      mailbox_->Send(supervisor.address(), EnvelopeToPort(supervisor, event));
    });
  }
  CollectSatisfiedWaitersLocked(deferred);
}

v1::ActorState ProcRuntime::StateLocked(const ActorCell& cell) const {
  v1::ActorState state;
  state.set_name(cell.name);
  state.set_type(cell.type);
  state.set_rank(cell.rank);
  state.set_status(cell.status);
  state.set_reason(cell.reason);
  state.set_generation(cell.generation);
  *state.mutable_ref() = cell.ref;
  state.set_messages_handled(
      cell.messages_handled.load(std::memory_order_relaxed));
  *state.mutable_created_at() = ToProto(cell.created_at);
  *state.mutable_updated_at() = ToProto(cell.updated_at);
  return state;
}

bool ProcRuntime::CheckWaiterLocked(const Waiter& waiter, bool force,
                                    v1::WaitActorsResponse* response) const {
  response->Clear();
  bool satisfied = true;
  if (waiter.names.empty()) {
    for (const auto& [name, cell] : actors_) {
      *response->add_actors() = StateLocked(*cell);
      satisfied = satisfied && cell->status >= waiter.min_status;
    }
  } else {
    for (const std::string& name : waiter.names) {
      auto it = actors_.find(name);
      if (it == actors_.end()) {
        v1::ActorState* state = response->add_actors();
        state->set_name(name);
        state->set_status(v1::NOT_EXIST);
        satisfied = satisfied && waiter.min_status <= v1::NOT_EXIST;
      } else {
        *response->add_actors() = StateLocked(*it->second);
        satisfied = satisfied && it->second->status >= waiter.min_status;
      }
    }
  }
  return satisfied || force;
}

void ProcRuntime::CollectSatisfiedWaitersLocked(Deferred* deferred) {
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    v1::WaitActorsResponse response;
    if (CheckWaiterLocked(it->second, /*force=*/false, &response)) {
      deferred->push_back([done = std::move(it->second.done),
                           response = std::move(response)]() mutable {
        done(std::move(response));
      });
      waiters_.erase(it++);
    } else {
      ++it;
    }
  }
}

absl::Status ProcRuntime::NotAcceptingError(const ActorCell& cell) const {
  if (cell.status == v1::FAILED) {
    return absl::FailedPreconditionError(
        absl::StrCat("actor \"", cell.name, "\" on proc \"", options_.proc_name,
                     "\" has failed: ", cell.reason));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("actor \"", cell.name, "\" on proc \"", options_.proc_name,
                   "\" is stopped (", cell.reason, ")"));
}

void ProcRuntime::ReplyError(const v1::Envelope& envelope,
                             const absl::Status& error) {
  if (!envelope.has_reply_to() || envelope.reply_to().address().empty()) {
    return;
  }
  v1::Envelope reply;
  reply.set_port(envelope.reply_to().port());
  reply.set_correlation(envelope.correlation());
  *reply.mutable_error() = ToErrorProto(error);
  mailbox_->Send(envelope.reply_to().address(), std::move(reply));
}

void ProcRuntime::TimerLoop() {
  mu_.Lock();
  while (!shut_down_) {
    absl::Time next = absl::InfiniteFuture();
    for (const auto& [id, waiter] : waiters_) {
      next = std::min(next, waiter.deadline);
    }
    auto kicked = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return timer_kick_ || shut_down_;
    };
    mu_.AwaitWithDeadline(absl::Condition(&kicked), next);
    timer_kick_ = false;
    if (shut_down_) break;
    Deferred deferred;
    absl::Time now = absl::Now();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      v1::WaitActorsResponse response;
      bool satisfied =
          CheckWaiterLocked(it->second, /*force=*/false, &response);
      if (!satisfied) {
        CheckWaiterLocked(it->second, /*force=*/true, &response);
        response.set_timed_out(true);
      }
      deferred.push_back([done = std::move(it->second.done),
                          response = std::move(response)]() mutable {
        done(std::move(response));
      });
      waiters_.erase(it++);
    }
    if (!deferred.empty()) {
      mu_.Unlock();
      Run(deferred);
      mu_.Lock();
    }
  }
  mu_.Unlock();
}

void ProcRuntime::Run(Deferred& deferred) {
  for (auto& work : deferred) work();
  deferred.clear();
}

}  // namespace mesh
