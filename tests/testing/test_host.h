// Helpers for integration tests that run real hostd/procd processes.
#ifndef HOSTMESH_TESTS_TESTING_TEST_HOST_H_
#define HOSTMESH_TESTS_TESTING_TEST_HOST_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hostmesh/hostmesh.h"
#include "lib/auth/credentials.h"
#include "lib/launcher/launcher.h"
#include "lib/testing/temp_dir.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "proto/proc.pb.h"

namespace mesh::testing {

using mesh::testing::TempDir;

// A ClientContext with a deadline (every RPC has one).
std::unique_ptr<grpc::ClientContext> Context(
    absl::Duration timeout = absl::Seconds(20));

// A spec running `script` with /bin/sh -c.
v1::ProcSpec Shell(const std::string& script);

// The mesh ranks of GetActorId replies (mesh.echo), REQUIRE-ing each is OK.
std::vector<uint64_t> RanksOf(
    const std::vector<absl::StatusOr<v1::ActorIdReply>>& replies);

// A client (REQUIREs it was created).
std::shared_ptr<Client> NewClient(Client::Options options = {});
// A client presenting `credentials` (for hosts it attaches to); hosts a mesh
// starts for itself trust their client without them.
std::shared_ptr<Client> NewClient(ClientCredentials credentials);
// HostMesh options using `client`, with `timeout` (default: HostMesh's).
HostMesh::Options WithClient(
    std::shared_ptr<Client> client,
    absl::Duration timeout = HostMesh::Options().timeout);

// A real hostd child (on 127.0.0.1:0 unless told) with its own state and
// runtime dirs, started through the register-back handshake. The destructor
// shuts it down (ShutdownHost, then signals) and reaps it, so nothing outlives
// a test.
class TestHost {
 public:
  // `args` are extra hostd flags. A test host runs any command (like the
  // hosts a client starts for itself) unless `allow_any_command` is false.
  // The test is its parent: it holds the host's admin token. hostd listens
  // on `listen` (e.g. where an earlier host was, to come back there).
  static std::unique_ptr<TestHost> Start(
      std::vector<std::string> args = {}, bool allow_any_command = true,
      const std::string& listen = "127.0.0.1:0");
  ~TestHost();

  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }
  const std::string& runtime_dir() const { return runtime_dir_; }
  const std::string& state_dir() const { return state_dir_; }
  // hostd's stderr (its glog lines) so far.
  std::string HostdLog() const;
  v1::Host::Stub& stub() { return *stub_; }
  // An authenticated (admin) channel to the host, its credentials, and a
  // 0600 file holding the token.
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientCredentials& credentials() const { return credentials_; }
  const std::string& token_file() const { return token_file_; }
  Launcher& launcher() { return *launcher_; }
  // Waits for hostd to exit (after a ShutdownHost or a signal).
  absl::StatusOr<ExitInfo> WaitExit(absl::Duration timeout = absl::Seconds(60));

  // Convenience RPCs (each with a deadline).
  grpc::Status Create(const std::string& name, uint64_t rank,
                      const v1::ProcSpec& spec, v1::ProcState* state);
  grpc::Status Get(const std::string& name, v1::ProcState* state);
  grpc::Status Stop(const std::string& name, v1::ProcState* state,
                    absl::Duration grace = absl::Seconds(2));
  v1::WaitProcsResponse Wait(const std::vector<std::string>& names,
                             v1::Status min_status,
                             absl::Duration timeout = absl::Seconds(30));

 private:
  TestHost() = default;
  TempDir dir_;
  std::string state_dir_;
  std::string runtime_dir_;
  std::unique_ptr<Launcher> launcher_;
  std::string address_;
  pid_t pid_ = 0;
  ClientCredentials credentials_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string token_file_;
  std::unique_ptr<v1::Host::Stub> stub_;
};

// Path of a binary built by Bazel for this test (from runfiles).
std::string BinaryPath(const std::string& name);

// Runs `spawn` until it exits (it must within `timeout`; else it is killed
// and the test fails).
ExitInfo RunToExit(SpawnOptions spawn,
                   absl::Duration timeout = absl::Seconds(20));
// RunToExit of this test's hostd with `args`.
ExitInfo RunHostdToExit(std::vector<std::string> args);

// True if `pid` exists and is not a zombie.
bool IsAlive(pid_t pid);
// Every live pid whose process group is in `pgids`.
std::vector<pid_t> LiveInGroups(const std::set<pid_t>& pgids);

}  // namespace mesh::testing

#endif  // HOSTMESH_TESTS_TESTING_TEST_HOST_H_
