#include "lib/time/clock.h"

#include <chrono>
#include <utility>

namespace mesh {
namespace {

class SteadyClock final : public MonotonicClock {
 public:
  absl::Duration Now() const override {
    return absl::FromChrono(
        std::chrono::steady_clock::now().time_since_epoch());
  }
};

}  // namespace

const MonotonicClock& MonotonicClock::Real() {
  static const SteadyClock* const clock = new SteadyClock();
  return *clock;
}

void FakeClock::Advance(absl::Duration by) {
  absl::MutexLock lock(&mu_);
  if (by > absl::ZeroDuration()) {
    now_ns_.fetch_add(absl::ToInt64Nanoseconds(by), std::memory_order_acq_rel);
  }
  for (auto& [id, wake] : subscribers_) wake();
}

MonotonicClock::SubscriptionId FakeClock::Subscribe(
    std::function<void()> wake) const {
  absl::MutexLock lock(&mu_);
  SubscriptionId id = next_id_++;
  subscribers_.emplace(id, std::move(wake));
  return id;
}

void FakeClock::Unsubscribe(SubscriptionId id) const {
  absl::MutexLock lock(&mu_);
  subscribers_.erase(id);
}

}  // namespace mesh
