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
// for them to be reaped, then RunHostd returns 0. SIGUSR2 (systemd's
// restart) returns 0 at once, keeping every proc for the next hostd to
// re-adopt; SIGHUP reloads what can change while running (hostd/reload.h)
// and never ends hostd.
#ifndef HOSTMESH_HOSTD_HOSTD_H_
#define HOSTMESH_HOSTD_HOSTD_H_

#include "hostd/options.h"

namespace mesh {

// Runs hostd until it is told to stop; returns the process exit code.
int RunHostd(HostdOptions options);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_HOSTD_H_
