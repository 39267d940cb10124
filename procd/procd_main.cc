// ProcdMain: the procd process around ProcRuntime. A proc serves no port:
// it is reached only through the local channel to the hostd that spawned it.
//
// Start-up order:
//   1. block SIGTERM/SIGINT (before any thread exists, so every thread
//      inherits the mask; the main thread takes them through a signalfd
//      while it waits for a stop: step 7);
//   2. parse flags, init logging: procd's own lines (and actors' glog
//      lines) go to <log_dir>/procd.log, not to the proc's stderr, which is
//      its user's and what hostd quotes when the proc fails
//      (procd/procd_log.h). Only what explains procd's own end reaches stderr:
//      a FATAL/CHECK failure, or one "procd: ..." line before an exit with a
//      non-zero code;
//   3. take the channel fd from HOSTMESH_CHANNEL_FD (and unset it);
//   4. connect: wait for hostd's Welcome (name, rank, host) and check its
//      protocol version;
//   5. build the mailbox (its outbound is the link), the runtime and the
//      verbs; start the link: it says Hello, hostd stores the verifier of a
//      fresh secret and answers Accepted, the link answers Ready, and only
//      then does hostd mark us RUNNING;
//   6. serve. If the channel closes before Accepted, stop at once (exit 1:
//      no hostd will re-adopt us). If it closes after, the link redials
//      hostd's rejoin socket until a hostd re-adopts us (Rejoined: we go on
//      serving, actors untouched) or the orphan timeout passes; meanwhile
//      what actors send fails UNAVAILABLE (error replies to reply_to);
//   7. wait for a stop: hostd's StopProc, StopAll with exit_proc,
//      SIGTERM/SIGINT, a refusal (also of a Rejoin; exit 1), not accepted
//      (exit 1), or no hostd back within the orphan timeout (exit 0);
//   8. within the grace: stop every actor, flush the channel so the last
//      answers go out, shut the mailbox down, close the channel.
#include <glog/logging.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hostmesh/procd.h"
#include "lib/mailbox/mailbox.h"
#include "lib/names.h"
#include "lib/process/process_template.h"
#include "lib/process/signals.h"
#include "lib/time/clock.h"
#include "lib/time/sleeper.h"
#include "procd/host_link.h"
#include "procd/proc_runtime.h"
#include "procd/proc_verbs.h"
#include "procd/procd_log.h"
#include "proto/mailbox.pb.h"
#include "proto/proc.pb.h"
#include "proto/proc_channel.pb.h"

namespace mesh {
namespace {

// Grace for stops that do not name one (signals, StopAll, orphaned).
constexpr absl::Duration kDefaultGrace = absl::Seconds(10);
// How long hostd has to send its Welcome.
constexpr absl::Duration kWelcomeTimeout = absl::Seconds(10);

// True once procd's log lines go to procd.log rather than to stderr.
bool logs_to_file = false;

// Why procd ends with a non-zero code: logged, and (when the log is not on
// stderr anyway) one line on stderr, for the reason hostd gives.
void SayWhyExiting(const std::string& why) {
  LOG(ERROR) << why;
  if (logs_to_file) std::cerr << "procd: " << why << std::endl;
}

// The first stop request wins; each wakes the main thread waiting in
// StopSignals::Wait. Thread-safe.
class StopRequest {
 public:
  explicit StopRequest(StopSignals* signals) : signals_(signals) {}

  struct Stop {
    std::string reason;
    absl::Duration grace;
    int exit_code = 0;
  };

  void Request(const std::string& reason, absl::Duration grace,
               int exit_code = 0) {
    absl::MutexLock lock(&mu_);
    if (stop_.has_value()) {
      LOG(INFO) << "already stopping; ignoring: " << reason;
      return;
    }
    stop_ = Stop{reason, grace > absl::ZeroDuration() ? grace : kDefaultGrace,
                 exit_code};
    signals_->Wake();
  }

  // Takes SIGTERM/SIGINT on this thread (as stop requests) until a stop is
  // requested; returns it.
  Stop Wait() {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (stop_.has_value()) return *stop_;
      }
      const std::string signal = signals_->Wait();
      if (!signal.empty()) {
        Request(absl::StrCat("received ", signal), kDefaultGrace);
      }
    }
  }

 private:
  StopSignals* const signals_;
  absl::Mutex mu_;
  std::optional<Stop> stop_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

int ProcdMain(int argc, char** argv, ActorRegistry registry) {
  // hostd's pre-loaded template (lib/process/process_template.h): fork
  // procs on request, each running ProcdMain afresh in its own process.
  if (const int control = TemplateFdFromEnv(); control != -1) {
    if (control < 0) {
      std::cerr << "procd: " << kTemplateFdEnv << " is not a descriptor\n";
      return 2;
    }
    // Warm what every proc uses before the first fork, so no child
    // builds it again: the descriptors of procd's messages.
    v1::ProcFrame::descriptor();
    v1::Envelope::descriptor();
    v1::ProcRequest::descriptor();
    v1::ProcResponse::descriptor();
    return ServeForks(
        control, [&registry](int child_argc, char** child_argv) -> int {
          const int code =
              ProcdMain(child_argc, child_argv, std::move(registry));
          // Everything procd started is joined and its log lines are written
          // (procd.log's sink writes at once). Skipping the static destructors
          // skips writes to pages shared with the template (each a copy on
          // write): a proc's exit costs a fraction of the CPU.
          std::cout.flush();
          fflush(nullptr);
          _exit(code);
        });
  }
  // Before any thread starts: SIGTERM/SIGINT go to one thread (below).
  StopSignals::Block();

  std::string orphan_timeout_flag;
  size_t max_queued_messages = ProcRuntime::Options().max_queued_messages;
  CLI::App app{
      "procd: a hostmesh proc, an actor runtime; started by a hostd and "
      "reached only through it"};
  app.add_option("--orphan-timeout", orphan_timeout_flag,
                 "How long to outlive a broken channel to hostd, e.g. 30s "
                 "(default: what hostd says)");
  app.add_option("--max-queued-messages", max_queued_messages,
                 "Messages queued for one actor at most; more are refused "
                 "with RESOURCE_EXHAUSTED")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  // The channel fd first: reading it unsets the variable, which must happen
  // before any thread (glog's included) starts.
  absl::StatusOr<std::optional<int>> channel_fd = HostLink::ChannelFdFromEnv();

  logs_to_file = SetUpProcdLogging(argv[0]);

  std::optional<absl::Duration> orphan_timeout;
  if (!orphan_timeout_flag.empty()) {
    absl::Duration parsed;
    if (!absl::ParseDuration(orphan_timeout_flag, &parsed) ||
        parsed < absl::ZeroDuration()) {
      std::cerr << "procd: --orphan-timeout: not a duration: "
                << orphan_timeout_flag << "\n";
      return 2;
    }
    orphan_timeout = parsed;
  }
  if (!channel_fd.ok()) {
    std::cerr << "procd: " << channel_fd.status().message() << "\n";
    return 2;
  }
  if (!channel_fd->has_value()) {
    std::cerr << "procd: not started by a hostd (no " << kChannelFdEnv
              << "): a proc is reached only through its host\n";
    return 2;
  }

  absl::StatusOr<std::unique_ptr<HostLink>> connected =
      HostLink::Connect(**channel_fd, kWelcomeTimeout);
  if (!connected.ok()) {
    SayWhyExiting(absl::StrCat("handshake with hostd failed: ",
                               connected.status().ToString()));
    return 1;
  }
  std::unique_ptr<HostLink> link = *std::move(connected);
  const v1::Welcome& welcome = link->welcome();
  const std::string name = welcome.name();
  if (absl::Status valid = ValidateName(name, "proc name"); !valid.ok()) {
    SayWhyExiting(absl::StrCat("hostd's Welcome: ", valid.message()));
    return 1;
  }

  // Everything the link's callbacks reach. The link goes first (explicitly,
  // below): after its destructor no callback runs.
  // SIGTERM/SIGINT are taken by this thread while it waits for a stop
  // (nothing runs in a handler; no thread of their own).
  StopSignals signals;
  StopRequest stop(&signals);
  const std::vector<std::string> actor_types = registry.TypeNames();
  HostLink* const link_ptr = link.get();
  Mailbox mailbox(welcome.host(), name, [link_ptr](v1::Envelope& envelope) {
    return link_ptr->SendEnvelope(envelope);
  });
  ProcRuntime::Options runtime_options;
  runtime_options.proc_name = name;
  runtime_options.rank = welcome.rank();
  runtime_options.registry = std::move(registry);
  runtime_options.max_queued_messages = max_queued_messages;
  ProcRuntime runtime(std::move(runtime_options), &mailbox);
  ProcVerbs::Options verbs_options;
  verbs_options.on_exit_requested = [&stop] {
    stop.Request("StopAll with exit_proc", kDefaultGrace);
  };
  ProcVerbs verbs(&runtime, std::move(verbs_options));

  HostLink::Callbacks callbacks;
  callbacks.on_envelope = [&mailbox](v1::Envelope envelope) {
    mailbox.Deliver(std::move(envelope));
  };
  callbacks.on_request = [&verbs, link_ptr, &name](v1::ProcRequest request) {
    verbs.Handle(
        std::move(request), [link_ptr, &name](v1::ProcResponse response) {
          const uint64_t id = response.id();
          absl::Status sent = link_ptr->SendResponse(std::move(response));
          LOG_IF(WARNING, !sent.ok())
              << "proc " << name << ": cannot answer request " << id << ": "
              << sent;
        });
  };
  callbacks.on_cancel = [&verbs](uint64_t id) { verbs.Cancel(id); };
  callbacks.on_stop = [&stop](const std::string& reason, absl::Duration grace) {
    stop.Request(absl::StrCat("hostd asked to stop: ", BoundText(reason)),
                 grace);
  };
  callbacks.on_refused = [&stop](const std::string& reason) {
    stop.Request(absl::StrCat("hostd refused this proc: ", BoundText(reason)),
                 kDefaultGrace, /*exit_code=*/1);
  };
  callbacks.on_not_accepted = [&stop](const std::string& reason) {
    stop.Request(reason, kDefaultGrace, /*exit_code=*/1);
  };
  callbacks.on_orphaned = [&stop] {
    stop.Request(
        "orphaned: hostd is gone and none re-adopted this proc within the "
        "orphan timeout",
        kDefaultGrace);
  };
  link->Start(std::move(callbacks),
              HostLink::StartOptions{actor_types, orphan_timeout});
  LOG(INFO) << "procd " << name << " (rank " << welcome.rank()
            << ") serving through hostd " << welcome.host();

  const StopRequest::Stop requested = stop.Wait();
  LOG(INFO) << "procd " << name << " stopping (" << requested.reason
            << "), grace " << requested.grace;
  const MonotonicClock& clock = MonotonicClock::Real();
  const absl::Duration deadline = clock.Now() + requested.grace;
  Sleeper stopped;  // monotonic: a clock step neither hastens nor stalls it
  std::thread watchdog([&stopped, grace = requested.grace, name] {
    if (!stopped.SleepFor(grace)) {
      SayWhyExiting(absl::StrCat("procd ", name, " did not stop within ",
                                 absl::FormatDuration(grace), "; exiting now"));
      _exit(1);
    }
  });
  runtime.Shutdown();  // Stops actors; their last replies and answers go out.
  if (!link->Flush(deadline - clock.Now())) {
    LOG(WARNING) << "procd " << name
                 << ": not every last message reached hostd";
  }
  mailbox.Shutdown();
  link.reset();  // hostd sees the channel close; no callback runs after.
  stopped.Stop();
  watchdog.join();
  if (requested.exit_code != 0) {
    SayWhyExiting(absl::StrCat("procd ", name, " stopped: ", requested.reason));
  } else {
    LOG(INFO) << "procd " << name << " stopped";
  }
  return requested.exit_code;
}

}  // namespace mesh
