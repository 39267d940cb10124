// Spawns greeter actors in procs started from my_procd, and greets them.
//   bazel run //examples/greeter:greeter_client
#include <cstdio>

#include "examples/greeter/greeter.pb.h"
#include "examples/greeter/greeter_actor.h"
#include "hostmesh/hostmesh.h"
#include "lib/launcher/launcher.h"

int main() {
  absl::StatusOr<std::string> my_procd = mesh::FindBinary("my_procd");
  if (!my_procd.ok()) {
    std::fprintf(stderr, "%s\n", my_procd.status().ToString().c_str());
    return 1;
  }
  auto hosts = mesh::HostMesh::Local();
  if (!hosts.ok()) return 1;
  mesh::v1::ProcSpec spec;
  spec.set_command(*my_procd);  // the user's own bootstrap command
  auto procs = hosts->Spawn("greeters", 3, spec);
  if (!procs.ok()) {
    std::fprintf(stderr, "%s\n", procs.status().ToString().c_str());
    return 1;
  }
  auto actors = procs->Spawn<greeter::GreeterActor>("g");
  if (!actors.ok()) {
    std::fprintf(stderr, "%s\n", actors.status().ToString().c_str());
    return 1;
  }
  greeter::Hello hello;
  hello.set_name("world");
  for (const auto& reply : actors->Call<greeter::Greeting>(hello)) {
    if (!reply.ok()) return 1;
    std::printf("%s (rank %lu)\n", reply->text().c_str(), reply->rank());
  }
  return hosts->Shutdown().ok() ? 0 : 1;
}
