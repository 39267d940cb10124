// The seeds' bootstrap_canonical_simple, step by step, on real processes:
// process allocator (2 hostd children) → host mesh → Spawn("p0", unity) →
// actor mesh "a0" → the client opens a port and casts GetActorId(port) →
// the reply is that actor's id → Shutdown() → nothing of the test is alive.
#include <google/protobuf/util/message_differencer.h>

#include <set>

#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using google::protobuf::util::MessageDifferencer;

TEST_CASE(
    "bootstrap_canonical_simple: hosts, procs and actors from one client, then "
    "nothing left") {
  // 1. The client instance: its mailbox is where replies come back.
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create();
  REQUIRE(client.ok());
  HostMesh::Options options;
  options.client = *client;

  // 2. The process allocator: two hostd children that register back.
  absl::StatusOr<HostMesh> host_mesh = HostMesh::Process(2, options);
  REQUIRE(host_mesh.ok());
  REQUIRE(host_mesh->num_hosts() == 2);
  std::set<pid_t> pids;
  for (const std::string& address : host_mesh->addresses()) {
    auto stub = v1::Host::NewStub((*client)->Channel(address));
    v1::HostInfo info;
    REQUIRE(stub->GetHostInfo(testing::Context().get(), {}, &info).ok());
    pids.insert(info.pid());
  }

  // 3. One proc per host.
  absl::StatusOr<ProcMesh> proc_mesh = host_mesh->Spawn("p0", Extent::Unity());
  REQUIRE(proc_mesh.ok());
  CHECK(proc_mesh->extent().ToString() == "{hosts: 2, procs: 1}");
  for (const v1::ProcState& proc : proc_mesh->procs()) {
    CHECK(proc.status() == v1::RUNNING);
    pids.insert(proc.pid());
  }
  CHECK(pids.size() == 4);

  // 4. The actor mesh, inside those procs.
  absl::StatusOr<ActorMesh> actor_mesh = proc_mesh->Spawn("a0", "mesh.echo");
  REQUIRE(actor_mesh.ok());
  REQUIRE(actor_mesh->num_ranks() == 2);

  // 5. Prove messages flow: open a port, cast GetActorId(port).
  Port<v1::ActorIdReply> port = (*client)->OpenPort<v1::ActorIdReply>();
  v1::GetActorId get_id;
  *get_id.mutable_port() = port.ref();
  REQUIRE(actor_mesh->Cast(get_id).ok());
  absl::StatusOr<v1::ActorIdReply> got = port.Recv(absl::Seconds(20));
  REQUIRE(got.ok());
  // The reply is the id of the actor that sent it, as the mesh knows it.
  const v1::ActorRef& expected = actor_mesh->actor(got->cast_rank());
  CHECK(MessageDifferencer::Equals(got->id(), expected));
  absl::StatusOr<v1::ActorIdReply> second = port.Recv(absl::Seconds(20));
  REQUIRE(second.ok());
  CHECK(second->cast_rank() != got->cast_rank());
  CHECK(MessageDifferencer::Equals(second->id(),
                                   actor_mesh->actor(second->cast_rank())));

  // 6. Shutdown: every proc stopped and reaped, every hostd exited.
  REQUIRE(host_mesh->Shutdown().ok());
  for (pid_t pid : pids) {
    INFO("pid " << pid);
    CHECK_FALSE(testing::IsAlive(pid));
  }
  CHECK(testing::LiveInGroups(pids).empty());
}

}  // namespace
}  // namespace mesh
