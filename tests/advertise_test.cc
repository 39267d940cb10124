// Addresses end to end (issue 7): a real hostd advertises an address that
// clients can parse and reach (IPv6 bracketed), and refuses at start, with
// exit code 2 and a message for the operator, an address it cannot be
// reached at.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "lib/auth/credentials.h"
#include "lib/launcher/launcher.h"
#include "lib/net/address.h"
#include "lib/net/host_port.h"
#include "lib/testing/skip.h"
#include "lib/testing/temp_dir.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;

TEST_CASE(
    "a hostd listening on [::1] advertises [::1]:port, which a client "
    "parses and reaches") {
  if (!IsAddressOfThisMachine("::1")) {
    HOSTMESH_SKIP("this machine has no IPv6 loopback (::1)");
  }
  testing::TempDir dir;
  Launcher::Options options;
  options.log_root = dir.path() + "/logs";
  absl::StatusOr<std::unique_ptr<Launcher>> launcher =
      Launcher::Create(options);
  REQUIRE(launcher.ok());
  SpawnOptions spawn;
  spawn.path = testing::BinaryPath("hostd");
  spawn.args = {"--listen=[::1]:0", "--advertise=::1",
                "--state-dir=" + dir.path() + "/state",
                "--runtime-dir=" + dir.path() + "/run",
                "--procd=" + testing::BinaryPath("procd")};
  absl::StatusOr<Launcher::Child> child =
      (*launcher)->Launch("hostd", 0, spawn, absl::Seconds(30));
  REQUIRE(child.ok());
  CHECK(absl::StartsWith(child->address, "[::1]:"));
  absl::StatusOr<HostPort> parsed = ParseHostPort(child->address, "address");
  REQUIRE(parsed.ok());
  CHECK(parsed->host == "::1");
  CHECK(JoinHostPort(parsed->host, parsed->port) == child->address);

  ClientCredentials credentials;
  credentials.token = (*launcher)->admin_token();
  auto stub = v1::Host::NewStub(NewAuthedChannel(child->address, credentials));
  v1::HostInfo info;
  REQUIRE(stub->GetHostInfo(Context().get(), {}, &info).ok());
  CHECK(info.address() == child->address);

  v1::ShutdownHostRequest shutdown;
  shutdown.set_grace_ms(1000);
  shutdown.set_stay_down(true);
  v1::ShutdownHostResponse response;
  CHECK(stub->ShutdownHost(Context().get(), shutdown, &response).ok());
  absl::StatusOr<ExitInfo> exit =
      (*launcher)->WaitExit("hostd", absl::Seconds(30));
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == std::optional<int>(0));
  (*launcher)->StopAll(absl::Seconds(5));
}

// hostd with `flags` on fresh dirs; it must exit at start.
ExitInfo RefusedHostd(const std::vector<std::string>& flags) {
  testing::TempDir dir;
  std::vector<std::string> args = flags;
  args.push_back("--state-dir=" + dir.path() + "/state");
  args.push_back("--runtime-dir=" + dir.path() + "/run");
  return testing::RunHostdToExit(args);
}

TEST_CASE(
    "hostd refuses to advertise an address that is not this machine's, "
    "exit 2 naming --advertise-unchecked") {
  std::vector<std::string> mine = ThisMachineAddresses();
  std::string foreign;
  for (const char* candidate : {"203.0.113.77", "198.51.100.77"}) {
    if (std::find(mine.begin(), mine.end(), candidate) == mine.end()) {
      foreign = candidate;
      break;
    }
  }
  REQUIRE_FALSE(foreign.empty());
  ExitInfo refused =
      RefusedHostd({"--listen=127.0.0.1:0", "--advertise=" + foreign});
  CHECK(refused.exit_code == std::optional<int>(2));
  CHECK(absl::StrContains(refused.stderr_tail, "--advertise " + foreign +
                                                   " is not an address of "
                                                   "this machine"));
  CHECK(absl::StrContains(refused.stderr_tail, "--advertise-unchecked"));
}

TEST_CASE("hostd refuses a host:port or an unbound address as --advertise") {
  ExitInfo with_port =
      RefusedHostd({"--listen=127.0.0.1:0", "--advertise=localhost:7450"});
  CHECK(with_port.exit_code == std::optional<int>(2));
  CHECK(absl::StrContains(with_port.stderr_tail, "a host has no port"));

  ExitInfo unbound = RefusedHostd({"--listen=127.0.0.1:0", "--advertise=::1"});
  CHECK(unbound.exit_code == std::optional<int>(2));
  CHECK(absl::StrContains(unbound.stderr_tail,
                          "--listen 127.0.0.1:0 does not bind"));
}

TEST_CASE(
    "hostd on every interface refuses to advertise loopback or a hostname "
    "that resolves only to loopback, exit 2 naming --advertise") {
  ExitInfo loopback =
      RefusedHostd({"--listen=0.0.0.0:0", "--advertise=localhost"});
  CHECK(loopback.exit_code == std::optional<int>(2));
  // Whichever start-up check speaks first (authentication or address), the
  // operator is told what to set.
  CHECK((absl::StrContains(loopback.stderr_tail, "resolves to loopback") ||
         absl::StrContains(loopback.stderr_tail, "--tls-cert")));

  if (ResolvesToLoopback(ThisMachine().hostname)) {
    ExitInfo hostname = RefusedHostd({"--listen=0.0.0.0:0"});
    CHECK(hostname.exit_code == std::optional<int>(2));
    CHECK((absl::StrContains(hostname.stderr_tail, "set --advertise") ||
           absl::StrContains(hostname.stderr_tail, "--tls-cert")));
  }
}

}  // namespace
}  // namespace mesh
