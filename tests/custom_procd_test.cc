// A user's own procd (examples/greeter: built-in types plus GreeterActor),
// named as the proc spec's bootstrap command, hosts the user's actor type.
#include "catch2/catch.hpp"
#include "examples/greeter/greeter.pb.h"
#include "examples/greeter/greeter_actor.h"
#include "hostmesh/hostmesh.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

TEST_CASE(
    "a user's own procd, named as the bootstrap command, hosts the user's "
    "actor type") {
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create();
  REQUIRE(client.ok());
  HostMesh::Options options;
  options.client = *client;
  absl::StatusOr<HostMesh> hosts = HostMesh::Local(options);
  REQUIRE(hosts.ok());

  v1::ProcSpec spec;
  spec.set_command(testing::BinaryPath("my_procd"));
  REQUIRE(spec.command().front() == '/');
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("greeters", 2, spec);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> greeters = procs->Spawn<greeter::GreeterActor>("g");
  REQUIRE(greeters.ok());

  greeter::Hello hello;
  hello.set_name("test");
  for (int round = 1; round <= 2; ++round) {
    auto replies = greeters->Call<greeter::Greeting>(hello);
    REQUIRE(replies.size() == 2);
    for (size_t rank = 0; rank < 2; ++rank) {
      REQUIRE(replies[rank].ok());
      CHECK(replies[rank]->rank() == rank);
      CHECK(replies[rank]->count() == static_cast<uint64_t>(round));
      CHECK(replies[rank]->text().find("hello test") != std::string::npos);
    }
  }
  // The default procd does not know the type: INVALID_ARGUMENT naming it.
  absl::StatusOr<ProcMesh> plain = hosts->Spawn("plain", 1);
  REQUIRE(plain.ok());
  absl::StatusOr<ActorMesh> unknown = plain->Spawn<greeter::GreeterActor>("g");
  CHECK(unknown.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(unknown.status().message().find("example.greeter") !=
        absl::string_view::npos);
  CHECK(hosts->Shutdown().ok());
}

}  // namespace
}  // namespace mesh
