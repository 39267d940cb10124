// Tree casts end to end: clients with a fan-out of 2, so that a mesh on 4-5
// real hostds is reached through a tree with interior hosts (host 0 passes
// casts on to hosts 1 and 2, host 1 to hosts 3 and 4).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "lib/testing/temp_dir.h"
#include "proto/actors.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::RanksOf;
using testing::TestHost;
using testing::WithClient;

constexpr size_t kFanout = 2;

std::shared_ptr<Client> TreeClient() {
  Client::Options options;
  options.credentials = ClientCredentials();
  options.cast_tree_fanout = kFanout;
  return testing::NewClient(std::move(options));
}

TEST_CASE(
    "a mesh on more hosts than the fan-out is reached through a tree of "
    "hosts and answers calls, slices, casts and folds as host by host") {
  auto client = TreeClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Process(5, WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("t0", 2);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> echo = procs->Spawn("a0", "mesh.echo");
  REQUIRE(echo.ok());

  auto replies = echo->Call<v1::ActorIdReply>(v1::GetActorId());
  CHECK(RanksOf(replies) ==
        std::vector<uint64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  for (size_t rank = 0; rank < replies.size(); ++rank) {
    CHECK(replies[rank]->cast_rank() == rank);
  }
  // The deepest host alone, through hosts 0 and 1.
  absl::StatusOr<ActorMesh> deep = echo->Slice("hosts", 4, 5);
  REQUIRE(deep.ok());
  CHECK(RanksOf(deep->Call<v1::ActorIdReply>(v1::GetActorId())) ==
        std::vector<uint64_t>{8, 9});

  // A cast reaches exactly its slice (hosts 3 and 4, below host 1).
  absl::StatusOr<ActorMesh> counters = procs->Spawn("c0", "mesh.counter");
  REQUIRE(counters.ok());
  v1::Increment one;
  one.set_by(1);
  REQUIRE(counters->Slice("hosts", 3, 5)->Cast(one).ok());
  auto counts = counters->Call<v1::Count>(v1::GetCount());
  REQUIRE(counts.size() == 10);
  for (size_t rank = 0; rank < 10; ++rank) {
    INFO("rank " << rank);
    REQUIRE(counts[rank].ok());
    CHECK(counts[rank]->value() == (rank >= 6 ? 1 : 0));
  }

  // Folds: each host folds its own ranks and its subtree's answers; the
  // client gets one answer from host 0.
  absl::StatusOr<v1::Reduced> sum =
      counters->Reduce(v1::GetCount(), v1::REDUCE_SUM);
  REQUIRE(sum.ok());
  CHECK(sum->ok() == 10);
  CHECK(sum->failed() == 0);
  CHECK(sum->value() == 4.0);
  absl::StatusOr<v1::Reduced> all =
      counters->Reduce(v1::GetCount(), v1::REDUCE_COLLECT);
  REQUIRE(all.ok());
  REQUIRE(all->replies_size() == 10);
  for (int rank = 0; rank < 10; ++rank) {
    CHECK(all->replies(rank).correlation() == static_cast<uint64_t>(rank));
  }
  CHECK(hosts->Shutdown().ok());
}

TEST_CASE(
    "one sender's casts through the tree keep their order at every actor, "
    "whatever slice each goes to") {
  auto client = TreeClient();
  absl::StatusOr<HostMesh> hosts = HostMesh::Process(5, WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("o0", 1);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> seq_mesh = procs->Spawn("seq", "mesh.echo");
  REQUIRE(seq_mesh.ok());
  absl::StatusOr<ActorMesh> below = seq_mesh->Slice("hosts", 3, 5);
  REQUIRE(below.ok());
  v1::Seq seq;
  seq.set_sender("tree");
  constexpr uint64_t kMessages = 3000;
  uint64_t to_below = 0;
  for (uint64_t n = 1; n <= kMessages; ++n) {
    seq.set_n(n);
    if (n % 3 == 0) {
      REQUIRE(below->Cast(seq).ok());
      ++to_below;
    } else {
      REQUIRE(seq_mesh->Cast(seq).ok());
    }
  }
  auto reports = seq_mesh->Call<v1::SeqReport>(v1::GetSeqReport());
  REQUIRE(reports.size() == 5);
  for (size_t rank = 0; rank < 5; ++rank) {
    INFO("rank " << rank);
    REQUIRE(reports[rank].ok());
    // Ranks 3 and 4 get every n in turn; the others every n not sent
    // below, so each n sent below is one jump (but the last, n = 3000).
    CHECK(reports[rank]->out_of_order() == (rank >= 3 ? 0 : to_below - 1));
    CHECK(reports[rank]->received() ==
          (rank >= 3 ? kMessages : kMessages - to_below));
  }
  CHECK(hosts->Shutdown().ok());
}

// Writes `text` to a new 0600 file `path`.
void WritePrivate(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) ==
          static_cast<ssize_t>(text.size()));
  close(fd);
}

TEST_CASE(
    "a host of the tree that is gone fails exactly the ranks below it, "
    "naming it, and the others answer") {
  // Four hosts that trust each other as peers (one shared peer token).
  testing::TempDir dir;
  const std::string peer_token = dir.path() + "/peer.token";
  const std::string tokens = dir.path() + "/tokens";
  WritePrivate(peer_token, "tree-peer-secret-0123456789abcdef\n");
  WritePrivate(tokens, "hosts peer tree-peer-secret-0123456789abcdef\n");
  std::vector<std::unique_ptr<TestHost>> test_hosts;
  for (int i = 0; i < 4; ++i) {
    test_hosts.push_back(
        TestHost::Start({"--peer-token-file=" + peer_token,
                         "--tokens-file=" + tokens, "--orphan-timeout=1s"}));
    REQUIRE(test_hosts.back() != nullptr);
  }
  auto client = TreeClient();
  std::vector<std::string> addresses;
  for (const auto& host : test_hosts) {
    client->SetHostCredentials(host->address(), host->credentials());
    addresses.push_back(host->address());
  }
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach(addresses, WithClient(client));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("g0", 1);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> counters = procs->Spawn("c0", "mesh.counter");
  REQUIRE(counters.ok());
  counters->OnSupervisionEvent([](const v1::SupervisionEvent&) {});
  absl::StatusOr<v1::Reduced> before =
      counters->Reduce(v1::GetCount(), v1::REDUCE_COUNT, absl::Seconds(3));
  REQUIRE(before.ok());
  INFO(before->ShortDebugString());
  if (before->ok() != 4) {
    WARN(test_hosts[0]->HostdLog());
    WARN(test_hosts[1]->HostdLog());
  }
  REQUIRE(before->ok() == 4);

  // Host 1 (below host 0, above host 3) goes.
  const pid_t lost_proc = procs->procs()[1].pid();
  REQUIRE(kill(test_hosts[1]->pid(), SIGKILL) == 0);
  REQUIRE(test_hosts[1]->WaitExit().ok());
  absl::StatusOr<v1::Reduced> after =
      counters->Reduce(v1::GetCount(), v1::REDUCE_COUNT, absl::Seconds(3));
  REQUIRE(after.ok());
  CHECK(after->ok() == 2);      // ranks 0 and 2
  CHECK(after->failed() == 2);  // rank 1 on host 1, rank 3 below it
  CHECK(after->first_error_rank() == 1);
  CHECK_THAT(after->first_error().message(),
             Catch::Contains(test_hosts[1]->address()));

  hosts->Shutdown().IgnoreError();  // host 1 is gone
  // Host 1's proc, orphaned, ends by itself.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (testing::IsAlive(lost_proc) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  if (testing::IsAlive(lost_proc)) {
    FAIL_CHECK("orphaned proc " << lost_proc << " did not exit by itself");
    kill(-lost_proc, SIGKILL);
  }
}

}  // namespace
}  // namespace mesh
