// An actor type of a user's own: greets, and counts how often it did.
#ifndef HOSTMESH_EXAMPLES_GREETER_GREETER_ACTOR_H_
#define HOSTMESH_EXAMPLES_GREETER_GREETER_ACTOR_H_

#include "absl/strings/str_cat.h"
#include "examples/greeter/greeter.pb.h"
#include "hostmesh/actor.h"

namespace greeter {

class GreeterActor : public mesh::Actor {
 public:
  static constexpr char kTypeName[] = "example.greeter";

  GreeterActor() {
    Handle<Hello, Greeting>(
        [this](const Hello& hello,
               mesh::ActorContext& ctx) -> absl::StatusOr<Greeting> {
          Greeting greeting;
          greeting.set_text(absl::StrCat("hello ", hello.name(), ", from ",
                                         ctx.self().proc(), "/",
                                         ctx.self().actor()));
          greeting.set_rank(ctx.rank());
          greeting.set_count(++count_);
          return greeting;
        });
  }

 private:
  uint64_t count_ = 0;  // Handlers run one at a time: no lock needed.
};

}  // namespace greeter

#endif  // HOSTMESH_EXAMPLES_GREETER_GREETER_ACTOR_H_
