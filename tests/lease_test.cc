// Owner leases (issue 8), end to end: a client's procs live as long as the
// client keeps a relay stream to their host, plus hostd's --owner-lease.
// Clients run as processes of their own (tests/testing/spawn_client) that
// the test kills at random points inside a mesh spawn, stops (SIGSTOP)
// past hostd's silence bound, shorter or longer than the lease, or that
// re-create their procs under the same names. Detached procs
// (no lease holder) are never touched. Bounds are short; what is checked is
// a generous multiple (2-core CI runs tests in parallel).
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/supervisor.h"
#include "lib/testing/temp_dir.h"
#include "meshctl/meshctl.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::BinaryPath;
using testing::Context;
using testing::IsAlive;
using testing::TestHost;

// What the tests accept beyond a configured bound on a loaded 2-core
// machine.
constexpr absl::Duration kSlack = absl::Seconds(8);
// hostd ends a client stream silent for max(3 heartbeat intervals, 1 s).
constexpr absl::Duration kSilenceBound = absl::Seconds(1);

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

// spawn_client in a process of its own (its own process group), with the
// host's admin token; its stdout is read from its log. Killed (SIGKILL to
// its group) and reaped when destroyed unless it exited.
class ClientProcess {
 public:
  ClientProcess(ProcessSupervisor& supervisor, const TestHost& host,
                const std::string& log_dir, std::vector<std::string> args)
      : supervisor_(supervisor),
        exit_(std::make_shared<Exit>()),
        stdout_(log_dir + "/stdout.log") {
    SpawnOptions spawn;
    spawn.path = BinaryPath("spawn_client");
    spawn.args = {"--host", host.address()};
    spawn.args.insert(spawn.args.end(), args.begin(), args.end());
    spawn.env = {{"HOSTMESH_TOKEN_FILE", host.token_file()}};
    spawn.log_dir = log_dir;
    absl::StatusOr<pid_t> pid =
        supervisor.Spawn(spawn, [exit = exit_](const ExitInfo& info) {
          exit->info = info;
          exit->done.Notify();
        });
    REQUIRE(pid.ok());
    pid_ = *pid;
  }
  ~ClientProcess() { Kill(); }
  ClientProcess(const ClientProcess&) = delete;
  ClientProcess& operator=(const ClientProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool exited() const { return exit_->done.HasBeenNotified(); }
  const ExitInfo& exit_info() const { return exit_->info; }

  // SIGKILL, and waits until it is reaped.
  void Kill() {
    if (!exited()) {
      kill(pid_, SIGCONT);  // a stopped process dies as well, but be sure
      supervisor_.SignalGroup(pid_, SIGKILL).IgnoreError();
    }
    REQUIRE(exit_->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }

  // Its stdout lines so far.
  std::vector<std::string> Lines() const {
    std::ifstream in(stdout_);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
  // The first line starting with `prefix` (waiting up to `timeout`).
  std::optional<std::string> WaitLine(const std::string& prefix,
                                      absl::Duration timeout,
                                      size_t after = 0) const {
    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      std::vector<std::string> lines = Lines();
      for (size_t i = after; i < lines.size(); ++i) {
        if (absl::StartsWith(lines[i], prefix)) return lines[i];
      }
      if (absl::Now() >= deadline || exited()) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
  // Whether a line starts with `prefix` now.
  bool HasLine(const std::string& prefix) const {
    return WaitLine(prefix, absl::ZeroDuration()).has_value();
  }
  // The lines starting with `prefix` now.
  std::vector<std::string> LinesWith(const std::string& prefix) const {
    std::vector<std::string> found;
    for (std::string& line : Lines()) {
      if (absl::StartsWith(line, prefix)) found.push_back(std::move(line));
    }
    return found;
  }
  // The pids of its "spawned" line (`prefix`: of that line instead).
  std::vector<pid_t> Spawned(absl::Duration timeout,
                             const std::string& prefix = "spawned ") const {
    std::vector<pid_t> pids;
    std::optional<std::string> line = WaitLine(prefix, timeout);
    if (!line.has_value()) return pids;
    for (absl::string_view word : absl::StrSplit(*line, ' ')) {
      pid_t pid = 0;
      if (absl::SimpleAtoi(word, &pid)) pids.push_back(pid);
    }
    return pids;
  }
  // Its client id ("client:<hex>").
  std::string ClientId(absl::Duration timeout) const {
    std::optional<std::string> line = WaitLine("client ", timeout);
    return line.has_value() ? line->substr(7) : "";
  }

 private:
  struct Exit {
    absl::Notification done;
    ExitInfo info;
  };
  ProcessSupervisor& supervisor_;
  std::shared_ptr<Exit> exit_;
  std::string stdout_;
  pid_t pid_ = 0;
};

std::unique_ptr<ProcessSupervisor> NewSupervisor() {
  absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
      ProcessSupervisor::Create();
  REQUIRE(supervisor.ok());
  return *std::move(supervisor);
}

// `meshctl proc spawn NAME` as the host's admin (REQUIREs it succeeded).
void MeshctlSpawn(const TestHost& host, const std::string& name) {
  std::vector<std::string> args = {"meshctl", "--host", host.address(),
                                   "--token-file", host.token_file()};
  args.insert(args.end(), {"proc", "spawn", name});
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  std::ostringstream out, err;
  int code = RunMeshctl(static_cast<int>(argv.size()), argv.data(), out, err);
  INFO(out.str() << err.str());
  REQUIRE(code == 0);
}

std::vector<v1::ProcState> ListProcs(TestHost& host) {
  v1::ListProcsResponse list;
  grpc::Status listed = host.stub().ListProcs(Context().get(), {}, &list);
  REQUIRE(listed.ok());
  return {list.procs().begin(), list.procs().end()};
}

// The lease of `client` as the host's admin sees it, if it is listed.
std::optional<v1::OwnerLease> OwnerOf(TestHost& host,
                                      const std::string& client) {
  v1::ListOwnersResponse owners;
  grpc::Status listed = host.stub().ListOwners(Context().get(), {}, &owners);
  REQUIRE(listed.ok());
  for (const v1::OwnerLease& owner : owners.owners()) {
    if (owner.client() == client) return owner;
  }
  return std::nullopt;
}

// Polls until `done` holds or `timeout` passes; whether it held.
template <typename F>
bool Eventually(F done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

bool Ended(const v1::ProcState& proc) {
  return proc.status() == v1::STOPPED || proc.status() == v1::FAILED;
}

// SIGCONTs a stopped client however the test ends.
struct Continue {
  pid_t pid;
  ~Continue() {
    if (IsAlive(pid)) kill(pid, SIGCONT);
  }
};

TEST_CASE(
    "clients killed at random points inside a mesh spawn leave no proc of "
    "theirs alive once the lease has run out, and detached procs keep "
    "running") {
  constexpr absl::Duration kLease = absl::Milliseconds(500);
  // Kills that must land between a client's "creating" and "spawned"
  // lines (inside HostMesh::Spawn), and how many clients may be tried.
  constexpr int kInside = 20;
  constexpr int kMaxClients = 60;
  auto host = TestHost::Start({"--heartbeat-interval=100ms",
                               "--owner-lease=500ms", "--orphan-timeout=2s"});
  REQUIRE(host != nullptr);
  testing::TempDir dir;
  std::unique_ptr<ProcessSupervisor> supervisor = NewSupervisor();

  // Detached procs: one spawned by meshctl (no lease holder), one by a
  // detached spawn whose client is then killed.
  MeshctlSpawn(*host, "lone");
  std::vector<pid_t> detached_pids;
  {
    ClientProcess detached(*supervisor, *host, dir.path() + "/detached",
                           {"--name", "dt", "--procs", "1", "--detached"});
    detached_pids = detached.Spawned(kSlack);
    REQUIRE(detached_pids.size() == 1);
  }
  v1::WaitProcsResponse running =
      host->Wait({"lone", "dt_0"}, v1::RUNNING, kSlack);
  REQUIRE_FALSE(running.timed_out());
  v1::ProcState lone;
  REQUIRE(host->Get("lone", &lone).ok());
  detached_pids.push_back(lone.pid());

  // Whole spawns, to learn how long HostMesh::Spawn takes here (from the
  // "creating" line to the "spawned" one, as this test sees them).
  std::vector<absl::Duration> windows;
  for (const char* name : {"k0", "k1"}) {
    ClientProcess whole(*supervisor, *host, dir.path() + "/" + name,
                        {"--name", name, "--procs", "2"});
    REQUIRE(whole.WaitLine("creating", kSlack).has_value());
    const absl::Time creating = absl::Now();
    REQUIRE(whole.Spawned(kSlack).size() == 2);
    windows.push_back(absl::Now() - creating);
  }
  const absl::Duration window = std::min(windows[0], windows[1]);
  const uint32_t seed = std::random_device()();
  std::mt19937 random(seed);
  std::uniform_int_distribution<int64_t> delay_us(
      0, absl::ToInt64Microseconds(window));
  int inside = 0;
  int before = 0;
  int after = 0;
  int tried = 2;
  absl::Time last_kill;
  while (inside < kInside && tried < kMaxClients) {
    const std::string name = absl::StrCat("k", tried++);
    ClientProcess client(*supervisor, *host, dir.path() + "/" + name,
                         {"--name", name, "--procs", "2"});
    if (client.WaitLine("creating", kSlack).has_value()) {
      absl::SleepFor(absl::Microseconds(delay_us(random)));
    }
    client.Kill();
    last_kill = absl::Now();
    // Where the kill landed, from what the client printed before it died.
    if (!client.HasLine("creating")) {
      ++before;
    } else if (client.HasLine("spawned")) {
      ++after;
    } else {
      ++inside;
    }
  }
  WARN("a spawn takes " << absl::FormatDuration(windows[0]) << ", "
                        << absl::FormatDuration(windows[1]) << "; of "
                        << tried - 2 << " clients killed " << inside
                        << " died inside HostMesh::Spawn, " << after
                        << " after it, " << before << " before it (seed "
                        << seed << ")");
  CHECK(inside >= kInside);

  // Every proc those clients created ends within the lease plus slack.
  auto leased = [&host] {
    std::vector<v1::ProcState> procs;
    for (v1::ProcState& proc : ListProcs(*host)) {
      if (absl::StartsWith(proc.name(), "k")) procs.push_back(proc);
    }
    return procs;
  };
  bool all_ended = Eventually(
      [&] {
        for (const v1::ProcState& proc : leased()) {
          if (!Ended(proc)) return false;
        }
        return true;
      },
      kLease + kSlack);
  const absl::Duration ended_after = absl::Now() - last_kill;
  CHECK(all_ended);
  std::vector<v1::ProcState> procs = leased();
  size_t started = 0;
  std::set<std::string> clients;
  for (const v1::ProcState& proc : procs) {
    INFO(proc.ShortDebugString());
    CHECK(Ended(proc));
    CHECK(absl::StartsWith(proc.client(), "client:"));
    clients.insert(proc.client());
    if (proc.pid() > 0) {
      ++started;
      CHECK(proc.stopped_by() == "lease");
      CHECK_THAT(proc.reason(), Catch::Contains(proc.client()) &&
                                    Catch::Contains("vanished") &&
                                    Catch::Contains("--owner-lease"));
      CHECK_FALSE(IsAlive(proc.pid()));
      CHECK(testing::LiveInGroups({proc.pid()}).empty());
    }
  }
  // The run was meaningful: procs were started (k0's at least) by many
  // clients, and their leases were enforced, not skipped.
  CHECK(started >= 2);
  CHECK(clients.size() >= 2);
  WARN(procs.size() << " leased procs (" << started << " started) of "
                    << clients.size() << " clients ended "
                    << absl::FormatDuration(ended_after)
                    << " after the last kill (lease "
                    << absl::FormatDuration(kLease) << ")");

  // Their clients' lease records went with their procs.
  CHECK(Eventually(
      [&] {
        for (const std::string& client : clients) {
          if (OwnerOf(*host, client).has_value()) return false;
        }
        return true;
      },
      kSlack));

  // The detached procs were not touched.
  for (const char* name : {"lone", "dt_0"}) {
    v1::ProcState state;
    REQUIRE(host->Get(name, &state).ok());
    INFO(state.ShortDebugString());
    CHECK(state.status() == v1::RUNNING);
    CHECK(state.client().empty());
  }
  for (pid_t pid : detached_pids) CHECK(IsAlive(pid));
}

TEST_CASE(
    "a client stopped past the silence bound but within its lease keeps its "
    "procs when it continues, and once stopped past the lease loses them and "
    "hears, when it continues, of a failure that fails its watched port") {
  constexpr absl::Duration kLease = absl::Seconds(2);
  auto host = TestHost::Start({"--heartbeat-interval=100ms", "--owner-lease=2s",
                               "--orphan-timeout=2s"});
  REQUIRE(host != nullptr);
  testing::TempDir dir;
  std::unique_ptr<ProcessSupervisor> supervisor = NewSupervisor();
  ClientProcess client(
      *supervisor, *host, dir.path() + "/sp",
      {"--name", "sp", "--procs", "2", "--lease-probe", "--report-events",
       "--watch", "--heartbeat-interval", "100ms"});
  const std::string id = client.ClientId(kSlack);
  REQUIRE(absl::StartsWith(id, "client:"));
  const std::vector<pid_t> pids = client.Spawned(kSlack);
  REQUIRE(pids.size() == 2);
  REQUIRE(client.WaitLine("probe ok", kSlack).has_value());
  std::optional<v1::OwnerLease> lease = OwnerOf(*host, id);
  REQUIRE(lease.has_value());
  CHECK(lease->connected());
  CHECK(std::set<std::string>(lease->procs().begin(), lease->procs().end()) ==
        std::set<std::string>{"sp_0", "sp_1"});
  CHECK(lease->lease_ms() == 2000);

  // Stopped: hostd ends the silent stream after the bound and the lease
  // starts to run; the client continues in time and streams again.
  Continue resume{client.pid()};
  REQUIRE(kill(client.pid(), SIGSTOP) == 0);
  const absl::Time stopped = absl::Now();
  REQUIRE(Eventually(
      [&] {
        lease = OwnerOf(*host, id);
        return lease.has_value() && !lease->connected();
      },
      kSilenceBound + kSlack));
  const absl::Duration cut = absl::Now() - stopped;
  REQUIRE(kill(client.pid(), SIGCONT) == 0);
  const absl::Time continued = absl::Now();
  const size_t lines_then = client.Lines().size();
  CHECK(cut >= kSilenceBound - absl::Milliseconds(100));
  CHECK(cut < kSilenceBound + kSlack);
  const absl::Time expiry = FromProto(lease->expires_at());
  CHECK(absl::AbsDuration(expiry - FromProto(lease->vanished_at()) - kLease) <
        absl::Milliseconds(50));
  CHECK(Eventually(
      [&] {
        lease = OwnerOf(*host, id);
        return lease.has_value() && lease->connected();
      },
      kSlack));
  const absl::Duration back = absl::Now() - continued;
  CHECK(client.WaitLine("probe ok", kSlack, lines_then).has_value());
  // Past the expiry the stop would have had: both procs still run.
  absl::SleepFor(expiry + absl::Milliseconds(500) - absl::Now());
  for (size_t rank = 0; rank < 2; ++rank) {
    v1::ProcState state;
    REQUIRE(host->Get(absl::StrCat("sp_", rank), &state).ok());
    INFO(state.ShortDebugString());
    CHECK(state.status() == v1::RUNNING);
    CHECK(state.pid() == pids[rank]);
    CHECK(state.client() == id);
    CHECK(IsAlive(pids[rank]));
  }
  const size_t lines_later = client.Lines().size();
  CHECK(client.WaitLine("probe ok", kSlack, lines_later).has_value());
  // Nothing ended: no event, the watched port still waits.
  CHECK(client.LinesWith("event").empty());
  CHECK(client.LinesWith("watch failed").empty());
  WARN("SIGSTOP to stream cut: " << absl::FormatDuration(cut)
                                 << "; SIGCONT to connected again: "
                                 << absl::FormatDuration(back));

  // Stopped past the bound and the lease: the procs are stopped, with the
  // lease as the reason.
  REQUIRE(kill(client.pid(), SIGSTOP) == 0);
  const absl::Time stopped_again = absl::Now();
  v1::WaitProcsResponse waited = host->Wait({"sp_0", "sp_1"}, v1::STOPPED,
                                            kSilenceBound + kLease + kSlack);
  const absl::Duration gone = absl::Now() - stopped_again;
  CHECK_FALSE(waited.timed_out());
  CHECK(gone >= kSilenceBound + kLease - absl::Milliseconds(200));
  for (const v1::ProcState& state : waited.procs()) {
    INFO(state.ShortDebugString());
    CHECK(state.status() == v1::STOPPED);
    CHECK(state.stopped_by() == "lease");
    CHECK_THAT(state.reason(), Catch::Contains(id) &&
                                   Catch::Contains("vanished") &&
                                   Catch::Contains("--owner-lease"));
  }
  for (pid_t pid : pids) CHECK_FALSE(IsAlive(pid));
  // The lease is gone with its procs; the client, continued, finds them
  // gone.
  REQUIRE(kill(client.pid(), SIGCONT) == 0);
  const absl::Time continued_again = absl::Now();
  const size_t lines_stopped = client.Lines().size();
  CHECK(client.WaitLine("probe failed", kSlack, lines_stopped).has_value());
  // The stop it did not ask for reaches it, once back, as a failure of each
  // actor, and its watched port fails with it (long before its 1 h).
  std::optional<std::string> watch_failed =
      client.WaitLine("watch failed", kSlack);
  const absl::Duration watch_after = absl::Now() - continued_again;
  REQUIRE(watch_failed.has_value());
  CHECK_THAT(*watch_failed,
             Catch::Contains("UNAVAILABLE") && Catch::Contains("vanished"));
  CHECK(Eventually([&] { return client.LinesWith("event").size() >= 2; },
                   kSlack));
  std::set<std::string> ended;
  for (const std::string& line : client.LinesWith("event")) {
    INFO(line);
    CHECK(absl::StartsWith(line, "event failure=1 cause=PROC_ENDED proc=sp_"));
    CHECK_THAT(line, Catch::Contains("vanished"));
    for (absl::string_view word : absl::StrSplit(line, ' ')) {
      if (absl::StartsWith(word, "proc=")) ended.insert(std::string(word));
    }
  }
  CHECK(client.LinesWith("event").size() == 2);
  CHECK(ended == std::set<std::string>{"proc=sp_0", "proc=sp_1"});
  WARN("SIGSTOP to procs stopped: "
       << absl::FormatDuration(gone) << " (bound "
       << absl::FormatDuration(kSilenceBound) << " + lease "
       << absl::FormatDuration(kLease)
       << "); SIGCONT to the watched port failing: "
       << absl::FormatDuration(watch_after));
  client.Kill();
}

TEST_CASE(
    "a mesh stopped and spawned again at once under the same proc names is "
    "not ended by its old incarnation, and its new procs are still leased "
    "to their client") {
  constexpr absl::Duration kLease = absl::Milliseconds(500);
  auto host = TestHost::Start({"--heartbeat-interval=100ms",
                               "--owner-lease=500ms", "--orphan-timeout=2s"});
  REQUIRE(host != nullptr);
  testing::TempDir dir;
  std::unique_ptr<ProcessSupervisor> supervisor = NewSupervisor();
  ClientProcess client(*supervisor, *host, dir.path() + "/r",
                       {"--name", "r", "--procs", "2", "--respawn"});
  const std::string id = client.ClientId(kSlack);
  REQUIRE(absl::StartsWith(id, "client:"));
  const std::vector<pid_t> first = client.Spawned(kSlack);
  REQUIRE(first.size() == 2);
  const std::vector<pid_t> second = client.Spawned(kSlack, "respawned ");
  REQUIRE(second.size() == 2);
  for (pid_t pid : second) {
    CHECK(std::find(first.begin(), first.end(), pid) == first.end());
  }
  // Calls work for 1.5 s, the mesh is not poisoned and a port watched on
  // it has not failed (its old incarnation's end was not taken for it).
  std::optional<std::string> checked = client.WaitLine("respawn ", kSlack);
  REQUIRE(checked.has_value());
  CHECK(*checked == "respawn ok");
  for (size_t rank = 0; rank < 2; ++rank) {
    v1::ProcState state;
    REQUIRE(host->Get(absl::StrCat("r_", rank), &state).ok());
    INFO(state.ShortDebugString());
    CHECK(state.status() == v1::RUNNING);
    CHECK(state.pid() == second[rank]);
    CHECK(state.client() == id);
  }

  // The client vanishes: the new procs are stopped after the lease.
  client.Kill();
  const absl::Time killed = absl::Now();
  v1::WaitProcsResponse waited =
      host->Wait({"r_0", "r_1"}, v1::STOPPED, kLease + kSlack);
  const absl::Duration gone = absl::Now() - killed;
  CHECK_FALSE(waited.timed_out());
  for (const v1::ProcState& state : waited.procs()) {
    INFO(state.ShortDebugString());
    CHECK(state.status() == v1::STOPPED);
    CHECK(state.stopped_by() == "lease");
    CHECK_THAT(state.reason(), Catch::Contains(id));
  }
  for (pid_t pid : second) CHECK_FALSE(IsAlive(pid));
  CHECK(gone >= kLease - absl::Milliseconds(100));
  WARN("client killed to its respawned procs stopped: "
       << absl::FormatDuration(gone) << " (lease "
       << absl::FormatDuration(kLease) << ")");
}

}  // namespace
}  // namespace mesh
