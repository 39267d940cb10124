// EventLoop: one thread that runs posted work and timers in order.
//
// Components use it for anything that must not run inside a gRPC reaction
// (spawning, signalling, waiting) and for deadlines (registration timeouts,
// stop escalation, server-side waits). Work posted from one thread runs in
// the order posted; a timer runs no earlier than its deadline.
//
// Time: deadlines are on a MonotonicClock (lib/time/clock.h), the real one
// unless a test gives a FakeClock; a wall-clock step delays or hurries
// nothing. With a FakeClock, a timer runs once the test Advances the clock
// past its deadline (the loop wakes on Advance); RunDue then waits until it
// has run.
//
// Thread-safe. The destructor drops pending timers, runs no more work after
// the work in flight, and joins the thread. The clock must outlive the loop.
#ifndef HOSTMESH_LIB_EVENT_EVENT_LOOP_H_
#define HOSTMESH_LIB_EVENT_EVENT_LOOP_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "lib/time/clock.h"

namespace mesh {

class EventLoop {
 public:
  using TimerId = uint64_t;

  explicit EventLoop(const MonotonicClock& clock = MonotonicClock::Real());
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs `fn` on the loop thread as soon as possible.
  void Post(std::function<void()> fn);

  // Runs `fn` on the loop thread once clock().Now() >= `deadline` (a time on
  // the clock's line, e.g. clock().Now() + delay) unless cancelled first.
  TimerId PostAt(absl::Duration deadline, std::function<void()> fn);
  TimerId PostAfter(absl::Duration delay, std::function<void()> fn) {
    return PostAt(clock_.Now() + delay, std::move(fn));
  }

  // Cancels a timer; false if it already ran or was cancelled. Safe from
  // any thread, including the loop's own.
  bool Cancel(TimerId id);

  // Returns once everything due by now (clock().Now()), posted work and
  // timers, has run. For tests driving a FakeClock; not from the loop
  // thread.
  void RunDue();

  bool InLoopThread() const;
  const MonotonicClock& clock() const { return clock_; }

 private:
  // std::mutex, annotated for clang's -Wthread-safety: the loop sleeps on a
  // std::condition_variable, whose timed waits run on CLOCK_MONOTONIC
  // (absl::Mutex's take a wall-clock deadline in this Abseil).
  class ABSL_LOCKABLE LoopMutex {
   public:
    void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
    void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
    // Called with the mutex held: releases it until `cv` is notified or
    // `timeout` passed (steady clock; either may come early), then takes it
    // again.
    void WaitFor(std::condition_variable& cv, absl::Duration timeout);

   private:
    std::mutex mu_;
  };
  class ABSL_SCOPED_LOCKABLE LoopLock {
   public:
    explicit LoopLock(LoopMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
        : mu_(mu) {
      mu_->Lock();
    }
    ~LoopLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }

   private:
    LoopMutex* const mu_;
  };

  void Run();

  const MonotonicClock& clock_;
  mutable LoopMutex mu_;
  std::condition_variable wake_;
  // Ordered by (deadline, id): ids are increasing, so work posted with the
  // same deadline runs in posting order. Post() uses -InfiniteDuration().
  std::map<std::pair<absl::Duration, TimerId>, std::function<void()>> queue_
      ABSL_GUARDED_BY(mu_);
  std::map<TimerId, absl::Duration> deadlines_ ABSL_GUARDED_BY(mu_);
  TimerId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  MonotonicClock::SubscriptionId subscription_ = 0;
  std::thread thread_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_EVENT_EVENT_LOOP_H_
