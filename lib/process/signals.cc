#include "lib/process/signals.h"

#include <signal.h>
#include <string.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace mesh {
namespace {

sigset_t StopSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

// StopSet plus hostd's restart (SIGUSR2) and reload (SIGHUP) signals.
sigset_t HostSet() {
  sigset_t set = StopSet();
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev)
                           : absl::StrCat("signal ", sig);
}

void StopSignals::Block() {
  sigset_t set = StopSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

StopSignals::StopSignals(std::function<void(const std::string& name)> on_signal)
    : on_signal_(std::move(on_signal)) {
  thread_ = std::thread([this] {
    sigset_t set = StopSet();
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0 || exiting_.load()) return;
      on_signal_(SignalName(sig));
    }
  });
}

StopSignals::~StopSignals() {
  // Wake the thread with a signal aimed at it alone; it sees exiting_.
  exiting_.store(true);
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
}

void HostSignals::Block() {
  sigset_t set = HostSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

HostSignals::HostSignals(Callbacks callbacks)
    : callbacks_(std::move(callbacks)) {
  thread_ = std::thread([this] {
    sigset_t set = HostSet();
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0 || exiting_.load()) return;
      switch (sig) {
        case SIGHUP:
          if (callbacks_.on_reload) callbacks_.on_reload();
          break;
        case SIGUSR2:
          if (callbacks_.on_restart) callbacks_.on_restart();
          break;
        default:  // SIGTERM, SIGINT
          if (callbacks_.on_stop) callbacks_.on_stop(SignalName(sig));
          break;
      }
    }
  });
}

HostSignals::~HostSignals() {
  // Wake the thread with a signal aimed at it alone; it sees exiting_.
  exiting_.store(true);
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
}

}  // namespace mesh
