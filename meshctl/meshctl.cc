#include "meshctl/meshctl.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <memory>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "lib/auth/credentials.h"
#include "lib/grpc_status.h"
#include "lib/names.h"
#include "lib/nearest_name.h"
#include "lib/net/address.h"
#include "lib/net/host_port.h"
#include "lib/status.h"
#include "lib/version.h"
#include "meshctl/format.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"

namespace mesh {
namespace meshctl {
namespace {

// hostd's --stop-grace is not part of HostInfo. When no --grace is given, a
// stop's deadline assumes the host's grace is at most this long.
constexpr absl::Duration kAssumedStopGrace = absl::Seconds(30);
constexpr absl::Duration kMaxDuration = absl::Hours(24);
constexpr uint64_t kMaxCount = 100000;

constexpr char kDefaultStopReason[] = "stopped by meshctl";
constexpr char kDefaultShutdownReason[] = "host shut down by meshctl";

// Statuses a wait may ask for, as typed on the command line.
const std::map<std::string, v1::Status>& WaitStatuses() {
  static const auto* statuses = new std::map<std::string, v1::Status>{
      {"initializing", v1::INITIALIZING},
      {"running", v1::RUNNING},
      {"stopping", v1::STOPPING},
      {"stopped", v1::STOPPED},
      {"failed", v1::FAILED},
  };
  return *statuses;
}

// The messages the built-in actors handle (proto/actors.proto), named in the
// error for an unknown --type. Naming the classes also links their
// descriptors into the generated pool, where `actor send` looks types up.
std::vector<std::string> BuiltinMessageNames() {
  std::vector<std::string> names;
  for (const google::protobuf::Descriptor* descriptor :
       {v1::Echo::descriptor(), v1::GetActorId::descriptor(),
        v1::Increment::descriptor(), v1::GetCount::descriptor(),
        v1::Fail::descriptor(), v1::Seq::descriptor(),
        v1::GetSeqReport::descriptor()}) {
    names.push_back(descriptor->full_name());
  }
  return names;
}

// The message of type `type` (a full name, e.g. mesh.v1.Echo) with the
// fields given as JSON (none if `json` is empty), packed into an Any.
// INVALID_ARGUMENT for an unknown type or JSON that does not parse as it.
absl::StatusOr<google::protobuf::Any> BuildMessage(const std::string& type,
                                                   const std::string& json) {
  const google::protobuf::Descriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
          type);
  if (descriptor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--type: unknown message type \"", type,
        "\"; give a message's full name, e.g. one of the built-in ones: ",
        absl::StrJoin(BuiltinMessageNames(), ", ")));
  }
  std::unique_ptr<google::protobuf::Message> message(
      google::protobuf::MessageFactory::generated_factory()
          ->GetPrototype(descriptor)
          ->New());
  if (!json.empty()) {
    auto status =
        google::protobuf::util::JsonStringToMessage(json, message.get());
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--json: not a valid ", type, ": ", status.message().ToString()));
    }
  }
  google::protobuf::Any any;
  any.PackFrom(*message);
  return any;
}

uint32_t Millis(absl::Duration d) {
  return static_cast<uint32_t>(absl::ToInt64Milliseconds(d));
}

// CLI11 validators: they return an error text, empty when `value` is fine.
CLI::Validator DurationValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        absl::StatusOr<absl::Duration> d = ParseDuration(value);
        return d.ok() ? "" : std::string(d.status().message());
      },
      "", "DURATION");
}

CLI::Validator NameValidator(std::string what) {
  return CLI::Validator(
      [what](std::string& value) -> std::string {
        absl::Status status = ValidateName(value, what);
        return status.ok() ? "" : std::string(status.message());
      },
      "", "NAME");
}

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

// The part of a wait message about one resource that is not where asked:
// ` is FAILED (exit code 1): did not register within 10s`.
std::string Describe(const v1::ProcState& proc) {
  std::string text = absl::StrCat(" is ", v1::Status_Name(proc.status()));
  std::string exit = ExitText(proc);
  if (proc.has_term_signal()) {
    absl::StrAppend(&text, " (killed by ", exit, ")");
  } else if (proc.has_exit_code()) {
    absl::StrAppend(&text, " (exit code ", exit, ")");
  }
  if (!proc.reason().empty()) absl::StrAppend(&text, ": ", proc.reason());
  return text;
}

std::string Describe(const v1::ActorState& actor) {
  std::string text = absl::StrCat(" is ", v1::Status_Name(actor.status()));
  if (!actor.reason().empty()) absl::StrAppend(&text, ": ", actor.reason());
  return text;
}

// Shared by the proc and actor waits. `noun(name)` names one resource, e.g.
// `proc "p0_1"`.
template <typename State, typename Noun>
absl::Status CheckWait(const std::vector<std::string>& names,
                       const google::protobuf::RepeatedPtrField<State>& states,
                       v1::Status wanted, absl::Duration timeout, Noun noun) {
  std::map<std::string, const State*> by_name;
  for (const State& state : states) by_name[state.name()] = &state;
  std::vector<std::string> problems;
  bool unreachable = false;
  for (const std::string& name : names) {
    auto it = by_name.find(name);
    State missing;
    missing.set_name(name);
    missing.set_status(v1::NOT_EXIST);
    const State& state = it == by_name.end() ? missing : *it->second;
    if (Satisfies(state.status(), wanted)) continue;
    // Past the wanted status, or ended (STOPPED, FAILED): waiting longer
    // cannot help.
    if (state.status() > wanted || state.status() == v1::STOPPED ||
        state.status() == v1::FAILED) {
      unreachable = true;
    }
    problems.push_back(absl::StrCat(noun(name), Describe(state)));
  }
  if (problems.empty()) return absl::OkStatus();
  std::string wanted_name = v1::Status_Name(wanted);
  if (unreachable) {
    return absl::FailedPreconditionError(absl::StrCat(
        "waited for ", wanted_name, ", but ", absl::StrJoin(problems, "; ")));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "timed out after ", absl::FormatDuration(timeout), " waiting for ",
      wanted_name, ": ", absl::StrJoin(problems, "; ")));
}

// Parsed command line. Fields are shared by the subcommands that use them;
// only one subcommand runs.
struct Flags {
  std::string host = kDefaultHost;
  // Credentials (README "Security"); each falls back to its HOSTMESH_* env.
  std::string token_file;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string timeout = "10s";
  std::string output = "table";
  // host shutdown, proc stop, actor stop.
  std::string reason;
  std::string grace;  // Empty: hostd's --stop-grace.
  // host shutdown: hostd exits 0 (its unit leaves it stopped), not 75.
  bool stay_down = false;
  // proc spawn, actor spawn.
  std::string proc;
  std::string name;
  uint64_t count = 0;
  uint64_t rank = 0;
  std::string command;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string type;
  bool no_wait = false;
  // actor send.
  std::string message_type;
  std::string json;
  std::string wait_timeout = "30s";
  // proc wait.
  std::vector<std::string> names;
  std::string status = "running";
  std::string wait_for = "10s";
};

// One run of meshctl: the command line, then the selected command. Not
// thread-safe; lives for one RunMeshctl call.
class Meshctl {
 public:
  explicit Meshctl(std::ostream& out) : out_(out) {}
  Meshctl(const Meshctl&) = delete;
  Meshctl& operator=(const Meshctl&) = delete;

  // Declares every subcommand and flag on `app`.
  void Declare(CLI::App& app);
  // Checks what CLI11 cannot see (e.g. the longest name --count derives);
  // an error is a usage error.
  absl::Status Validate();
  // Runs the subcommand CLI11 selected; an error is a failed call.
  absl::Status Run();

 private:
  using Command = absl::Status (Meshctl::*)();

  CLI::App* Leaf(CLI::App* parent, const std::string& name,
                 const std::string& description, Command command);

  // Commands.
  absl::Status HostStatus();
  absl::Status HostShutdown();
  absl::Status ProcSpawn();
  absl::Status ProcList();
  absl::Status ProcGet();
  absl::Status ProcStop();
  absl::Status ProcWait();
  absl::Status OwnerList();
  absl::Status ActorSpawn();
  absl::Status ActorList();
  absl::Status ActorGet();
  absl::Status ActorStop();
  absl::Status ActorSend();

  // One unary call with a deadline of `deadline` from now; an error names
  // `what` (e.g. `get proc "p0" on host "h:7450"`).
  template <typename Stub, typename Request, typename Response>
  absl::Status Call(Stub& stub,
                    grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                 const Request&, Response*),
                    const Request& request, Response* response,
                    absl::Duration deadline, const std::string& what) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    return Annotate(ExplainCallError(FromGrpcStatus((stub.*method)(
                                         &context, request, response)),
                                     flags_.host, credentials_),
                    what);
  }

  // The one place credentials are chosen: the flags (or their env vars);
  // with none, on a loopback host, the local hostd's admin token if this
  // user can read it.
  absl::StatusOr<ClientCredentials> Credentials() const;
  absl::Status Connect();
  v1::Host::Stub& HostStub();
  // The host's Proc service: the actor verbs of any of its procs, each
  // request naming its proc.
  v1::Proc::Stub& ProcStub();

  std::string OnHost() const {
    return absl::StrCat("on host \"", flags_.host, "\"");
  }
  std::string OnProc(const std::string& proc) const {
    return absl::StrCat("on proc \"", proc, "\" (host \"", flags_.host, "\")");
  }
  // Deadline of a call that stops procs: it waits for their grace (twice:
  // to SIGTERM, then to SIGKILL).
  absl::Duration StopDeadline() const {
    return rpc_timeout_ + 2 * (grace_ms_ > 0 ? absl::Milliseconds(grace_ms_)
                                             : kAssumedStopGrace);
  }
  absl::Status Print(const google::protobuf::Message& message,
                     const std::string& table);

  std::ostream& out_;
  Flags flags_;
  std::vector<std::pair<CLI::App*, Command>> commands_;
  // Set by Run from flags_.
  absl::Duration rpc_timeout_;
  uint32_t grace_ms_ = 0;
  bool json_ = false;
  ClientCredentials credentials_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Host::Stub> host_stub_;
  std::unique_ptr<v1::Proc::Stub> proc_stub_;
  // `actor send`: its command, and the message Validate built.
  CLI::App* actor_send_ = nullptr;
  google::protobuf::Any message_;
};

CLI::App* Meshctl::Leaf(CLI::App* parent, const std::string& name,
                        const std::string& description, Command command) {
  CLI::App* app = parent->add_subcommand(name, description);
  commands_.emplace_back(app, command);
  return app;
}

void Meshctl::Declare(CLI::App& app) {
  // Global flags may follow a subcommand too (`meshctl proc list -o json`).
  app.fallthrough();
  app.require_subcommand(1);
  app.set_version_flag("--version", absl::StrCat("meshctl ", kHostmeshVersion),
                       "print meshctl's version and exit");
  app.add_option("--host", flags_.host, "hostd address, host:port")
      ->envname(kHostEnv)
      ->capture_default_str();
  auto* auth = app.add_option_group("Credentials", "README \"Security\"");
  auth->add_option("--token-file", flags_.token_file,
                   "file holding a token (mode 0600/0640); on a loopback "
                   "host, default /run/hostmesh/admin.token if readable")
      ->envname(kTokenFileEnv);
  auth->add_option("--tls-ca", flags_.tls_ca,
                   "PEM CA of the hosts' certificates (turns TLS on)")
      ->envname(kTlsCaEnv);
  auth->add_option("--tls-cert", flags_.tls_cert, "PEM client certificate")
      ->envname(kTlsCertEnv);
  auth->add_option("--tls-key", flags_.tls_key,
                   "PEM key of --tls-cert (mode 0600)")
      ->envname(kTlsKeyEnv);
  app.add_option("--timeout", flags_.timeout,
                 "deadline of each call, e.g. 500ms, 10s, 2m")
      ->check(DurationValidator())
      ->type_name("DURATION")
      ->capture_default_str();
  app.add_option("-o,--output", flags_.output, "output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();

  // host ...
  CLI::App* host = app.add_subcommand("host", "the host (hostd) itself");
  host->require_subcommand(1);
  Leaf(host, "status", "show the host's info", &Meshctl::HostStatus);
  CLI::App* shutdown =
      Leaf(host, "shutdown",
           "stop every proc (graceful, then SIGTERM, then SIGKILL), "
           "then hostd exits",
           &Meshctl::HostShutdown);
  shutdown
      ->add_option("--grace", flags_.grace,
                   "grace before each escalation (default: hostd's "
                   "--stop-grace)")
      ->check(DurationValidator())
      ->type_name("DURATION");
  shutdown->add_option("--reason", flags_.reason, "recorded on every proc");
  shutdown->add_flag("--stay-down", flags_.stay_down,
                     "hostd then exits 0 and its systemd unit leaves it "
                     "stopped; without it hostd exits 75 and the unit starts "
                     "it again, with no proc");

  // proc ...
  CLI::App* proc = app.add_subcommand("proc", "procs of the host");
  proc->require_subcommand(1);
  CLI::App* spawn =
      Leaf(proc, "spawn",
           "spawn proc NAME (or NAME_0 ... NAME_{N-1} with --count N), then "
           "wait until RUNNING. The procs are detached: they belong to the "
           "host, hold no client's lease and outlive meshctl; stop them with "
           "`meshctl proc stop`",
           &Meshctl::ProcSpawn);
  spawn->add_option("name", flags_.name, "proc name, or mesh name with --count")
      ->required()
      ->check(NameValidator("proc name"));
  CLI::Option* count =
      spawn
          ->add_option("--count", flags_.count,
                       "spawn N procs NAME_0 ... NAME_{N-1}, of rank 0 ... N-1")
          ->check(CLI::Range(uint64_t{1}, kMaxCount))
          ->type_name("N");
  spawn->add_option("--rank", flags_.rank, "rank of the single proc")
      ->excludes(count)
      ->type_name("R");
  spawn
      ->add_option("--command", flags_.command,
                   "bootstrap command (default: hostd's procd)")
      ->type_name("PATH");
  // One value per --arg, so that `--arg=-v` passes a dash argument.
  spawn
      ->add_option("--arg", flags_.args,
                   "an argument of the command (repeatable; --arg=-v for "
                   "values starting with a dash)")
      ->allow_extra_args(false)
      ->type_name("A");
  spawn
      ->add_option("--env", flags_.env,
                   "an environment variable of the command (repeatable)")
      ->allow_extra_args(false)
      ->check(EnvValidator())
      ->type_name("KEY=VALUE");
  spawn->add_flag("--no-wait", flags_.no_wait,
                  "answer once spawned; do not wait for RUNNING");
  spawn
      ->add_option("--wait-timeout", flags_.wait_timeout,
                   "how long to wait for RUNNING")
      ->check(DurationValidator())
      ->type_name("DURATION")
      ->capture_default_str();

  Leaf(proc, "list",
       "list the host's procs, with their owner (identity) and lease "
       "holder (client id, or detached)",
       &Meshctl::ProcList);
  Leaf(proc, "get", "show one proc in full", &Meshctl::ProcGet)
      ->add_option("name", flags_.name, "proc name")
      ->required()
      ->check(NameValidator("proc name"));
  CLI::App* stop = Leaf(proc, "stop",
                        "stop a proc (graceful, then SIGTERM, then SIGKILL); "
                        "stopping a stopped proc succeeds",
                        &Meshctl::ProcStop);
  stop->add_option("name", flags_.name, "proc name")
      ->required()
      ->check(NameValidator("proc name"));
  stop->add_option("--reason", flags_.reason, "recorded on the proc");
  stop->add_option("--grace", flags_.grace,
                   "grace before each escalation (default: hostd's "
                   "--stop-grace)")
      ->check(DurationValidator())
      ->type_name("DURATION");
  CLI::App* wait = Leaf(proc, "wait",
                        "wait (server-side) until every named proc has a "
                        "status; exit 1 if one ends elsewhere or on timeout",
                        &Meshctl::ProcWait);
  wait->add_option("names", flags_.names, "proc names")
      ->required()
      ->check(NameValidator("proc name"));
  std::vector<std::string> statuses;
  for (const auto& [status, unused] : WaitStatuses())
    statuses.push_back(status);
  wait->add_option("--status", flags_.status, "status to wait for")
      ->transform(CLI::IsMember(statuses, CLI::ignore_case))
      ->capture_default_str();
  // Shadows the global --timeout: each call's deadline is this plus that.
  wait->add_option("--timeout", flags_.wait_for, "how long to wait")
      ->check(DurationValidator())
      ->type_name("DURATION")
      ->capture_default_str();

  // owner ...
  CLI::App* owner = app.add_subcommand(
      "owner", "clients whose leases keep procs of the host alive");
  owner->require_subcommand(1);
  Leaf(owner, "list",
       "list the clients holding procs: their identity, whether they are "
       "connected, how many procs, and when a vanished one's procs are "
       "stopped (hostd --owner-lease)",
       &Meshctl::OwnerList);

  // actor ...  (the host's Proc service, naming the proc)
  CLI::App* actor = app.add_subcommand("actor", "actors of one proc");
  actor->require_subcommand(1);
  CLI::App* actor_spawn =
      Leaf(actor, "spawn",
           "spawn actor NAME of a registered type on PROC, then wait until "
           "RUNNING",
           &Meshctl::ActorSpawn);
  actor_spawn->add_option("proc", flags_.proc, "proc name")
      ->required()
      ->check(NameValidator("proc name"));
  actor_spawn->add_option("name", flags_.name, "actor name")
      ->required()
      ->check(NameValidator("actor name"));
  actor_spawn
      ->add_option("--type", flags_.type,
                   "registered actor type, e.g. mesh.echo")
      ->required();
  actor_spawn->add_option("--rank", flags_.rank, "rank of the actor")
      ->type_name("R");
  actor_spawn->add_flag("--no-wait", flags_.no_wait,
                        "answer once spawned; do not wait for RUNNING");
  actor_spawn
      ->add_option("--wait-timeout", flags_.wait_timeout,
                   "how long to wait for RUNNING")
      ->check(DurationValidator())
      ->type_name("DURATION")
      ->capture_default_str();
  Leaf(actor, "list", "list the actors of PROC", &Meshctl::ActorList)
      ->add_option("proc", flags_.proc, "proc name")
      ->required()
      ->check(NameValidator("proc name"));
  CLI::App* actor_get =
      Leaf(actor, "get", "show one actor in full", &Meshctl::ActorGet);
  actor_get->add_option("proc", flags_.proc, "proc name")
      ->required()
      ->check(NameValidator("proc name"));
  actor_get->add_option("name", flags_.name, "actor name")
      ->required()
      ->check(NameValidator("actor name"));
  CLI::App* actor_stop =
      Leaf(actor, "stop", "stop an actor of PROC", &Meshctl::ActorStop);
  actor_stop->add_option("proc", flags_.proc, "proc name")
      ->required()
      ->check(NameValidator("proc name"));
  actor_stop->add_option("name", flags_.name, "actor name")
      ->required()
      ->check(NameValidator("actor name"));
  actor_stop->add_option("--reason", flags_.reason, "recorded on the actor");
  actor_send_ = Leaf(actor, "send",
                     "send a message to actor NAME of PROC through the proc's "
                     "mailbox and print the actor's reply (waits --timeout)",
                     &Meshctl::ActorSend);
  actor_send_->add_option("proc", flags_.proc, "proc name")
      ->required()
      ->check(NameValidator("proc name"));
  actor_send_->add_option("name", flags_.name, "actor name")
      ->required()
      ->check(NameValidator("actor name"));
  actor_send_
      ->add_option("--type", flags_.message_type,
                   "message type, e.g. mesh.v1.Echo (proto/actors.proto)")
      ->required();
  actor_send_->add_option(
      "--json", flags_.json,
      "the message's fields as protobuf JSON, e.g. '{\"text\":\"hi\"}' "
      "(default: none set)");

  // Runs no command (RunMeshctl prints the version); the host's version is
  // in `host status`.
  app.add_subcommand("version",
                     "print meshctl's version (the host's: host status)");
}

absl::Status Meshctl::Validate() {
  // The validators accepted every duration, so these parse.
  ASSIGN_OR_RETURN(rpc_timeout_, ParseDuration(flags_.timeout));
  if (!flags_.grace.empty()) {
    ASSIGN_OR_RETURN(absl::Duration grace, ParseDuration(flags_.grace));
    grace_ms_ = Millis(grace);
  }
  json_ = flags_.output == "json";
  if (actor_send_ != nullptr && actor_send_->parsed()) {
    ASSIGN_OR_RETURN(message_, BuildMessage(flags_.message_type, flags_.json));
  }
  if (flags_.count > 0) {
    // The last name is the longest: "p0" with --count 10 ends at "p0_9".
    RETURN_IF_ERROR(
        ValidateName(MemberName(flags_.name, flags_.count - 1), "proc name"));
  }
  return absl::OkStatus();
}

absl::Status Meshctl::Run() {
  for (const auto& [app, command] : commands_) {
    if (app->parsed()) {
      RETURN_IF_ERROR(Connect());
      return (this->*command)();
    }
  }
  return absl::InternalError("no command was selected");
}

absl::StatusOr<ClientCredentials> Meshctl::Credentials() const {
  ASSIGN_OR_RETURN(
      ClientCredentials credentials,
      ClientCredentials::FromFiles(flags_.token_file, flags_.tls_ca,
                                   flags_.tls_cert, flags_.tls_key));
  absl::StatusOr<HostPort> host = ParseHostPort(flags_.host, "--host");
  if (credentials.empty() && host.ok() && IsLoopbackHost(host->host) &&
      access(kLocalAdminTokenFile, R_OK) == 0) {
    return ClientCredentials::FromFiles(kLocalAdminTokenFile, "", "", "");
  }
  return credentials;
}

absl::Status Meshctl::Connect() {
  if (channel_ != nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(credentials_, Credentials());
  channel_ = NewAuthedChannel(flags_.host, credentials_);
  host_stub_ = v1::Host::NewStub(channel_);
  proc_stub_ = v1::Proc::NewStub(channel_);
  return absl::OkStatus();
}

v1::Host::Stub& Meshctl::HostStub() { return *host_stub_; }

v1::Proc::Stub& Meshctl::ProcStub() { return *proc_stub_; }

absl::Status Meshctl::Print(const google::protobuf::Message& message,
                            const std::string& table) {
  if (json_) {
    ASSIGN_OR_RETURN(std::string json, ToJson(message));
    out_ << json;
  } else {
    out_ << table;
  }
  out_.flush();
  return absl::OkStatus();
}

absl::Status Meshctl::HostStatus() {
  v1::HostInfo info;
  RETURN_IF_ERROR(Call(HostStub(), &v1::Host::Stub::GetHostInfo,
                       v1::GetHostInfoRequest(), &info, rpc_timeout_,
                       absl::StrCat("get info of host \"", flags_.host, "\"")));
  return Print(info, FormatHostInfo(info));
}

absl::Status Meshctl::HostShutdown() {
  v1::ShutdownHostRequest request;
  request.set_reason(flags_.reason.empty() ? kDefaultShutdownReason
                                           : flags_.reason);
  request.set_grace_ms(grace_ms_);
  request.set_stay_down(flags_.stay_down);
  v1::ShutdownHostResponse response;
  RETURN_IF_ERROR(Call(HostStub(), &v1::Host::Stub::ShutdownHost, request,
                       &response, StopDeadline(),
                       absl::StrCat("shut down host \"", flags_.host, "\"")));
  if (!json_ && response.stopped().empty()) {
    out_ << "host \"" << flags_.host << "\" shut down; no proc was running\n";
    return absl::OkStatus();
  }
  return Print(response, FormatProcTable(response.stopped()));
}

absl::Status Meshctl::ProcSpawn() {
  std::vector<v1::CreateOrUpdateProcRequest> requests;
  if (flags_.count == 0) {
    requests.emplace_back().set_name(flags_.name);
    requests.back().set_rank(flags_.rank);
  } else {
    for (uint64_t rank = 0; rank < flags_.count; ++rank) {
      requests.emplace_back().set_name(MemberName(flags_.name, rank));
      requests.back().set_rank(rank);
    }
  }
  v1::ProcSpec spec;
  spec.set_command(flags_.command);
  for (const std::string& arg : flags_.args) spec.add_args(arg);
  for (const std::string& entry : flags_.env) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(entry, absl::MaxSplits('=', 1));
    (*spec.mutable_env())[kv.first] = kv.second;
  }
  std::vector<std::string> names;
  for (v1::CreateOrUpdateProcRequest& request : requests) {
    *request.mutable_spec() = spec;
    names.push_back(request.name());
  }

  v1::ListProcsResponse spawned;
  for (const v1::CreateOrUpdateProcRequest& request : requests) {
    absl::Status status =
        Call(HostStub(), &v1::Host::Stub::CreateOrUpdateProc, request,
             spawned.add_procs(), rpc_timeout_,
             absl::StrCat("spawn proc \"", request.name(), "\" ", OnHost()));
    if (!status.ok()) {
      spawned.mutable_procs()->RemoveLast();
      if (spawned.procs_size() > 0) {
        // Those are spawned; the same command again is safe (idempotent).
        status = Annotate(status,
                          absl::StrCat("spawned ", spawned.procs_size(), " of ",
                                       requests.size(), " procs, then"));
      }
      return status;
    }
  }
  if (flags_.no_wait) return Print(spawned, FormatProcTable(spawned.procs()));

  ASSIGN_OR_RETURN(absl::Duration wait_for, ParseDuration(flags_.wait_timeout));
  v1::WaitProcsRequest wait;
  for (const std::string& name : names) wait.add_names(name);
  wait.set_min_status(v1::RUNNING);
  wait.set_timeout_ms(Millis(wait_for));
  v1::WaitProcsResponse response;
  RETURN_IF_ERROR(Call(HostStub(), &v1::Host::Stub::WaitProcs, wait, &response,
                       wait_for + rpc_timeout_,
                       absl::StrCat("wait for RUNNING ", OnHost())));
  RETURN_IF_ERROR(Print(response, FormatProcTable(response.procs())));
  return CheckProcWait(names, response, v1::RUNNING, wait_for, flags_.host);
}

absl::Status Meshctl::ProcList() {
  v1::ListProcsResponse response;
  RETURN_IF_ERROR(Call(HostStub(), &v1::Host::Stub::ListProcs,
                       v1::ListProcsRequest(), &response, rpc_timeout_,
                       absl::StrCat("list procs ", OnHost())));
  return Print(response, FormatProcTable(response.procs()));
}

absl::Status Meshctl::ProcGet() {
  v1::GetProcStateRequest request;
  request.set_name(flags_.name);
  v1::ProcState state;
  RETURN_IF_ERROR(Call(
      HostStub(), &v1::Host::Stub::GetProcState, request, &state, rpc_timeout_,
      absl::StrCat("get proc \"", flags_.name, "\" ", OnHost())));
  return Print(state, FormatProcDetail(state));
}

absl::Status Meshctl::ProcStop() {
  v1::StopProcRequest request;
  request.set_name(flags_.name);
  request.set_reason(flags_.reason.empty() ? kDefaultStopReason
                                           : flags_.reason);
  request.set_grace_ms(grace_ms_);
  v1::ListProcsResponse stopped;
  RETURN_IF_ERROR(
      Call(HostStub(), &v1::Host::Stub::StopProc, request, stopped.add_procs(),
           StopDeadline(),
           absl::StrCat("stop proc \"", flags_.name, "\" ", OnHost())));
  return Print(stopped.procs(0), FormatProcTable(stopped.procs()));
}

absl::Status Meshctl::ProcWait() {
  ASSIGN_OR_RETURN(absl::Duration wait_for, ParseDuration(flags_.wait_for));
  v1::Status wanted = WaitStatuses().at(absl::AsciiStrToLower(flags_.status));
  v1::WaitProcsRequest request;
  for (const std::string& name : flags_.names) request.add_names(name);
  request.set_min_status(wanted);
  request.set_timeout_ms(Millis(wait_for));
  v1::WaitProcsResponse response;
  RETURN_IF_ERROR(
      Call(HostStub(), &v1::Host::Stub::WaitProcs, request, &response,
           wait_for + rpc_timeout_,
           absl::StrCat("wait for ", v1::Status_Name(wanted), " ", OnHost())));
  RETURN_IF_ERROR(Print(response, FormatProcTable(response.procs())));
  return CheckProcWait(flags_.names, response, wanted, wait_for, flags_.host);
}

absl::Status Meshctl::OwnerList() {
  v1::ListOwnersResponse response;
  RETURN_IF_ERROR(Call(HostStub(), &v1::Host::Stub::ListOwners,
                       v1::ListOwnersRequest(), &response, rpc_timeout_,
                       absl::StrCat("list owners ", OnHost())));
  return Print(response, FormatOwnerTable(response.owners(), absl::Now()));
}

absl::Status Meshctl::ActorSpawn() {
  v1::Proc::Stub& stub = ProcStub();
  v1::CreateOrUpdateActorRequest request;
  request.set_proc(flags_.proc);
  request.set_name(flags_.name);
  request.set_type(flags_.type);
  request.set_rank(flags_.rank);
  v1::ListActorsResponse spawned;
  RETURN_IF_ERROR(Call(
      stub, &v1::Proc::Stub::CreateOrUpdateActor, request, spawned.add_actors(),
      rpc_timeout_,
      absl::StrCat("spawn actor \"", flags_.name, "\" ", OnProc(flags_.proc))));
  if (flags_.no_wait) return Print(spawned, FormatActorTable(spawned.actors()));

  ASSIGN_OR_RETURN(absl::Duration wait_for, ParseDuration(flags_.wait_timeout));
  v1::WaitActorsRequest wait;
  wait.set_proc(flags_.proc);
  wait.add_names(flags_.name);
  wait.set_min_status(v1::RUNNING);
  wait.set_timeout_ms(Millis(wait_for));
  v1::WaitActorsResponse response;
  RETURN_IF_ERROR(Call(stub, &v1::Proc::Stub::WaitActors, wait, &response,
                       wait_for + rpc_timeout_,
                       absl::StrCat("wait for RUNNING ", OnProc(flags_.proc))));
  RETURN_IF_ERROR(Print(response, FormatActorTable(response.actors())));
  return CheckWait({flags_.name}, response.actors(), v1::RUNNING, wait_for,
                   [&](const std::string& name) {
                     return absl::StrCat("actor \"", name, "\" ",
                                         OnProc(flags_.proc));
                   });
}

absl::Status Meshctl::ActorList() {
  v1::ListActorsRequest request;
  request.set_proc(flags_.proc);
  v1::ListActorsResponse response;
  RETURN_IF_ERROR(Call(ProcStub(), &v1::Proc::Stub::ListActors, request,
                       &response, rpc_timeout_,
                       absl::StrCat("list actors ", OnProc(flags_.proc))));
  return Print(response, FormatActorTable(response.actors()));
}

absl::Status Meshctl::ActorGet() {
  v1::GetActorStateRequest request;
  request.set_proc(flags_.proc);
  request.set_name(flags_.name);
  v1::ActorState state;
  RETURN_IF_ERROR(Call(
      ProcStub(), &v1::Proc::Stub::GetActorState, request, &state, rpc_timeout_,
      absl::StrCat("get actor \"", flags_.name, "\" ", OnProc(flags_.proc))));
  return Print(state, FormatActorDetail(state));
}

absl::Status Meshctl::ActorStop() {
  v1::StopActorRequest request;
  request.set_proc(flags_.proc);
  request.set_name(flags_.name);
  request.set_reason(flags_.reason.empty() ? kDefaultStopReason
                                           : flags_.reason);
  v1::ListActorsResponse stopped;
  RETURN_IF_ERROR(Call(
      ProcStub(), &v1::Proc::Stub::StopActor, request, stopped.add_actors(),
      rpc_timeout_,
      absl::StrCat("stop actor \"", flags_.name, "\" ", OnProc(flags_.proc))));
  return Print(stopped.actors(0), FormatActorTable(stopped.actors()));
}

absl::Status Meshctl::ActorSend() {
  v1::CallActorRequest request;
  request.set_proc(flags_.proc);
  request.set_actor(flags_.name);
  *request.mutable_payload() = message_;
  // The proc gives up on the reply at --timeout and says which actor did not
  // answer; the call's own deadline is a little later so that answer arrives.
  request.set_timeout_ms(Millis(rpc_timeout_));
  v1::CallActorResponse response;
  RETURN_IF_ERROR(
      Call(ProcStub(), &v1::Proc::Stub::CallActor, request, &response,
           rpc_timeout_ + absl::Seconds(1),
           absl::StrCat("send ", flags_.message_type, " to actor \"",
                        flags_.name, "\" ", OnProc(flags_.proc))));
  ASSIGN_OR_RETURN(std::string text, FormatReply(response.reply(), json_));
  out_ << text;
  out_.flush();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<absl::Duration> ParseDuration(const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a duration; write e.g. 500ms, 10s, 2m, 1m30s"));
  }
  if (d < absl::Milliseconds(1) || d > kMaxDuration) {
    return absl::InvalidArgumentError(absl::StrCat(
        "duration \"", text, "\" is out of range; it must be from 1ms to ",
        absl::FormatDuration(kMaxDuration)));
  }
  return d;
}

bool Satisfies(v1::Status have, v1::Status wanted) {
  if (have == wanted) return true;
  switch (wanted) {
    case v1::INITIALIZING:
      return have == v1::RUNNING;
    case v1::STOPPING:
      return have == v1::STOPPED;
    default:
      return false;
  }
}

absl::Status CheckProcWait(const std::vector<std::string>& names,
                           const v1::WaitProcsResponse& response,
                           v1::Status wanted, absl::Duration timeout,
                           const std::string& host) {
  return CheckWait(names, response.procs(), wanted, timeout,
                   [&](const std::string& name) {
                     std::string noun = absl::StrCat("proc \"", name, "\"");
                     if (!host.empty()) {
                       absl::StrAppend(&noun, " on host \"", host, "\"");
                     }
                     return noun;
                   });
}

// After a failed parse (`e`): if a word where a command belongs is none of
// that command group's, "unknown command 'lsit' for 'meshctl proc', did you
// mean 'list'?" (or naming the commands there are); if no command came,
// "'meshctl proc' needs a command: spawn, list, ..."; else "" (CLI11's
// message).
std::string CommandError(CLI::App& app, const CLI::ParseError& e) {
  CLI::App* group = &app;
  std::string path = app.get_name();
  while (!group->get_subcommands().empty()) {
    group = group->get_subcommands().front();
    absl::StrAppend(&path, " ", group->get_name());
  }
  std::vector<std::string> commands;
  for (const CLI::App* command : group->get_subcommands(
           [](const CLI::App* sub) { return !sub->get_name().empty(); })) {
    commands.push_back(command->get_name());
  }
  const std::vector<std::string> words = app.remaining(/*recurse=*/true);
  if (!commands.empty() && words.empty() && e.get_name() == "RequiredError" &&
      absl::StrContains(e.what(), "subcommand")) {
    return absl::StrCat("'", path,
                        "' needs a command: ", absl::StrJoin(commands, ", "));
  }
  // An unknown flag before it: CLI11 says so.
  if (commands.empty() || words.empty() || words.front().empty() ||
      words.front()[0] == '-') {
    return "";
  }
  const std::string& word = words.front();
  std::string text = absl::StrCat("unknown command '", word, "'");
  if (group != &app) absl::StrAppend(&text, " for '", path, "'");
  std::string meant = DidYouMean(word, commands, ", did you mean '", "'?");
  if (meant.empty()) {
    meant = absl::StrCat(" (commands: ", absl::StrJoin(commands, ", "), ")");
  }
  return text + meant;
}

}  // namespace meshctl

int RunMeshctl(int argc, char** argv, std::ostream& out, std::ostream& err) {
  meshctl::Meshctl meshctl(out);
  CLI::App app("meshctl: operate hostmesh hosts, their procs and actors",
               "meshctl");
  meshctl.Declare(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (std::string unknown = meshctl::CommandError(app, e); !unknown.empty()) {
      err << "meshctl: " << unknown << "\n"
          << "Run with --help for more information." << std::endl;
      return 2;
    }
    // --help and --version are "parse errors" with exit code 0, printed to
    // `out`.
    return app.exit(e, out, err) == 0 ? 0 : 2;
  }
  if (app.got_subcommand("version")) {
    out << "meshctl " << kHostmeshVersion << std::endl;
    return 0;
  }
  if (absl::Status status = meshctl.Validate(); !status.ok()) {
    err << "meshctl: " << status.message() << "\n"
        << "Run with --help for more information." << std::endl;
    return 2;
  }
  if (absl::Status status = meshctl.Run(); !status.ok()) {
    err << "meshctl: " << absl::StatusCodeToString(status.code()) << ": "
        << status.message() << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace mesh
