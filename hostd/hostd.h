// hostd: the per-machine daemon, as a library main() calls and tests embed.
//
// Start-up order: block termination signals; create the process supervisor,
// the private registrar (register-back socket in the 0700 runtime dir) and
// the proc manager; serve the Host API on --listen; print and log the
// address; if spawned by a parent (a client's process allocator), register
// back with it; tell systemd READY=1. Runs until ShutdownHost, SIGTERM or
// SIGINT, or the parent asking (or vanishing); each stops every proc, waits
// for them to be reaped, then RunHostd returns 0.
#ifndef HOSTMESH_HOSTD_HOSTD_H_
#define HOSTMESH_HOSTD_HOSTD_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace mesh {

struct HostdOptions {
  // host:port to bind; port 0 picks a free one.
  std::string listen = "127.0.0.1:7450";
  // Host part to advertise (and for procs to bind); empty: listen's host, or
  // this machine's hostname if listen binds every interface.
  std::string advertise;
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
};

// Runs hostd until it is told to stop; returns the process exit code.
int RunHostd(HostdOptions options);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_HOSTD_H_
