// MonotonicClock: time that only moves forward, as durations since some
// fixed origin (steady_clock), for every server-side deadline and timer
// ("how long since the last frame", "kill it 5 s after SIGTERM") — never the
// wall clock, which may jump. The wall clock (absl::Now) is only for
// timestamps shown to people.
//
// FakeClock moves only when a test says so (Advance). Something asleep until
// a time on a clock (EventLoop) subscribes with OnAdvance: a FakeClock calls
// it after each Advance so the sleeper looks at Now() again; the real clock
// never calls it (time passes by itself). All of it is thread-safe.
#ifndef HOSTMESH_LIB_TIME_CLOCK_H_
#define HOSTMESH_LIB_TIME_CLOCK_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mesh {

class MonotonicClock {
 public:
  using SubscriptionId = uint64_t;

  virtual ~MonotonicClock() = default;
  virtual absl::Duration Now() const = 0;
  // std::chrono::steady_clock; never destroyed.
  static const MonotonicClock& Real();

  // Calls `wake` after every jump of Now() that is not time passing by
  // itself (FakeClock::Advance), on the thread that made it, until
  // Unsubscribe. `wake` must not call Subscribe or Unsubscribe. Unsubscribe
  // returns once no call of that `wake` runs.
  virtual SubscriptionId Subscribe(std::function<void()> wake) const {
    (void)wake;
    return 0;
  }
  virtual void Unsubscribe(SubscriptionId id) const { (void)id; }
};

class FakeClock final : public MonotonicClock {
 public:
  absl::Duration Now() const override {
    return absl::Nanoseconds(now_ns_.load(std::memory_order_acquire));
  }
  // Moves the clock forward (a negative `by` is ignored: monotonic), then
  // wakes every subscriber.
  void Advance(absl::Duration by);

  SubscriptionId Subscribe(std::function<void()> wake) const override;
  void Unsubscribe(SubscriptionId id) const override;

 private:
  // Starts well after the origin, like a real clock.
  std::atomic<int64_t> now_ns_{absl::ToInt64Nanoseconds(absl::Hours(1))};
  // Held while waking, so Unsubscribe waits for a wake under way.
  mutable absl::Mutex mu_;
  mutable std::map<SubscriptionId, std::function<void()>> subscribers_
      ABSL_GUARDED_BY(mu_);
  mutable SubscriptionId next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_TIME_CLOCK_H_
