// hostd --parent=stdio (issue 14, the transport under HostMesh::Slurm): a
// real hostd whose stdin and stdout are two pipes its parent holds reads
// its BootstrapInfo (with the tokens) from stdin, registers back over
// stdout, serves the token it was handed, and once its stdin reads EOF is
// orphaned: it stops its procs and exits after its orphan timeout. Then the
// same through a real srun, two hostds on the one node of a private Slurm
// cluster (tests/testing/slurm_cluster.h).
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/auth/credentials.h"
#include "lib/bootstrap/registrar.h"
#include "lib/launcher/launcher.h"
#include "lib/process/supervisor.h"
#include "lib/testing/skip.h"
#include "lib/testing/temp_dir.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/slurm_cluster.h"
#include "tests/testing/test_host.h"

namespace mesh::testing {
namespace {

// hostd's flags for a private host in `dir`, on a free loopback port.
std::vector<std::string> HostdArgs(const std::string& dir) {
  return {"--parent=stdio",
          "--listen=127.0.0.1:0",
          "--state-dir=" + dir + "/state",
          "--runtime-dir=" + dir + "/run",
          "--procd=" + BinaryPath("procd"),
          "--allow-any-command",
          "--stop-grace=1s"};
}

// GetHostInfo at `address` presenting `token`.
grpc::Status GetHostInfo(const std::string& address, const std::string& token,
                         v1::HostInfo* info) {
  ClientCredentials credentials;
  credentials.token = token;
  auto stub = v1::Host::NewStub(NewAuthedChannel(address, credentials));
  return stub->GetHostInfo(Context().get(), {}, info);
}

// A parent like a client's: a Registrar and a supervisor. Each child is
// spawned with its stdin and stdout on pipes of ExpectOnPipes; the test
// reads what it registered with and how it ended, and Forget()s it (the
// parent gone: its stdin reads EOF). Destroying it kills what is left.
class PipeParent {
 public:
  explicit PipeParent(absl::Duration orphan_timeout) {
    options_.orphan_timeout = orphan_timeout;
    options_.admin_token = NewRandomToken();
    options_.peer_token = NewRandomToken();
    absl::StatusOr<std::unique_ptr<Registrar>> registrar =
        Registrar::Create(options_);
    REQUIRE(registrar.ok());
    registrar_ = *std::move(registrar);
    absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
        ProcessSupervisor::Create();
    REQUIRE(supervisor.ok());
    supervisor_ = *std::move(supervisor);
  }
  ~PipeParent() {
    registrar_.reset();
    supervisor_.reset();  // SIGKILLs and reaps what is left.
  }

  const std::string& admin_token() const { return options_.admin_token; }

  // Spawns `spawn` as child `name` on a pair of pipes; returns its index.
  int Spawn(const std::string& name, uint64_t rank, SpawnOptions spawn) {
    auto child = std::make_shared<Child>();
    Registrar::ChildCallbacks callbacks;
    callbacks.on_registered = [child](const std::string& address, pid_t pid) {
      absl::MutexLock lock(&child->mu);
      child->address = address;
      child->registered_pid = pid;
    };
    absl::StatusOr<Registrar::PipeTicket> ticket =
        registrar_->ExpectOnPipes(name, rank, std::move(callbacks));
    REQUIRE(ticket.ok());
    child->ticket = ticket->id;
    spawn.stdin_fd = ticket->child_stdin;
    spawn.stdout_fd = ticket->child_stdout;
    absl::StatusOr<pid_t> pid =
        supervisor_->Spawn(spawn, [child](const ExitInfo& exit) {
          absl::MutexLock lock(&child->mu);
          child->exit = exit;
        });
    // The child holds the only other ends now.
    close(ticket->child_stdin);
    close(ticket->child_stdout);
    REQUIRE(pid.ok());
    child->pid = *pid;
    children_.push_back(child);
    return static_cast<int>(children_.size()) - 1;
  }

  pid_t pid(int i) const { return children_[i]->pid; }

  // Waits until child `i` registered; REQUIREs it did. Its address.
  std::string WaitRegistered(int i, pid_t* registered_pid) {
    Child& child = *children_[i];
    absl::MutexLock lock(&child.mu);
    REQUIRE(child.mu.AwaitWithTimeout(
        absl::Condition(&child, &Child::RegisteredOrExited),
        absl::Seconds(60)));
    INFO("child " << i << " exited: "
                  << (child.exit ? child.exit->stderr_tail : ""));
    REQUIRE_FALSE(child.exit.has_value());
    *registered_pid = child.registered_pid;
    return child.address;
  }

  // The parent goes away for child `i`: its stdin pipe closes.
  void Forget(int i) { registrar_->Forget(children_[i]->ticket); }

  // How child `i` ended (SIGKILLed, and nullopt, if not within `timeout`).
  std::optional<ExitInfo> WaitExit(int i, absl::Duration timeout) {
    Child& child = *children_[i];
    absl::MutexLock lock(&child.mu);
    if (!child.mu.AwaitWithTimeout(absl::Condition(&child, &Child::Exited),
                                   timeout)) {
      supervisor_->SignalGroup(child.pid, SIGKILL).IgnoreError();
      return std::nullopt;
    }
    return child.exit;
  }

 private:
  struct Child {
    uint64_t ticket = 0;
    pid_t pid = 0;
    absl::Mutex mu;
    std::string address ABSL_GUARDED_BY(mu);
    pid_t registered_pid ABSL_GUARDED_BY(mu) = 0;
    std::optional<ExitInfo> exit ABSL_GUARDED_BY(mu);

    bool RegisteredOrExited() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return !address.empty() || exit.has_value();
    }
    bool Exited() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return exit.has_value(); }
  };

  Registrar::Options options_;
  std::unique_ptr<Registrar> registrar_;
  std::unique_ptr<ProcessSupervisor> supervisor_;
  std::vector<std::shared_ptr<Child>> children_;
};

// Creates proc `name` (hostd's own procd) on the host at `address` and
// waits until it runs; its pid.
pid_t StartProc(const std::string& address, const std::string& token,
                const std::string& name) {
  ClientCredentials admin;
  admin.token = token;
  auto stub = v1::Host::NewStub(NewAuthedChannel(address, admin));
  v1::CreateOrUpdateProcRequest create;
  create.set_name(name);
  v1::ProcState created;
  grpc::Status status =
      stub->CreateOrUpdateProc(Context().get(), create, &created);
  INFO(status.error_message());
  REQUIRE(status.ok());
  v1::WaitProcsRequest wait;
  wait.add_names(name);
  wait.set_min_status(v1::RUNNING);
  wait.set_timeout_ms(20000);
  v1::WaitProcsResponse waited;
  REQUIRE(stub->WaitProcs(Context().get(), wait, &waited).ok());
  REQUIRE(waited.procs_size() == 1);
  INFO(waited.procs(0).ShortDebugString());
  REQUIRE(waited.procs(0).status() == v1::RUNNING);
  return waited.procs(0).pid();
}

TEST_CASE(
    "a hostd on its parent's pipes registers, serves the token it was "
    "handed, and exits after its orphan timeout once its stdin closes") {
  TempDir dir;
  PipeParent parent(absl::Seconds(2));
  SpawnOptions spawn;
  spawn.path = BinaryPath("hostd");
  spawn.args = HostdArgs(dir.path());
  spawn.log_dir = dir.path() + "/log";  // stderr.log (stdout is the pipe)
  const int h0 = parent.Spawn("h0", 0, spawn);
  // Nothing on hostd's argv or in its environment carries the channel.
  for (const std::string& arg : spawn.args) {
    CHECK_FALSE(absl::StrContains(arg, parent.admin_token()));
  }
  CHECK(spawn.env.empty());

  pid_t registered_pid = 0;
  const std::string address = parent.WaitRegistered(h0, &registered_pid);
  CHECK(registered_pid == parent.pid(h0));  // Spawned directly: its pid.

  // It serves its parent's token, and nobody without it.
  v1::HostInfo info;
  grpc::Status got = GetHostInfo(address, parent.admin_token(), &info);
  INFO(got.error_message());
  REQUIRE(got.ok());
  CHECK(info.pid() == parent.pid(h0));
  CHECK(GetHostInfo(address, "not-the-token", &info).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  const pid_t proc_pid = StartProc(address, parent.admin_token(), "p0");
  CHECK(IsAlive(proc_pid));

  // The parent goes away: its end of the stdin pipe closes, hostd reads
  // EOF, is orphaned after 2 s, stops its proc and exits.
  const absl::Time forgotten = absl::Now();
  parent.Forget(h0);
  std::optional<ExitInfo> exit = parent.WaitExit(h0, absl::Seconds(30));
  REQUIRE(exit.has_value());
  const absl::Duration lived = absl::Now() - forgotten;
  INFO(exit->stderr_tail);
  CHECK(exit->exit_code == 0);
  CHECK(absl::StrContains(exit->stderr_tail, "parent is gone"));
  INFO("hostd exited " << lived << " after its stdin closed");
  CHECK(lived >= absl::Seconds(2));
  CHECK_FALSE(IsAlive(proc_pid));
  CHECK(LiveInGroups({parent.pid(h0), proc_pid}).empty());
}

TEST_CASE(
    "a Launcher launches a hostd over stdio; hostd's stdout carries only "
    "frames") {
  TempDir dir;
  Launcher::Options options;
  options.log_root = dir.path() + "/logs";
  absl::StatusOr<std::unique_ptr<Launcher>> launcher =
      Launcher::Create(options);
  REQUIRE(launcher.ok());
  SpawnOptions spawn;
  spawn.path = BinaryPath("hostd");
  spawn.args = HostdArgs(dir.path());
  absl::StatusOr<Launcher::Child> child = (*launcher)->Launch(
      "hostd", 0, spawn, absl::Seconds(30), Launcher::ChannelKind::kStdio);
  INFO(child.status());
  REQUIRE(child.ok());
  CHECK(child->registered_pid == child->pid);
  v1::HostInfo info;
  REQUIRE(GetHostInfo(child->address, (*launcher)->admin_token(), &info).ok());
  CHECK(info.pid() == child->pid);
  // hostd's own printing ("hostd listening on ...") went to stderr, not
  // into the frames: registration worked, and its stderr has the line.
  (*launcher)->StopAll(absl::Seconds(5));
  absl::StatusOr<ExitInfo> exit =
      (*launcher)->WaitExit("hostd", absl::Seconds(1));
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == 0);
  CHECK(absl::StrContains(exit->stderr_tail, "hostd listening on"));
  CHECK_FALSE(IsAlive(child->pid));

  SECTION("a Launch over stdio refuses a spawn that sets stdin_fd") {
    SpawnOptions bad = spawn;
    bad.stdin_fd = 0;
    absl::StatusOr<Launcher::Child> refused = (*launcher)->Launch(
        "again", 0, bad, absl::Seconds(5), Launcher::ChannelKind::kStdio);
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("hostd --parent takes env or stdio only, and stdio must be pipes") {
  SECTION("an unknown value exits 2 naming the valid ones") {
    ExitInfo exit = RunHostdToExit({"--parent=stdin"});
    INFO(exit.stderr_tail);
    CHECK(exit.exit_code == 2);
    CHECK(absl::StrContains(exit.stderr_tail,
                            "--parent: \"stdin\" is not a parent channel "
                            "(valid: env, stdio)"));
  }
  SECTION("a stdin that is not a pipe is refused before anything starts") {
    TempDir dir;
    // RunToExit's stdin is /dev/null.
    ExitInfo exit = RunHostdToExit(HostdArgs(dir.path()));
    INFO(exit.stderr_tail);
    CHECK(exit.exit_code == 1);
    CHECK(absl::StrContains(exit.stderr_tail, "stdin is not a pipe or socket"));
  }
}

// The whole environment of `slurm`'s clients as SpawnOptions want it.
void SetSlurmEnvironment(const SlurmCluster& slurm, SpawnOptions* spawn) {
  std::set<std::string> keep;
  for (const std::string& entry : slurm.ClientEnvironment()) {
    const size_t equals = entry.find('=');
    if (equals == std::string::npos) continue;
    keep.insert(entry.substr(0, equals));
    spawn->env[entry.substr(0, equals)] = entry.substr(equals + 1);
  }
  // What ClientEnvironment left out of this process's own (SLURM_* ...).
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    if (!keep.contains(key)) spawn->unset_env.push_back(key);
  }
}

TEST_CASE(
    "two hostds through srun --unbuffered on the one node register over "
    "srun's pipes and are orphaned when srun's stdin closes",
    "[slurm]") {
  absl::StatusOr<std::unique_ptr<SlurmCluster>> cluster = SlurmCluster::Start();
  if (!cluster.ok()) {
    HOSTMESH_SKIP("no Slurm cluster here: " << cluster.status().message());
  }
  SlurmCluster& slurm = **cluster;
  // An allocation of 2 tasks, no shell, as HostMesh::Slurm would ask.
  absl::StatusOr<std::string> allocated = slurm.Allocate(2);
  INFO(allocated.status().ToString());
  REQUIRE(allocated.ok());
  const std::string job = *allocated;

  TempDir dir;
  {
    PipeParent parent(absl::Seconds(2));
    // Two hostds on the one node, one step each: two hosts, said plainly.
    for (int rank = 0; rank < 2; ++rank) {
      const std::string host_dir = absl::StrCat(dir.path(), "/h", rank);
      SpawnOptions spawn;
      spawn.path = FindProgram("srun");
      spawn.args = {
          "--jobid=" + job,  "-N1",     "-n1",          "-w",
          slurm.node_name(), "--exact", "--unbuffered", BinaryPath("hostd")};
      for (const std::string& arg : HostdArgs(host_dir)) {
        spawn.args.push_back(arg);
      }
      // Under slurmstepd, in slurmd's cgroup: process groups only.
      spawn.args.push_back("--cgroup=none");
      spawn.log_dir = absl::StrCat(dir.path(), "/srun", rank);
      SetSlurmEnvironment(slurm, &spawn);
      parent.Spawn(absl::StrCat("h", rank), rank, spawn);
    }
    std::vector<pid_t> hostd_pids, proc_pids;
    for (int rank = 0; rank < 2; ++rank) {
      pid_t registered_pid = 0;
      const std::string address = parent.WaitRegistered(rank, &registered_pid);
      INFO("h" << rank << " at " << address);
      // The pid it registered with is hostd's under slurmstepd, not srun's.
      CHECK(registered_pid != parent.pid(rank));
      v1::HostInfo info;
      grpc::Status got = GetHostInfo(address, parent.admin_token(), &info);
      INFO(got.error_message());
      REQUIRE(got.ok());
      CHECK(info.pid() == registered_pid);
      hostd_pids.push_back(registered_pid);
      proc_pids.push_back(StartProc(address, parent.admin_token(), "p0"));
    }
    CHECK(hostd_pids[0] != hostd_pids[1]);

    // The parent goes: srun's stdin reads EOF, slurmstepd closes hostd's,
    // each hostd is orphaned after 2 s, stops its proc and exits; srun ends
    // with its task.
    for (int rank = 0; rank < 2; ++rank) parent.Forget(rank);
    for (int rank = 0; rank < 2; ++rank) {
      std::optional<ExitInfo> exit = parent.WaitExit(rank, absl::Seconds(60));
      REQUIRE(exit.has_value());
      INFO(exit->stderr_tail);  // srun's stderr carries hostd's
      CHECK(exit->exit_code == 0);
      CHECK(absl::StrContains(exit->stderr_tail, "parent is gone"));
    }
    for (pid_t pid : hostd_pids) CHECK_FALSE(IsAlive(pid));
    for (pid_t pid : proc_pids) CHECK_FALSE(IsAlive(pid));
  }
  absl::StatusOr<RunResult> scancel = slurm.Run({"scancel", job});
  REQUIRE(scancel.ok());
  CHECK(slurm.CancelAllJobs().ok());
  absl::Status stopped = slurm.Stop();
  INFO(stopped);
  CHECK(stopped.ok());
}

}  // namespace
}  // namespace mesh::testing
