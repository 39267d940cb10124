// Proc and actor meshes end to end: ranks, slices, ordering, failures.
#include <google/protobuf/util/message_differencer.h>
#include <signal.h>

#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "lib/testing/sockets.h"
#include "proto/actors.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::ListeningSockets;
using testing::RanksOf;
using testing::WithClient;

// A client presenting no credentials (not even those in the environment);
// hosts a mesh starts for itself trust their client without them.
std::shared_ptr<Client> NewClient() {
  return testing::NewClient(ClientCredentials());
}

TEST_CASE(
    "a 2x4 proc mesh names and ranks procs row-major; Call and slices reach "
    "exactly their ranks") {
  auto client = NewClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Process(2, WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 4);
  REQUIRE(procs.ok());
  CHECK(procs->extent().ToString() == "{hosts: 2, procs: 4}");
  REQUIRE(procs->num_ranks() == 8);
  for (size_t rank = 0; rank < 8; ++rank) {
    const v1::ProcState& proc = procs->procs()[rank];
    CHECK(proc.name() == absl::StrCat("p0_", rank));
    CHECK(proc.rank() == rank);  // host_rank × 4 + local_rank
    CHECK(procs->host_of(rank) == hosts->addresses()[rank / 4]);
  }

  absl::StatusOr<ActorMesh> actors = procs->Spawn("a0", "mesh.echo");
  REQUIRE(actors.ok());
  auto replies = actors->Call<v1::ActorIdReply>(v1::GetActorId());
  REQUIRE(replies.size() == 8);
  CHECK(RanksOf(replies) == std::vector<uint64_t>{0, 1, 2, 3, 4, 5, 6, 7});
  for (size_t rank = 0; rank < 8; ++rank) {
    CHECK(replies[rank]->cast_rank() == rank);
    CHECK(replies[rank]->id().proc() == absl::StrCat("p0_", rank));
    CHECK(replies[rank]->id().actor() == "a0");
  }

  absl::StatusOr<ActorMesh> host1 = actors->Slice("hosts", 1);
  REQUIRE(host1.ok());
  auto host1_replies = host1->Call<v1::ActorIdReply>(v1::GetActorId());
  CHECK(RanksOf(host1_replies) == std::vector<uint64_t>{4, 5, 6, 7});
  for (size_t view_rank = 0; view_rank < 4; ++view_rank) {
    CHECK(host1_replies[view_rank]->cast_rank() == view_rank);
  }

  absl::StatusOr<ActorMesh> middle = actors->Slice("procs", 1, 3);
  REQUIRE(middle.ok());
  CHECK(middle->extent().ToString() == "{hosts: 2, procs: 2}");
  auto middle_replies = middle->Call<v1::ActorIdReply>(v1::GetActorId());
  CHECK(RanksOf(middle_replies) == std::vector<uint64_t>{1, 2, 5, 6});
  for (size_t view_rank = 0; view_rank < 4; ++view_rank) {
    CHECK(middle_replies[view_rank]->cast_rank() == view_rank);
  }
  // A cast to a slice reaches only that slice: counters prove it.
  absl::StatusOr<ActorMesh> counters = procs->Spawn("c0", "mesh.counter");
  REQUIRE(counters.ok());
  v1::Increment one;
  one.set_by(1);
  REQUIRE(counters->Slice("procs", 1, 3)->Cast(one).ok());
  auto counts = counters->Call<v1::Count>(v1::GetCount());
  for (size_t rank = 0; rank < 8; ++rank) {
    REQUIRE(counts[rank].ok());
    size_t local = rank % 4;
    CHECK(counts[rank]->value() == ((local == 1 || local == 2) ? 1 : 0));
  }
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "10,000 messages from one sender arrive in order; with two senders each "
    "order holds") {
  auto client = NewClient();
  auto other = NewClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Local(WithClient(client));
  REQUIRE(hosts.ok());
  // The host trusts the client that started it; the other one is let in
  // with the same credentials.
  other->SetHostCredentials(hosts->addresses()[0],
                            client->CredentialsFor(hosts->addresses()[0]));
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 1);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> actors = procs->Spawn("seq", "mesh.echo");
  REQUIRE(actors.ok());

  v1::Seq seq;
  seq.set_sender("one");
  for (uint64_t n = 1; n <= 10000; ++n) {
    seq.set_n(n);
    REQUIRE(actors->Cast(seq).ok());
  }
  auto report = actors->Call<v1::SeqReport>(v1::GetSeqReport());
  REQUIRE(report[0].ok());
  CHECK(report[0]->received() == 10000);
  CHECK(report[0]->out_of_order() == 0);
  CHECK(report[0]->last_by_sender().at("one") == 10000);

  // Two senders (two clients, two mailboxes) at once, interleaved.
  ActorMesh from_other(other, actors->name(), actors->type(), actors->extent(),
                       {actors->actor(0)});
  auto send = [](const ActorMesh& mesh, const std::string& name) {
    v1::Seq message;
    message.set_sender(name);
    for (uint64_t n = 1; n <= 5000; ++n) {
      message.set_n(n);
      CHECK(mesh.Cast(message).ok());
    }
  };
  std::thread a([&] { send(*actors, "a"); });
  std::thread b([&] { send(from_other, "b"); });
  a.join();
  b.join();
  // Each sender's last message is its 5000th once its own stream drained:
  // a call from each sender queues behind that sender's casts.
  auto from_b = from_other.Call<v1::SeqReport>(v1::GetSeqReport());
  REQUIRE(from_b[0].ok());
  CHECK(from_b[0]->last_by_sender().at("b") == 5000);
  report = actors->Call<v1::SeqReport>(v1::GetSeqReport());
  REQUIRE(report[0].ok());
  CHECK(report[0]->out_of_order() == 0);
  CHECK(report[0]->last_by_sender().at("a") == 5000);
  CHECK(report[0]->received() == 20000);
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "spawn errors: an unregistered actor type is INVALID_ARGUMENT; a stopped "
    "proc is FAILED_PRECONDITION") {
  auto client = NewClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Local(WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 2);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> bad = procs->Spawn("a0", "no.such.type");
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("no.such.type") != absl::string_view::npos);

  absl::StatusOr<ActorMesh> bad_name = procs->Spawn("../a", "mesh.echo");
  CHECK(bad_name.status().code() == absl::StatusCode::kInvalidArgument);

  REQUIRE(procs->Stop(absl::Seconds(2)).ok());
  absl::StatusOr<ActorMesh> stopped = procs->Spawn("a1", "mesh.echo");
  CHECK(stopped.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(stopped.status().message().find("STOPPED") != absl::string_view::npos);
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "a call to a mesh whose proc died returns an error for that rank instead "
    "of hanging") {
  auto client = NewClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Local(WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 3);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> actors = procs->Spawn("a0", "mesh.echo");
  REQUIRE(actors.ok());
  // Handled, so the mesh is not poisoned and later calls go out too.
  actors->OnSupervisionEvent([](const v1::SupervisionEvent&) {});
  REQUIRE(kill(procs->procs()[1].pid(), SIGKILL) == 0);
  auto replies =
      actors->Call<v1::ActorIdReply>(v1::GetActorId(), absl::Seconds(60));
  REQUIRE(replies.size() == 3);
  CHECK(replies[0].ok());
  CHECK(replies[2].ok());
  REQUIRE_FALSE(replies[1].ok());
  CHECK(replies[1].status().code() == absl::StatusCode::kUnavailable);
  CHECK(replies[1].status().message().find("p0_1") != absl::string_view::npos);
  // With the cause, whether the call met the proc dying (its host holds
  // what it cannot deliver until the proc is reaped) or already gone.
  CHECK(replies[1].status().message().find("killed by SIGKILL") !=
        absl::string_view::npos);
  for (int i = 0; i < 3; ++i) {
    auto again =
        actors->Call<v1::ActorIdReply>(v1::GetActorId(), absl::Seconds(60));
    CHECK(again[1].status().code() == absl::StatusCode::kUnavailable);
    CHECK(again[1].status().message().find("killed by SIGKILL") !=
          absl::string_view::npos);
  }
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "a failing handler fails its actor, tells the owner, and later calls get "
    "the error") {
  auto client = NewClient();
  absl::Notification told;
  v1::SupervisionEvent event;
  client->OnSupervisionEvent([&](const v1::SupervisionEvent& e) {
    if (e.actor().status() == v1::FAILED && !told.HasBeenNotified()) {
      event = e;
      told.Notify();
    }
  });
  absl::StatusOr<HostMesh> hosts = HostMesh::Local(WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 2);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> actors = procs->Spawn("a0", "mesh.echo");
  REQUIRE(actors.ok());
  v1::Fail fail;
  fail.set_why("injected failure");
  auto failed = actors->Slice("procs", 0)->Call<v1::Echo>(fail);
  REQUIRE_FALSE(failed[0].ok());
  CHECK(failed[0].status().message().find("injected failure") !=
        absl::string_view::npos);
  REQUIRE(told.WaitForNotificationWithTimeout(absl::Seconds(20)));
  CHECK(event.actor().name() == "a0");
  CHECK(event.actor().reason().find("injected failure") != std::string::npos);
  auto after = actors->Call<v1::ActorIdReply>(v1::GetActorId());
  CHECK(after[0].status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(after[1].ok());
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE("once and accumulating ports") {
  auto client = NewClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Local(WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 4);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> actors = procs->Spawn("a0", "mesh.echo");
  REQUIRE(actors.ok());

  // Accumulating: the sum of the ranks of every actor that answered.
  auto sum = client->OpenAccumulatingPort<v1::ActorIdReply, uint64_t>(
      0, [](uint64_t acc, const v1::ActorIdReply& reply) {
        return acc + reply.rank();
      });
  v1::GetActorId to_sum;
  *to_sum.mutable_port() = sum.ref();
  REQUIRE(actors->Cast(to_sum).ok());
  absl::StatusOr<uint64_t> total = sum.Wait(4);
  REQUIRE(total.ok());
  CHECK(*total == 0 + 1 + 2 + 3);

  // Once: the first reply only.
  OncePort<v1::ActorIdReply> once = client->OpenOncePort<v1::ActorIdReply>();
  v1::GetActorId to_once;
  *to_once.mutable_port() = once.ref();
  REQUIRE(actors->Cast(to_once).ok());
  CHECK(once.Recv().ok());
  CHECK(once.Recv().status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "Attach uses running hosts; Shutdown stops only this mesh's procs and "
    "leaves the daemon up") {
  auto daemon = testing::TestHost::Start();  // as if run by systemd
  REQUIRE(daemon != nullptr);
  auto client = testing::NewClient(daemon->credentials());
  std::set<pid_t> pids;
  {
    absl::StatusOr<HostMesh> hosts =
        HostMesh::Attach({daemon->address()}, WithClient(client));
    REQUIRE(hosts.ok());
    absl::StatusOr<ProcMesh> procs = hosts->Spawn("att", 2);
    REQUIRE(procs.ok());
    for (const auto& proc : procs->procs()) pids.insert(proc.pid());
    absl::StatusOr<ActorMesh> actors = procs->Spawn("a0", "mesh.counter");
    REQUIRE(actors.ok());
    v1::Increment inc;
    inc.set_by(2);
    auto counts = actors->Call<v1::Count>(inc);
    CHECK(counts[1].ok());
    CHECK(counts[1]->value() == 2);
    CHECK(hosts->Shutdown().ok());
  }
  for (pid_t pid : pids) CHECK_FALSE(testing::IsAlive(pid));
  CHECK(testing::IsAlive(daemon->pid()));
  v1::ProcState state;
  REQUIRE(daemon->Get("att_0", &state).ok());
  CHECK(state.status() == v1::STOPPED);
  CHECK_FALSE(HostMesh::Attach({"127.0.0.1:1"}, WithClient(client)).ok());

  // Another client's mesh under a name already in use with another spec
  // fails, and shutting that client down leaves the first client's procs.
  absl::StatusOr<HostMesh> owner =
      HostMesh::Attach({daemon->address()}, WithClient(client));
  REQUIRE(owner.ok());
  absl::StatusOr<ProcMesh> mine = owner->Spawn("mine", 1);
  REQUIRE(mine.ok());
  {
    auto other_client = testing::NewClient(daemon->credentials());
    absl::StatusOr<HostMesh> other =
        HostMesh::Attach({daemon->address()}, WithClient(other_client));
    REQUIRE(other.ok());
    v1::ProcSpec different;
    different.set_command("/bin/sleep");
    different.add_args("100");
    CHECK(other->Spawn("mine", 1, different).status().code() ==
          absl::StatusCode::kFailedPrecondition);
  }  // ~HostMesh of the other client
  REQUIRE(daemon->Get("mine_0", &state).ok());
  CHECK(state.status() == v1::RUNNING);
  CHECK(owner->Shutdown().ok());
}

TEST_CASE(
    "a host mesh is its own scope guard: leaving scope leaves no process "
    "behind") {
  auto client = NewClient();
  std::set<pid_t> pids;
  {
    absl::StatusOr<HostMesh> hosts = HostMesh::Process(2, WithClient(client));
    REQUIRE(hosts.ok());
    absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 2);
    REQUIRE(procs.ok());
    for (const auto& proc : procs->procs()) pids.insert(proc.pid());
  }
  REQUIRE(pids.size() == 4);
  for (pid_t pid : pids) CHECK_FALSE(testing::IsAlive(pid));
  CHECK(testing::LiveInGroups(pids).empty());
}

TEST_CASE(
    "during a 16-proc mesh only hostd listens: no proc and not the client "
    "holds a listening socket of any family") {
  auto client = NewClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Local(WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("quiet", 16);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> echo = procs->Spawn("a0", "mesh.echo");
  REQUIRE(echo.ok());
  // Traffic in both directions is flowing while we look.
  REQUIRE(RanksOf(echo->Call<v1::ActorIdReply>(v1::GetActorId())).size() == 16);
  for (const v1::ProcState& proc : procs->procs()) {
    INFO(proc.name());
    CHECK(ListeningSockets(proc.pid()).empty());
  }
  CHECK(ListeningSockets(getpid()).empty());
  // hostd is the one door.
  v1::HostInfo info;
  auto stub = v1::Host::NewStub(client->Channel(hosts->addresses()[0]));
  REQUIRE(stub->GetHostInfo(testing::Context().get(), {}, &info).ok());
  CHECK_FALSE(ListeningSockets(info.pid()).empty());
}

TEST_CASE(
    "an actor on one host reaches an actor on another host host to host, and "
    "the reply comes back on the client's own stream") {
  auto client = NewClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Process(2, WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("x", 1);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> echo = procs->Spawn("a0", "mesh.echo");
  REQUIRE(echo.ok());
  REQUIRE(echo->actor(0).host() != echo->actor(1).host());

  // Rank 0 (host 0) forwards GetActorId to rank 1 (host 1), whose reply
  // goes to a port of this client.
  auto port = client->OpenPort<v1::ActorIdReply>();
  v1::Forward forward;
  *forward.mutable_to() = echo->actor(1);
  v1::GetActorId get_id;
  forward.mutable_payload()->PackFrom(get_id);
  *forward.mutable_reply_to() = port.ref();
  absl::StatusOr<ActorMesh> rank0 = echo->Slice("hosts", 0);
  REQUIRE(rank0.ok());
  auto forwarded = rank0->Call<v1::Forwarded>(forward);
  REQUIRE(forwarded.size() == 1);
  REQUIRE(forwarded[0].ok());
  absl::StatusOr<v1::ActorIdReply> reply = port.Recv(absl::Seconds(20));
  REQUIRE(reply.ok());
  CHECK(reply->rank() == 1);
  CHECK(reply->id().host() == echo->actor(1).host());
  CHECK(reply->pid() == procs->procs()[1].pid());
}

TEST_CASE(
    "Reduce folds on each host and across hosts: sum, min, max, count, "
    "collect, first error") {
  auto client = NewClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Process(2, WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("r", 3);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> counters = procs->Spawn("c", "mesh.counter");
  REQUIRE(counters.ok());
  // Rank i counts to i + 1.
  for (size_t rank = 0; rank < 6; ++rank) {
    absl::StatusOr<ActorMesh> one = counters->Slice("procs", rank % 3);
    REQUIRE(one.ok());
    absl::StatusOr<ActorMesh> cell = one->Slice("hosts", rank / 3);
    REQUIRE(cell.ok());
    v1::Increment increment;
    increment.set_by(static_cast<int64_t>(rank) + 1);
    REQUIRE(cell->Call<v1::Count>(increment)[0].ok());
  }
  auto reduce = [&](v1::Reduce how, const std::string& field = "") {
    absl::StatusOr<v1::Reduced> reduced =
        counters->Reduce(v1::GetCount(), how, absl::Seconds(20), field);
    REQUIRE(reduced.ok());
    return *reduced;
  };
  CHECK(reduce(v1::REDUCE_SUM).value() == 1 + 2 + 3 + 4 + 5 + 6);
  CHECK(reduce(v1::REDUCE_MIN).value() == 1);
  CHECK(reduce(v1::REDUCE_MAX).value() == 6);
  CHECK(reduce(v1::REDUCE_MAX, "rank").value() == 5);
  CHECK(reduce(v1::REDUCE_COUNT).value() == 6);
  v1::Reduced collected = reduce(v1::REDUCE_COLLECT);
  REQUIRE(collected.replies_size() == 6);
  for (int rank = 0; rank < 6; ++rank) {
    v1::Count count;
    REQUIRE(collected.replies(rank).payload().UnpackTo(&count));
    CHECK(count.rank() == static_cast<uint64_t>(rank));
  }
  v1::Reduced clean = reduce(v1::REDUCE_FIRST_ERROR);
  CHECK(clean.failed() == 0);
  CHECK(clean.ok() == 6);

  // A rank whose proc is killed fails with the cause, at once. The failure
  // is handled (an unhandled one would poison the mesh), so the other ranks
  // go on.
  counters->OnSupervisionEvent([](const v1::SupervisionEvent&) {});
  REQUIRE(kill(procs->procs()[4].pid(), SIGKILL) == 0);
  absl::Time start = absl::Now();
  v1::Reduced broken = reduce(v1::REDUCE_FIRST_ERROR);
  CHECK(absl::Now() - start < absl::Seconds(15));
  CHECK(broken.failed() == 1);
  CHECK(broken.first_error_rank() == 4);
  CHECK(broken.first_error().message().find("r_4") != std::string::npos);
  CHECK(reduce(v1::REDUCE_SUM).value() == 1 + 2 + 3 + 4 + 6);
}

}  // namespace
}  // namespace mesh
