// The built-in actor types of the default procd (declared for tests and for
// RegisterBuiltinActors in hostmesh/procd.h).
#ifndef HOSTMESH_PROCD_BUILTIN_ACTORS_H_
#define HOSTMESH_PROCD_BUILTIN_ACTORS_H_

#include <cstdint>

#include "hostmesh/actor.h"
#include "proto/actors.pb.h"

namespace mesh {

// "mesh.echo": identity, echo, failure on request, and an order checker.
class EchoActor : public Actor {
 public:
  static constexpr char kTypeName[] = "mesh.echo";
  EchoActor();

 private:
  // Seq bookkeeping. For each sender (Seq.sender, or the envelope's sender
  // if empty) the first Seq seen starts the sequence; each later one must be
  // the previous n + 1, or it counts as out of order.
  v1::SeqReport report_;
};

// "mesh.counter": a counter.
class CounterActor : public Actor {
 public:
  static constexpr char kTypeName[] = "mesh.counter";
  CounterActor();

 private:
  int64_t value_ = 0;
};

}  // namespace mesh

#endif  // HOSTMESH_PROCD_BUILTIN_ACTORS_H_
