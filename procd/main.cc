// The default procd: the built-in actor types, served by ProcdMain.
#include <utility>

#include "hostmesh/procd.h"

int main(int argc, char** argv) {
  mesh::ActorRegistry registry;
  mesh::RegisterBuiltinActors(registry);
  return mesh::ProcdMain(argc, argv, std::move(registry));
}
