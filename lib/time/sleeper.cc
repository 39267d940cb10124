#include "lib/time/sleeper.h"

#include <algorithm>
#include <chrono>

namespace mesh {

bool Sleeper::SleepFor(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto until = std::chrono::steady_clock::now() +
                     absl::ToChronoNanoseconds(std::clamp(
                         timeout, absl::ZeroDuration(), absl::Hours(24 * 365)));
  return cv_.wait_until(lock, until, [this] { return stopped_; });
}

void Sleeper::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }
  cv_.notify_all();
}

bool Sleeper::stopped() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopped_;
}

}  // namespace mesh
