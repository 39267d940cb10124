// HostWatch alone (the test is the publisher): snapshot then events in
// order, visibility, the Ready handshake, overflow and resync, the cap,
// remove and close.
#include "hostd/host_watch.h"

#include <memory>
#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "lib/resource/status_waiters.h"
#include "proto/host.pb.h"

namespace mesh {
namespace {

using Next = HostWatch::Watcher::Next;

v1::HostEvent ProcEvent(const std::string& name, v1::Status status,
                        const std::string& owner = "alice") {
  v1::HostEvent event;
  event.set_kind(v1::HostEvent::PROC_CHANGED);
  event.mutable_proc()->set_name(name);
  event.mutable_proc()->set_status(status);
  event.mutable_proc()->set_owner(owner);
  return event;
}

v1::HostEvent Snapshot(const std::vector<std::string>& names) {
  v1::HostEvent snapshot;
  for (const std::string& name : names) {
    v1::ProcState* proc = snapshot.add_procs();
    proc->set_name(name);
    proc->set_owner(name == "bobs" ? "bob" : "alice");
  }
  return snapshot;
}

HostWatch::Visible All() {
  return [](const v1::ProcState&) { return true; };
}

// Publishes `event` and runs the Ready callbacks it made due; how many.
int Publish(HostWatch& watch, v1::HostEvent event) {
  Deferred deferred;
  watch.Publish(std::move(event), deferred);
  const int due = static_cast<int>(deferred.size());
  RunDeferred(deferred);
  return due;
}

TEST_CASE("a watcher gets its snapshot then every change in order") {
  HostWatch watch;
  int ready = 0;
  auto watcher = watch.Add(Snapshot({"a", "bobs"}), All(), [&] { ++ready; });
  REQUIRE(watcher.ok());
  v1::HostEvent event;
  absl::Status end;
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEvent);
  CHECK(event.kind() == v1::HostEvent::SNAPSHOT);
  CHECK(event.procs_size() == 2);
  // Nothing more: armed, and the next change wakes it once.
  CHECK((*watcher)->Take(&event, &end) == Next::kIdle);
  CHECK(Publish(watch, ProcEvent("a", v1::RUNNING)) == 1);
  CHECK(Publish(watch, ProcEvent("a", v1::STOPPING)) == 0);
  CHECK(ready == 1);
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEvent);
  CHECK(event.proc().status() == v1::RUNNING);
  const uint64_t first = event.sequence();
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEvent);
  CHECK(event.proc().status() == v1::STOPPING);
  CHECK(event.sequence() == first + 1);
  CHECK(event.has_at());
  CHECK((*watcher)->Take(&event, &end) == Next::kIdle);
}

TEST_CASE("a watcher sees only the procs it may see but every host event") {
  HostWatch watch;
  auto bobs = watch.Add(
      Snapshot({"a", "bobs"}),
      [](const v1::ProcState& state) { return state.owner() == "bob"; }, [] {});
  REQUIRE(bobs.ok());
  v1::HostEvent event;
  absl::Status end;
  REQUIRE((*bobs)->Take(&event, &end) == Next::kEvent);
  REQUIRE(event.procs_size() == 1);
  CHECK(event.procs(0).name() == "bobs");
  Publish(watch, ProcEvent("a", v1::RUNNING, "alice"));
  v1::HostEvent host;
  host.set_kind(v1::HostEvent::HOST_CHANGED);
  host.set_reason("drained by ops");
  Publish(watch, host);
  REQUIRE((*bobs)->Take(&event, &end) == Next::kEvent);
  CHECK(event.kind() == v1::HostEvent::HOST_CHANGED);
  CHECK((*bobs)->Take(&event, &end) == Next::kIdle);
}

TEST_CASE("a watcher that falls behind gets a resync instead of its queue") {
  HostWatch::Limits limits;
  limits.max_queue = 4;
  HostWatch watch(limits);
  auto watcher = watch.Add(Snapshot({"a"}), All(), [] {});
  REQUIRE(watcher.ok());
  v1::HostEvent event;
  absl::Status end;
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEvent);
  CHECK(event.kind() == v1::HostEvent::SNAPSHOT);
  // Four events fit, the fifth overflows.
  for (int i = 0; i < 10; ++i) Publish(watch, ProcEvent("a", v1::RUNNING));
  REQUIRE((*watcher)->Take(&event, &end) == Next::kResync);
  watch.Resync(**watcher, Snapshot({"a", "b"}));
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEvent);
  CHECK(event.kind() == v1::HostEvent::RESYNC);
  CHECK(event.dropped() == 10);
  CHECK(event.procs_size() == 2);
  CHECK(event.sequence() == 10);
  Publish(watch, ProcEvent("b", v1::STOPPED));
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEvent);
  CHECK(event.proc().name() == "b");
  CHECK(event.sequence() == 11);
}

TEST_CASE("the byte bound overflows a queue of few large events") {
  HostWatch::Limits limits;
  limits.max_queue_bytes = 10000;
  HostWatch watch(limits);
  auto watcher = watch.Add(Snapshot({}), All(), [] {});
  REQUIRE(watcher.ok());
  v1::HostEvent big = ProcEvent("a", v1::RUNNING);
  big.mutable_proc()->mutable_spec()->add_args(std::string(6000, 'x'));
  Publish(watch, big);
  Publish(watch, big);
  v1::HostEvent event;
  absl::Status end;
  // It overflowed before its snapshot was sent: its first message is
  // still a snapshot (a fresh one).
  REQUIRE((*watcher)->Take(&event, &end) == Next::kResync);
  watch.Resync(**watcher, Snapshot({"a"}));
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEvent);
  CHECK(event.kind() == v1::HostEvent::SNAPSHOT);
  CHECK(event.procs_size() == 1);
  CHECK(event.dropped() == 0);
}

TEST_CASE("watchers past the cap are refused until one is removed") {
  HostWatch::Limits limits;
  limits.max_watchers = 2;
  HostWatch watch(limits);
  auto one = watch.Add(Snapshot({}), All(), [] {});
  auto two = watch.Add(Snapshot({}), All(), [] {});
  REQUIRE(one.ok());
  REQUIRE(two.ok());
  auto three = watch.Add(Snapshot({}), All(), [] {});
  REQUIRE(absl::IsResourceExhausted(three.status()));
  CHECK(three.status().message().find("WatchHost") != std::string::npos);
  watch.Remove(**one);
  watch.Remove(**one);  // idempotent
  CHECK(watch.watchers() == 1);
  CHECK(watch.Add(Snapshot({}), All(), [] {}).ok());
}

TEST_CASE("removing an armed watcher wakes it to end cancelled") {
  HostWatch watch;
  int ready = 0;
  auto watcher = watch.Add(Snapshot({}), All(), [&] { ++ready; });
  REQUIRE(watcher.ok());
  v1::HostEvent event;
  absl::Status end;
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEvent);
  REQUIRE((*watcher)->Take(&event, &end) == Next::kIdle);
  watch.Remove(**watcher);
  CHECK(ready == 1);
  REQUIRE((*watcher)->Take(&event, &end) == Next::kEnd);
  CHECK(absl::IsCancelled(end));
  // Nothing reaches a removed watcher.
  CHECK(Publish(watch, ProcEvent("a", v1::RUNNING)) == 0);
}

TEST_CASE("closing sends what was queued then ends every watcher") {
  HostWatch watch;
  int ready = 0;
  auto idle = watch.Add(Snapshot({}), All(), [&] { ++ready; });
  auto busy = watch.Add(Snapshot({}), All(), [] {});
  REQUIRE(idle.ok());
  REQUIRE(busy.ok());
  v1::HostEvent event;
  absl::Status end;
  REQUIRE((*idle)->Take(&event, &end) == Next::kEvent);
  REQUIRE((*idle)->Take(&event, &end) == Next::kIdle);
  Publish(watch, ProcEvent("a", v1::STOPPED));
  CHECK(ready == 1);
  watch.Close();
  CHECK(ready == 1);  // It was woken already (not armed).
  REQUIRE((*idle)->Take(&event, &end) == Next::kEvent);
  REQUIRE((*idle)->Take(&event, &end) == Next::kEnd);
  CHECK(end.ok());
  REQUIRE((*busy)->Take(&event, &end) == Next::kEvent);  // snapshot
  REQUIRE((*busy)->Take(&event, &end) == Next::kEvent);  // the stop
  REQUIRE((*busy)->Take(&event, &end) == Next::kEnd);
  CHECK(absl::IsFailedPrecondition(
      watch.Add(Snapshot({}), All(), [] {}).status()));
}

}  // namespace
}  // namespace mesh
