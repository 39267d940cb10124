// meshctl proc spawn | list | get | stop | wait: the procs of a host.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "lib/names.h"
#include "meshctl/cli.h"
#include "meshctl/commands.h"
#include "meshctl/wait.h"

namespace mesh::meshctl {
namespace {

constexpr uint64_t kMaxCount = 100000;
constexpr char kDefaultStopReason[] = "stopped by meshctl";
// Calls in flight at once for several names.
constexpr size_t kParallelCalls = 16;

struct SpawnFlags {
  std::string name;
  uint64_t count = 0;
  uint64_t rank = 0;
  std::string command;
  std::vector<std::string> args;
  std::vector<std::string> env;
  SpawnWait wait;
};

struct StopFlags {
  std::vector<std::string> names;
  std::string reason;
  std::string grace;  // Empty: hostd's --stop-grace.
};

struct WaitFlags {
  std::vector<std::string> names;
  std::string status = "running";
  std::string wait_for = "10s";
};

CLI::Validator EnvValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        size_t eq = value.find('=');
        if (eq == std::string::npos || eq == 0) {
          return absl::StrCat("environment entry \"", value,
                              "\" is not of the form KEY=VALUE");
        }
        return "";
      },
      "", "KEY=VALUE");
}

absl::Status ProcSpawn(Cli& cli, const SpawnFlags& flags) {
  if (flags.count > 0) {
    // The last name is the longest: "p0" with --count 10 ends at "p0_9".
    absl::Status status =
        ValidateName(MemberName(flags.name, flags.count - 1), "proc name");
    if (!status.ok()) return UsageError(status);
  }
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("proc spawn"));
  std::vector<v1::CreateOrUpdateProcRequest> requests;
  if (flags.count == 0) {
    requests.emplace_back().set_name(flags.name);
    requests.back().set_rank(flags.rank);
  } else {
    for (uint64_t rank = 0; rank < flags.count; ++rank) {
      requests.emplace_back().set_name(MemberName(flags.name, rank));
      requests.back().set_rank(rank);
    }
  }
  v1::ProcSpec spec;
  spec.set_command(flags.command);
  for (const std::string& arg : flags.args) spec.add_args(arg);
  for (const std::string& entry : flags.env) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(entry, absl::MaxSplits('=', 1));
    (*spec.mutable_env())[kv.first] = kv.second;
  }
  std::vector<std::string> names;
  for (v1::CreateOrUpdateProcRequest& request : requests) {
    *request.mutable_spec() = spec;
    names.push_back(request.name());
  }

  std::unique_ptr<Progress> progress = cli.NewProgress();
  const std::string label = absl::StrCat(
      "spawning ", names.size(), names.size() == 1 ? " proc" : " procs");
  // Up to kParallelCalls creates in flight (one at a time, 64 procs would
  // cost 64 round trips and table writes hostd could have grouped).
  std::vector<v1::ProcState> states(requests.size());
  std::vector<absl::Status> results(requests.size());
  absl::Mutex progress_mu;  // Progress is not thread-safe.
  size_t created = 0;
  ParallelFor(requests.size(), kParallelCalls, [&](size_t i) {
    const v1::CreateOrUpdateProcRequest& request = requests[i];
    results[i] = conn->Call(
        conn->host(), &v1::Host::Stub::CreateOrUpdateProc, request, &states[i],
        cli.timeout(),
        absl::StrCat("spawn proc \"", request.name(), "\" ", conn->OnHost()));
    if (results[i].ok() && requests.size() > 1) {
      absl::MutexLock lock(&progress_mu);
      progress->Show(absl::StrCat(label, ": ", ++created, " created"));
    }
  });
  v1::ListProcsResponse spawned;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (results[i].ok()) *spawned.add_procs() = std::move(states[i]);
  }
  for (const absl::Status& status : results) {
    if (status.ok()) continue;
    if (spawned.procs_size() > 0) {
      // Those are spawned; the same command again is safe (idempotent).
      return Annotate(status,
                      absl::StrCat("spawned ", spawned.procs_size(), " of ",
                                   requests.size(), " procs, then"));
    }
    return status;
  }
  if (flags.wait.no_wait) {
    progress->Done();
    return cli.Print(spawned, FormatProcTable(spawned.procs()),
                     FormatProcTable(spawned.procs(), /*wide=*/true));
  }

  ASSIGN_OR_RETURN(absl::Duration wait_for,
                   ParseDuration(flags.wait.wait_timeout));
  v1::WaitProcsRequest wait;
  for (const std::string& name : names) wait.add_names(name);
  wait.set_min_status(v1::RUNNING);
  wait.set_timeout_ms(Millis(wait_for));
  v1::WaitProcsResponse response;
  {
    ProcPoller poller(*conn, *progress, label, names);
    RETURN_IF_ERROR(
        conn->Call(conn->host(), &v1::Host::Stub::WaitProcs, wait, &response,
                   wait_for + cli.timeout(),
                   absl::StrCat("wait for RUNNING ", conn->OnHost())));
  }
  progress->Done();
  RETURN_IF_ERROR(cli.Print(response, FormatProcTable(response.procs()),
                            FormatProcTable(response.procs(), /*wide=*/true)));
  return CheckProcWait(names, response, v1::RUNNING, wait_for, conn->address());
}

// Every host's procs, asked in parallel, in one list (HOST filled in for a
// proc whose host left it empty).
absl::Status ProcList(Cli& cli) {
  std::vector<v1::ListProcsResponse> lists(cli.hosts().size());
  std::vector<absl::Status> results =
      cli.ForEachHost([&](HostConn& conn, size_t i) {
        return conn.Call(conn.host(), &v1::Host::Stub::ListProcs,
                         v1::ListProcsRequest(), &lists[i], cli.timeout(),
                         absl::StrCat("list procs ", conn.OnHost()));
      });
  v1::ListProcsResponse all;
  bool any = false;
  for (size_t i = 0; i < lists.size(); ++i) {
    if (!results[i].ok()) continue;
    any = true;
    for (v1::ProcState& proc : *lists[i].mutable_procs()) {
      if (proc.host().empty()) proc.set_host(cli.hosts()[i]);
      *all.add_procs() = std::move(proc);
    }
  }
  if (!any) return absl::OkStatus();  // Each host's failure is reported.
  return cli.Print(all, FormatProcTable(all.procs()),
                   FormatProcTable(all.procs(), /*wide=*/true));
}

// One name: that proc (a detail view, or its message). Several: each in
// turn (detail views separated by a blank line, a JSON array, a YAML
// sequence); a name that fails is reported and the others still shown.
absl::Status ProcGet(Cli& cli, const std::vector<std::string>& names) {
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("proc get"));
  std::vector<v1::ProcState> states(names.size());
  std::vector<absl::Status> results(names.size());
  ParallelFor(names.size(), kParallelCalls, [&](size_t i) {
    v1::GetProcStateRequest request;
    request.set_name(names[i]);
    results[i] = conn->Call(
        conn->host(), &v1::Host::Stub::GetProcState, request, &states[i],
        cli.timeout(),
        absl::StrCat("get proc \"", names[i], "\" ", conn->OnHost()));
  });
  std::string table;
  std::vector<const google::protobuf::Message*> found;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!results[i].ok()) {
      cli.Fail(results[i]);
      continue;
    }
    if (!found.empty()) table += "\n";
    table += FormatProcDetail(states[i]);
    found.push_back(&states[i]);
  }
  if (found.empty()) return absl::OkStatus();
  if (names.size() == 1) return cli.Print(*found[0], table);
  return cli.PrintList(found, table);
}

absl::Status ProcStop(Cli& cli, const StopFlags& flags) {
  uint32_t grace_ms = 0;
  if (!flags.grace.empty()) {
    ASSIGN_OR_RETURN(absl::Duration grace, ParseDuration(flags.grace));
    grace_ms = Millis(grace);
  }
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("proc stop"));
  const std::vector<std::string>& names = flags.names;
  const absl::Duration deadline =
      cli.timeout() +
      2 * (grace_ms > 0 ? absl::Milliseconds(grace_ms) : kAssumedStopGrace);
  std::vector<v1::ProcState> states(names.size());
  std::vector<absl::Status> results(names.size());
  std::unique_ptr<ProcPoller> poller;
  std::unique_ptr<Progress> progress = cli.NewProgress();
  if (names.size() > 1) {
    poller = std::make_unique<ProcPoller>(
        *conn, *progress, absl::StrCat("stopping ", names.size(), " procs"),
        names);
  }
  ParallelFor(names.size(), kParallelCalls, [&](size_t i) {
    v1::StopProcRequest request;
    request.set_name(names[i]);
    request.set_reason(flags.reason.empty() ? kDefaultStopReason
                                            : flags.reason);
    request.set_grace_ms(grace_ms);
    results[i] = conn->Call(
        conn->host(), &v1::Host::Stub::StopProc, request, &states[i], deadline,
        absl::StrCat("stop proc \"", names[i], "\" ", conn->OnHost()));
  });
  poller.reset();
  progress->Done();
  v1::ListProcsResponse stopped;
  std::vector<const google::protobuf::Message*> messages;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!results[i].ok()) {
      cli.Fail(results[i]);
      continue;
    }
    *stopped.add_procs() = states[i];
    messages.push_back(&states[i]);
  }
  if (messages.empty()) return absl::OkStatus();
  const std::string table = FormatProcTable(stopped.procs());
  const std::string wide = FormatProcTable(stopped.procs(), /*wide=*/true);
  if (names.size() == 1) return cli.Print(*messages[0], table, wide);
  return cli.PrintList(messages, table, wide);
}

absl::Status ProcWait(Cli& cli, const WaitFlags& flags) {
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("proc wait"));
  ASSIGN_OR_RETURN(absl::Duration wait_for, ParseDuration(flags.wait_for));
  v1::Status wanted = WaitStatuses().at(absl::AsciiStrToLower(flags.status));
  v1::WaitProcsRequest request;
  for (const std::string& name : flags.names) request.add_names(name);
  request.set_min_status(wanted);
  request.set_timeout_ms(Millis(wait_for));
  v1::WaitProcsResponse response;
  std::unique_ptr<Progress> progress = cli.NewProgress();
  {
    ProcPoller poller(*conn, *progress,
                      absl::StrCat("waiting for ", flags.names.size(),
                                   flags.names.size() == 1 ? " proc" : " procs",
                                   " to be ", v1::Status_Name(wanted)),
                      flags.names);
    RETURN_IF_ERROR(
        conn->Call(conn->host(), &v1::Host::Stub::WaitProcs, request, &response,
                   wait_for + cli.timeout(),
                   absl::StrCat("wait for ", v1::Status_Name(wanted), " ",
                                conn->OnHost())));
  }
  progress->Done();
  RETURN_IF_ERROR(cli.Print(response, FormatProcTable(response.procs()),
                            FormatProcTable(response.procs(), /*wide=*/true)));
  return CheckProcWait(flags.names, response, wanted, wait_for,
                       conn->address());
}

}  // namespace

void AddProcCommands(Cli& cli) {
  CLI::App* proc = cli.Group("proc", "procs of the host");

  auto spawn_flags = std::make_shared<SpawnFlags>();
  CLI::App* spawn = cli.Verb(
      proc, "spawn",
      "spawn proc NAME (or NAME_0 ... NAME_{N-1} with --count N), then wait "
      "until RUNNING (progress on a terminal). The procs are detached: they "
      "belong to the host, hold no client's lease and outlive meshctl; stop "
      "them with `meshctl proc stop`",
      "meshctl proc spawn trainer --count 4\n"
      "meshctl proc spawn tool --command /opt/app/bin/worker --arg=--verbose "
      "--env LOG=1 --no-wait",
      [&cli, spawn_flags] { return ProcSpawn(cli, *spawn_flags); });
  spawn
      ->add_option("name", spawn_flags->name,
                   "proc name, or mesh name with --count")
      ->required()
      ->check(NameValidator("proc name"));
  CLI::Option* count =
      spawn
          ->add_option("--count", spawn_flags->count,
                       "spawn N procs NAME_0 ... NAME_{N-1}, of rank 0 ... N-1")
          ->check(CLI::Range(uint64_t{1}, kMaxCount))
          ->type_name("N");
  spawn->add_option("--rank", spawn_flags->rank, "rank of the single proc")
      ->excludes(count)
      ->type_name("R");
  spawn
      ->add_option("--command", spawn_flags->command,
                   "bootstrap command (default: hostd's procd)")
      ->type_name("PATH");
  // One value per --arg, so that `--arg=-v` passes a dash argument.
  spawn
      ->add_option("--arg", spawn_flags->args,
                   "an argument of the command (repeatable; --arg=-v for "
                   "values starting with a dash)")
      ->allow_extra_args(false)
      ->type_name("A");
  spawn
      ->add_option("--env", spawn_flags->env,
                   "an environment variable of the command (repeatable)")
      ->allow_extra_args(false)
      ->check(EnvValidator())
      ->type_name("KEY=VALUE");
  AddSpawnWaitFlags(spawn, &spawn_flags->wait);

  cli.Verb(proc, "list",
           "list the procs of every host named (asked in parallel; one that "
           "fails is reported, the others listed), with their owner "
           "(identity) and lease holder (client id, or detached)",
           "meshctl proc list\n"
           "meshctl --hosts node1,node2 proc list -o wide",
           [&cli] { return ProcList(cli); });

  auto get_names = std::make_shared<std::vector<std::string>>();
  cli.Verb(proc, "get",
           "show procs in full (stderr tail included); exit 1 if one fails",
           "meshctl proc get trainer_0 trainer_1\n"
           "meshctl -o yaml proc get trainer_0",
           [&cli, get_names] { return ProcGet(cli, *get_names); })
      ->add_option("names", *get_names, "proc names")
      ->required()
      ->check(NameValidator("proc name"));

  auto stop_flags = std::make_shared<StopFlags>();
  CLI::App* stop = cli.Verb(
      proc, "stop",
      "stop procs (graceful, then SIGTERM, then SIGKILL), several at once; "
      "stopping a stopped proc succeeds; exit 1 if one fails",
      "meshctl proc stop trainer_2 --grace 10s --reason rebalance\n"
      "meshctl proc stop trainer_0 trainer_1 trainer_2",
      [&cli, stop_flags] { return ProcStop(cli, *stop_flags); });
  stop->add_option("names", stop_flags->names, "proc names")
      ->required()
      ->check(NameValidator("proc name"));
  stop->add_option("--reason", stop_flags->reason, "recorded on each proc");
  stop->add_option("--grace", stop_flags->grace,
                   "grace before each escalation (default: hostd's "
                   "--stop-grace)")
      ->check(DurationValidator())
      ->type_name("DURATION");

  auto wait_flags = std::make_shared<WaitFlags>();
  CLI::App* wait = cli.Verb(
      proc, "wait",
      "wait (server-side) until every named proc has a status; exit 1 if one "
      "ends elsewhere or on timeout",
      "meshctl proc wait trainer_0 trainer_1 --status running --timeout 30s",
      [&cli, wait_flags] { return ProcWait(cli, *wait_flags); });
  wait->add_option("names", wait_flags->names, "proc names")
      ->required()
      ->check(NameValidator("proc name"));
  std::vector<std::string> statuses;
  for (const auto& [status, unused] : WaitStatuses()) {
    statuses.push_back(status);
  }
  wait->add_option("--status", wait_flags->status, "status to wait for")
      ->transform(CLI::IsMember(statuses, CLI::ignore_case))
      ->capture_default_str();
  // Shadows the global --timeout: each call's deadline is this plus that.
  wait->add_option("--timeout", wait_flags->wait_for, "how long to wait")
      ->check(DurationValidator())
      ->type_name("DURATION")
      ->capture_default_str();
}

}  // namespace mesh::meshctl
