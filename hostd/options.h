// HostdOptions: everything hostd runs with (its flags, hostd/flags.h).
#ifndef HOSTMESH_HOSTD_OPTIONS_H_
#define HOSTMESH_HOSTD_OPTIONS_H_

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lib/auth/server_auth.h"

namespace mesh {

// The first entry of systemd's colon-separated directory list in `variable`
// (e.g. STATE_DIRECTORY=/var/lib/hostmesh:/var/lib/other), or `fallback`
// if it is unset or its first entry is empty.
inline std::string SystemdDirectoryOr(const char* variable,
                                      const std::string& fallback) {
  const char* value = std::getenv(variable);
  if (value == nullptr) return fallback;
  const std::string list = value;
  const std::string first = list.substr(0, list.find(':'));
  return first.empty() ? fallback : first;
}

// The values of --parent (HostdOptions::parent).
inline constexpr char kParentEnv[] = "env";
inline constexpr char kParentStdio[] = "stdio";

struct HostdOptions {
  // host:port to bind; port 0 picks a free one.
  std::string listen = "127.0.0.1:7450";
  // Host to advertise (the address is it and the bound port); empty:
  // listen's host, or this machine's hostname if listen binds every
  // interface and the name reaches this machine. Checked at start by
  // ChooseAdvertisedHost (lib/net/address.h).
  std::string advertise;
  // Advertise a host that is not (or not here resolved to) an address of
  // this machine: a NAT address, a DNS name only others resolve.
  bool advertise_unchecked = false;
  // Defaults: under systemd, the first dir of $STATE_DIRECTORY and of
  // $RUNTIME_DIRECTORY (the unit's StateDirectory= and RuntimeDirectory=),
  // else these.
  std::string state_dir =
      SystemdDirectoryOr("STATE_DIRECTORY", "/var/lib/hostmesh");
  std::string runtime_dir =
      SystemdDirectoryOr("RUNTIME_DIRECTORY", "/run/hostmesh");
  // Default bootstrap command; empty: procd next to this binary.
  std::string procd_path;
  // Procs of procd_path are forked from a pre-loaded procd (a template,
  // lib/process/process_template.h) rather than exec'd: no loader, no
  // static initialization per proc. False: every proc is exec'd.
  bool proc_template = true;
  absl::Duration registration_timeout = absl::Seconds(10);
  absl::Duration stop_grace = absl::Seconds(5);
  int max_procs = 256;
  // Finished (stopped or failed) procs remembered at most; the earliest to
  // end is forgotten first (ProcManager::Options).
  int max_finished_procs = 1024;
  // The control message cap (gRPC's default): gRPC requests hostd accepts
  // and answers it sends, envelopes on relay streams, and frames on proc
  // channels either way (FrameBytesFor, lib/channel/proc_channel.h; procd is
  // told).
  int max_message_bytes = 4 << 20;
  // Procs' stdout.log / stderr.log (hostd/proc_logs.h): a live proc's file
  // past this many bytes is rotated (0: never), keeping this many rotated
  // copies (0: rotated bytes are dropped); StreamLogs calls open at most.
  uint64_t proc_log_max_bytes = 64ull << 20;
  int proc_log_keep = 3;
  int max_log_streams = 64;
  // --parent: where the channel to a parent that started this hostd is
  // (lib/bootstrap/parent_channel.h). "env": the inherited socket whose fd
  // HOSTMESH_PARENT_FD names, if set (else no parent); "stdio": stdin and
  // stdout are the channel (a client started this hostd through srun),
  // moved out of the way before anything runs. kParentModes lists them.
  std::string parent = "env";
  // How long procs live on after this hostd's channel to them breaks.
  absl::Duration orphan_timeout = absl::Seconds(30);
  // How often every relay stream gets a heartbeat (RelayService).
  absl::Duration heartbeat_interval = absl::Milliseconds(500);
  // How long the procs of a client that has no relay stream to this host
  // live on (hostd/owner_leases.h); zero: they are stopped at once.
  absl::Duration owner_lease = absl::Seconds(60);
  // What callers may run, and as whom (hostd/command_policy.h). Besides
  // procd_path: --allow-command files, or dirs written with a trailing '/'.
  std::vector<std::string> allow_commands;
  // --allow-env: variables a spec may set although they change what code
  // runs (LD_PRELOAD, PYTHONPATH, ...).
  std::vector<std::string> allow_env;
  // Any command, any env: a host a client starts for itself.
  bool allow_any_command = false;
  // Procs run as this user (its uid and primary gid); empty: as hostd's.
  std::string proc_user;
  // Group that may read the state dir and proc logs besides hostd's user;
  // empty: hostd's user alone.
  std::string operators_group;
  // Who may call, and how they prove it (lib/auth/server_auth.h).
  ServerAuthOptions auth;
  // --cgroup: where each proc's cgroup v2 leaf goes. "": auto, a subtree
  // "hostmesh-<16 hex of sha256(state_dir)>" of hostd's own cgroup; "none":
  // process groups only, no cgroups; else a cgroup directory (absolute) or
  // the name of a subtree of hostd's cgroup.
  std::string cgroup;
  // --metrics-listen: host:port of the Prometheus endpoint (GET /metrics,
  // hostd/metrics_http.h); empty: none. Loopback serves plain HTTP; any
  // other address needs TLS (--tls-cert, --tls-key) and
  // --metrics-token-file, or hostd refuses to start.
  std::string metrics_listen;
  // --metrics-token-file: the token scrapers present ("Authorization:
  // Bearer <token>"), one line, mode 0600 or 0640; empty: none (loopback
  // only).
  std::string metrics_token_file;
  // --audit-log: the audit trail's file (hostd/audit.h), only Audit()
  // writes it; empty: <state_dir>/audit.log; "none": no file.
  std::string audit_log;
  // --v and --log-level: glog's verbosity (FLAGS_v) and least severity
  // logged ("INFO", "WARNING", "ERROR": FLAGS_minloglevel). main() applies
  // them (ApplyLogLevels, hostd/flags.h); SIGHUP applies them again.
  int v = 0;
  std::string log_level = "INFO";
  // --test-crash-at "<point>:<n>" (tests only; hostd/flags.h lists the
  // points): hostd exits at once the n-th time its proc table write reaches
  // <point>. Empty: never.
  std::string test_crash_at;
  // --test-wedge-loop-after (tests only): this long after READY, the proc
  // manager's event loop is blocked for good, so the systemd watchdog
  // (hostd/notify.h) stops. Zero: never.
  absl::Duration test_wedge_loop_after = absl::ZeroDuration();
  // The command line these options came from (argv, argv[0] first; set by
  // ParseHostdFlags): SIGHUP parses it again, re-reading its --config file
  // (hostd/reload.h). Empty (options made in code): SIGHUP re-reads the
  // tokens file and re-applies these options.
  std::vector<std::string> command_line;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_OPTIONS_H_
