// meshctl host status | list | shutdown: the hosts (hostd) themselves.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshctl/cli.h"
#include "meshctl/commands.h"

namespace mesh::meshctl {
namespace {

constexpr char kDefaultShutdownReason[] = "host shut down by meshctl";

struct ShutdownFlags {
  std::string reason;
  std::string grace;  // Empty: hostd's --stop-grace.
  // hostd then exits 0 (its unit leaves it stopped), not 75.
  bool stay_down = false;
};

// Every host's HostInfo, asked in parallel. One host: its detail view.
// Several (or `table`): one row per host, an unreachable one reported on
// stderr and shown as such.
absl::Status HostStatus(Cli& cli, bool table) {
  std::vector<v1::HostInfo> infos(cli.hosts().size());
  std::vector<absl::Status> results = cli.ForEachHost([&](HostConn& conn,
                                                          size_t i) {
    return conn.Call(conn.host(), &v1::Host::Stub::GetHostInfo,
                     v1::GetHostInfoRequest(), &infos[i], cli.timeout(),
                     absl::StrCat("get info of host \"", conn.address(), "\""));
  });
  if (!table && cli.hosts().size() == 1) {
    if (!results[0].ok()) return absl::OkStatus();  // Reported.
    return cli.Print(infos[0], FormatHostInfo(infos[0]));
  }
  std::vector<const v1::HostInfo*> answered;
  std::vector<const google::protobuf::Message*> messages;
  for (size_t i = 0; i < infos.size(); ++i) {
    answered.push_back(results[i].ok() ? &infos[i] : nullptr);
    if (results[i].ok()) messages.push_back(&infos[i]);
  }
  return cli.PrintList(messages, FormatHostTable(cli.hosts(), answered),
                       FormatHostTable(cli.hosts(), answered, /*wide=*/true));
}

absl::Status HostShutdown(Cli& cli, const ShutdownFlags& flags) {
  uint32_t grace_ms = 0;
  if (!flags.grace.empty()) {
    ASSIGN_OR_RETURN(absl::Duration grace, ParseDuration(flags.grace));
    grace_ms = Millis(grace);
  }
  v1::ShutdownHostRequest request;
  request.set_reason(flags.reason.empty() ? kDefaultShutdownReason
                                          : flags.reason);
  request.set_grace_ms(grace_ms);
  request.set_stay_down(flags.stay_down);
  const absl::Duration deadline =
      cli.timeout() +
      2 * (grace_ms > 0 ? absl::Milliseconds(grace_ms) : kAssumedStopGrace);
  std::vector<v1::ShutdownHostResponse> responses(cli.hosts().size());
  std::unique_ptr<Progress> progress = cli.NewProgress();
  std::vector<absl::Status> results = cli.ForEachHost([&](HostConn& conn,
                                                          size_t i) {
    // Progress for one host only: several would fight over the line.
    std::unique_ptr<ProcPoller> poller;
    if (cli.hosts().size() == 1) {
      poller = std::make_unique<ProcPoller>(
          conn, *progress, absl::StrCat("shutting down host ", conn.address()),
          std::vector<std::string>());
    }
    return conn.Call(conn.host(), &v1::Host::Stub::ShutdownHost, request,
                     &responses[i], deadline,
                     absl::StrCat("shut down host \"", conn.address(), "\""));
  });
  progress->Done();
  for (size_t i = 0; i < responses.size(); ++i) {
    if (!results[i].ok()) continue;
    if (!IsStructured(cli.output()) && responses[i].stopped().empty()) {
      cli.out() << "host \"" << cli.hosts()[i]
                << "\" shut down; no proc was running\n";
      continue;
    }
    RETURN_IF_ERROR(
        cli.Print(responses[i], FormatProcTable(responses[i].stopped()),
                  FormatProcTable(responses[i].stopped(), /*wide=*/true)));
  }
  return absl::OkStatus();
}

}  // namespace

void AddHostCommands(Cli& cli) {
  CLI::App* host = cli.Group("host", "the hosts (hostd) themselves");
  cli.Verb(host, "status",
           "show the host's info; with several hosts, one row per host "
           "(asked in parallel; an unreachable one is reported and the "
           "others shown)",
           "meshctl host status\n"
           "meshctl --hosts node1,node2 host status -o yaml",
           [&cli] { return HostStatus(cli, /*table=*/false); });
  cli.Verb(host, "list",
           "one row per host named by --host/--hosts/--hosts-file/MESH_HOST: "
           "HOST HOSTNAME VERSION PROCS PID STARTED",
           "meshctl --hosts-file ~/hosts.txt host list -o wide",
           [&cli] { return HostStatus(cli, /*table=*/true); });

  auto flags = std::make_shared<ShutdownFlags>();
  CLI::App* shutdown =
      cli.Verb(host, "shutdown",
               "stop every proc (graceful, then SIGTERM, then SIGKILL), then "
               "hostd exits; with several hosts, all at once",
               "meshctl host shutdown --grace 5s --reason \"kernel update\"",
               [&cli, flags] { return HostShutdown(cli, *flags); });
  shutdown
      ->add_option("--grace", flags->grace,
                   "grace before each escalation (default: hostd's "
                   "--stop-grace)")
      ->check(DurationValidator())
      ->type_name("DURATION");
  shutdown->add_option("--reason", flags->reason, "recorded on every proc");
  shutdown->add_flag("--stay-down", flags->stay_down,
                     "hostd then exits 0 and its systemd unit leaves it "
                     "stopped; without it hostd exits 75 and the unit starts "
                     "it again, with no proc");
}

}  // namespace mesh::meshctl
