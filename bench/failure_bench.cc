// hostmesh failure bounds (issue 8: failures reach their owner), measured on
// real processes, each figure set beside a floor or a configured bound from
// the same run (never beside hostmesh's own code):
//
//   proc death -> owner event  kill -9 of a proc hosting  vs  kill -9 of a
//                              an actor (mesh.echo) until      minimal static
//                              its mesh's handler has the      child until a
//                              SupervisionEvent               pidfd/waitid
//                              (PROC_ENDED)                   reap returns
//   pending call -> failed     kill -9 of a proc whose    vs  the same floor
//                              actor is in a Sleep{60s}
//                              (test.trouble) until the
//                              pending Call returns its
//                              error
//   host killed -> unreachable kill -9 of a hostd until   vs  the same floor
//                              on_host_event(kUnreachable)
//   host killed -> lost        ... until kLost (client    vs  the bound:
//                              with unreachable_after         lost_after (the
//                              300ms, lost_after 1s), and     stream breaks,
//                              until its actor's HOST_LOST    so unreachable
//                              event                          at once)
//   host shut down -> lost     ShutdownHost (one proc on  vs  the kill -> reap
//                              it) until kLost                floor
//   owner gone -> procs        a second Client with N     vs  the bound:
//   stopped                    procs is destroyed until       hostd's
//                              all N are STOPPED              --owner-lease
//                              (WaitProcs by another          (500ms)
//                              client)
//
// The floor is sampled once right before each measured kill or shutdown, so
// that it sees the machine as the figure does (a shared machine's load moves
// both). Killed hosts are started 5 at a time (HostMesh::Process), each with
// one proc and actor, and killed one by one.
//
// The pending-call figure runs //tests:trouble_procd (a data dependency),
// found in this binary's runfiles, beside its package
// (bazel-bin/tests/trouble_procd) or at $HOSTMESH_TROUBLE_PROCD.
//
// Usage: failure_bench [--rows FILE] [--rounds R] [--procs N]. Prints its
// table (median, p95, max; README "Failures reach their owner") and a JSON
// line; with --rows it appends its rows to FILE instead (bench/report.h:
// F7, B7.p50/p99 for proc death, fail.* for the others, bound.* for the
// configured bounds), for bench_table.
#include <fcntl.h>
#include <glog/logging.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/report.h"
#include "bench/util.h"
#include "hostmesh/hostmesh.h"
#include "proto/host.grpc.pb.h"
#include "proto/proc.pb.h"
#include "tests/testdata/trouble.pb.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char** environ;

namespace mesh {
namespace {

// The configured bounds: hostd's lease of the owner-gone figure, and the
// host-lost client's health bounds.
constexpr absl::Duration kOwnerLease = absl::Milliseconds(500);
constexpr absl::Duration kUnreachableAfter = absl::Milliseconds(300);
constexpr absl::Duration kLostAfter = absl::Seconds(1);
// How long any one awaited event may take before it counts as missing.
constexpr absl::Duration kEventTimeout = absl::Seconds(10);

// What went wrong or looked wrong (printed after the table).
std::vector<std::string>& Notes() {
  static auto* notes = new std::vector<std::string>();
  return *notes;
}
void Note(std::string note) {
  std::fprintf(stderr, "failure_bench: %s\n", note.c_str());
  Notes().push_back(std::move(note));
}

struct Stats {
  size_t n = 0;
  double median = 0;
  double p95 = 0;
  double max = 0;
};

Stats Summarize(std::vector<double> values) {
  Stats stats;
  if (values.empty()) return stats;
  std::sort(values.begin(), values.end());
  stats.n = values.size();
  stats.median = values[values.size() / 2];
  size_t p95 = static_cast<size_t>(
      std::ceil(0.95 * static_cast<double>(values.size())) - 1);
  stats.p95 = values[std::min(p95, values.size() - 1)];
  stats.max = values.back();
  return stats;
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// When each awaited thing (keyed by name) first happened. Thread-safe.
class Arrivals {
 public:
  void Mark(const std::string& key, std::string detail = "") {
    absl::MutexLock lock(&mu_);
    if (times_.count(key) != 0) return;
    times_[key] = absl::Now();
    details_[key] = std::move(detail);
  }
  // When `key` happened (waiting up to `timeout`), or nullopt.
  std::optional<absl::Time> Wait(const std::string& key,
                                 absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto arrived = [this, &key]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return times_.count(key) != 0;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&arrived), timeout)) {
      return std::nullopt;
    }
    return times_[key];
  }
  std::string Detail(const std::string& key) {
    absl::MutexLock lock(&mu_);
    return details_[key];
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, absl::Time> times_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> details_ ABSL_GUARDED_BY(mu_);
};

// The least an owner can take to learn a child died: SIGKILL of a started,
// minimal static child (bench/floors/spawn_floor) until waitid on its pidfd
// (after poll says it ended, as an event loop would) returns in the parent. One
// sample is taken right before each measured kill, so that the floor sees
// the machine as the figure does (other work on it changes both).
class KillToReapFloor {
 public:
  // Appends one sample (milliseconds) to `samples`; false on failure.
  bool Sample(std::vector<double>* samples) {
    if (child_.empty()) {
      absl::StatusOr<std::string> child = bench::FindBenchBinary("spawn_floor");
      if (!child.ok()) {
        Note(std::string(child.status().message()));
        return false;
      }
      child_ = *child;
    }
    std::optional<double> ms = Once();
    if (ms.has_value()) samples->push_back(*ms);
    return ms.has_value();
  }

 private:
  std::optional<double> Once() {
    int report[2];  // the child writes its byte to report[1]
    int hold[2];    // the child lives until hold[1] closes
    if (pipe2(report, O_CLOEXEC) != 0) return std::nullopt;
    if (pipe2(hold, O_CLOEXEC) != 0) {
      close(report[0]);
      close(report[1]);
      return std::nullopt;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, report[1], 3);
    posix_spawn_file_actions_adddup2(&actions, hold[0], 0);
    char* argv[] = {child_.data(), nullptr};
    pid_t pid = 0;
    int spawned =
        posix_spawn(&pid, child_.c_str(), &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(report[1]);
    close(hold[0]);
    char byte;
    bool running = spawned == 0 && read(report[0], &byte, 1) == 1;
    close(report[0]);
    int pidfd =
        spawned == 0 ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
    if (!running || pidfd < 0) {
      if (spawned == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
      if (pidfd >= 0) close(pidfd);
      close(hold[1]);
      Note("the kill -> reap floor could not start its child");
      return std::nullopt;
    }
    absl::Time start = absl::Now();
    kill(pid, SIGKILL);
    pollfd ended = {pidfd, POLLIN, 0};
    poll(&ended, 1, 5000);
    siginfo_t info = {};
    int reaped = waitid(static_cast<idtype_t>(P_PIDFD), pidfd, &info, WEXITED);
    double ms = Ms(absl::Now() - start);
    close(pidfd);
    close(hold[1]);
    if (reaped != 0) {
      waitpid(pid, nullptr, 0);
      Note(absl::StrCat("waitid(P_PIDFD) failed: ", strerror(errno)));
      return std::nullopt;
    }
    return ms;
  }

  std::string child_;
};

// A figure's samples and the floor sampled beside each (milliseconds).
struct Paired {
  std::vector<double> samples;
  std::vector<double> floor;
};

// The test program whose "test.trouble" actors sleep on request
// (tests/testdata/trouble_procd.cc): $HOSTMESH_TROUBLE_PROCD, in this
// binary's runfiles, or in the Bazel output tree beside bench/.
absl::StatusOr<std::string> FindTroubleProcd() {
  std::vector<std::filesystem::path> candidates;
  if (const char* path = std::getenv("HOSTMESH_TROUBLE_PROCD")) {
    candidates.push_back(path);
  }
  std::error_code error;
  std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    std::filesystem::path runfiles = self;
    runfiles += ".runfiles";
    candidates.push_back(runfiles / "hostmesh" / "tests" / "trouble_procd");
    candidates.push_back(self.parent_path().parent_path() / "tests" /
                         "trouble_procd");
  }
  for (const auto& candidate : candidates) {
    if (access(candidate.c_str(), X_OK) == 0) {
      return std::filesystem::weakly_canonical(candidate).string();
    }
  }
  return absl::NotFoundError(
      "cannot find tests/trouble_procd; build //tests:trouble_procd or set "
      "HOSTMESH_TROUBLE_PROCD");
}

// A procs' supervision events by rank ("<rank>"), with a one-line detail.
std::function<void(const v1::SupervisionEvent&)> RecordEvents(
    std::shared_ptr<Arrivals> arrivals) {
  return [arrivals](const v1::SupervisionEvent& event) {
    arrivals->Mark(
        absl::StrCat(event.rank()),
        absl::StrCat(v1::SupervisionEvent::Cause_Name(event.cause()),
                     " term_signal=", event.proc_exit().term_signal(), ": ",
                     event.message()));
  };
}

// 1. proc death -> owner event.
Paired ProcDeathMs(HostMesh& hosts, int rounds, KillToReapFloor& floor) {
  Paired paired;
  std::vector<double>& samples = paired.samples;
  auto procs = hosts.Spawn("death", rounds);
  if (!procs.ok()) {
    Note(absl::StrCat("proc death: spawn: ", procs.status().ToString()));
    return paired;
  }
  auto actors = procs->Spawn("echo", "mesh.echo");
  if (!actors.ok()) {
    Note(absl::StrCat("proc death: actors: ", actors.status().ToString()));
    return paired;
  }
  auto arrivals = std::make_shared<Arrivals>();
  actors->OnSupervisionEvent(RecordEvents(arrivals));
  for (int rank = 0; rank < rounds; ++rank) {
    const std::string key = absl::StrCat(rank);
    if (!floor.Sample(&paired.floor)) return paired;
    absl::Time start = absl::Now();
    kill(procs->procs()[rank].pid(), SIGKILL);
    std::optional<absl::Time> got = arrivals->Wait(key, kEventTimeout);
    if (!got.has_value()) {
      Note(absl::StrCat("proc death: no event for rank ", rank, " (pid ",
                        procs->procs()[rank].pid(), ") within ",
                        absl::FormatDuration(kEventTimeout)));
      continue;
    }
    samples.push_back(Ms(*got - start));
    std::string detail = arrivals->Detail(key);
    if (detail.rfind("PROC_ENDED term_signal=9:", 0) != 0) {
      Note(absl::StrCat("proc death: rank ", rank, ": unexpected event ",
                        detail));
    }
  }
  return paired;
}

// 2. pending call -> failed.
Paired PendingCallMs(HostMesh& hosts, int rounds, KillToReapFloor& floor) {
  Paired paired;
  std::vector<double>& samples = paired.samples;
  absl::StatusOr<std::string> trouble = FindTroubleProcd();
  if (!trouble.ok()) {
    Note(absl::StrCat("pending call: ", trouble.status().message()));
    return paired;
  }
  test::Sleep sleep;
  sleep.set_ms(60000);
  v1::ProcSpec spec;
  spec.set_command(*trouble);
  auto procs = hosts.Spawn("pending", rounds, spec);
  if (!procs.ok()) {
    Note(absl::StrCat("pending call: spawn: ", procs.status().ToString()));
    return paired;
  }
  auto actors = procs->Spawn("trouble", "test.trouble");
  if (!actors.ok()) {
    Note(absl::StrCat("pending call: actors: ", actors.status().ToString()));
    return paired;
  }
  // Handled, so the mesh is not poisoned by the first death.
  auto arrivals = std::make_shared<Arrivals>();
  actors->OnSupervisionEvent(RecordEvents(arrivals));
  for (int rank = 0; rank < rounds; ++rank) {
    auto one = actors->Slice("procs", rank);
    if (!one.ok()) {
      Note(absl::StrCat("pending call: ", one.status().ToString()));
      return paired;
    }
    absl::Status result;
    absl::Time returned;
    std::thread call([&] {
      std::vector<absl::StatusOr<v1::Envelope>> replies =
          one->CallRaw(sleep, absl::Seconds(120));
      returned = absl::Now();
      result = replies.empty() ? absl::InternalError("no reply slot")
                               : replies[0].status();
    });
    // Long enough for the Sleep to be in the actor's handler.
    absl::SleepFor(absl::Milliseconds(100));
    if (!floor.Sample(&paired.floor)) {
      kill(procs->procs()[rank].pid(), SIGKILL);
      call.join();
      return paired;
    }
    absl::Time start = absl::Now();
    kill(procs->procs()[rank].pid(), SIGKILL);
    call.join();
    if (result.ok()) {
      Note(absl::StrCat("pending call: rank ", rank,
                        ": the Sleep{60000} call succeeded"));
      continue;
    }
    if (returned < start) {
      Note(absl::StrCat(
          "pending call: rank ", rank,
          ": the call failed before the kill: ", result.ToString()));
      continue;
    }
    samples.push_back(Ms(returned - start));
    if (result.code() != absl::StatusCode::kUnavailable ||
        result.message().find("SIGKILL") == absl::string_view::npos) {
      Note(absl::StrCat("pending call: rank ", rank,
                        ": unexpected error: ", result.ToString()));
    }
  }
  return paired;
}

// Host health changes, keyed "<state>/<host>".
struct HostEvents {
  std::shared_ptr<Arrivals> arrivals = std::make_shared<Arrivals>();
  std::function<void(const HostEvent&)> Handler() {
    return [arrivals = arrivals](const HostEvent& event) {
      arrivals->Mark(absl::StrCat(HostStateName(event.state), "/", event.host),
                     event.reason);
    };
  }
};

// Waits until `client` has heard a heartbeat from every host of `hosts`.
bool AwaitReachable(Client& client, const std::vector<std::string>& hosts) {
  absl::Time deadline = absl::Now() + kEventTimeout;
  for (const std::string& host : hosts) {
    while (client.HostHealth(host).state != HostState::kReachable) {
      if (absl::Now() > deadline) {
        Note(absl::StrCat("host ", host, " never became reachable"));
        return false;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
  return true;
}

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(timeout));
  return context;
}

struct HostLoss {
  Paired killed_unreachable;         // kill -9 -> kUnreachable
  std::vector<double> killed_lost;   // kill -9 -> kLost
  std::vector<double> killed_actor;  // kill -9 -> HOST_LOST event
  Paired shutdown_lost;              // ShutdownHost -> kLost
};

// 3. host lost -> owner event, `rounds` hosts killed and `rounds` shut
// down, started `batch` at a time, each with one proc and actor.
HostLoss HostLossMs(int rounds, int batch, KillToReapFloor& floor) {
  HostLoss loss;
  HostEvents events;
  Client::Options options;
  options.unreachable_after = kUnreachableAfter;
  options.lost_after = kLostAfter;
  options.on_host_event = events.Handler();
  options.forward_proc_output = false;
  auto client = Client::Create(std::move(options));
  if (!client.ok()) {
    Note(absl::StrCat("host lost: ", client.status().ToString()));
    return loss;
  }
  HostMesh::Options mesh_options;
  mesh_options.client = *client;
  mesh_options.keep_logs = false;
  // Heartbeats often enough for unreachable_after to be the silence bound.
  mesh_options.hostd_args = {"--heartbeat-interval=100ms"};
  for (bool killed : {true, false}) {
    for (int done = 0; done < rounds; done += batch) {
      const int n = std::min(batch, rounds - done);
      auto hosts = HostMesh::Process(n, mesh_options);
      if (!hosts.ok()) {
        Note(absl::StrCat("host lost: ", hosts.status().ToString()));
        return loss;
      }
      auto procs = hosts->Spawn(absl::StrCat("lost", done), 1);
      if (!procs.ok()) {
        Note(absl::StrCat("host lost: ", procs.status().ToString()));
        return loss;
      }
      auto actors = procs->Spawn("echo", "mesh.echo");
      if (!actors.ok()) {
        Note(absl::StrCat("host lost: ", actors.status().ToString()));
        return loss;
      }
      auto ended = std::make_shared<Arrivals>();
      actors->OnSupervisionEvent(RecordEvents(ended));
      if (!AwaitReachable(**client, hosts->addresses())) return loss;
      for (int i = 0; i < n; ++i) {
        const std::string& host = hosts->addresses()[i];
        auto stub = v1::Host::NewStub((*client)->Channel(host));
        absl::Time start;
        if (killed) {
          v1::HostInfo info;
          grpc::Status got = stub->GetHostInfo(Context(absl::Seconds(10)).get(),
                                               v1::GetHostInfoRequest(), &info);
          if (!got.ok() || info.pid() <= 0) {
            Note(absl::StrCat("host lost: GetHostInfo(", host,
                              "): ", got.error_message()));
            continue;
          }
          if (!floor.Sample(&loss.killed_unreachable.floor)) return loss;
          start = absl::Now();
          kill(info.pid(), SIGKILL);
        } else {
          v1::ShutdownHostRequest request;
          request.set_reason("failure_bench");
          request.set_grace_ms(5000);
          v1::ShutdownHostResponse response;
          if (!floor.Sample(&loss.shutdown_lost.floor)) return loss;
          start = absl::Now();
          grpc::Status shut = stub->ShutdownHost(
              Context(absl::Seconds(30)).get(), request, &response);
          if (!shut.ok()) {
            Note(absl::StrCat("host lost: ShutdownHost(", host,
                              "): ", shut.error_message()));
          }
        }
        std::optional<absl::Time> lost =
            events.arrivals->Wait(absl::StrCat("lost/", host), kEventTimeout);
        // The killed host's proc, orphaned, would outlive it by hostd's
        // --orphan-timeout.
        if (killed) kill(procs->procs()[i].pid(), SIGKILL);
        if (!lost.has_value()) {
          Note(absl::StrCat("host lost: no kLost for ", host,
                            killed ? " (killed)" : " (shut down)", " within ",
                            absl::FormatDuration(kEventTimeout)));
          continue;
        }
        if (!killed) {
          loss.shutdown_lost.samples.push_back(Ms(*lost - start));
          continue;
        }
        loss.killed_lost.push_back(Ms(*lost - start));
        std::optional<absl::Time> unreachable = events.arrivals->Wait(
            absl::StrCat("unreachable/", host), absl::ZeroDuration());
        if (unreachable.has_value()) {
          loss.killed_unreachable.samples.push_back(Ms(*unreachable - start));
        } else {
          Note(absl::StrCat("host lost: ", host,
                            " went lost without kUnreachable first"));
        }
        std::optional<absl::Time> actor =
            ended->Wait(absl::StrCat(i), absl::Seconds(2));
        if (actor.has_value()) {
          loss.killed_actor.push_back(Ms(*actor - start));
        } else {
          Note(absl::StrCat("host lost: no HOST_LOST event for rank ", i,
                            " on ", host));
        }
      }
      // The killed hosts answer no more: what is left is reaped.
      hosts->Shutdown(absl::Seconds(1)).IgnoreError();
    }
  }
  return loss;
}

struct OwnerGone {
  std::vector<double> stopped;    // client destroyed -> all N STOPPED
  std::vector<double> destroyed;  // how long ~Client took
};

// 4. owner gone -> procs stopped: a second client spawns `procs` procs on
// `hosts`' host and is destroyed; the first client waits for them.
OwnerGone OwnerGoneMs(HostMesh& hosts, int rounds, int procs) {
  OwnerGone gone;
  const std::string& host = hosts.addresses()[0];
  Client& watcher = *hosts.client();
  auto watch = v1::Host::NewStub(watcher.Channel(host));
  for (int round = 0; round < rounds; ++round) {
    Client::Options options;
    options.heartbeat_interval = absl::Milliseconds(100);
    options.forward_proc_output = false;
    auto owner = Client::Create(std::move(options));
    if (!owner.ok()) {
      Note(absl::StrCat("owner gone: ", owner.status().ToString()));
      return gone;
    }
    // The second client attaches with the host's credentials (those of the
    // client that started it) and streams to it before it creates anything.
    (*owner)->SetHostCredentials(host, watcher.CredentialsFor(host));
    if (absl::Status connected = (*owner)->Connect(host); !connected.ok()) {
      Note(absl::StrCat("owner gone: ", connected.ToString()));
      return gone;
    }
    if (!AwaitReachable(**owner, {host})) return gone;
    // Its own procs (leased to it): raw creates, as HostMesh::Spawn does,
    // since a HostMesh would keep the client alive and stop its procs
    // itself when it goes.
    auto stub = v1::Host::NewStub((*owner)->Channel(host));
    v1::WaitProcsRequest wait;
    for (int k = 0; k < procs; ++k) {
      v1::CreateOrUpdateProcRequest create;
      create.set_name(absl::StrCat("owned", round, "_", k));
      create.set_rank(k);
      create.set_client((*owner)->id());
      v1::ProcState state;
      grpc::Status created = stub->CreateOrUpdateProc(
          Context(absl::Seconds(30)).get(), create, &state);
      if (!created.ok()) {
        Note(absl::StrCat("owner gone: create ", create.name(), ": ",
                          created.error_message()));
        return gone;
      }
      if (state.client() != (*owner)->id()) {
        Note(absl::StrCat("owner gone: ", create.name(), " is leased to \"",
                          state.client(), "\", not ", (*owner)->id()));
      }
      wait.add_names(create.name());
    }
    wait.set_min_status(v1::RUNNING);
    wait.set_timeout_ms(30000);
    v1::WaitProcsResponse running;
    grpc::Status waited =
        watch->WaitProcs(Context(absl::Seconds(35)).get(), wait, &running);
    if (!waited.ok() || running.timed_out()) {
      Note(absl::StrCat("owner gone: procs not RUNNING: ",
                        waited.error_message()));
      return gone;
    }
    stub.reset();
    const std::string id = (*owner)->id();
    absl::Time start = absl::Now();
    owner->reset();  // its streams end; its lease runs
    gone.destroyed.push_back(Ms(absl::Now() - start));
    wait.set_min_status(v1::STOPPED);
    wait.set_timeout_ms(
        static_cast<uint32_t>(absl::ToInt64Milliseconds(kEventTimeout)));
    v1::WaitProcsResponse stopped;
    waited = watch->WaitProcs(Context(kEventTimeout + absl::Seconds(5)).get(),
                              wait, &stopped);
    absl::Time end = absl::Now();
    if (!waited.ok() || stopped.timed_out()) {
      std::string states;
      for (const v1::ProcState& proc : stopped.procs()) {
        absl::StrAppend(&states, " ", proc.name(), "=",
                        v1::Status_Name(proc.status()));
      }
      // What the host thinks of the leases (ListOwners, as an admin).
      v1::ListOwnersResponse owners;
      grpc::Status listed = watch->ListOwners(Context(absl::Seconds(10)).get(),
                                              v1::ListOwnersRequest(), &owners);
      std::string leases = listed.ok() ? "" : listed.error_message();
      for (const v1::OwnerLease& lease : owners.owners()) {
        absl::StrAppend(&leases, " ", lease.client(),
                        lease.connected() ? " connected" : " vanished",
                        " procs=", lease.procs_size(),
                        " lease_ms=", lease.lease_ms(),
                        lease.has_expires_at() ? " expiring" : "");
      }
      Note(absl::StrCat("owner gone: procs not stopped within ",
                        absl::FormatDuration(kEventTimeout),
                        " of the owner's end:", states, " ",
                        waited.error_message(), "; owner (", id,
                        ") and the host's leases:", leases));
      return gone;
    }
    for (const v1::ProcState& proc : stopped.procs()) {
      if (proc.status() != v1::STOPPED ||
          proc.reason().find("vanished") == std::string::npos) {
        Note(absl::StrCat("owner gone: ", proc.name(), " ended ",
                          v1::Status_Name(proc.status()), " (",
                          proc.stopped_by(), "): ", proc.reason()));
        break;
      }
    }
    gone.stopped.push_back(Ms(end - start));
  }
  return gone;
}

struct Row {
  std::string metric;
  Stats stats;
  // Exactly one: the floor sampled beside it in this run, or the
  // configured bound it is made of.
  std::optional<Stats> floor;
  double bound_ms = 0;
  std::string bound_what;
};

Row FloorRow(std::string metric, const Paired& paired) {
  return {std::move(metric), Summarize(paired.samples), Summarize(paired.floor),
          0, ""};
}

Row BoundRow(std::string metric, const std::vector<double>& samples,
             absl::Duration bound, std::string what) {
  return {std::move(metric), Summarize(samples), std::nullopt, Ms(bound),
          std::move(what)};
}

// --rows: the figures as rows of the bench report (bench/report.h).
int WriteRows(const std::string& path, int procs, const Paired& death,
              const Paired& pending, const HostLoss& loss,
              const OwnerGone& gone) {
  bench::Report report;
  using Stat = bench::Report::Stat;
  // One floor for every figure that has one: all its samples, each taken
  // right before a measured kill or shutdown.
  std::vector<double> floor_us;
  for (const Paired* paired :
       {&death, &pending, &loss.killed_unreachable, &loss.shutdown_lost}) {
    for (double ms : paired->floor) floor_us.push_back(ms * 1000);
  }
  report.Add("F7", "kill -9 of a static child -> reaped (pidfd)", "us",
             floor_us);
  report.Add("F7.p99", "kill -9 of a static child -> reaped (p99)", "us",
             floor_us, Stat::kP99);
  report
      .Add("B7.p50", "kill -9 of a procd -> owner's supervision event (p50)",
           "ms", death.samples)
      .set_floor("F7");
  {
    auto& row = report.Add(
        "B7.p99", "kill -9 of a procd -> owner's supervision event (p99)", "ms",
        death.samples, Stat::kP99);
    row.set_floor("F7.p99");
    row.set_goal("<= 20 ms");
    row.set_goal_max(20);
  }
  report
      .Add("fail.call", "kill -9 of a procd -> a pending Call fails", "ms",
           pending.samples)
      .set_floor("F7");
  report
      .Add("fail.unreachable", "kill -9 of a hostd -> host unreachable", "ms",
           loss.killed_unreachable.samples)
      .set_floor("F7");
  report.AddValue("bound.lost_after", "configured bound: client lost_after",
                  "ms", Ms(kLostAfter));
  report
      .Add("fail.lost", "kill -9 of a hostd -> host lost", "ms",
           loss.killed_lost)
      .set_floor("bound.lost_after");
  report
      .Add("fail.lost_actor", "kill -9 of a hostd -> its actors' HOST_LOST",
           "ms", loss.killed_actor)
      .set_floor("bound.lost_after");
  report
      .Add("fail.shutdown", "hostd shut down in order -> host lost", "ms",
           loss.shutdown_lost.samples)
      .set_floor("F7");
  report.AddValue("bound.owner_lease", "configured bound: hostd --owner-lease",
                  "ms", Ms(kOwnerLease));
  report
      .Add("fail.owner",
           absl::StrCat("owner client gone -> its ", procs, " procs STOPPED"),
           "ms", gone.stopped)
      .set_floor("bound.owner_lease");
  for (const std::string& note : Notes()) {
    report.Note(absl::StrCat("failure_bench: ", note));
  }
  if (absl::Status written = report.AppendTo(path); !written.ok()) {
    std::fprintf(stderr, "failure_bench: %s\n", written.ToString().c_str());
    return 1;
  }
  return Notes().empty() ? 0 : 1;
}

int Run(int rounds, int procs, const std::string& rows_path) {
  Client::Options client_options;
  client_options.forward_proc_output = false;
  auto client = Client::Create(std::move(client_options));
  if (!client.ok()) {
    std::fprintf(stderr, "failure_bench: %s\n",
                 client.status().ToString().c_str());
    return 1;
  }
  const absl::Time began = absl::Now();
  KillToReapFloor floor;
  Paired death;
  Paired pending;
  {
    HostMesh::Options options;
    options.client = *client;
    options.keep_logs = false;
    auto hosts = HostMesh::Local(options);
    if (!hosts.ok()) {
      std::fprintf(stderr, "failure_bench: %s\n",
                   hosts.status().ToString().c_str());
      return 1;
    }
    death = ProcDeathMs(*hosts, rounds, floor);
    pending = PendingCallMs(*hosts, rounds, floor);
    hosts->Shutdown().IgnoreError();
  }
  const HostLoss loss = HostLossMs(rounds, std::min(rounds, 5), floor);
  OwnerGone gone;
  {
    HostMesh::Options options;
    options.client = *client;
    options.keep_logs = false;
    options.hostd_args = {absl::StrCat(
        "--owner-lease=", absl::ToInt64Milliseconds(kOwnerLease), "ms")};
    auto hosts = HostMesh::Local(options);
    if (hosts.ok()) {
      gone = OwnerGoneMs(*hosts, rounds, procs);
      hosts->Shutdown().IgnoreError();
    } else {
      Note(absl::StrCat("owner gone: no host with --owner-lease: ",
                        hosts.status().ToString()));
    }
  }

  if (!rows_path.empty()) {
    return WriteRows(rows_path, procs, death, pending, loss, gone);
  }
  std::vector<Row> rows = {
      FloorRow("proc death -> owner event", death),
      FloorRow("pending call -> failed", pending),
      FloorRow("host killed -> unreachable", loss.killed_unreachable),
      BoundRow("host killed -> lost", loss.killed_lost, kLostAfter,
               "lost_after"),
      BoundRow("host killed -> actor HOST_LOST", loss.killed_actor, kLostAfter,
               "lost_after"),
      FloorRow("host shut down -> lost", loss.shutdown_lost),
      BoundRow(absl::StrCat("owner gone -> ", procs, " procs STOPPED"),
               gone.stopped, kOwnerLease, "--owner-lease"),
  };
  std::printf("%-32s %3s %9s %9s %9s   %s\n", "failure -> owner knows", "n",
              "median", "p95", "max", "against (same run)");
  std::string json = "{";
  for (const Row& row : rows) {
    absl::StrAppend(&json, json.size() > 1 ? ", " : "", "\"", row.metric,
                    "\": {\"n\": ", row.stats.n);
    if (row.stats.n == 0) {
      std::printf("%-32s %3d %9s %9s %9s   not measured (see the notes)\n",
                  row.metric.c_str(), 0, "-", "-", "-");
      absl::StrAppend(&json, "}");
      continue;
    }
    std::string versus;
    if (row.floor.has_value()) {
      const double ratio =
          row.floor->median > 0 ? row.stats.median / row.floor->median : 0;
      versus = absl::StrFormat("floor %.2f ms (p95 %.2f): %.1fx",
                               row.floor->median, row.floor->p95, ratio);
      absl::StrAppend(&json, ", \"floor_ms\": ", row.floor->median,
                      ", \"floor_p95_ms\": ", row.floor->p95,
                      ", \"ratio\": ", ratio);
    } else {
      const double overhead = row.stats.median - row.bound_ms;
      versus = absl::StrFormat("bound %.0f ms (%s) + %.1f ms", row.bound_ms,
                               row.bound_what, overhead);
      absl::StrAppend(&json, ", \"bound_ms\": ", row.bound_ms,
                      ", \"overhead_ms\": ", overhead);
    }
    std::printf("%-32s %3zu %6.1f ms %6.1f ms %6.1f ms   %s\n",
                row.metric.c_str(), row.stats.n, row.stats.median,
                row.stats.p95, row.stats.max, versus.c_str());
    absl::StrAppend(&json, ", \"median_ms\": ", row.stats.median,
                    ", \"p95_ms\": ", row.stats.p95,
                    ", \"max_ms\": ", row.stats.max, "}");
  }
  std::printf(
      "floor: kill -9 of a minimal static child until waitid(pidfd) reaps "
      "it, sampled before each kill\n");
  std::printf(
      "host killed: its stream breaks, so unreachable at once "
      "(unreachable_after %s, lost_after %s)\n",
      absl::FormatDuration(kUnreachableAfter).c_str(),
      absl::FormatDuration(kLostAfter).c_str());
  if (!gone.destroyed.empty()) {
    std::printf("owner gone: its ~Client took median %.1f ms of the figure\n",
                Summarize(gone.destroyed).median);
  }
  for (const std::string& note : Notes()) {
    std::printf("note: %s\n", note.c_str());
  }
  std::printf("(%d rounds each, %.1f s)\n", rounds,
              absl::ToDoubleSeconds(absl::Now() - began));
  std::printf("%s}\n", json.c_str());
  return Notes().empty() ? 0 : 1;
}

}  // namespace
}  // namespace mesh

int main(int argc, char** argv) {
  // Errors only: the library's INFO and WARNING lines are noise here.
  mesh::bench::QuietLogging(argv[0]);
  int rounds = 20;
  int procs = 8;
  std::string rows;
  const char* usage =
      "usage: failure_bench [--rows FILE] [--rounds R] [--procs N]\n";
  if (argc % 2 == 0) {
    std::fprintf(stderr, "%s", usage);
    return 2;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--rounds" && absl::SimpleAtoi(argv[i + 1], &rounds) &&
        rounds > 0) {
      continue;
    }
    if (flag == "--procs" && absl::SimpleAtoi(argv[i + 1], &procs) &&
        procs > 0) {
      continue;
    }
    if (flag == "--rows") {
      rows = argv[i + 1];
      continue;
    }
    std::fprintf(stderr, "%s", usage);
    return 2;
  }
  return mesh::Run(rounds, procs, rows);
}
