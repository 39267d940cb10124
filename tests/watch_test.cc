// WatchHost end to end on real hostds: a snapshot, then each change as it
// happens (measured: how long after the change each event arrives), host
// events (drain, shutdown) and the end at shutdown; what a client sees; a
// watcher that never reads neither slows spawns nor other watchers, and
// gets a RESYNC once it reads; past the cap a watch is refused, and a
// cancelled one frees its slot.
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "google/protobuf/util/time_util.h"
#include "lib/auth/credentials.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;
using testing::Context;
using testing::TestHost;

constexpr char kAliceToken[] = "alice-token-for-the-watch-test-0123";

struct Received {
  v1::HostEvent event;
  absl::Time at;  // when the test read it
};

// A WatchHost stream read on its own thread (no assertion there); the test
// thread takes the events in order.
class Watch {
 public:
  explicit Watch(v1::Host::Stub& stub,
                 v1::WatchHostRequest request = v1::WatchHostRequest()) {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(5)));
    reader_ = stub.WatchHost(&context_, request);
    thread_ = std::thread([this] {
      v1::HostEvent event;
      while (reader_->Read(&event)) {
        absl::MutexLock lock(&mu_);
        events_.push_back({event, absl::Now()});
      }
      grpc::Status status = reader_->Finish();
      absl::MutexLock lock(&mu_);
      end_ = status;
    });
  }
  ~Watch() {
    context_.TryCancel();
    thread_.join();
  }

  // The next event, if one comes within `timeout`.
  std::optional<Received> Next(absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return taken_ < events_.size() || end_.has_value();
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (taken_ >= events_.size()) return std::nullopt;
    return events_[taken_++];
  }
  // The next event that `match`es (others are skipped).
  template <typename Match>
  std::optional<Received> NextWhere(
      Match match, absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (std::optional<Received> next = Next(deadline - absl::Now())) {
      if (match(next->event)) return next;
    }
    return std::nullopt;
  }
  // How the stream ended, once it did within `timeout`.
  std::optional<grpc::Status> End(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return end_.has_value();
    };
    mu_.AwaitWithTimeout(absl::Condition(&ended), timeout);
    return end_;
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::HostEvent>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<Received> events_ ABSL_GUARDED_BY(mu_);
  size_t taken_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<grpc::Status> end_ ABSL_GUARDED_BY(mu_);
};

// How long after the change (the event's `at`, hostd's clock on this
// machine) the test read it.
absl::Duration Latency(const Received& received) {
  return received.at - absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(
                           received.event.at()));
}

std::string Describe(const std::optional<Received>& received) {
  return received.has_value() ? received->event.ShortDebugString()
                              : std::string("(no event)");
}

bool IsProc(const v1::HostEvent& event, const std::string& name,
            v1::HostEvent::Kind kind, v1::Status status) {
  return event.kind() == kind && event.proc().name() == name &&
         event.proc().status() == status;
}

TEST_CASE(
    "a watch gets a snapshot then each creation, start and stop in order as "
    "it happens, host events, and ends when the host shuts down") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("before", 0, v1::ProcSpec(), &state).ok());
  REQUIRE(host->Wait({"before"}, v1::RUNNING).procs(0).status() == v1::RUNNING);

  Watch watch(host->stub());
  std::optional<Received> snapshot = watch.Next();
  INFO(Describe(snapshot));
  REQUIRE(snapshot.has_value());
  CHECK(snapshot->event.kind() == v1::HostEvent::SNAPSHOT);
  CHECK(snapshot->event.host().address() == host->address());
  CHECK(snapshot->event.host().num_procs() == 1);
  REQUIRE(snapshot->event.procs_size() == 1);
  CHECK(snapshot->event.procs(0).name() == "before");
  CHECK(snapshot->event.procs(0).status() == v1::RUNNING);

  std::vector<Received> events;
  auto expect = [&](const std::string& name, v1::HostEvent::Kind kind,
                    v1::Status status) {
    std::optional<Received> next = watch.Next();
    INFO("expected " << name << " " << v1::Status_Name(status) << ", got "
                     << Describe(next));
    REQUIRE(next.has_value());
    CHECK(IsProc(next->event, name, kind, status));
    if (!events.empty()) {
      CHECK(next->event.sequence() > events.back().event.sequence());
      CHECK(next->event.proc().generation() >
            events.back().event.proc().generation());
    }
    events.push_back(*next);
  };
  REQUIRE(host->Create("w1", 1, v1::ProcSpec(), &state).ok());
  expect("w1", v1::HostEvent::PROC_CREATED, v1::INITIALIZING);
  expect("w1", v1::HostEvent::PROC_CHANGED, v1::RUNNING);
  REQUIRE(host->Stop("w1", &state).ok());
  expect("w1", v1::HostEvent::PROC_CHANGED, v1::STOPPING);
  expect("w1", v1::HostEvent::PROC_CHANGED, v1::STOPPED);
  // More of the same, for the figures.
  for (int i = 0; i < 5; ++i) {
    const std::string name = "more" + std::to_string(i);
    REQUIRE(host->Create(name, 2, v1::ProcSpec(), &state).ok());
    expect(name, v1::HostEvent::PROC_CREATED, v1::INITIALIZING);
    expect(name, v1::HostEvent::PROC_CHANGED, v1::RUNNING);
    REQUIRE(host->Stop(name, &state).ok());
    expect(name, v1::HostEvent::PROC_CHANGED, v1::STOPPING);
    expect(name, v1::HostEvent::PROC_CHANGED, v1::STOPPED);
  }
  std::vector<absl::Duration> latencies;
  for (const Received& received : events) {
    latencies.push_back(Latency(received));
  }
  std::sort(latencies.begin(), latencies.end());
  const absl::Duration median = latencies[latencies.size() / 2];
  WARN("event latency after a status change over "
       << latencies.size() << " events: median " << median << ", max "
       << latencies.back());
  // Pushed as they happen (typically a few ms, printed above); generous
  // bounds for 2 busy cores.
  CHECK(median < absl::Seconds(2));
  CHECK(latencies.back() < absl::Seconds(10));

  v1::DrainHostRequest drain;
  drain.set_reason("for the watch");
  v1::DrainHostResponse drained;
  REQUIRE(host->stub().DrainHost(Context().get(), drain, &drained).ok());
  std::optional<Received> host_event = watch.Next();
  INFO(Describe(host_event));
  REQUIRE(host_event.has_value());
  CHECK(host_event->event.kind() == v1::HostEvent::HOST_CHANGED);
  CHECK(host_event->event.host().drain().draining());
  CHECK(host_event->event.host().address() == host->address());
  CHECK_THAT(host_event->event.reason(),
             Catch::Contains("drained by") && Catch::Contains("for the watch"));

  v1::ShutdownHostRequest shutdown;
  shutdown.set_stay_down(true);
  v1::ShutdownHostResponse stopped;
  REQUIRE(
      host->stub()
          .ShutdownHost(Context(absl::Seconds(60)).get(), shutdown, &stopped)
          .ok());
  std::optional<Received> shutting = watch.Next();
  INFO(Describe(shutting));
  REQUIRE(shutting.has_value());
  CHECK(shutting->event.kind() == v1::HostEvent::HOST_CHANGED);
  CHECK(shutting->event.host().shutting_down());
  CHECK(watch
            .NextWhere([](const v1::HostEvent& event) {
              return IsProc(event, "before", v1::HostEvent::PROC_CHANGED,
                            v1::STOPPED);
            })
            .has_value());
  std::optional<grpc::Status> end = watch.End(absl::Seconds(30));
  REQUIRE(end.has_value());
  INFO(end->error_message());
  CHECK(end->ok());
  REQUIRE(host->WaitExit().ok());
}

TEST_CASE("a client's watch shows only its own procs, as ListProcs does") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  std::ofstream(tokens) << "alice client " << kAliceToken << "\n";
  REQUIRE(chmod(tokens.c_str(), 0600) == 0);
  auto host = TestHost::Start({"--tokens-file=" + tokens});
  REQUIRE(host != nullptr);
  ClientCredentials alice;
  alice.token = kAliceToken;
  auto as_alice = v1::Host::NewStub(NewAuthedChannel(host->address(), alice));
  auto create = [](v1::Host::Stub& stub, const std::string& name) {
    v1::CreateOrUpdateProcRequest request;
    request.set_name(name);
    v1::ProcState state;
    return stub.CreateOrUpdateProc(Context().get(), request, &state);
  };
  REQUIRE(create(*as_alice, "alices").ok());
  REQUIRE(create(host->stub(), "admins").ok());
  Watch watch(*as_alice);
  std::optional<Received> snapshot = watch.Next();
  REQUIRE(snapshot.has_value());
  REQUIRE(snapshot->event.procs_size() == 1);
  CHECK(snapshot->event.procs(0).name() == "alices");
  REQUIRE(create(host->stub(), "admins2").ok());
  REQUIRE(create(*as_alice, "alices2").ok());
  std::optional<Received> next = watch.Next();
  INFO(Describe(next));
  REQUIRE(next.has_value());
  // Every event she gets is of her procs.
  CHECK(next->event.proc().name() != "admins");
  CHECK(next->event.proc().owner() == "alice");
  CHECK(watch
            .NextWhere([](const v1::HostEvent& event) {
              return event.proc().name() == "alices2";
            })
            .has_value());
}

TEST_CASE(
    "a watcher that never reads slows neither spawns nor other watchers and "
    "gets a resync once it reads") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  // Opened and never read while the procs come and go.
  grpc::ClientContext stalled_context;
  stalled_context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Minutes(5)));
  auto stalled = host->stub().WatchHost(&stalled_context, {});
  Watch live(host->stub());
  REQUIRE(live.Next().has_value());  // its snapshot

  // Large events (60 KB of environment each): ~10 MB for the stalled
  // watcher, past its 4 MiB bound and gRPC's flow-control window.
  constexpr int kProcs = 40;
  v1::ProcSpec spec;
  (*spec.mutable_env())["BIG"] = std::string(60000, 'x');
  std::vector<std::string> names;
  const absl::Time start = absl::Now();
  for (int i = 0; i < kProcs; ++i) {
    names.push_back("p" + std::to_string(i));
    v1::ProcState state;
    grpc::Status created = host->Create(names.back(), i, spec, &state);
    INFO(created.error_message());
    REQUIRE(created.ok());
  }
  v1::WaitProcsResponse running =
      host->Wait(names, v1::RUNNING, absl::Seconds(120));
  const absl::Duration spawned = absl::Now() - start;
  REQUIRE_FALSE(running.timed_out());
  for (const std::string& name : names) {
    v1::ProcState state;
    REQUIRE(host->Stop(name, &state).ok());
  }
  WARN(kProcs << " procs (60 KB env each) spawned to RUNNING in " << spawned
              << " with a watcher that reads nothing");
  CHECK(spawned < absl::Seconds(60));
  // The live watcher kept up: the last stop reached it at once.
  std::optional<Received> last = live.NextWhere([&](const v1::HostEvent& e) {
    return IsProc(e, names.back(), v1::HostEvent::PROC_CHANGED, v1::STOPPED);
  });
  REQUIRE(last.has_value());
  WARN("the live watcher got the last STOPPED " << Latency(*last)
                                                << " after it happened");
  CHECK(Latency(*last) < absl::Seconds(2));

  // Now it reads: its snapshot, what fit before it fell behind, then a
  // fresh snapshot in a RESYNC naming what it missed.
  v1::HostEvent event;
  REQUIRE(stalled->Read(&event));
  CHECK(event.kind() == v1::HostEvent::SNAPSHOT);
  int before_resync = 0;
  std::optional<v1::HostEvent> resync;
  while (stalled->Read(&event)) {
    if (event.kind() == v1::HostEvent::RESYNC) {
      resync = event;
      break;
    }
    // Every event came (none was dropped): no resync to wait for.
    if (IsProc(event, names.back(), v1::HostEvent::PROC_CHANGED, v1::STOPPED)) {
      break;
    }
    ++before_resync;
  }
  REQUIRE(resync.has_value());
  WARN("the stalled watcher read " << before_resync
                                   << " events, then a RESYNC that dropped "
                                   << resync->dropped());
  CHECK(resync->dropped() > 0);
  CHECK(resync->procs_size() == kProcs);
  for (const v1::ProcState& proc : resync->procs()) {
    CHECK(proc.status() == v1::STOPPED);
  }
  stalled_context.TryCancel();
  stalled->Finish();
}

TEST_CASE(
    "past the cap a watch is refused naming the limit, and a cancelled watch "
    "frees its slot") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  constexpr int kCap = 64;  // HostWatch::Limits::max_watchers
  struct Open {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<v1::HostEvent>> reader;
  };
  // Opens one watch and reads its first message; false if there is none.
  auto open = [&](Open& watch) {
    watch.context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Minutes(2)));
    watch.reader = host->stub().WatchHost(&watch.context, {});
    v1::HostEvent snapshot;
    return watch.reader->Read(&snapshot) &&
           snapshot.kind() == v1::HostEvent::SNAPSHOT;
  };
  std::vector<std::unique_ptr<Open>> watches;
  for (int i = 0; i < kCap; ++i) {
    watches.push_back(std::make_unique<Open>());
    REQUIRE(open(*watches.back()));
  }
  Open refused;
  if (open(refused)) {
    FAIL_CHECK("watch " << kCap + 1 << " was accepted");
    refused.context.TryCancel();
  }
  grpc::Status status = refused.reader->Finish();
  CHECK(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(status.error_message(),
             Catch::Contains("64 open WatchHost streams, its limit"));

  // One is cancelled: hostd drops it at once (OnCancel), freeing a slot.
  const absl::Time cancelled = absl::Now();
  watches[0]->context.TryCancel();
  CHECK(watches[0]->reader->Finish().error_code() ==
        grpc::StatusCode::CANCELLED);
  bool accepted = false;
  std::vector<std::unique_ptr<Open>> tries;
  while (!accepted && absl::Now() - cancelled < absl::Seconds(10)) {
    tries.push_back(std::make_unique<Open>());
    accepted = open(*tries.back());
    if (!accepted) {
      tries.back()->reader->Finish();
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  WARN("a watch was accepted again " << absl::Now() - cancelled << " after "
                                     << "a cancel (" << tries.size()
                                     << " tries)");
  CHECK(accepted);
  for (auto& watch : watches) watch->context.TryCancel();
  for (auto& watch : tries) watch->context.TryCancel();
  for (size_t i = 1; i < watches.size(); ++i) {
    watches[i]->reader->Finish();
  }
  if (accepted) tries.back()->reader->Finish();
}

TEST_CASE(
    "a finished proc created again under its name is removed for watchers "
    "before the new one is created") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("again", 0, v1::ProcSpec(), &state).ok());
  REQUIRE(host->Wait({"again"}, v1::RUNNING).procs(0).status() == v1::RUNNING);
  REQUIRE(host->Stop("again", &state).ok());

  Watch watch(host->stub());
  std::optional<Received> snapshot = watch.Next();
  REQUIRE(snapshot.has_value());
  REQUIRE(snapshot->event.procs_size() == 1);
  CHECK(snapshot->event.procs(0).status() == v1::STOPPED);

  // The same request again: a finished proc is spawned anew.
  REQUIRE(host->Create("again", 0, v1::ProcSpec(), &state).ok());
  std::optional<Received> removed = watch.Next();
  INFO(Describe(removed));
  REQUIRE(removed.has_value());
  CHECK(IsProc(removed->event, "again", v1::HostEvent::PROC_REMOVED,
               v1::STOPPED));
  std::optional<Received> created = watch.Next();
  INFO(Describe(created));
  REQUIRE(created.has_value());
  CHECK(IsProc(created->event, "again", v1::HostEvent::PROC_CREATED,
               v1::INITIALIZING));
}

}  // namespace
}  // namespace mesh
