// hostd: flags (or a config file) → HostdOptions → RunHostd. See hostd.h.
#include <glog/logging.h>

#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "hostd/hostd.h"

namespace {

// Parses a flag's duration ("500ms", "10s"; "0" too if `zero_ok`); false
// with a message if bad.
bool ParseFlagDuration(const std::string& flag, const std::string& text,
                       absl::Duration* out, bool zero_ok = false) {
  if (absl::ParseDuration(text, out) &&
      (*out > absl::ZeroDuration() ||
       (zero_ok && *out == absl::ZeroDuration())) &&
      *out < absl::InfiniteDuration()) {
    return true;
  }
  std::fprintf(
      stderr, "hostd: --%s: \"%s\" is not a %s duration (e.g. 10s, 500ms)\n",
      flag.c_str(), text.c_str(), zero_ok ? "non-negative" : "positive");
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  mesh::HostdOptions options;
  std::string registration_timeout = "10s";
  std::string stop_grace = "5s";
  std::string orphan_timeout = "30s";
  std::string heartbeat_interval = "500ms";
  std::string owner_lease = "60s";
  CLI::App app{"hostd: the hostmesh host daemon. Spawns and supervises procs."};
  app.set_config("--config", "", "Config file (key = value lines, flag names)");
  app.add_option("--listen", options.listen,
                 "host:port to serve the Host API on (port 0: any)")
      ->capture_default_str();
  app.add_option("--advertise", options.advertise,
                 "Host name or IP to advertise (default: the listen host; "
                 "for a wildcard listen, this machine's hostname)");
  app.add_flag("--advertise-unchecked", options.advertise_unchecked,
               "Advertise --advertise even if it is not an address of this "
               "machine (NAT, a DNS name only others resolve)");
  app.add_option("--state-dir", options.state_dir, "Proc logs and state")
      ->capture_default_str();
  app.add_option("--runtime-dir", options.runtime_dir,
                 "Private (0700) dir: hostd's lock and admin.token")
      ->capture_default_str();
  app.add_option(
      "--procd", options.procd_path,
      "Default proc bootstrap command (default: procd beside hostd)");
  app.add_option("--registration-timeout", registration_timeout,
                 "How long a proc has to register back")
      ->capture_default_str();
  app.add_option("--stop-grace", stop_grace,
                 "Grace before SIGTERM, and again before SIGKILL")
      ->capture_default_str();
  app.add_option("--heartbeat-interval", heartbeat_interval,
                 "How often relay streams get a heartbeat (clients tell a "
                 "silent host from a quiet one)")
      ->capture_default_str();
  app.add_option("--owner-lease", owner_lease,
                 "How long the procs a client spawned live on once it has "
                 "no relay stream to this host (or its stream went silent); "
                 "a client that reconnects in time keeps them. 0: stop them "
                 "at once. A client gets at least 5s for its first stream. "
                 "Detached procs (meshctl's) never expire")
      ->capture_default_str();
  app.add_option("--orphan-timeout", orphan_timeout,
                 "How long procs outlive a lost channel to this hostd")
      ->capture_default_str();
  app.add_option("--max-procs", options.max_procs, "Live procs at most")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-message-bytes", options.max_message_bytes,
                 "Largest gRPC message accepted")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  auto* auth = app.add_option_group(
      "Authentication",
      "Who may call (README \"Security\"). A listen address that is not "
      "loopback needs --tls-cert, --tls-key and --tls-ca.");
  auth->add_option("--tls-cert", options.auth.tls_cert_file,
                   "PEM certificate this host serves (and presents to peers)");
  auth->add_option("--tls-key", options.auth.tls_key_file,
                   "PEM private key of --tls-cert (mode 0600)");
  auth->add_option("--tls-ca", options.auth.tls_ca_file,
                   "PEM CA that signs hosts' and clients' certificates");
  auth->add_flag("--tls-require-client-cert",
                 options.auth.tls_require_client_cert,
                 "Refuse TLS clients without a certificate of --tls-ca");
  auth->add_option("--tokens-file", options.auth.tokens_file,
                   "Accepted tokens, lines \"<identity> <role> <token>\" "
                   "(role: admin, client or peer; mode 0600 or 0640)");
  auth->add_option("--peer-token-file", options.auth.peer_token_file,
                   "Token this host presents when it dials other hosts");
  auth->add_option("--admin", options.auth.admins,
                   "Certificate name (CN) with role admin (repeatable)");
  auth->add_option("--peer", options.auth.peers,
                   "Certificate name (CN) of a peer host (role peer; "
                   "repeatable)");
  auto* run = app.add_option_group(
      "Run policy",
      "What callers may run, and as whom (README \"Security\"). The procd "
      "beside hostd (or --procd) is always allowed.");
  run->add_option("--allow-command", options.allow_commands,
                  "An executable procs may run, or a directory (written with "
                  "a trailing '/') whose files at any depth they may run; "
                  "repeatable. Symlinks and .. are resolved first");
  run->add_option("--allow-env", options.allow_env,
                  "A variable a proc's env may set although it changes what "
                  "code runs (LD_PRELOAD, PYTHONPATH, HOSTMESH_*, ...); "
                  "repeatable");
  run->add_flag("--allow-any-command", options.allow_any_command,
                "Run any command with any env (a host a client starts for "
                "itself)");
  run->add_option("--proc-user", options.proc_user,
                  "Run procs as this user (uid and primary gid, no other "
                  "groups); needs CAP_SETUID, CAP_SETGID and CAP_KILL");
  run->add_option("--operators-group", options.operators_group,
                  "Group that may read the state dir and proc logs (default: "
                  "hostd's user alone)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!ParseFlagDuration("registration-timeout", registration_timeout,
                         &options.registration_timeout) ||
      !ParseFlagDuration("stop-grace", stop_grace, &options.stop_grace) ||
      !ParseFlagDuration("orphan-timeout", orphan_timeout,
                         &options.orphan_timeout) ||
      !ParseFlagDuration("heartbeat-interval", heartbeat_interval,
                         &options.heartbeat_interval) ||
      !ParseFlagDuration("owner-lease", owner_lease, &options.owner_lease,
                         /*zero_ok=*/true)) {
    return 2;
  }
  return mesh::RunHostd(options);
}
