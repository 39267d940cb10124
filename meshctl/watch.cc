// meshctl watch: a host's live status (WatchHost): the snapshot as a
// table, then one line per change as it happens, until the host shuts down
// (exit 0), Ctrl-C (exit 0) or --for runs out (exit 0).
// meshctl host drain: refuse new procs (DrainHost); --stop also stops the
// procs there, --undrain lifts it.
#include <fcntl.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/grpc_status.h"
#include "lib/status.h"
#include "meshctl/cli.h"
#include "meshctl/commands.h"
#include "meshctl/format.h"
#include "proto/host.grpc.pb.h"

namespace mesh::meshctl {
namespace {

using google::protobuf::util::TimeUtil;

struct WatchFlags {
  std::vector<std::string> procs;
  std::string for_duration;  // Empty: until the host stops or Ctrl-C.
};

struct DrainFlags {
  std::string reason;
  bool stop = false;
  std::string grace;  // Empty: hostd's --stop-grace.
  bool undrain = false;
};

absl::Time ToTime(const google::protobuf::Timestamp& timestamp) {
  return absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(timestamp));
}

// "2024-05-01 12:00:03.412" in local time.
std::string EventTime(const google::protobuf::Timestamp& at) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%E3S", ToTime(at),
                          absl::LocalTimeZone());
}

// "draining since 2024-05-01 12:00:03 by ops: kernel upgrade", or "".
std::string DrainText(const v1::DrainState& drain) {
  if (!drain.draining()) return "";
  return absl::StrCat(
      "draining since ",
      absl::FormatTime("%Y-%m-%d %H:%M:%S", ToTime(drain.since()),
                       absl::LocalTimeZone()),
      " by ", drain.by(), drain.reason().empty() ? "" : ": ", drain.reason());
}

// One line about the host: address, hostname, pid, live procs, drain and
// shutdown.
std::string HostLine(const v1::HostInfo& host) {
  std::string line =
      absl::StrCat("host ", host.address(), " (", host.hostname(), ", pid ",
                   host.pid(), "): ", host.num_procs(),
                   host.num_procs() == 1 ? " live proc" : " live procs");
  if (host.drain().draining())
    absl::StrAppend(&line, "; ", DrainText(host.drain()));
  if (host.shutting_down()) absl::StrAppend(&line, "; shutting down");
  return line + "\n";
}

// One event as a line (table) or a wider line (wide); snapshots as the
// host line and the proc table.
std::string EventText(const v1::HostEvent& event, bool wide) {
  const std::string at = EventTime(event.at());
  switch (event.kind()) {
    case v1::HostEvent::SNAPSHOT:
    case v1::HostEvent::RESYNC: {
      std::string text =
          event.kind() == v1::HostEvent::RESYNC
              ? absl::StrCat(at, "  resync: ", event.dropped(),
                             " events missed (this watch fell behind); the "
                             "host now:\n")
              : std::string();
      absl::StrAppend(&text, HostLine(event.host()));
      if (event.procs_size() > 0) {
        absl::StrAppend(&text, FormatProcTable(event.procs(), wide));
      }
      return text;
    }
    case v1::HostEvent::HOST_CHANGED:
      return absl::StrCat(at, "  host     ", event.reason(), "\n");
    case v1::HostEvent::PROC_CREATED:
    case v1::HostEvent::PROC_CHANGED:
    case v1::HostEvent::PROC_REMOVED: {
      const v1::ProcState& proc = event.proc();
      const char* what = event.kind() == v1::HostEvent::PROC_CREATED ? "created"
                         : event.kind() == v1::HostEvent::PROC_REMOVED
                             ? "removed"
                             : "changed";
      std::string line =
          absl::StrFormat("%s  %-8s %-16s %-12s", at, what, proc.name(),
                          v1::Status_Name(proc.status()));
      if (wide) {
        absl::StrAppend(&line, absl::StrFormat(" gen %-6d pid %-8d %-14s ",
                                               proc.generation(), proc.pid(),
                                               proc.owner()));
      }
      absl::StrAppend(&line, " ", proc.reason(), "\n");
      return line;
    }
    default:
      return absl::StrCat(at, "  ", v1::HostEvent::Kind_Name(event.kind()),
                          "\n");
  }
}

// Ends a watch (TryCancel on its context) on SIGINT or SIGTERM, or once
// `limit` ran out; Stop() ends it and puts the signal handlers back. The
// handler only writes to a pipe; a thread does the rest.
class WatchStopper {
 public:
  WatchStopper(grpc::ClientContext* context,
               std::optional<absl::Duration> limit)
      : context_(context) {
    if (pipe2(pipe_, O_CLOEXEC) != 0) pipe_[0] = pipe_[1] = -1;
    signal_fd_.store(pipe_[1]);
    struct sigaction action = {};
    action.sa_handler = &OnSignal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
    thread_ = std::thread([this, limit] { Run(limit); });
  }
  ~WatchStopper() { Stop(); }

  void Stop() {
    if (!thread_.joinable()) return;
    const char quit = 'q';
    if (pipe_[1] >= 0) (void)!write(pipe_[1], &quit, 1);
    thread_.join();
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    signal_fd_.store(-1);
    for (int fd : pipe_) {
      if (fd >= 0) close(fd);
    }
  }

  // Whether the watch was ended here (a signal or --for), not by the host.
  bool ended() const { return ended_.load(); }

 private:
  static void OnSignal(int) {
    const int fd = signal_fd_.load();
    const char signalled = 's';
    if (fd >= 0) (void)!write(fd, &signalled, 1);
  }

  void Run(std::optional<absl::Duration> limit) {
    const absl::Time deadline =
        limit.has_value() ? absl::Now() + *limit : absl::InfiniteFuture();
    for (;;) {
      int timeout_ms = -1;
      if (limit.has_value()) {
        timeout_ms = static_cast<int>(std::max<int64_t>(
            0, absl::ToInt64Milliseconds(deadline - absl::Now()) + 1));
      }
      pollfd wanted = {pipe_[0], POLLIN, 0};
      const int ready = poll(&wanted, 1, timeout_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0 && absl::Now() < deadline) continue;
      char byte = 'q';
      if (ready > 0 && read(pipe_[0], &byte, 1) != 1) byte = 'q';
      if (ready == 0 || byte == 's') {
        ended_.store(true);
        context_->TryCancel();
      }
      return;
    }
  }

  static inline std::atomic<int> signal_fd_{-1};
  grpc::ClientContext* const context_;
  int pipe_[2] = {-1, -1};
  struct sigaction old_int_ = {};
  struct sigaction old_term_ = {};
  std::atomic<bool> ended_{false};
  std::thread thread_;
};

absl::Status Watch(Cli& cli, const WatchFlags& flags) {
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("watch"));
  std::optional<absl::Duration> limit;
  if (!flags.for_duration.empty()) {
    ASSIGN_OR_RETURN(limit, ParseDuration(flags.for_duration));
  }
  v1::WatchHostRequest request;
  for (const std::string& proc : flags.procs) request.add_procs(proc);
  // No deadline: it ends with the host, Ctrl-C or --for.
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::HostEvent>> reader =
      conn->host().WatchHost(&context, request);
  WatchStopper stopper(&context, limit);
  v1::HostEvent event;
  absl::Status printed = absl::OkStatus();
  while (printed.ok() && reader->Read(&event)) {
    switch (cli.output()) {
      case Output::kJson: {
        absl::StatusOr<std::string> line = ToOneLineJson(event);
        if (!line.ok()) {
          printed = line.status();
          continue;
        }
        cli.out() << *line << "\n";
        break;
      }
      case Output::kYaml: {
        absl::StatusOr<std::string> yaml = Render(event, cli.output(), "", "");
        if (!yaml.ok()) {
          printed = yaml.status();
          continue;
        }
        cli.out() << "---\n" << *yaml;
        break;
      }
      default:
        cli.out() << EventText(event, cli.output() == Output::kWide);
    }
    cli.out().flush();
  }
  if (!printed.ok()) context.TryCancel();
  const grpc::Status finished = reader->Finish();
  stopper.Stop();
  RETURN_IF_ERROR(printed);
  // Ctrl-C or --for: the end asked for.
  if (stopper.ended() && finished.error_code() == grpc::StatusCode::CANCELLED) {
    return absl::OkStatus();
  }
  if (finished.ok() && !IsStructured(cli.output())) {
    cli.out() << "host " << conn->address() << " ended the watch (it is "
              << "going away)\n";
  }
  return Annotate(FromGrpcStatus(finished),
                  absl::StrCat("watch host \"", conn->address(), "\""));
}

absl::Status Drain(Cli& cli, const DrainFlags& flags) {
  if (flags.undrain && (flags.stop || !flags.grace.empty())) {
    return UsageError(absl::InvalidArgumentError(
        "--undrain lifts a drain; --stop and --grace go with a drain"));
  }
  uint32_t grace_ms = 0;
  if (!flags.grace.empty()) {
    if (!flags.stop) {
      return UsageError(absl::InvalidArgumentError(
          "--grace is the stop's grace: it needs --stop"));
    }
    ASSIGN_OR_RETURN(absl::Duration grace, ParseDuration(flags.grace));
    grace_ms = Millis(grace);
  }
  v1::DrainHostRequest request;
  request.set_reason(flags.reason);
  request.set_stop(flags.stop);
  request.set_grace_ms(grace_ms);
  request.set_undrain(flags.undrain);
  const absl::Duration deadline =
      flags.stop
          ? cli.timeout() + 2 * (grace_ms > 0 ? absl::Milliseconds(grace_ms)
                                              : kAssumedStopGrace)
          : cli.timeout();
  std::vector<v1::DrainHostResponse> responses(cli.hosts().size());
  std::unique_ptr<Progress> progress = cli.NewProgress();
  std::vector<absl::Status> results =
      cli.ForEachHost([&](HostConn& conn, size_t i) {
        std::unique_ptr<ProcPoller> poller;
        if (flags.stop && cli.hosts().size() == 1) {
          poller = std::make_unique<ProcPoller>(
              conn, *progress,
              absl::StrCat("stopping the procs of host ", conn.address()),
              std::vector<std::string>());
        }
        return conn.Call(conn.host(), &v1::Host::Stub::DrainHost, request,
                         &responses[i], deadline,
                         absl::StrCat(flags.undrain ? "undrain" : "drain",
                                      " host \"", conn.address(), "\""));
      });
  progress->Done();
  for (size_t i = 0; i < responses.size(); ++i) {
    if (!results[i].ok()) continue;
    const v1::DrainHostResponse& response = responses[i];
    std::string text =
        absl::StrCat("host ", cli.hosts()[i],
                     response.drain().draining()
                         ? absl::StrCat(" drained: new procs are refused (",
                                        DrainText(response.drain()), ")\n")
                         : std::string(" undrained: it accepts new procs\n"));
    if (flags.stop) {
      absl::StrAppend(&text, response.stopped().empty()
                                 ? "no proc was running\n"
                                 : FormatProcTable(response.stopped()));
    }
    RETURN_IF_ERROR(cli.Print(response, text));
  }
  return absl::OkStatus();
}

}  // namespace

void AddWatchCommands(Cli& cli) {
  auto watch_flags = std::make_shared<WatchFlags>();
  CLI::App* watch = cli.Verb(
      &cli.app(), "watch",
      "Show the host's procs, then one line per change (created, status "
      "changed, removed, host drained or shutting down) as it happens, with "
      "its time; until the host shuts down, Ctrl-C or --for (exit 0 in each "
      "case). -o json: one HostEvent per line (the snapshot first); -o "
      "yaml: one document per event",
      "meshctl watch\n"
      "meshctl watch trainer_0 trainer_1 --for 30s\n"
      "meshctl watch -o json | jq -c 'select(.kind != \"SNAPSHOT\")'",
      [&cli, watch_flags] { return Watch(cli, *watch_flags); });
  watch
      ->add_option("procs", watch_flags->procs,
                   "Only these procs (none: every proc you may see)")
      ->check(NameValidator("proc name"));
  watch
      ->add_option("--for", watch_flags->for_duration,
                   "Stop watching after DURATION (e.g. 10s)")
      ->check(DurationValidator())
      ->type_name("DURATION");

  auto drain_flags = std::make_shared<DrainFlags>();
  CLI::App* host = cli.Group("host", "the hosts (hostd) themselves");
  CLI::App* drain = cli.Verb(
      host, "drain",
      "Refuse new procs on the host (it says NOT_SERVING to health checks "
      "and stays drained across hostd restarts); the procs there run on, or "
      "with --stop are stopped (graceful, then SIGTERM, then SIGKILL) while "
      "hostd stays up. --undrain lifts it. With several hosts, all at once",
      "meshctl host drain --reason \"kernel update\"\n"
      "meshctl host drain --stop --grace 5s\n"
      "meshctl host drain --undrain",
      [&cli, drain_flags] { return Drain(cli, *drain_flags); });
  drain->add_option("--reason", drain_flags->reason,
                    "Why (shown in refusals and host status)");
  drain->add_flag("--stop", drain_flags->stop,
                  "Also stop every proc; answers once all are stopped");
  drain
      ->add_option("--grace", drain_flags->grace,
                   "With --stop: grace before each escalation (default: "
                   "hostd's --stop-grace)")
      ->check(DurationValidator())
      ->type_name("DURATION");
  drain->add_flag("--undrain", drain_flags->undrain, "Accept new procs again");
}

}  // namespace mesh::meshctl
