// What every meshctl verb group (meshctl/host.cc, proc.cc, actor.cc, ...)
// builds on: the global flags, the hosts they name, a connection to each,
// the unary call with a deadline, output in the chosen -o format, failures
// reported per name or per host, and progress on a terminal. A verb group
// file declares its verbs with Cli::Verb and is registered in
// meshctl/commands.cc; /work/notes/meshctl-layout.md is the guide.
#ifndef HOSTMESH_MESHCTL_CLI_H_
#define HOSTMESH_MESHCTL_CLI_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "lib/auth/credentials.h"
#include "lib/grpc_status.h"
#include "lib/status.h"
#include "meshctl/format.h"
#include "proto/host.grpc.pb.h"

namespace mesh::meshctl {

inline constexpr int kDefaultPort = 7450;
inline constexpr char kDefaultHost[] = "127.0.0.1:7450";
inline constexpr char kHostEnv[] = "MESH_HOST";
// The admin token a hostd with the default runtime dir writes for the
// same user's tools.
inline constexpr char kLocalAdminTokenFile[] = "/run/hostmesh/admin.token";

// hostd's --stop-grace is not part of HostInfo. When no --grace is given, a
// stop's deadline assumes the host's grace is at most this long.
inline constexpr absl::Duration kAssumedStopGrace = absl::Seconds(30);

// ---- Host lists (pure; unit-tested) ----

// One host as typed, with the default port when it has none: "node7" ->
// "node7:7450", "::1" or "[::1]" -> "[::1]:7450", "h:99" stays.
// INVALID_ARGUMENT naming `what` (e.g. "--host", "MESH_HOST", "hosts.txt
// line 3") if it is not a host[:port].
absl::StatusOr<std::string> NormalizeHost(const std::string& text,
                                          const std::string& what);
// A comma list ("h1,h2:99"); blanks around entries are ignored, an empty
// entry is an error.
absl::StatusOr<std::vector<std::string>> ParseHostList(const std::string& text,
                                                       const std::string& what);
// A hosts file's text: one host per line; blank lines and '#' comments
// (whole-line or trailing) are skipped. `path` names it in errors.
absl::StatusOr<std::vector<std::string>> ParseHostsFile(
    const std::string& text, const std::string& path);

// The hosts meshctl talks to: the --host/--hosts values and the hosts file
// if any was given (in that order, duplicates dropped); else MESH_HOST
// (`env`, unset: nullptr); else 127.0.0.1:7450.
absl::StatusOr<std::vector<std::string>> ResolveHosts(
    const std::vector<std::string>& flag_hosts, const std::string& hosts_file,
    const char* env);

// ---- Errors ----

// Marks `status` as a usage error: meshctl prints it with a --help hint and
// exits 2 (instead of 1 for a failed call).
absl::Status UsageError(absl::Status status);
bool IsUsageError(const absl::Status& status);

// ---- One host ----

// A connection to one hostd: its Host service (procs) and its Proc service
// (the actors of any of its procs, each request naming the proc).
// Thread-safe (gRPC stubs are).
class HostConn {
 public:
  HostConn(std::string address, ClientCredentials credentials);

  // host:port as meshctl dials it.
  const std::string& address() const { return address_; }
  v1::Host::Stub& host() { return *host_stub_; }
  v1::Proc::Stub& proc() { return *proc_stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // One unary call with a deadline of `deadline` from now; an error is
  // prefixed with `what` (e.g. `get proc "p0" on host "h:7450"`) and
  // explained (lib/auth ExplainCallError). Example:
  //   v1::ProcState state;
  //   RETURN_IF_ERROR(conn.Call(conn.host(), &v1::Host::Stub::GetProcState,
  //                             request, &state, cli.timeout(), "get ..."));
  template <typename Stub, typename Request, typename Response>
  absl::Status Call(Stub& stub,
                    grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                 const Request&, Response*),
                    const Request& request, Response* response,
                    absl::Duration deadline, const std::string& what) const {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    return Annotate(ExplainCallError(FromGrpcStatus((stub.*method)(
                                         &context, request, response)),
                                     address_, credentials_),
                    what);
  }

  // ` on host "h:7450"`-style words for messages.
  std::string OnHost() const;
  std::string OnProc(const std::string& proc) const;

 private:
  const std::string address_;
  const ClientCredentials credentials_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Host::Stub> host_stub_;
  std::unique_ptr<v1::Proc::Stub> proc_stub_;
};

// ---- Progress ----

// One status line on the error stream, redrawn in place ("\r...\x1b[K"),
// only when progress is on (the error stream is a terminal, or --progress
// always); erased by Done() or the destructor. Not thread-safe.
class Progress {
 public:
  Progress(std::ostream& err, bool enabled) : err_(err), enabled_(enabled) {}
  ~Progress() { Done(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool enabled() const { return enabled_; }
  void Show(const std::string& line);
  void Done();

 private:
  std::ostream& err_;
  const bool enabled_;
  bool shown_ = false;
};

// "40 running, 24 starting" for procs `names` in `procs` (those absent count
// as "starting"; every proc listed if `names` is empty), the statuses in a
// fixed order, zeros left out.
std::string CountByStatus(
    const std::vector<std::string>& names,
    const google::protobuf::RepeatedPtrField<v1::ProcState>& procs);

// While a long call runs (a wait for RUNNING, a shutdown), polls the host's
// ListProcs every 250 ms on its own thread and shows
// "<label>: <CountByStatus>" on `progress`; does nothing if progress is off.
// Stop() (or the destructor) ends the polling; the line stays until the
// Progress is done.
class ProcPoller {
 public:
  ProcPoller(HostConn& conn, Progress& progress, std::string label,
             std::vector<std::string> names);
  ~ProcPoller() { Stop(); }
  ProcPoller(const ProcPoller&) = delete;
  ProcPoller& operator=(const ProcPoller&) = delete;
  void Stop();

 private:
  void Loop();

  HostConn& conn_;
  Progress& progress_;
  const std::string label_;
  const std::vector<std::string> names_;
  absl::Notification stop_;
  std::thread thread_;
};

// Runs fn(0) ... fn(n - 1) on up to `width` threads at once; returns when
// all are done.
void ParallelFor(size_t n, size_t width, const std::function<void(size_t)>& fn);

// ---- The command line ----

class Cli {
 public:
  Cli(std::ostream& out, std::ostream& err);
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;

  CLI::App& app() { return app_; }

  // Registration (before the parse).
  //
  // The command group `name` (e.g. "host"), created on first use with
  // `description`; later calls return the same one.
  CLI::App* Group(const std::string& name, const std::string& description);
  // A verb under `parent` (a group, or &app() for a top-level verb).
  // `example` is one or more command lines shown under "Example:" in its
  // --help. `run` runs if it is the verb given; its flags are usually
  // fields of a struct held by a std::shared_ptr that `run` captures.
  CLI::App* Verb(CLI::App* parent, const std::string& name,
                 const std::string& description, const std::string& example,
                 std::function<absl::Status()> run);
  // Marks `verb` as one that talks to no host (version, completion): a bad
  // MESH_HOST or hosts file does not stop it.
  void NoHosts(CLI::App* verb) { no_hosts_.push_back(verb); }

  // After the parse.
  absl::Duration timeout() const { return timeout_; }
  Output output() const { return output_; }
  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }
  // Every host named (at least one), with ports.
  const std::vector<std::string>& hosts() const { return hosts_; }
  // The connection to `address` (one per address, made on first use).
  absl::StatusOr<HostConn*> Connect(const std::string& address);
  // The one host of a single-host verb; a usage error naming `verb` if
  // several were given.
  absl::StatusOr<HostConn*> OneHost(const std::string& verb);
  // Runs call(conn, i) for every host i at once (one thread each) and waits
  // for all; result i is hosts()[i]'s. Each failure is reported (Fail) in host
  // order, so one unreachable host hides none of the others' answers.
  // `call` must not print: it fills a per-host slot, the caller prints.
  std::vector<absl::Status> ForEachHost(
      const std::function<absl::Status(HostConn& conn, size_t i)>& call);

  // Output in the -o format: `table` for table, `wide` (if not empty,
  // else `table`) for wide, `message` as JSON or YAML otherwise.
  absl::Status Print(const google::protobuf::Message& message,
                     const std::string& table, const std::string& wide = "");
  // The same for a list of messages (a JSON array, a YAML sequence).
  absl::Status PrintList(
      const std::vector<const google::protobuf::Message*>& messages,
      const std::string& table, const std::string& wide = "");
  // Prints "meshctl: CODE: message" on the error stream and makes meshctl
  // exit 1 even if the verb returns OK: for verbs that go on past one
  // failed name or host.
  void Fail(const absl::Status& status);
  int failures() const { return failures_; }
  // Progress on the error stream (enabled per --progress and the terminal).
  std::unique_ptr<Progress> NewProgress();

  // The parse, and the verb's run: RunMeshctl's body.
  int Main(int argc, char** argv);

 private:
  // Flags CLI11 cannot check; `hosts` also resolves the hosts.
  absl::Status Setup(bool hosts);
  absl::StatusOr<ClientCredentials> Credentials(
      const std::string& address) const;

  std::ostream& out_;
  std::ostream& err_;
  CLI::App app_;
  std::map<std::string, CLI::App*> groups_;
  std::vector<std::pair<CLI::App*, std::function<absl::Status()>>> verbs_;
  std::vector<CLI::App*> no_hosts_;

  // Global flags.
  std::vector<std::string> flag_hosts_;
  std::string hosts_file_;
  std::string token_file_;
  std::string tls_ca_;
  std::string tls_cert_;
  std::string tls_key_;
  std::string timeout_flag_ = "10s";
  std::string output_flag_ = "table";
  std::string progress_flag_ = "auto";

  // Set by Setup from the flags.
  absl::Duration timeout_;
  Output output_ = Output::kTable;
  std::vector<std::string> hosts_;
  bool progress_ = false;
  int failures_ = 0;
  std::map<std::string, std::unique_ptr<HostConn>> conns_;
};

// ---- Helpers shared by verb files ----

// Parses a duration flag such as "500ms", "10s", "2m" or "1m30s"
// (absl::ParseDuration), from 1ms to 24h. INVALID_ARGUMENT otherwise.
absl::StatusOr<absl::Duration> ParseDuration(const std::string& text);
uint32_t Millis(absl::Duration d);
// CLI11 validators.
CLI::Validator DurationValidator();
CLI::Validator NameValidator(std::string what);

// A spawn verb's wait: --no-wait and --wait-timeout DURATION (default as
// `wait_timeout` holds it).
struct SpawnWait {
  bool no_wait = false;
  std::string wait_timeout = "30s";
};
void AddSpawnWaitFlags(CLI::App* spawn, SpawnWait* wait);

}  // namespace mesh::meshctl

#endif  // HOSTMESH_MESHCTL_CLI_H_
