// meshctl: the operator CLI of hostmesh. It drives the public API of one or
// several hosts, served by hostd: their procs (mesh.v1.Host) and, naming a
// proc, that proc's actors (mesh.v1.Proc; a proc serves no port of its own):
//
//   meshctl [--host H[,H...]] [--hosts-file F] [--timeout 10s]
//           [-o table|wide|json|yaml] VERB ...
//   host status|list|shutdown|drain   proc spawn|list|get|stop|wait
//   owner list                        actor spawn|list|get|stop|send
//   logs                              watch
//   slurm up                          version
//   completion bash|zsh
//
// One file per verb group (meshctl/host.cc, proc.cc, ...), registered in
// meshctl/commands.cc, on the shared Cli of meshctl/cli.h; output through
// meshctl/format.h. `slurm up` starts hosts instead (HostMesh::Slurm) and
// serves them until a signal (meshctl/slurm.cc). Procs meshctl spawns are
// detached: the host's, held by no client's lease (they outlive meshctl).
// Every RPC has a deadline. Exit codes: 0 ok; 1 a call failed (for any of
// several names or hosts), or a wait ended with a resource not in the requested
// status (one line per failure on `err` of the form "meshctl: <CODE>:
// <message>"); 2 usage error.
#ifndef HOSTMESH_MESHCTL_MESHCTL_H_
#define HOSTMESH_MESHCTL_MESHCTL_H_

#include <ostream>

#include "meshctl/cli.h"
#include "meshctl/wait.h"

namespace mesh {

// Runs one meshctl command line (argv[0] is the program name). Results go to
// `out`, diagnostics and usage errors to `err`. Returns the exit code; never
// throws. Thread-compatible: concurrent calls share nothing but the
// environment (MESH_HOST).
int RunMeshctl(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace mesh

#endif  // HOSTMESH_MESHCTL_MESHCTL_H_
