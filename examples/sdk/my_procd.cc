// A procd of a user's own, built outside Bazel against the installed SDK:
// the built-in actor types plus "sdk.shout", which answers an Echo with its
// text in capitals and its rank. Links libhostmesh_procd (no gRPC):
//
//   g++ -std=c++20 my_procd.cc -o my_procd $(pkg-config --cflags --libs
//   hostmesh-procd)
//
// A client names it as its procs' command (ProcSpec.command; app.cc does).
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "hostmesh/procd.h"
#include "proto/actors.pb.h"

namespace {

class ShoutActor : public mesh::Actor {
 public:
  static constexpr char kTypeName[] = "sdk.shout";

  ShoutActor() {
    Handle<mesh::v1::Echo, mesh::v1::Echo>(
        [](const mesh::v1::Echo& echo,
           mesh::ActorContext& ctx) -> absl::StatusOr<mesh::v1::Echo> {
          mesh::v1::Echo reply;
          reply.set_text(absl::StrCat(absl::AsciiStrToUpper(echo.text()),
                                      " from rank ", ctx.rank()));
          return reply;
        });
  }
};

}  // namespace

int main(int argc, char** argv) {
  mesh::ActorRegistry registry;
  mesh::RegisterBuiltinActors(registry);
  registry.Register<ShoutActor>();
  return mesh::ProcdMain(argc, argv, std::move(registry));
}
