// A flooded actor (issue 10), end to end with a real hostd and procs of
// tests/testdata/trouble_procd: while an actor sleeps in its handler, a
// burst of messages to it fills its queue (procd --max-queued-messages);
// the sender gets RESOURCE_EXHAUSTED error replies for the rest, at once,
// and other actors on the same proc and host keep answering. The queued
// messages are handled once the actor wakes.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "lib/mailbox/mailbox.h"
#include "lib/mailbox/testing.h"
#include "proto/actors.pb.h"
#include "tests/testdata/trouble.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::BinaryPath;
using testing::TestHost;
using testing::WithClient;

constexpr int kQueueCap = 64;
constexpr int kBurst = 400;
// How long the flooded actor sleeps; the burst and the other actors' calls
// happen meanwhile.
constexpr absl::Duration kSleep = absl::Seconds(6);

TEST_CASE(
    "a flooded actor's sender gets RESOURCE_EXHAUSTED while other actors on "
    "the host keep answering") {
  std::unique_ptr<TestHost> host = TestHost::Start();
  REQUIRE(host != nullptr);
  std::shared_ptr<Client> client = testing::NewClient();
  client->SetHostCredentials(host->address(), host->credentials());
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach({host->address()}, WithClient(client));
  REQUIRE(hosts.ok());
  v1::ProcSpec spec;
  spec.set_command(BinaryPath("trouble_procd"));
  spec.add_args(absl::StrCat("--max-queued-messages=", kQueueCap));
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("fl", 2, spec);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> slow = procs->Spawn("slow", "test.trouble");
  REQUIRE(slow.ok());
  absl::StatusOr<ActorMesh> echo = procs->Spawn("echo", "mesh.echo");
  REQUIRE(echo.ok());

  // Every reply to the burst (and to the sleep) comes to one port.
  Mailbox& mailbox = client->mailbox();
  mesh::testing::Inbox replies;
  v1::PortRef port = mailbox.OpenPort(replies.Handler());
  const v1::ActorRef& target = slow->actor(0);
  auto send = [&](uint32_t ms, uint64_t correlation) {
    test::Sleep sleep;
    sleep.set_ms(ms);
    v1::Envelope envelope = EnvelopeToActor(target, sleep);
    *envelope.mutable_reply_to() = port;
    envelope.set_correlation(correlation);
    mailbox.Send(std::move(envelope));
  };
  send(static_cast<uint32_t>(absl::ToInt64Milliseconds(kSleep)), 0);
  const absl::Time burst_start = absl::Now();
  for (int i = 1; i <= kBurst; ++i) send(0, i);

  // The refusals come back while the actor still sleeps: at least the
  // burst minus what its queue holds.
  const int min_refused = kBurst - kQueueCap;
  REQUIRE(replies.WaitFor(min_refused, absl::Seconds(60)));
  const absl::Duration refused_after = absl::Now() - burst_start;

  // Other actors answer meanwhile: on the flooded actor's proc and on the
  // other proc of the host.
  v1::Echo hello;
  hello.set_text("still here");
  const absl::Time call_start = absl::Now();
  std::vector<absl::StatusOr<v1::Echo>> answers =
      echo->Call<v1::Echo>(hello, absl::Seconds(30));
  const absl::Duration call_took = absl::Now() - call_start;
  REQUIRE(answers.size() == 2);
  for (const absl::StatusOr<v1::Echo>& answer : answers) {
    INFO(answer.status());
    REQUIRE(answer.ok());
    CHECK(answer->text() == "still here");
  }
  absl::StatusOr<ActorMesh> other_slow = slow->Slice("procs", 1);
  REQUIRE(other_slow.ok());
  std::vector<absl::StatusOr<test::Slept>> other =
      other_slow->Call<test::Slept>(test::Sleep(), absl::Seconds(30));
  REQUIRE(other.size() == 1);
  CHECK(other[0].ok());

  // Once the actor wakes it handles its queue: every message is answered,
  // each either handled or refused.
  REQUIRE(replies.WaitFor(kBurst + 1, absl::Seconds(60)));
  int refused = 0;
  int handled = 0;
  std::string refusal;
  for (const v1::Envelope& reply : replies.envelopes()) {
    absl::StatusOr<test::Slept> slept = UnpackPayload<test::Slept>(reply);
    if (slept.ok()) {
      ++handled;
    } else {
      CHECK(slept.status().code() == absl::StatusCode::kResourceExhausted);
      refusal = std::string(slept.status().message());
      ++refused;
    }
  }
  WARN("refused " << refused << " of " << kBurst << " within " << refused_after
                  << "; the other actors answered in " << call_took
                  << " while the flooded one slept " << kSleep);
  CHECK(refused >= min_refused);
  CHECK(handled + refused == kBurst + 1);
  CHECK(handled >= 1);
  CHECK(handled <= kQueueCap + 1);
  CHECK(absl::StrContains(refusal,
                          "actor \"slow\" on proc \"fl_0\" has 64 "
                          "queued messages, its limit"));
  // The other actors' answers did not wait for the sleeper.
  CHECK(call_took < kSleep);
  mailbox.ClosePort(port.port());
  REQUIRE(hosts->Shutdown().ok());
}

}  // namespace
}  // namespace mesh
