#include "lib/process/signals.h"

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

StopSignals::StopSignals() {
  sigset_t set = StopSet();
  signal_fd_ = signalfd(-1, &set, SFD_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  // Out of descriptors at start-up: nothing sensible to go on with.
  if (signal_fd_ < 0 || wake_fd_ < 0) {
    perror("StopSignals: signalfd/eventfd");
    abort();
  }
}

StopSignals::~StopSignals() {
  close(signal_fd_);
  close(wake_fd_);
}

std::string StopSignals::Wait() {
  struct pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (true) {
    if (poll(fds, 2, -1) < 0) continue;  // EINTR
    if ((fds[0].revents & POLLIN) != 0) {
      struct signalfd_siginfo info;
      if (read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
        return SignalName(static_cast<int>(info.ssi_signo));
      }
    }
    if ((fds[1].revents & POLLIN) != 0) {
      uint64_t count;
      if (read(wake_fd_, &count, sizeof(count)) == sizeof(count)) return "";
    }
  }
}

void StopSignals::Wake() {
  const uint64_t one = 1;
  while (write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
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
