#include "hostd/flags.h"

#include <glog/logging.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace mesh {
namespace {

constexpr char kLogLevels[][8] = {"INFO", "WARNING", "ERROR"};

// A flag's duration ("500ms", "10s"; "0" too if `zero_ok`), or
// INVALID_ARGUMENT naming the flag.
absl::Status ParseFlagDuration(const std::string& flag, const std::string& text,
                               absl::Duration* out, bool zero_ok = false) {
  if (absl::ParseDuration(text, out) &&
      (*out > absl::ZeroDuration() ||
       (zero_ok && *out == absl::ZeroDuration())) &&
      *out < absl::InfiniteDuration()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--", flag, ": \"", text, "\" is not a ",
      zero_ok ? "non-negative" : "positive", " duration (e.g. 10s, 500ms)"));
}

// The defaults of --v and --log-level: what glog's environment says
// (GLOG_v, GLOG_minloglevel; e.g. the unit's EnvironmentFile), so a config
// without these keys keeps them.
int DefaultVerbosity() {
  int v = 0;
  const char* env = std::getenv("GLOG_v");
  if (env == nullptr || !absl::SimpleAtoi(env, &v) || v < 0) return 0;
  return v;
}

std::string DefaultLogLevel() {
  int level = 0;
  const char* env = std::getenv("GLOG_minloglevel");
  if (env == nullptr || !absl::SimpleAtoi(env, &level) || level <= 0) {
    return kLogLevels[0];
  }
  return kLogLevels[level >= 2 ? 2 : 1];
}

}  // namespace

absl::StatusOr<std::optional<TestCrashAt>> ParseTestCrashAt(
    const std::string& text) {
  if (text.empty()) return std::nullopt;
  const size_t colon = text.rfind(':');
  int n = 0;
  if (colon != std::string::npos &&
      absl::SimpleAtoi(text.substr(colon + 1), &n) && n >= 1) {
    for (CrashPoint point : kCrashPoints) {
      if (absl::string_view(text).substr(0, colon) == CrashPointName(point)) {
        return TestCrashAt{point, n};
      }
    }
  }
  std::vector<std::string> names;
  for (CrashPoint point : kCrashPoints) {
    names.emplace_back(CrashPointName(point));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--test-crash-at: \"", text.substr(0, 64),
      "\" is not <point>:<n> (n >= 1; points: ", absl::StrJoin(names, ", "),
      ")"));
}

namespace {

// Every flag of hostd over one HostdOptions (durations as text until
// Finish). One per parse.
class HostdFlags {
 public:
  HostdFlags() {
    options_.v = DefaultVerbosity();
    options_.log_level = DefaultLogLevel();
    CLI::App& app = app_;
    app.set_config("--config", "",
                   "Config file (key = value lines, flag names); SIGHUP "
                   "reads it again (README \"Running hostd under systemd\")");
    app.add_option("--listen", options_.listen,
                   "host:port to serve the Host API on (port 0: any)")
        ->capture_default_str();
    app.add_option("--advertise", options_.advertise,
                   "Host name or IP to advertise (default: the listen host; "
                   "for a wildcard listen, this machine's hostname)");
    app.add_flag("--advertise-unchecked", options_.advertise_unchecked,
                 "Advertise --advertise even if it is not an address of this "
                 "machine (NAT, a DNS name only others resolve)");
    app.add_option("--state-dir", options_.state_dir, "Proc logs and state")
        ->capture_default_str();
    app.add_option("--runtime-dir", options_.runtime_dir,
                   "Private (0700) dir: hostd's lock and admin.token")
        ->capture_default_str();
    app.add_option(
        "--procd", options_.procd_path,
        "Default proc bootstrap command (default: procd beside hostd)");
    app.add_option("--registration-timeout", registration_timeout_,
                   "How long a proc has to register back")
        ->capture_default_str();
    app.add_option("--stop-grace", stop_grace_,
                   "Grace before SIGTERM, and again before SIGKILL")
        ->capture_default_str();
    app.add_option("--heartbeat-interval", heartbeat_interval_,
                   "How often relay streams get a heartbeat (clients tell a "
                   "silent host from a quiet one)")
        ->capture_default_str();
    app.add_option("--owner-lease", owner_lease_,
                   "How long the procs a client spawned live on once it has "
                   "no relay stream to this host (or its stream went silent); "
                   "a client that reconnects in time keeps them. 0: stop them "
                   "at once. A client gets at least 5s for its first stream. "
                   "Detached procs (meshctl's) never expire")
        ->capture_default_str();
    app.add_option("--orphan-timeout", orphan_timeout_,
                   "How long procs outlive a lost channel to this hostd")
        ->capture_default_str();
    app.add_option("--max-procs", options_.max_procs, "Live procs at most")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--max-finished-procs", options_.max_finished_procs,
                   "Stopped or failed procs remembered at most (in memory "
                   "and the proc table); the earliest to end is forgotten "
                   "first")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--max-message-bytes", options_.max_message_bytes,
                   "Largest control message: a gRPC request hostd accepts "
                   "(or an answer it sends), and a frame on a proc's channel "
                   "either way (plus a little for the frame itself)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--cgroup", options_.cgroup,
                   "Where procs' cgroup v2 leaves go: empty (default) a "
                   "subtree hostmesh-<hash of --state-dir> of hostd's own "
                   "cgroup; \"none\": process groups only; else a cgroup "
                   "directory, or the name of a subtree of hostd's cgroup");
    app.add_option("--v", options_.v,
                   "Verbose logging level (glog's VLOG; default: $GLOG_v "
                   "or 0); SIGHUP reloads it")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    app.add_option("--log-level", options_.log_level,
                   "Least severity logged: INFO, WARNING or ERROR (default: "
                   "from $GLOG_minloglevel, or INFO); SIGHUP reloads it")
        ->capture_default_str()
        ->transform(CLI::IsMember({kLogLevels[0], kLogLevels[1], kLogLevels[2]},
                                  CLI::ignore_case));
    auto* auth = app.add_option_group(
        "Authentication",
        "Who may call (README \"Security\"). A listen address that is not "
        "loopback needs --tls-cert, --tls-key and --tls-ca.");
    auth->add_option("--tls-cert", options_.auth.tls_cert_file,
                     "PEM certificate this host serves (and presents to "
                     "peers)");
    auth->add_option("--tls-key", options_.auth.tls_key_file,
                     "PEM private key of --tls-cert (mode 0600)");
    auth->add_option("--tls-ca", options_.auth.tls_ca_file,
                     "PEM CA that signs hosts' and clients' certificates");
    auth->add_flag("--tls-require-client-cert",
                   options_.auth.tls_require_client_cert,
                   "Refuse TLS clients without a certificate of --tls-ca");
    auth->add_option("--tokens-file", options_.auth.tokens_file,
                     "Accepted tokens, lines \"<identity> <role> <token>\" "
                     "(role: admin, client or peer; mode 0600 or 0640); "
                     "SIGHUP reads the file again");
    auth->add_option("--peer-token-file", options_.auth.peer_token_file,
                     "Token this host presents when it dials other hosts");
    auth->add_option("--admin", options_.auth.admins,
                     "Certificate name (CN) with role admin (repeatable)");
    auth->add_option("--peer", options_.auth.peers,
                     "Certificate name (CN) of a peer host (role peer; "
                     "repeatable)");
    auto* run = app.add_option_group(
        "Run policy",
        "What callers may run, and as whom (README \"Security\"). The procd "
        "beside hostd (or --procd) is always allowed. SIGHUP reloads "
        "--allow-command, --allow-env and --allow-any-command.");
    run->add_option("--allow-command", options_.allow_commands,
                    "An executable procs may run, or a directory (written "
                    "with a trailing '/') whose files at any depth they may "
                    "run; repeatable. Symlinks and .. are resolved first");
    run->add_option("--allow-env", options_.allow_env,
                    "A variable a proc's env may set although it changes "
                    "what code runs (LD_PRELOAD, PYTHONPATH, HOSTMESH_*, "
                    "...); repeatable");
    run->add_flag("--allow-any-command", options_.allow_any_command,
                  "Run any command with any env (a host a client starts for "
                  "itself)");
    run->add_option("--proc-user", options_.proc_user,
                    "Run procs as this user (uid and primary gid, no other "
                    "groups); needs CAP_SETUID, CAP_SETGID and CAP_KILL");
    run->add_option("--operators-group", options_.operators_group,
                    "Group that may read the state dir and proc logs "
                    "(default: hostd's user alone)");
    // Tests only: in no help group (CLI11 does not list group "").
    app.add_option("--test-crash-at", options_.test_crash_at,
                   "Tests only: exit at once at <point>:<n>, the n-th time "
                   "hostd's proc table write reaches <point>")
        ->group("");
  }

  CLI::App& app() { return app_; }

  // The options, once the durations and --test-crash-at are checked.
  absl::StatusOr<HostdOptions> Finish(std::vector<std::string> args) {
    for (absl::Status status :
         {ParseFlagDuration("registration-timeout", registration_timeout_,
                            &options_.registration_timeout),
          ParseFlagDuration("stop-grace", stop_grace_, &options_.stop_grace),
          ParseFlagDuration("orphan-timeout", orphan_timeout_,
                            &options_.orphan_timeout),
          ParseFlagDuration("heartbeat-interval", heartbeat_interval_,
                            &options_.heartbeat_interval),
          ParseFlagDuration("owner-lease", owner_lease_, &options_.owner_lease,
                            /*zero_ok=*/true),
          ParseTestCrashAt(options_.test_crash_at).status()}) {
      if (!status.ok()) return status;
    }
    options_.command_line = std::move(args);
    return options_;
  }

 private:
  CLI::App app_{
      "hostd: the hostmesh host daemon. Spawns and supervises procs."};
  HostdOptions options_;
  std::string registration_timeout_ = "10s";
  std::string stop_grace_ = "5s";
  std::string orphan_timeout_ = "30s";
  std::string heartbeat_interval_ = "500ms";
  std::string owner_lease_ = "60s";
};

}  // namespace

absl::StatusOr<HostdOptions> ParseHostdFlags(
    const std::vector<std::string>& args) {
  if (args.empty()) {
    return absl::InvalidArgumentError("no command line (not even argv[0])");
  }
  HostdFlags flags;
  std::vector<const char*> argv;
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  try {
    flags.app().parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    return absl::InvalidArgumentError("--help asked for help, not options");
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return flags.Finish(args);
}

std::optional<int> ParseHostdCommandLine(int argc, char** argv,
                                         HostdOptions* options) {
  HostdFlags flags;
  try {
    flags.app().parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return flags.app().exit(e) == 0 ? 0 : 2;
  }
  absl::StatusOr<HostdOptions> parsed =
      flags.Finish(std::vector<std::string>(argv, argv + argc));
  if (!parsed.ok()) {
    std::fprintf(stderr, "hostd: %s\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  *options = *std::move(parsed);
  return std::nullopt;
}

void ApplyLogLevels(int v, const std::string& log_level) {
  FLAGS_v = v;
  int level = 0;
  for (int i = 0; i < 3; ++i) {
    if (log_level == kLogLevels[i]) level = i;
  }
  FLAGS_minloglevel = level;
}

}  // namespace mesh
