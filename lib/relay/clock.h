// MonotonicClock: time that only moves forward, as durations since some
// fixed origin (steady_clock), for "how long since the last frame" — never
// the wall clock, which may jump. FakeClock moves only when a test says so.
// Both are thread-safe.
#ifndef HOSTMESH_LIB_RELAY_CLOCK_H_
#define HOSTMESH_LIB_RELAY_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace mesh {

class MonotonicClock {
 public:
  virtual ~MonotonicClock() = default;
  virtual absl::Duration Now() const = 0;
  // std::chrono::steady_clock; never destroyed.
  static const MonotonicClock& Real();
};

class FakeClock final : public MonotonicClock {
 public:
  absl::Duration Now() const override {
    return absl::Nanoseconds(now_ns_.load(std::memory_order_relaxed));
  }
  void Advance(absl::Duration by) {
    now_ns_.fetch_add(absl::ToInt64Nanoseconds(by), std::memory_order_relaxed);
  }

 private:
  // Starts well after the origin, like a real clock.
  std::atomic<int64_t> now_ns_{absl::ToInt64Nanoseconds(absl::Hours(1))};
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_RELAY_CLOCK_H_
