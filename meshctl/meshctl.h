// meshctl: the operator CLI of hostmesh. It drives a host's public API,
// served by hostd: its procs (mesh.v1.Host) and, naming a proc, that proc's
// actors (mesh.v1.Proc; a proc serves no port of its own):
//
//   meshctl [--host ADDR] [--timeout 10s] [-o table|json] host status
//   meshctl host shutdown [--grace 5s] [--reason R]
//   meshctl proc spawn NAME [--count N | --rank R] [--command PATH]
//                           [--arg A]... [--env K=V]... [--no-wait]
//   meshctl proc list | get NAME | stop NAME [--grace 5s] [--reason R]
//   meshctl proc wait NAME... [--status running] [--timeout 10s]
//   meshctl owner list
//   meshctl actor spawn PROC NAME --type T [--rank R] [--no-wait]
//   meshctl actor list PROC | get PROC NAME | stop PROC NAME [--reason R]
//   meshctl actor send PROC NAME --type mesh.v1.Echo [--json '{"text":"hi"}']
//
// Procs meshctl spawns are detached: the host's, held by no client's lease
// (they outlive meshctl). Every RPC has a deadline. Exit codes: 0 ok; 1 a call
// failed, or a wait ended with a resource not in the requested status (one line
// on `err` of the form "meshctl: <CODE>: <message>"); 2 usage error.
#ifndef HOSTMESH_MESHCTL_MESHCTL_H_
#define HOSTMESH_MESHCTL_MESHCTL_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/host.pb.h"
#include "proto/resource.pb.h"

namespace mesh {

// Runs one meshctl command line (argv[0] is the program name). Results go to
// `out`, diagnostics and usage errors to `err`. Returns the exit code; never
// throws. Thread-compatible: concurrent calls share nothing but the
// environment (MESH_HOST).
int RunMeshctl(int argc, char** argv, std::ostream& out, std::ostream& err);

namespace meshctl {

inline constexpr char kDefaultHost[] = "127.0.0.1:7450";
inline constexpr char kHostEnv[] = "MESH_HOST";
// The admin token a hostd with the default runtime dir writes for the
// same user's tools.
inline constexpr char kLocalAdminTokenFile[] = "/run/hostmesh/admin.token";

// Parses a duration flag such as "500ms", "10s", "2m" or "1m30s"
// (absl::ParseDuration). It must be at least 1ms and at most 24h (the
// protocol carries milliseconds in 32 bits, and 0 means "server default").
// INVALID_ARGUMENT otherwise.
absl::StatusOr<absl::Duration> ParseDuration(const std::string& text);

// Whether a resource now in status `have` is what a wait for `wanted` asked
// for. A status passed on the normal path (INITIALIZING -> RUNNING ->
// STOPPING -> STOPPED) satisfies a wait for a transitional one: a RUNNING
// proc satisfies INITIALIZING, a STOPPED one satisfies STOPPING. Otherwise
// only the exact status does: waiting for RUNNING, a FAILED or STOPPED proc
// is a failure, and waiting for STOPPED, a FAILED one is.
bool Satisfies(v1::Status have, v1::Status wanted);

// Judges a WaitProcs answer for `names`: OK if every named proc satisfies
// `wanted`. Otherwise FAILED_PRECONDITION if some proc can no longer get
// there (it is past `wanted`, or ended: e.g. FAILED while waiting for
// RUNNING, STOPPED while waiting for FAILED), else DEADLINE_EXCEEDED (the
// wait of `timeout` timed out); the message names every proc that is not
// where asked, with its status, reason and how it ended (and `host`, if not
// empty).
absl::Status CheckProcWait(const std::vector<std::string>& names,
                           const v1::WaitProcsResponse& response,
                           v1::Status wanted, absl::Duration timeout,
                           const std::string& host = "");

}  // namespace meshctl
}  // namespace mesh

#endif  // HOSTMESH_MESHCTL_MESHCTL_H_
