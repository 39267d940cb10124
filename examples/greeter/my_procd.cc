// A user's own procd: the built-in actor types plus GreeterActor. Name this
// binary as a proc spec's bootstrap command (ProcSpec.command) or as hostd's
// --procd, and every proc it starts can host "example.greeter" actors.
#include "examples/greeter/greeter_actor.h"
#include "hostmesh/procd.h"

int main(int argc, char** argv) {
  mesh::ActorRegistry registry;
  mesh::RegisterBuiltinActors(registry);
  registry.Register<greeter::GreeterActor>();
  return mesh::ProcdMain(argc, argv, std::move(registry));
}
