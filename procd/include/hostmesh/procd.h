// The procd entry point, for the default procd (procd/main.cc) and for a
// user's own procd binary that adds its actor types (see hostmesh/actor.h).
#ifndef HOSTMESH_PROCD_INCLUDE_HOSTMESH_PROCD_H_
#define HOSTMESH_PROCD_INCLUDE_HOSTMESH_PROCD_H_

#include "hostmesh/actor.h"

namespace mesh {

// Registers the built-in actor types of the default procd:
//   "mesh.echo": GetActorId -> ActorIdReply (also sent to GetActorId.port if
//     set); Echo -> Echo; Fail -> an error (the actor FAILs); Seq -> records
//     per-sender order; GetSeqReport -> SeqReport.
//   "mesh.counter": Increment -> Count (by 0 counts as 1); GetCount -> Count.
// (Messages in proto/actors.proto.)
void RegisterBuiltinActors(ActorRegistry& registry);

// The whole procd: parses flags (--name, --rank, --listen-host,
// --orphan-timeout), serves the Proc and Mailbox services on one gRPC server
// on <listen host>:0, then registers back with the parent that spawned it
// (HOSTMESH_BOOTSTRAP_FD) or, standalone, prints
// "procd <name> listening on <address>" to stdout. Serves until asked to
// stop (the parent's stop, StopAll with exit_proc, SIGTERM/SIGINT), stops
// every actor and returns the exit code (0 after a graceful stop).
int ProcdMain(int argc, char** argv, ActorRegistry registry);

}  // namespace mesh

#endif  // HOSTMESH_PROCD_INCLUDE_HOSTMESH_PROCD_H_
