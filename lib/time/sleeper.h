// Sleeper: a thread sleeps on it for a duration of the monotonic clock
// (std::chrono::steady_clock) until another thread calls Stop, once. For
// periodic work and watchdogs: this Abseil's timed waits on absl::Mutex and
// absl::Notification end at a wall-clock time, so a clock stepped back an
// hour would stall them an hour. Thread-safe.
#ifndef HOSTMESH_LIB_TIME_SLEEPER_H_
#define HOSTMESH_LIB_TIME_SLEEPER_H_

#include <condition_variable>
#include <mutex>

#include "absl/time/time.h"

namespace mesh {

class Sleeper {
 public:
  // Sleeps until Stop (true, at once if it came before) or until `timeout`
  // passed (false).
  bool SleepFor(absl::Duration timeout);
  // Wakes every sleeper; every later SleepFor returns true at once.
  void Stop();
  bool stopped();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;  // guarded by mu_
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_TIME_SLEEPER_H_
