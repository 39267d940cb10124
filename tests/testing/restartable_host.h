// RestartableHost: a real hostd that a test can kill -9, signal, and start
// again on the same state dir, runtime dir and port (issue 9: restarts
// without loss).
//
// Unlike TestHost it is a plain child of the test, started by a
// ProcessSupervisor with no parent channel: nothing stops it when a
// launcher goes, and when it exits for a restart its procs live on.
// Every start gets the same --state-dir, --runtime-dir and
// --listen 127.0.0.1:<port> (a port free when the fixture was made, kept for
// every restart), --allow-any-command, short bounds (Options) and, where the
// machine has a writable cgroup v2, --cgroup=<a subtree of its own> (else
// --cgroup=none).
//
// Reaping: the test process becomes a child subreaper
// (PR_SET_CHILD_SUBREAPER, set once by Create and never undone): procs
// orphaned by a killed hostd are reparented to the test, not to pid 1 (which
// does not reap here), so a test can reap a dead proc (Reap) and free its
// pid. Zombies count as dead everywhere (IsAlive).
//
// Cleanup (the destructor) ends exactly what the test started: hostd
// (ShutdownHost if it serves, then SIGKILL by pid), every pid the test
// Track()ed (SIGKILL through a pidfd, only if it is still the process of the
// recorded start time), everything in the fixture's cgroup subtree
// (cgroup.kill, then the dirs are removed), and reaps the zombies among its
// children.
//
// Not thread-safe: one test thread drives it (RPC helpers may be called from
// many threads while no Start/Kill9/Signal runs).
#ifndef HOSTMESH_TESTS_TESTING_RESTARTABLE_HOST_H_
#define HOSTMESH_TESTS_TESTING_RESTARTABLE_HOST_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/auth/credentials.h"
#include "lib/process/supervisor.h"
#include "lib/testing/temp_dir.h"
#include "proto/host.grpc.pb.h"

namespace mesh::testing {

class RestartableHost {
 public:
  struct Options {
    absl::Duration orphan_timeout = absl::Seconds(3);
    // Generous: a dozen procs starting at once under ASan on 2 busy cores
    // took more than 5 s to register.
    absl::Duration registration_timeout = absl::Seconds(30);
    absl::Duration stop_grace = absl::Seconds(1);
    // Generous: the tests' procs are detached anyway.
    absl::Duration owner_lease = absl::Minutes(10);
    // --cgroup=<own cgroup dir>/hostmesh-test-<random> where cgroup v2 is
    // writable; false (or no cgroup v2): --cgroup=none.
    bool cgroup = true;
    // Authenticate with a tokens file named in a --config file (first line
    // "test-admin admin <token>") instead of the runtime dir's admin.token
    // (which hostd does not write once a tokens file admits others). Tests
    // of SIGHUP change either file.
    bool tokens_file = false;
    // More flags for every start.
    std::vector<std::string> args;
    // Added to hostd's environment (the test's) at every start.
    std::map<std::string, std::string> env;
    // Sets WATCHDOG_PID to hostd's own pid, as systemd does for a unit's
    // main process (hostd is exec'd by /bin/sh, which keeps the pid).
    bool watchdog_pid = false;
  };

  // Makes the dirs and picks the port; does not start hostd. REQUIREs
  // success.
  static std::unique_ptr<RestartableHost> Create(Options options);
  static std::unique_ptr<RestartableHost> Create() { return Create(Options()); }
  ~RestartableHost();
  RestartableHost(const RestartableHost&) = delete;
  RestartableHost& operator=(const RestartableHost&) = delete;

  // Starts hostd (none may be running) with the fixture's flags plus
  // `once_args` (this start only, e.g. --test-crash-at), and waits until it
  // serves: GetHostInfo with the credentials answers with the new pid. An
  // error if it exits first (its exit and stderr tail are in the message;
  // exit() has the ExitInfo) or does not serve within `timeout`.
  absl::Status Start(const std::vector<std::string>& once_args = {},
                     absl::Duration timeout = absl::Seconds(30));
  // The same, after a Kill9, a signal that ended it, or a crash.
  absl::Status Restart(const std::vector<std::string>& once_args = {}) {
    return Start(once_args);
  }
  // SIGKILLs hostd by pid and waits until it is reaped.
  absl::Status Kill9();
  // Sends `sig` to hostd alone (not its procs).
  absl::Status Signal(int sig);
  // Waits until the current hostd exited (after a signal or a crash hook);
  // its ExitInfo.
  absl::StatusOr<ExitInfo> WaitExit(absl::Duration timeout = absl::Seconds(30));
  // Whether the last started hostd has not exited (been reaped) yet.
  bool running() const;
  // The last started hostd's exit, once it exited.
  std::optional<ExitInfo> exit() const;

  pid_t pid() const { return pid_; }
  const std::string& address() const { return address_; }
  const std::string& dir() const { return dir_.path(); }
  const std::string& state_dir() const { return state_dir_; }
  const std::string& runtime_dir() const { return runtime_dir_; }
  // Empty unless Options.tokens_file.
  const std::string& config_file() const { return config_file_; }
  const std::string& tokens_file() const { return tokens_file_; }
  // The cgroup subtree given to hostd; empty: --cgroup=none.
  const std::string& cgroup_dir() const { return cgroup_dir_; }
  // Where proc `name`'s stdout.log and stderr.log are.
  std::string LogDir(const std::string& name) const;
  // Text of the current hostd's stderr (its glog lines), for INFO.
  std::string HostdLog() const;

  // A channel and stubs to the current hostd (replaced by every Start: get
  // them again after a restart).
  const ClientCredentials& credentials() const { return credentials_; }
  std::shared_ptr<grpc::Channel> channel() const;
  v1::Host::Stub& stub() const;
  v1::Proc::Stub& procs() const;
  // A channel presenting `credentials` (fast reconnects).
  std::shared_ptr<grpc::Channel> ChannelWith(
      const ClientCredentials& credentials) const;

  // Convenience RPCs with deadlines (thread-safe among themselves).
  grpc::Status Create(const std::string& name, uint64_t rank,
                      const v1::ProcSpec& spec, v1::ProcState* state,
                      absl::Duration timeout = absl::Seconds(20));
  grpc::Status Get(const std::string& name, v1::ProcState* state);
  grpc::Status Stop(const std::string& name, v1::ProcState* state,
                    absl::Duration grace = absl::Seconds(1));
  grpc::Status List(v1::ListProcsResponse* list);
  v1::WaitProcsResponse Wait(const std::vector<std::string>& names,
                             v1::Status min_status,
                             absl::Duration timeout = absl::Seconds(30));

  // Remembers `pid` (with its start time now) as a process of this test:
  // killed at cleanup if still the same process. False if it is gone.
  bool Track(pid_t pid);
  // Reaps `pid` if it is a zombie child of the test (an orphaned proc);
  // true if it was reaped or is not a child of the test (nothing to do).
  bool Reap(pid_t pid);
  // Reaps every zombie child of the test that no supervisor of the fixture
  // tracks (orphans reparented to the subreaper).
  void ReapOrphans();
  // Every pid in the fixture's cgroup subtree (empty without one).
  std::vector<pid_t> CgroupPids() const;

 private:
  struct Run;  // One start of hostd.
  explicit RestartableHost(Options options);
  void Cleanup();

  Options options_;
  TempDir dir_;
  std::string state_dir_;
  std::string runtime_dir_;
  std::string config_file_;
  std::string tokens_file_;
  std::string cgroup_dir_;
  std::string address_;
  std::unique_ptr<ProcessSupervisor> hostds_;
  std::shared_ptr<Run> run_;
  int starts_ = 0;
  bool served_ = false;  // Some start served (the port is ours).
  pid_t pid_ = 0;
  ClientCredentials credentials_;
  mutable absl::Mutex mu_;
  std::shared_ptr<grpc::Channel> channel_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<v1::Host::Stub> stub_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<v1::Proc::Stub> procs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<pid_t, uint64_t>> tracked_;  // pid, start time
};

// Waits until `pid` is gone or a zombie (pidfd, no polling of /proc);
// false if it still lives after `timeout`.
bool WaitGone(pid_t pid, absl::Duration timeout);
// The whole text of `path` ("" if unreadable).
std::string ReadText(const std::string& path);

}  // namespace mesh::testing

#endif  // HOSTMESH_TESTS_TESTING_RESTARTABLE_HOST_H_
