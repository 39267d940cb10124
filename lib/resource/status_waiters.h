// What hostd (State = v1::ProcState) and procd (State = v1::ActorState)
// share of the resource verbs: IsTerminal, and StatusWaiters, the
// server-side wait — "answer when every named resource has a status >=
// min_status, or at the deadline".
//
// The owner keeps its resources under its own mutex and calls every method
// here with that mutex held; deadlines run on the owner's EventLoop, which
// takes the same mutex, on the loop's (monotonic) clock. Answers never run
// under the mutex: they are appended to a Deferred list that the caller runs
// after unlocking. Statuses are ordered (resource.proto), so a wait for RUNNING
// is also answered by STOPPED or FAILED: neither will ever become RUNNING.
//
// Lifetime: the owner's EventLoop must be destroyed (joined) before this
// object, so no deadline runs on a dead one; answer pending waits first with
// Close.
#ifndef HOSTMESH_LIB_RESOURCE_STATUS_WAITERS_H_
#define HOSTMESH_LIB_RESOURCE_STATUS_WAITERS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/event/event_loop.h"
#include "lib/names.h"
#include "proto/resource.pb.h"

namespace mesh {

// STOPPED and FAILED: a resource there never changes status again.
inline bool IsTerminal(v1::Status status) {
  return status == v1::STOPPED || status == v1::FAILED;
}

// Work to run once the owner's mutex is released.
using Deferred = std::vector<std::function<void()>>;

inline void RunDeferred(Deferred& deferred) {
  for (auto& fn : deferred) fn();
  deferred.clear();
}

template <typename State>
struct StatusWaitResult {
  // One per name asked for, in order (every resource if none was named).
  std::vector<State> states;
  bool timed_out = false;
};

template <typename State>
class StatusWaiters {
 public:
  using Result = StatusWaitResult<State>;
  using Done = std::function<void(absl::StatusOr<Result>)>;
  // The state of `name`, or nullopt if there is no such resource (it is
  // then reported as NOT_EXIST). Called with the owner's mutex held.
  using Lookup = std::function<std::optional<State>(const std::string& name)>;
  // Every resource, for a wait that names none. Called with the mutex held.
  using ListAll = std::function<std::vector<State>()>;

  // `what` names the resource in messages ("proc", "actor").
  StatusWaiters(std::string what, absl::Mutex* owner_mu, EventLoop* loop,
                Lookup lookup, ListAll list_all)
      : what_(std::move(what)),
        owner_mu_(owner_mu),
        loop_(loop),
        lookup_(std::move(lookup)),
        list_all_(std::move(list_all)) {}
  StatusWaiters(const StatusWaiters&) = delete;
  StatusWaiters& operator=(const StatusWaiters&) = delete;

  // Adds a wait that times out `timeout` from now on the loop's clock
  // (monotonic). If it is satisfied already (or `timeout` is not positive),
  // its answer goes to `deferred` at once. Returns an id for Cancel.
  uint64_t Add(std::vector<std::string> names, v1::Status min_status,
               absl::Duration timeout, Done done, Deferred& deferred) {
    owner_mu_->AssertHeld();
    uint64_t id = next_id_++;
    if (closed_.has_value()) {
      // The owner is going away: answer at once, as Close said.
      if (!closed_->ok()) {
        deferred.push_back(
            [done = std::move(done), error = *closed_] { done(error); });
        return id;
      }
      timeout = absl::ZeroDuration();
    }
    Waiter& waiter = waiters_[id];
    waiter.names = std::move(names);
    waiter.min_status = min_status;
    waiter.done = std::move(done);
    if (Answer(id, /*timed_out=*/false, deferred)) return id;
    if (timeout <= absl::ZeroDuration()) {
      Answer(id, /*timed_out=*/true, deferred);
      return id;
    }
    waiter.timer = loop_->PostAfter(timeout, [this, id] {
      Deferred expired;
      {
        absl::MutexLock lock(owner_mu_);
        Answer(id, /*timed_out=*/true, expired);
      }
      RunDeferred(expired);
    });
    return id;
  }

  // Drops a pending wait unanswered; false if it was answered already.
  bool Cancel(uint64_t id) {
    owner_mu_->AssertHeld();
    auto it = waiters_.find(id);
    if (it == waiters_.end()) return false;
    loop_->Cancel(it->second.timer);
    waiters_.erase(it);
    return true;
  }

  // Answers the waits a status change satisfied. Call after every change.
  void Check(Deferred& deferred) {
    owner_mu_->AssertHeld();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      uint64_t id = (it++)->first;  // Answer may erase this entry.
      Answer(id, /*timed_out=*/false, deferred);
    }
  }

  // Ends every pending wait, and answers every later one at once: with
  // `error` if it is not OK, else with the states as they are, marked timed
  // out. For an owner that is going away.
  void Close(absl::Status error, Deferred& deferred) {
    owner_mu_->AssertHeld();
    closed_ = error;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      uint64_t id = (it++)->first;
      if (error.ok()) {
        Answer(id, /*timed_out=*/true, deferred);
        continue;
      }
      Waiter& waiter = waiters_[id];
      loop_->Cancel(waiter.timer);
      deferred.push_back(
          [done = std::move(waiter.done), error] { done(error); });
      waiters_.erase(id);
    }
  }

  size_t pending() const { return waiters_.size(); }

 private:
  struct Waiter {
    std::vector<std::string> names;
    v1::Status min_status = v1::NOT_EXIST;
    Done done;
    EventLoop::TimerId timer = 0;
  };

  // Answers waiter `id` if it is satisfied, or regardless if `timed_out`;
  // false if it stays pending.
  bool Answer(uint64_t id, bool timed_out, Deferred& deferred) {
    auto it = waiters_.find(id);
    if (it == waiters_.end()) return true;
    Waiter& waiter = it->second;
    Result result;
    if (waiter.names.empty()) {
      if (list_all_) result.states = list_all_();
    } else {
      for (const std::string& name : waiter.names) {
        std::optional<State> state = lookup_(name);
        if (!state.has_value()) {
          state.emplace();
          state->set_name(name);
          state->set_status(v1::NOT_EXIST);
          state->set_reason("no " + what_ + " named " + QuoteForError(name));
        }
        result.states.push_back(*std::move(state));
      }
    }
    bool satisfied = true;
    for (const State& state : result.states) {
      satisfied = satisfied && state.status() >= waiter.min_status;
    }
    if (!satisfied && !timed_out) return false;
    result.timed_out = !satisfied;
    if (waiter.timer != 0) loop_->Cancel(waiter.timer);
    deferred.push_back(
        [done = std::move(waiter.done), result = std::move(result)]() mutable {
          done(std::move(result));
        });
    waiters_.erase(it);
    return true;
  }

  const std::string what_;
  absl::Mutex* const owner_mu_;
  EventLoop* const loop_;
  const Lookup lookup_;
  const ListAll list_all_;
  std::map<uint64_t, Waiter> waiters_;  // guarded by *owner_mu_
  uint64_t next_id_ = 1;                // guarded by *owner_mu_
  // Set by Close.                        // guarded by *owner_mu_
  std::optional<absl::Status> closed_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_RESOURCE_STATUS_WAITERS_H_
