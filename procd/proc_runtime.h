// The proc's transport-free core: its actors, their statuses, and the
// delivery of mailbox envelopes to them. ProcVerbs serves the actor verbs
// from it.
#ifndef HOSTMESH_PROCD_PROC_RUNTIME_H_
#define HOSTMESH_PROCD_PROC_RUNTIME_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostmesh/actor.h"
#include "lib/event/event_loop.h"
#include "lib/mailbox/mailbox.h"
#include "lib/resource/status_waiters.h"
#include "lib/time/clock.h"
#include "proto/proc.pb.h"

namespace mesh {

namespace internal {
struct ActorCell;
}  // namespace internal

// Owns the proc's actors. Each actor has a FIFO of envelopes (at most
// Options::max_queued_messages) and a thread of its own that runs Init and
// then handles one envelope at a time, in arrival order.
//
// Status of an actor: INITIALIZING (created, Init pending) -> RUNNING ->
// STOPPING (stop asked, current message finishing) -> STOPPED; or FAILED
// (Init or a handler returned an error, or a message had no handler), which
// is final. Each change bumps the actor's `generation` (1 at creation) and
// `updated_at`, and FAILED or STOPPED sends a v1::SupervisionEvent to the
// actor's supervisor port, if it has one.
//
// Bounds: only live actors (not STOPPED or FAILED) count against
// max_actors. An actor's thread ends, and is joined (on the runtime's loop
// thread), as soon as the actor is STOPPED or FAILED. A finished actor keeps
// its entry (its state answers Get/List/Wait) among the last
// max_finished_actors finished ones; the oldest is then forgotten: its name
// is NOT_FOUND (NOT_EXIST to a wait) and may be created again.
//
// A full queue refuses, without blocking the deliverer (the proc's one
// channel to its host): RESOURCE_EXHAUSTED as an error reply to the
// envelope's reply_to; an envelope without one is dropped, and the sender
// hears of it by a supervision event (see Deliver).
//
// Thread-safe. Callbacks (WaitActors' `done`) run outside the lock on the
// calling thread, an actor thread or the runtime's timer thread.
//
// Lifetime: `mailbox` (not owned) must outlive the runtime; the runtime
// installs itself as the mailbox's actor sink. Shut the mailbox down (so it
// no longer delivers) before destroying the runtime.
class ProcRuntime {
 public:
  struct Options {
    std::string proc_name = "proc";
    uint64_t rank = 0;
    ActorRegistry registry;
    // Live actors (INITIALIZING, RUNNING, STOPPING: each has a thread) at
    // most; creating one more is RESOURCE_EXHAUSTED.
    size_t max_actors = 1024;
    // Finished (STOPPED or FAILED) actors remembered; the oldest is
    // forgotten first.
    size_t max_finished_actors = 256;
    // Envelopes queued for one actor at most; more are refused with
    // RESOURCE_EXHAUSTED.
    size_t max_queued_messages = 4096;
    // Wait deadlines and timers run on this clock (not owned; must outlive
    // the runtime).
    const MonotonicClock* clock = &MonotonicClock::Real();
  };

  ProcRuntime(Options options, Mailbox* mailbox);
  // Calls Shutdown().
  ~ProcRuntime();
  ProcRuntime(const ProcRuntime&) = delete;
  ProcRuntime& operator=(const ProcRuntime&) = delete;

  // Spawns actor `request.name()` of a registered type (INITIALIZING; Init
  // runs on the actor's thread). Idempotent: the same request again returns
  // the existing actor's state (an updated supervisor port is taken).
  // INVALID_ARGUMENT for a bad name or an unregistered type;
  // FAILED_PRECONDITION if the name exists with another type, rank or params,
  // or if the proc is stopping.
  absl::StatusOr<v1::ActorState> CreateOrUpdateActor(
      const v1::CreateOrUpdateActorRequest& request);

  // NOT_FOUND for an unknown actor.
  absl::StatusOr<v1::ActorState> GetActorState(const std::string& name) const;

  // Asks actor `name` to stop and returns its state at once: STOPPING until
  // its current message (if any) is handled, then STOPPED. Envelopes still
  // queued get FAILED_PRECONDITION error replies. Idempotent; a FAILED actor
  // stays FAILED. NOT_FOUND for an unknown actor.
  absl::StatusOr<v1::ActorState> StopActor(const std::string& name,
                                           const std::string& reason);

  // Marks the proc stopping (no new actors) and stops every actor; returns
  // their states at once. With `proc_ending` (the proc exits next), the
  // actors' supervisors get no event of their own: the host reports the
  // proc's end, with how it ended and who asked, for all of its actors.
  std::vector<v1::ActorState> StopAll(const std::string& reason,
                                      bool proc_ending = false);

  // Live and remembered finished actors.
  std::vector<v1::ActorState> ListActors() const;
  // num_actors: the live actors.
  v1::ProcInfo GetProcInfo() const;
  // Actors not STOPPED or FAILED (what counts against max_actors).
  size_t live_actors() const;

  using WaitCallback =
      std::function<void(absl::StatusOr<v1::WaitActorsResponse>)>;
  // Calls `done` exactly once (unless CancelWait removes it first): as soon
  // as every actor in `names` (every known actor if empty) has a status >=
  // `min_status` (an unknown name counts as NOT_EXIST), or after `timeout`
  // (on the runtime's clock) with timed_out set, or with UNAVAILABLE if the
  // runtime shuts down. The response lists the states of those actors.
  // `done` may run before WaitActors returns. Returns an id for CancelWait.
  uint64_t WaitActors(std::vector<std::string> names, v1::Status min_status,
                      absl::Duration timeout, WaitCallback done);
  // True if wait `id` was removed before its `done` started (it will not be
  // called); false if `done` has been or is being called.
  bool CancelWait(uint64_t id);

  // A deadline tied to this proc's life: calls `fire` exactly once (unless
  // CancelTimer removes it first), with OK once `timeout` passed on the
  // runtime's clock, or with UNAVAILABLE if the runtime shuts down first (at
  // once if it has). May run before After returns. Returns an id for
  // CancelTimer.
  uint64_t After(absl::Duration timeout,
                 std::function<void(absl::Status)> fire);
  // True if timer `id` was removed before `fire` started.
  bool CancelTimer(uint64_t id);

  // The mailbox's actor sink: queues `envelope` for its actor; never waits
  // for room. INVALID_ARGUMENT for a bad actor name, NOT_FOUND for an
  // unknown actor, FAILED_PRECONDITION for one that failed or stopped,
  // RESOURCE_EXHAUSTED if its queue holds max_queued_messages (the mailbox
  // answers the envelope's reply_to with the error). A refused envelope
  // without a reply_to is dropped; if its sender is the actor's supervisor
  // (the mailbox of its supervisor port), that port gets one
  // v1::SupervisionEvent (cause MESSAGE_REFUSED) per time the queue filled
  // up.
  absl::Status Deliver(v1::Envelope envelope);

  // StopAll, then waits for every actor thread to finish, then ends pending
  // waits with UNAVAILABLE and stops the timer. Idempotent. Never from an
  // actor's own thread (a handler asks the proc to exit instead).
  void Shutdown();

  const MonotonicClock& clock() const { return *options_.clock; }

  const std::string& proc_name() const { return options_.proc_name; }
  // The proc's mailbox (not owned), through which ProcVerbs' CallActor
  // sends.
  Mailbox* mailbox() const { return mailbox_; }

 private:
  void RunActor(internal::ActorCell* cell);
  // False once the actor failed (its thread then ends).
  bool HandleEnvelope(internal::ActorCell* cell, Actor* actor,
                      v1::Envelope envelope);
  // The end of an actor's thread: STOPPED unless final, queued envelopes
  // refused, its thread handed over to be joined, old entries forgotten.
  void FinishActor(internal::ActorCell* cell);
  // Joins the threads of actors that ended.
  void JoinExited();

  void StopCellLocked(internal::ActorCell* cell, const std::string& reason,
                      Deferred* deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves `cell` to `status` (unless it is final) and queues what follows.
  void SetStatusLocked(internal::ActorCell* cell, v1::Status status,
                       const std::string& reason, Deferred* deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Fail(internal::ActorCell* cell, const absl::Status& error);
  // The actor's state, its queue and handlers too (takes the cell's lock).
  v1::ActorState StateLocked(const internal::ActorCell& cell) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Without the queue and handler fields (the cell's lock not taken).
  v1::ActorState BaseStateLocked(const internal::ActorCell& cell) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Replies to `envelope`'s reply_to with `error`, if it has one.
  void ReplyError(const v1::Envelope& envelope, const absl::Status& error);
  absl::Status ShuttingDownError() const;
  absl::Status NotAcceptingError(const internal::ActorCell& cell) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const Options options_;
  Mailbox* const mailbox_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<internal::ActorCell>> actors_
      ABSL_GUARDED_BY(mu_);
  // Actors not STOPPED or FAILED.
  size_t live_ ABSL_GUARDED_BY(mu_) = 0;
  // Finished actors whose threads are done, oldest first: the history that
  // max_finished_actors bounds.
  std::deque<internal::ActorCell*> finished_ ABSL_GUARDED_BY(mu_);
  // Threads of ended actors, not joined yet.
  std::vector<std::thread> exited_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set once the proc is ending (StopAll's proc_ending): no more
  // supervision events.
  bool proc_ending_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Runs wait deadlines and joins ended actors' threads; stopped in
  // Shutdown, before waiters_ goes.
  std::unique_ptr<EventLoop> loop_;
  struct Timer {
    EventLoop::TimerId loop_timer = 0;
    std::function<void(absl::Status)> fire;
  };
  std::map<uint64_t, Timer> timers_ ABSL_GUARDED_BY(mu_);
  uint64_t next_timer_ ABSL_GUARDED_BY(mu_) = 1;
  StatusWaiters<v1::ActorState> waiters_;
  absl::Mutex shutdown_mu_;  // serializes Shutdown()
};

}  // namespace mesh

#endif  // HOSTMESH_PROCD_PROC_RUNTIME_H_
