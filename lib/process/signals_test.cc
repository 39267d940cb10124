#include "lib/process/signals.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("signals have their usual names") {
  CHECK(SignalName(SIGKILL) == "SIGKILL");
  CHECK(SignalName(SIGTERM) == "SIGTERM");
  CHECK(SignalName(SIGSEGV) == "SIGSEGV");
}

TEST_CASE(
    "SIGTERM reaches the thread that waits for stop signals, not a handler") {
  StopSignals::Block();
  StopSignals signals;
  REQUIRE(kill(getpid(), SIGTERM) == 0);  // would kill us if not taken
  CHECK(signals.Wait() == "SIGTERM");
  REQUIRE(kill(getpid(), SIGINT) == 0);
  CHECK(signals.Wait() == "SIGINT");
}

TEST_CASE("a wake from another thread ends the wait for stop signals") {
  StopSignals::Block();
  StopSignals signals;
  std::thread waker([&signals] {
    absl::SleepFor(absl::Milliseconds(20));
    signals.Wake();
  });
  CHECK(signals.Wait().empty());
  waker.join();
  // A wake before the wait is not lost.
  signals.Wake();
  CHECK(signals.Wait().empty());
}

// What HostSignals' callbacks saw, in order, and on which thread.
struct Seen {
  absl::Mutex mu;
  std::vector<std::string> calls ABSL_GUARDED_BY(mu);
  std::vector<std::thread::id> threads ABSL_GUARDED_BY(mu);

  void Add(const std::string& call) {
    absl::MutexLock lock(&mu);
    calls.push_back(call);
    threads.push_back(std::this_thread::get_id());
  }
  // Waits until `n` calls were seen (false after 10 s).
  bool WaitFor(size_t n) {
    absl::MutexLock lock(&mu);
    want = n;
    return mu.AwaitWithTimeout(absl::Condition(this, &Seen::Enough),
                               absl::Seconds(10));
  }

 private:
  size_t want ABSL_GUARDED_BY(mu) = 0;
  bool Enough() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return calls.size() >= want;
  }
};

HostSignals::Callbacks Recording(Seen* seen) {
  HostSignals::Callbacks callbacks;
  callbacks.on_stop = [seen](const std::string& name) {
    seen->Add("stop " + name);
  };
  callbacks.on_restart = [seen] { seen->Add("restart"); };
  callbacks.on_reload = [seen] { seen->Add("reload"); };
  return callbacks;
}

TEST_CASE(
    "SIGHUP reaches on_reload and SIGUSR2 on_restart, both on the signal "
    "thread, and neither is taken as a stop") {
  HostSignals::Block();
  Seen seen;
  {
    HostSignals signals(Recording(&seen));
    // Each would end the process if it were not taken.
    REQUIRE(kill(getpid(), SIGHUP) == 0);
    REQUIRE(seen.WaitFor(1));
    REQUIRE(kill(getpid(), SIGUSR2) == 0);
    REQUIRE(seen.WaitFor(2));
    // The thread is still there after both: a stop signal still reaches it.
    REQUIRE(kill(getpid(), SIGINT) == 0);
    REQUIRE(seen.WaitFor(3));
  }
  absl::MutexLock lock(&seen.mu);
  CHECK(seen.calls ==
        std::vector<std::string>{"reload", "restart", "stop SIGINT"});
  REQUIRE(seen.threads.size() == 3);
  CHECK(seen.threads[0] != std::this_thread::get_id());
  CHECK(seen.threads[0] == seen.threads[1]);
  CHECK(seen.threads[1] == seen.threads[2]);
}

TEST_CASE("SIGHUP taken again and again never stops hostd's signal thread") {
  HostSignals::Block();
  Seen seen;
  HostSignals signals(Recording(&seen));
  for (size_t i = 1; i <= 5; ++i) {
    REQUIRE(kill(getpid(), SIGHUP) == 0);
    REQUIRE(seen.WaitFor(i));
  }
  REQUIRE(kill(getpid(), SIGTERM) == 0);
  REQUIRE(seen.WaitFor(6));
  absl::MutexLock lock(&seen.mu);
  CHECK(seen.calls.back() == "stop SIGTERM");
  CHECK(std::count(seen.calls.begin(), seen.calls.end(), "reload") == 5);
}

TEST_CASE("a signal whose callback is empty is ignored, not fatal") {
  HostSignals::Block();
  Seen seen;
  HostSignals::Callbacks callbacks;
  callbacks.on_stop = [&seen](const std::string& name) {
    seen.Add("stop " + name);
  };
  HostSignals signals(std::move(callbacks));
  REQUIRE(kill(getpid(), SIGHUP) == 0);
  REQUIRE(kill(getpid(), SIGUSR2) == 0);
  REQUIRE(kill(getpid(), SIGTERM) == 0);
  REQUIRE(seen.WaitFor(1));
  // Taken in signal-number order: SIGHUP and SIGUSR2 went first, unseen.
  sigset_t pending;
  REQUIRE(sigpending(&pending) == 0);
  CHECK_FALSE(sigismember(&pending, SIGHUP));
  CHECK_FALSE(sigismember(&pending, SIGUSR2));
  absl::MutexLock lock(&seen.mu);
  CHECK(seen.calls == std::vector<std::string>{"stop SIGTERM"});
}

}  // namespace
}  // namespace mesh
