// SystemdNotifier: what hostd tells systemd through $NOTIFY_SOCKET
// (sd_notify(3); deploy/hostd.service is Type=notify with WatchdogSec=):
//
//   READY=1      once the Host API serves (Ready(), with the first STATUS=);
//   STATUS=...   a line with the live proc count (Options::status): at
//                READY, then whenever it changes, at most once per
//                Options::status_interval;
//   WATCHDOG=1   about every half watchdog interval ($WATCHDOG_USEC, and
//                only if $WATCHDOG_PID is unset or names hostd:
//                sd_watchdog_enabled), and only once every probe
//                (Options::probes: the proc manager's event loop ran a no-op,
//                an in-process GetHostInfo was answered) passed the check
//                started right after the last WATCHDOG=1. A check still
//                running when the period is up is looked at every quarter
//                period, and WATCHDOG=1 goes as soon as it passes (then the
//                next check starts at once), so a stall shorter than about
//                one period costs no kill. A loop or server that stays stuck
//                stops the keep-alives, and systemd kills and restarts hostd
//                WatchdogSec= after the last one (Restart=on-failure; procs
//                are re-adopted);
//   STOPPING=1   once hostd begins to stop (Stopping(), with a last STATUS=),
//                then EXTEND_TIMEOUT_USEC= for a stop with a grace (systemd
//                >= 236 waits that long past TimeoutStopSec=).
//
// One thread sleeps on the monotonic clock (lib/time/sleeper.h) between
// checks; it runs from Ready() until the notifier is destroyed, and only
// if $NOTIFY_SOCKET is set (or the test wedge is asked for). Without
// $NOTIFY_SOCKET every message is dropped by sd_notify. The environment is
// only read (the procs' copy drops these variables: ProcManager), never
// changed. Thread-safe.
#ifndef HOSTMESH_HOSTD_NOTIFY_H_
#define HOSTMESH_HOSTD_NOTIFY_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/time/sleeper.h"
#include "proto/host.grpc.pb.h"

namespace mesh {

// The identity of hostd's own GetHostInfo calls (ServingProbe).
inline constexpr char kWatchdogIdentity[] = "hostd:watchdog";

class SystemdNotifier {
 public:
  struct Probe {
    // What it checks, for the log ("the proc manager's event loop").
    std::string name;
    // Starts one check; `done(ok)` is called once, on any thread, when it
    // finished (it may run after the notifier is gone). A check that never
    // finishes withholds every later WATCHDOG=1.
    std::function<void(std::function<void(bool ok)> done)> start;
  };
  struct Options {
    std::vector<Probe> probes;
    // The STATUS= text now (e.g. "3 live procs (max 256) on host:7450").
    std::function<std::string()> status;
    absl::Duration status_interval = absl::Seconds(1);
    // Tests only (--test-wedge-loop-after): this long after Ready(),
    // `test_wedge` is called once (it wedges what a probe checks).
    // Zero: never.
    absl::Duration test_wedge_after = absl::ZeroDuration();
    std::function<void()> test_wedge;
  };

  // Reads $NOTIFY_SOCKET and the watchdog variables (an invalid
  // WATCHDOG_USEC is logged and means no watchdog).
  explicit SystemdNotifier(Options options);
  // Stops the thread (probes in flight are left to finish on their own).
  ~SystemdNotifier();
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  // READY=1 with STATUS=; starts the probes. Once; nothing after Stopping
  // (READY=1 never follows STOPPING=1).
  void Ready();
  // STOPPING=1 with STATUS=`why`; STATUS= changes no more (the keep-alives
  // go on while the probes pass). `grace`: the stop's grace (procs are
  // asked, SIGTERMed after it and SIGKILLed after another); if positive,
  // EXTEND_TIMEOUT_USEC= of 2 x grace + 10 s follows, so that systemd's
  // TimeoutStopSec= does not kill hostd during a long grace (it never
  // shortens that timeout). Once; later calls do nothing.
  void Stopping(const std::string& why,
                absl::Duration grace = absl::ZeroDuration());

  // Half of $WATCHDOG_USEC if the watchdog is on for hostd, else nullopt.
  std::optional<absl::Duration> watchdog_period() const {
    return watchdog_period_;
  }

 private:
  struct Round;
  void Run();
  // Checks the round in flight: WATCHDOG=1 and a new round if it passed; a
  // new round if it failed. When to check next.
  absl::Duration Watchdog(absl::Duration now);
  void StartRound(absl::Duration now);
  void SendStatus();

  const Options options_;
  const bool notify_socket_;
  std::optional<absl::Duration> watchdog_period_;
  Sleeper sleeper_;
  absl::Mutex mu_;
  bool ready_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_status_ ABSL_GUARDED_BY(mu_);
  // The thread's own.
  std::shared_ptr<Round> round_;
  // Late checks in a row (logged at the first of each run).
  int withheld_ = 0;
  // When the last WATCHDOG=1 went (or the watchdog started).
  absl::Duration last_sent_;
  std::thread thread_;
};

// A probe of the gRPC server: GetHostInfo through the server's in-process
// channel, presenting `token` (hostd adds it as kWatchdogIdentity, role
// peer). OK if answered within `timeout`. At most one call in flight (one
// more is done(false) at once; `done` runs once the call no longer counts
// as in flight); the destructor cancels it and waits for its callback. `server`
// must outlive the probe. Thread-safe.
class ServingProbe {
 public:
  ServingProbe(grpc::Server* server, std::string token, absl::Duration timeout);
  ~ServingProbe();
  ServingProbe(const ServingProbe&) = delete;
  ServingProbe& operator=(const ServingProbe&) = delete;

  void Start(std::function<void(bool ok)> done);

 private:
  struct Call;
  const std::string token_;
  const absl::Duration timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Host::Stub> stub_;
  absl::Mutex mu_;
  std::shared_ptr<Call> in_flight_ ABSL_GUARDED_BY(mu_);
  // The last call started (kept after it ended): the destructor waits for
  // its callback.
  std::shared_ptr<Call> last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_NOTIFY_H_
