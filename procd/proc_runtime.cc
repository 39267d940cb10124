#include "procd/proc_runtime.h"

#include <glog/logging.h>
#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <system_error>
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

  // Runs ProcRuntime::RunActor. Guarded by ProcRuntime::mu_: moved to
  // ProcRuntime::exited_ when it ends (or taken by Shutdown) and joined.
  std::thread thread;
  // Guarded by ProcRuntime::mu_: set when the thread no longer touches the
  // cell, which may then be forgotten.
  bool thread_done = false;

  mutable absl::Mutex mu;
  absl::CondVar cv;
  std::deque<v1::Envelope> queue ABSL_GUARDED_BY(mu);
  // The handler running now: its message type's full name (the
  // descriptor's, which lives as long as the program; null: none) and
  // since when (wall time). The last one that finished and how long it ran
  // (on the runtime's clock).
  const std::string* current_handler ABSL_GUARDED_BY(mu) = nullptr;
  absl::Time current_since ABSL_GUARDED_BY(mu);
  const std::string* last_handler ABSL_GUARDED_BY(mu) = nullptr;
  absl::Duration last_duration ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  // Set when the full queue refused an envelope whose sender was told (one
  // supervision event per time the queue fills up); cleared when the actor
  // takes the next envelope.
  bool told_full ABSL_GUARDED_BY(mu) = false;
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

// The introspection fields of `state`: queue depth, last and current
// handler.
void AddHandlerStats(const ActorCell& cell, v1::ActorState* state)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(cell.mu) {
  state->set_queue_depth(static_cast<uint32_t>(cell.queue.size()));
  if (cell.last_handler != nullptr) {
    state->set_last_handler(*cell.last_handler);
    state->set_last_handler_micros(
        static_cast<uint64_t>(absl::ToInt64Microseconds(cell.last_duration)));
  }
  if (cell.current_handler != nullptr) {
    state->set_current_handler(*cell.current_handler);
    *state->mutable_current_handler_since() = ToProto(cell.current_since);
  }
}

}  // namespace

ProcRuntime::ProcRuntime(Options options, Mailbox* mailbox)
    : options_(std::move(options)),
      mailbox_(mailbox),
      loop_(std::make_unique<EventLoop>(*options_.clock)),
      waiters_(
          "actor", &mu_, loop_.get(),
          [this](const std::string& name)
              ABSL_NO_THREAD_SAFETY_ANALYSIS -> std::optional<v1::ActorState> {
                auto it = actors_.find(name);
                if (it == actors_.end()) return std::nullopt;
                return StateLocked(*it->second);
              },
          [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
            std::vector<v1::ActorState> states;
            for (const auto& [name, cell] : actors_) {
              states.push_back(StateLocked(*cell));
            }
            return states;
          }) {
  mailbox_->SetActorSink(
      [this](v1::Envelope envelope) { return Deliver(std::move(envelope)); });
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
        "actor type ", QuoteForError(request.type()),
        " is not registered in proc \"", options_.proc_name, "\" (registered: ",
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
            "; asked for type ", QuoteForError(request.type()), ", rank ",
            request.rank()));
      }
      if (IsPortSet(request.supervisor())) {
        cell.supervisor = request.supervisor();
      }
      return StateLocked(cell);
    }
    if (stopping_) {
      return absl::FailedPreconditionError(
          absl::StrCat("proc \"", options_.proc_name,
                       "\" is stopping; not creating actor \"", name, "\""));
    }
    if (live_ >= options_.max_actors) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "proc \"", options_.proc_name, "\" has ", live_,
          " live actors, its limit; not creating actor \"", name, "\""));
    }
    auto owned = std::make_unique<ActorCell>();
    ActorCell* cell = owned.get();
    cell->name = name;
    cell->type = request.type();
    cell->rank = request.rank();
    cell->params = request.params();
    cell->supervisor = request.supervisor();
    cell->ref.set_host(mailbox_->host());
    cell->ref.set_proc(mailbox_->id());
    cell->ref.set_actor(name);
    cell->ref.set_rank(request.rank());
    cell->created_at = cell->updated_at = absl::Now();
    actors_.emplace(name, std::move(owned));
    ++live_;
    // The only exception our code catches: a thread the system cannot make
    // must not leave an actor without one behind.
    try {
      cell->thread = std::thread([this, cell] { RunActor(cell); });
    } catch (const std::system_error& error) {
      actors_.erase(name);
      --live_;
      return absl::ResourceExhaustedError(absl::StrCat(
          "proc \"", options_.proc_name,
          "\" cannot start a thread for actor \"", name, "\": ", error.what()));
    }
    waiters_.Check(deferred);
    state = StateLocked(*cell);
  }
  RunDeferred(deferred);
  LOG(INFO) << "proc " << options_.proc_name << ": created actor " << name
            << " of type " << request.type() << " (rank " << request.rank()
            << ")";
  return state;
}

absl::StatusOr<v1::ActorState> ProcRuntime::GetActorState(
    const std::string& name) const {
  RETURN_IF_ERROR(ValidateName(name, "actor name"));
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
  RETURN_IF_ERROR(ValidateName(name, "actor name"));
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
  RunDeferred(deferred);
  return state;
}

std::vector<v1::ActorState> ProcRuntime::StopAll(const std::string& reason,
                                                 bool proc_ending) {
  Deferred deferred;
  std::vector<v1::ActorState> states;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (proc_ending) proc_ending_ = true;
    for (auto& [name, cell] : actors_) {
      StopCellLocked(cell.get(), reason, &deferred);
      states.push_back(StateLocked(*cell));
    }
  }
  RunDeferred(deferred);
  return states;
}

void ProcRuntime::StopCellLocked(ActorCell* cell, const std::string& reason,
                                 Deferred* deferred) {
  if (Accepting(cell->status)) {
    SetStatusLocked(cell, v1::STOPPING,
                    reason.empty() ? "stop requested" : BoundText(reason),
                    deferred);
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
  info.set_host(mailbox_->host());
  info.set_pid(getpid());
  for (const std::string& type : options_.registry.TypeNames()) {
    info.add_actor_types(type);
  }
  absl::ReaderMutexLock lock(&mu_);
  info.set_num_actors(live_);
  return info;
}

size_t ProcRuntime::live_actors() const {
  absl::ReaderMutexLock lock(&mu_);
  return live_;
}

uint64_t ProcRuntime::WaitActors(std::vector<std::string> names,
                                 v1::Status min_status, absl::Duration timeout,
                                 WaitCallback done) {
  auto answer = [done = std::move(done)](
                    absl::StatusOr<StatusWaitResult<v1::ActorState>> result) {
    if (!result.ok()) {
      done(result.status());
      return;
    }
    v1::WaitActorsResponse response;
    for (auto& state : result->states)
      *response.add_actors() = std::move(state);
    response.set_timed_out(result->timed_out);
    done(std::move(response));
  };
  Deferred deferred;
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    id = waiters_.Add(std::move(names), min_status, timeout, std::move(answer),
                      deferred);
  }
  RunDeferred(deferred);
  return id;
}

bool ProcRuntime::CancelWait(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return waiters_.Cancel(id);
}

uint64_t ProcRuntime::After(absl::Duration timeout,
                            std::function<void(absl::Status)> fire) {
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    id = next_timer_++;
    if (!shut_down_) {
      Timer& timer = timers_[id];
      timer.fire = std::move(fire);
      timer.loop_timer = loop_->PostAfter(timeout, [this, id] {
        std::function<void(absl::Status)> due;
        {
          absl::MutexLock lock(&mu_);
          auto it = timers_.find(id);
          if (it == timers_.end()) return;
          due = std::move(it->second.fire);
          timers_.erase(it);
        }
        due(absl::OkStatus());
      });
      return id;
    }
  }
  fire(ShuttingDownError());
  return id;
}

bool ProcRuntime::CancelTimer(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = timers_.find(id);
  if (it == timers_.end()) return false;
  loop_->Cancel(it->second.loop_timer);
  timers_.erase(it);
  return true;
}

absl::Status ProcRuntime::Deliver(v1::Envelope envelope) {
  RETURN_IF_ERROR(ValidateName(envelope.actor(), "actor name"));
  Deferred deferred;
  absl::Status refused;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = actors_.find(envelope.actor());
    if (it == actors_.end()) {
      return absl::NotFoundError(
          absl::StrCat("no actor ", QuoteForError(envelope.actor()),
                       " on proc \"", options_.proc_name, "\""));
    }
    ActorCell* cell = it->second.get();
    if (!Accepting(cell->status)) return NotAcceptingError(*cell);
    absl::MutexLock cell_lock(&cell->mu);
    if (cell->queue.size() < options_.max_queued_messages) {
      cell->queue.push_back(std::move(envelope));
      cell->cv.Signal();
      return absl::OkStatus();
    }
    refused = absl::ResourceExhaustedError(absl::StrCat(
        "actor \"", cell->name, "\" on proc \"", options_.proc_name, "\" has ",
        cell->queue.size(), " queued messages, its limit"));
    // Without a reply_to nobody hears of the refusal from the mailbox: the
    // sender does by a supervision event, once per time the queue fills up
    // (again once it has drained to half),
    // if it supervises the actor (its supervisor port is how it is reached).
    if (!envelope.has_reply_to() && !cell->told_full &&
        IsPortSet(cell->supervisor) &&
        IsMailboxName(envelope.sender(), cell->supervisor.host(),
                      cell->supervisor.mailbox())) {
      cell->told_full = true;
      v1::SupervisionEvent event;
      *event.mutable_actor() = BaseStateLocked(*cell);
      AddHandlerStats(*cell, event.mutable_actor());
      event.set_cause(v1::SupervisionEvent::MESSAGE_REFUSED);
      event.set_message(absl::StrCat(
          std::string(refused.message()), "; dropped a message from ",
          QuoteForError(envelope.sender()),
          " (and the next ones until it catches up)"));
      deferred.push_back(
          [this, supervisor = cell->supervisor, event = std::move(event)] {
            mailbox_->Send(EnvelopeToPort(supervisor, event));
          });
    }
  }
  if (!envelope.has_reply_to()) {
    LOG_EVERY_N(WARNING, 1000)
        << "proc " << options_.proc_name << ": " << refused.message()
        << "; dropped a message from " << QuoteForError(envelope.sender())
        << " that has no reply_to (" << google::COUNTER << " so far)";
  }
  RunDeferred(deferred);
  return refused;
}

void ProcRuntime::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  StopAll("proc shutting down", /*proc_ending=*/true);
  // No actor can be added now (stopping_), so this is every thread: those of
  // running actors and those of ended ones not joined yet.
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, cell] : actors_) {
      if (cell->thread.joinable()) threads.push_back(std::move(cell->thread));
    }
    for (std::thread& thread : exited_) threads.push_back(std::move(thread));
    exited_.clear();
  }
  for (std::thread& thread : threads) {
    // An actor's thread would outlive the runtime it touches as it ends.
    CHECK(thread.get_id() != std::this_thread::get_id())
        << "ProcRuntime::Shutdown called from an actor's own thread";
    thread.join();
  }
  Deferred abandoned;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    // This and every later wait or timer ends with UNAVAILABLE.
    waiters_.Close(ShuttingDownError(), abandoned);
    for (auto& [id, timer] : timers_) {
      loop_->Cancel(timer.loop_timer);
      abandoned.push_back([fire = std::move(timer.fire),
                           error = ShuttingDownError()] { fire(error); });
    }
    timers_.clear();
  }
  RunDeferred(abandoned);
  // Finishes a join under way; later ones were taken above.
  loop_.reset();
}

void ProcRuntime::JoinExited() {
  std::vector<std::thread> exited;
  {
    absl::MutexLock lock(&mu_);
    exited.swap(exited_);
  }
  for (std::thread& thread : exited) {
    if (thread.joinable()) thread.join();
  }
}

void ProcRuntime::RunActor(ActorCell* cell) {
  const std::string no_sender;
  std::unique_ptr<Actor> actor = options_.registry.Create(cell->type);
  bool failed = false;
  if (actor == nullptr) {
    Fail(cell,
         absl::InternalError(absl::StrCat("the factory of actor type \"",
                                          cell->type, "\" returned no actor")));
    failed = true;
  } else {
    ActorContext ctx(*mailbox_, cell->ref, /*cast_rank=*/0, no_sender);
    absl::Status init = actor->Init(cell->params, ctx);
    if (!init.ok()) {
      Fail(cell, Annotate(init, "Init"));
      failed = true;
    } else {
      Deferred deferred;
      {
        absl::MutexLock lock(&mu_);
        if (cell->status == v1::INITIALIZING) {
          SetStatusLocked(cell, v1::RUNNING, "", &deferred);
        }
      }
      RunDeferred(deferred);
    }
  }

  // A failed actor takes no more messages: its thread ends at once.
  while (!failed) {
    v1::Envelope envelope;
    {
      absl::MutexLock lock(&cell->mu);
      while (cell->queue.empty() && !cell->stop) cell->cv.Wait(&cell->mu);
      if (cell->stop) break;
      envelope = std::move(cell->queue.front());
      cell->queue.pop_front();
      // Told again only once it has caught up (half the queue free), not
      // after every message it takes from a queue kept full.
      if (cell->queue.size() <= options_.max_queued_messages / 2) {
        cell->told_full = false;
      }
    }
    failed = !HandleEnvelope(cell, actor.get(), std::move(envelope));
  }

  actor.reset();  // The user's destructor runs on the actor's thread.
  FinishActor(cell);
}

void ProcRuntime::FinishActor(ActorCell* cell) {
  const std::string name = cell->name;
  std::deque<v1::Envelope> leftover;
  Deferred deferred;
  absl::Status refusal;
  {
    absl::MutexLock lock(&mu_);
    SetStatusLocked(cell, v1::STOPPED, cell->reason, &deferred);
    refusal = NotAcceptingError(*cell);
    {
      // Deliver queues nothing more: the actor is STOPPED or FAILED.
      absl::MutexLock cell_lock(&cell->mu);
      leftover.swap(cell->queue);
    }
    // From here on this thread does not touch the cell.
    cell->thread_done = true;
    if (cell->thread.joinable()) {
      exited_.push_back(std::move(cell->thread));
      if (!shut_down_) loop_->Post([this] { JoinExited(); });
    }
    finished_.push_back(cell);
    while (finished_.size() > options_.max_finished_actors) {
      ActorCell* oldest = finished_.front();
      finished_.pop_front();
      auto it = actors_.find(oldest->name);
      if (it != actors_.end() && it->second.get() == oldest) actors_.erase(it);
    }
  }
  for (const v1::Envelope& envelope : leftover) ReplyError(envelope, refusal);
  RunDeferred(deferred);
  VLOG(1) << "proc " << options_.proc_name << ": actor " << name
          << " thread done";
}

bool ProcRuntime::HandleEnvelope(ActorCell* cell, Actor* actor,
                                 v1::Envelope envelope) {
  absl::Status refusal;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (cell->status == v1::FAILED) refusal = NotAcceptingError(*cell);
  }
  if (!refusal.ok()) {
    ReplyError(envelope, refusal);
    return false;
  }
  // A message the actor cannot take (no handler for its type, or a payload
  // that does not parse) is the sender's mistake: refused with
  // INVALID_ARGUMENT, and the actor keeps running.
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> request =
      internal::ActorDispatcher::Parse(*actor, cell->name, cell->type,
                                       envelope.payload());
  if (!request.ok()) {
    ReplyError(envelope, request.status());
    return true;
  }
  ActorContext ctx(*mailbox_, cell->ref, envelope.cast_rank(),
                   envelope.sender());
  const absl::Duration started = options_.clock->Now();
  {
    absl::MutexLock lock(&cell->mu);
    cell->current_handler = &(*request)->GetDescriptor()->full_name();
    cell->current_since = absl::Now();
  }
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> result =
      internal::ActorDispatcher::Run(*actor, **request, ctx);
  {
    absl::MutexLock lock(&cell->mu);
    cell->last_handler = cell->current_handler;
    cell->last_duration = options_.clock->Now() - started;
    cell->current_handler = nullptr;
  }
  cell->messages_handled.fetch_add(1, std::memory_order_relaxed);
  if (result.ok()) {
    if (envelope.has_reply_to()) {
      v1::Envelope reply;
      AddressTo(envelope.reply_to(), &reply);
      reply.set_correlation(envelope.correlation());
      PackPayload(**result, &reply);
      mailbox_->Send(std::move(reply));
    }
    return true;
  }
  ReplyError(envelope,
             Annotate(result.status(),
                      absl::StrCat("actor \"", cell->name, "\" on proc \"",
                                   options_.proc_name, "\"")));
  Fail(cell, result.status());
  return false;
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
  RunDeferred(deferred);
}

void ProcRuntime::SetStatusLocked(ActorCell* cell, v1::Status status,
                                  const std::string& reason,
                                  Deferred* deferred) {
  if (IsTerminal(cell->status) || cell->status == status) return;
  if (IsTerminal(status)) --live_;
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
  if (IsTerminal(status) && IsPortSet(cell->supervisor) && !proc_ending_) {
    v1::SupervisionEvent event;
    *event.mutable_actor() = StateLocked(*cell);
    deferred->push_back(
        [this, supervisor = cell->supervisor, event = std::move(event)] {
          mailbox_->Send(EnvelopeToPort(supervisor, event));
        });
  }
  waiters_.Check(*deferred);
}

v1::ActorState ProcRuntime::StateLocked(const ActorCell& cell) const {
  v1::ActorState state = BaseStateLocked(cell);
  absl::MutexLock lock(&cell.mu);
  AddHandlerStats(cell, &state);
  return state;
}

v1::ActorState ProcRuntime::BaseStateLocked(const ActorCell& cell) const {
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

absl::Status ProcRuntime::ShuttingDownError() const {
  return absl::UnavailableError(
      absl::StrCat("proc \"", options_.proc_name, "\" is shutting down"));
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
  mailbox_->ReplyWithError(envelope, error);
}

}  // namespace mesh
