#include "hostd/notify.h"

#include <glog/logging.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "lib/auth/credentials.h"
#include "lib/time/clock.h"

namespace mesh {
namespace {

absl::Duration Now() { return MonotonicClock::Real().Now(); }

// STATUS= is one line.
std::string OneLine(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

}  // namespace

// One check by every probe: each slot goes from kPending to kPassed or
// kFailed, once.
struct SystemdNotifier::Round {
  enum : int { kPending = 0, kPassed = 1, kFailed = 2 };
  explicit Round(size_t n, absl::Duration at) : results(n), started_at(at) {}
  std::vector<std::atomic<int>> results;
  const absl::Duration started_at;
};

SystemdNotifier::SystemdNotifier(Options options)
    : options_(std::move(options)),
      notify_socket_(std::getenv("NOTIFY_SOCKET") != nullptr) {
  uint64_t usec = 0;
  const int enabled = sd_watchdog_enabled(/*unset_environment=*/0, &usec);
  if (enabled < 0) {
    LOG(WARNING) << "no systemd watchdog: WATCHDOG_USEC or WATCHDOG_PID is "
                    "not valid: "
                 << std::strerror(-enabled);
  } else if (enabled > 0 && usec > 0) {
    watchdog_period_ = absl::Microseconds(usec) / 2;
  }
}

SystemdNotifier::~SystemdNotifier() {
  sleeper_.Stop();
  if (thread_.joinable()) thread_.join();
}

void SystemdNotifier::Ready() {
  std::string status = OneLine(options_.status());
  {
    absl::MutexLock lock(&mu_);
    if (ready_ || stopping_) return;
    ready_ = true;
    last_status_ = status;
  }
  sd_notify(0, absl::StrCat("READY=1\nSTATUS=", status).c_str());
  if (watchdog_period_.has_value()) {
    LOG(INFO) << "systemd watchdog: WATCHDOG=1 every "
              << absl::FormatDuration(*watchdog_period_) << " while "
              << absl::StrJoin(options_.probes, " and ",
                               [](std::string* out, const Probe& probe) {
                                 out->append(probe.name);
                               })
              << " answer";
  }
  if (notify_socket_ || options_.test_wedge_after > absl::ZeroDuration()) {
    thread_ = std::thread([this] { Run(); });
  }
}

void SystemdNotifier::Stopping(const std::string& why, absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  sd_notify(0, absl::StrCat("STOPPING=1\nSTATUS=", OneLine(why)).c_str());
  if (grace > absl::ZeroDuration()) {
    // After STOPPING=1 (its own datagram: systemd is in its stop state by
    // then), which started TimeoutStopSec=: asking, SIGTERM after `grace`,
    // SIGKILL after another, and 10 s to reap and exit.
    const absl::Duration budget = 2 * grace + absl::Seconds(10);
    sd_notify(0, absl::StrCat("EXTEND_TIMEOUT_USEC=",
                              absl::ToInt64Microseconds(budget))
                     .c_str());
  }
}

void SystemdNotifier::SendStatus() {
  std::string status = OneLine(options_.status());
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || status == last_status_) return;
    last_status_ = status;
  }
  sd_notify(0, absl::StrCat("STATUS=", status).c_str());
}

void SystemdNotifier::StartRound(absl::Duration now) {
  auto round = std::make_shared<Round>(options_.probes.size(), now);
  round_ = round;
  for (size_t i = 0; i < options_.probes.size(); ++i) {
    options_.probes[i].start([round, i](bool ok) {
      int pending = Round::kPending;
      round->results[i].compare_exchange_strong(
          pending, ok ? Round::kPassed : Round::kFailed);
    });
  }
}

absl::Duration SystemdNotifier::Watchdog(absl::Duration now) {
  std::vector<std::string> pending;
  std::vector<std::string> failed;
  for (size_t i = 0; i < options_.probes.size(); ++i) {
    const int result = round_->results[i].load();
    if (result == Round::kPending) pending.push_back(options_.probes[i].name);
    if (result == Round::kFailed) failed.push_back(options_.probes[i].name);
  }
  const absl::Duration period = *watchdog_period_;
  if (pending.empty() && failed.empty()) {
    if (withheld_ > 0) {
      LOG(WARNING) << "systemd watchdog: sending WATCHDOG=1 again, "
                   << absl::FormatDuration(now - last_sent_)
                   << " after the last one";
    }
    withheld_ = 0;
    sd_notify(0, "WATCHDOG=1");
    last_sent_ = now;
    // The next keep-alive proves the probes ran after this one.
    StartRound(now);
    return now + period;
  }
  if (withheld_++ == 0) {
    // Once per run of misses: systemd kills hostd if they go on.
    LOG(ERROR) << "systemd watchdog: withholding WATCHDOG=1: "
               << (pending.empty()
                       ? std::string()
                       : absl::StrCat(
                             absl::StrJoin(pending, " and "),
                             " has not answered for ",
                             absl::FormatDuration(now - round_->started_at),
                             failed.empty() ? "" : "; "))
               << (failed.empty() ? std::string()
                                  : absl::StrCat(absl::StrJoin(failed, " and "),
                                                 " failed"));
  }
  // A check still pending keeps its round: it proves nothing until it ends.
  if (pending.empty()) StartRound(now);
  // Late: look again soon, to send as soon as a round passes (systemd's
  // deadline is two periods after the last keep-alive).
  return now + period / 4;
}

void SystemdNotifier::Run() {
  absl::Duration now = Now();
  const absl::Duration kNever = absl::InfiniteDuration();
  absl::Duration next_watchdog = kNever;
  if (watchdog_period_.has_value()) {
    last_sent_ = now;
    StartRound(now);
    next_watchdog = now + *watchdog_period_;
  }
  absl::Duration next_status =
      notify_socket_ ? now + options_.status_interval : kNever;
  absl::Duration wedge_at = options_.test_wedge_after > absl::ZeroDuration()
                                ? now + options_.test_wedge_after
                                : kNever;
  while (true) {
    const absl::Duration wake =
        std::min({next_watchdog, next_status, wedge_at});
    if (wake == kNever) return;
    if (sleeper_.SleepFor(wake - now)) return;
    now = Now();
    if (now >= wedge_at) {
      wedge_at = kNever;
      if (options_.test_wedge) options_.test_wedge();
    }
    if (now >= next_status) {
      SendStatus();
      next_status = now + options_.status_interval;
    }
    if (now >= next_watchdog) next_watchdog = Watchdog(now);
  }
}

struct ServingProbe::Call {
  grpc::ClientContext context;
  v1::GetHostInfoRequest request;
  v1::HostInfo response;
  // Notified by the callback, last: the destructor waits for it.
  absl::Notification finished;
};

ServingProbe::ServingProbe(grpc::Server* server, std::string token,
                           absl::Duration timeout)
    : token_(std::move(token)),
      timeout_(timeout),
      channel_(server->InProcessChannel(grpc::ChannelArguments())),
      stub_(v1::Host::NewStub(channel_)) {}

ServingProbe::~ServingProbe() {
  std::shared_ptr<Call> call;
  {
    absl::MutexLock lock(&mu_);
    call = last_;
  }
  if (call == nullptr || call->finished.HasBeenNotified()) return;
  call->context.TryCancel();
  call->finished.WaitForNotification();
}

void ServingProbe::Start(std::function<void(bool ok)> done) {
  auto call = std::make_shared<Call>();
  bool busy = false;
  {
    absl::MutexLock lock(&mu_);
    busy = in_flight_ != nullptr;
    if (!busy) {
      in_flight_ = call;
      last_ = call;
    }
  }
  if (busy) {
    done(false);
    return;
  }
  call->context.set_deadline(std::chrono::system_clock::now() +
                             absl::ToChronoMilliseconds(timeout_));
  call->context.AddMetadata(kAuthorizationMetadata,
                            absl::StrCat(kBearerPrefix, token_));
  stub_->async()->GetHostInfo(
      &call->context, &call->request, &call->response,
      [this, call, done = std::move(done)](grpc::Status status) {
        if (!status.ok()) {
          LOG(WARNING) << "systemd watchdog: hostd's own GetHostInfo failed: "
                       << status.error_message();
        }
        // Before `done`: a round it completes may start the next call at
        // once, which must not find this one in flight.
        {
          absl::MutexLock lock(&mu_);
          in_flight_ = nullptr;
        }
        // `this` is not used from here on (an earlier call's callback may
        // still be here when the destructor, waiting for the last call's
        // only, returns).
        done(status.ok());
        // Last: the destructor waits for it.
        call->finished.Notify();
      });
}

}  // namespace mesh
