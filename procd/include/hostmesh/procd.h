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

// The whole procd, as a child of the hostd that spawned it: takes the
// channel to that hostd (env HOSTMESH_CHANNEL_FD; without it, exits 2: a
// proc is reached only through its host), learns its name, rank and host
// from hostd's Welcome, and serves its actors through that channel alone
// (no network port). Flag: --orphan-timeout (overrides hostd's). Serves
// until asked to stop (hostd's stop, StopAll with exit_proc, SIGTERM/SIGINT,
// or the channel gone past the orphan timeout), stops every actor and
// returns the exit code: 0 after an orderly stop, 1 if the handshake with
// hostd failed (e.g. another protocol version), 2 for bad flags. Its log
// lines (glog's, the actors' included) go to procd.log in the proc's log
// dir, not to stderr, which stays the user's (procd/procd_log.h).
int ProcdMain(int argc, char** argv, ActorRegistry registry);

}  // namespace mesh

#endif  // HOSTMESH_PROCD_INCLUDE_HOSTMESH_PROCD_H_
