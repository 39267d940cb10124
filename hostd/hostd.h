// hostd: the per-machine daemon, as a library main() calls and tests embed.
//
// Start-up order: make itself non-dumpable (its procs cannot ptrace it or
// read its memory); block termination signals; check the run policy (what
// callers may run, --proc-user, --operators-group) and make the state dir
// private; read every credential (ServerAuth: a non-loopback --listen needs
// TLS) and choose the advertised address; lock the state and runtime dirs;
// create the process supervisor, the procs' channels, the owner leases and
// the proc manager;
// serve the Host, Proc and Relay APIs on --listen; write the runtime dir's
// admin.token; print and log the address; if spawned by a parent (a
// client's process allocator), register back with it over the inherited
// socketpair; tell systemd READY=1. Runs until ShutdownHost, SIGTERM or
// SIGINT, or the parent asking (or vanishing); each stops every proc, waits
// for them to be reaped, then RunHostd returns 0.
#ifndef HOSTMESH_HOSTD_HOSTD_H_
#define HOSTMESH_HOSTD_HOSTD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lib/auth/server_auth.h"

namespace mesh {

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
  std::string state_dir = "/var/lib/hostmesh";
  std::string runtime_dir = "/run/hostmesh";
  // Default bootstrap command; empty: procd next to this binary.
  std::string procd_path;
  absl::Duration registration_timeout = absl::Seconds(10);
  absl::Duration stop_grace = absl::Seconds(5);
  int max_procs = 256;
  int max_message_bytes = 4 << 20;
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
};

// Runs hostd until it is told to stop; returns the process exit code.
int RunHostd(HostdOptions options);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_HOSTD_H_
