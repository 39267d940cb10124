// meshctl against a real hostd: spawn, list, get, wait, stop, actors,
// shutdown — with the exit codes an operator's scripts rely on.
#include <google/protobuf/util/json_util.h>

#include <sstream>
#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "meshctl/meshctl.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

struct Result {
  int code;
  std::string out;
  std::string err;
};

// meshctl as the test host's parent (admin) calls it: with its token file.
Result Meshctl(const testing::TestHost& host, std::vector<std::string> args) {
  args.insert(args.begin(), {"meshctl", "--host", host.address(),
                             "--token-file", host.token_file()});
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  std::ostringstream out, err;
  int code = RunMeshctl(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

TEST_CASE(
    "meshctl drives spawn, list, get, wait, stop, actors and shutdown against "
    "a running hostd") {
  auto host = testing::TestHost::Start({"--registration-timeout=2s"});
  REQUIRE(host != nullptr);
  const std::string addr = host->address();

  Result status = Meshctl(*host, {"host", "status"});
  CHECK(status.code == 0);
  CHECK(status.out.find(addr) != std::string::npos);

  Result spawn = Meshctl(*host, {"proc", "spawn", "w", "--count", "3"});
  INFO(spawn.out << spawn.err);
  REQUIRE(spawn.code == 0);
  for (const char* name : {"w_0", "w_1", "w_2"}) {
    CHECK(spawn.out.find(name) != std::string::npos);
  }
  CHECK(spawn.out.find("RUNNING") != std::string::npos);

  Result json = Meshctl(*host, {"-o", "json", "proc", "list"});
  REQUIRE(json.code == 0);
  v1::ListProcsResponse list;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json.out, &list).ok());
  CHECK(list.procs_size() == 3);
  // meshctl's procs are detached: created by the test's identity, held by
  // no client's lease, so no owner lease shows.
  Result table = Meshctl(*host, {"proc", "list"});
  REQUIRE(table.code == 0);
  CHECK(table.out.find("OWNER         LEASE") != std::string::npos);
  CHECK(table.out.find("hostd:parent  detached") != std::string::npos);
  Result owners = Meshctl(*host, {"owner", "list"});
  INFO(owners.out << owners.err);
  REQUIRE(owners.code == 0);
  CHECK(owners.out == "CLIENT  IDENTITY  STATE  PROCS  EXPIRES\n");

  // Spawning again is the same three procs.
  Result again = Meshctl(*host, {"proc", "spawn", "w", "--count", "3"});
  CHECK(again.code == 0);
  Result get = Meshctl(*host, {"-o", "json", "proc", "get", "w_1"});
  REQUIRE(get.code == 0);
  v1::ProcState state;
  REQUIRE(google::protobuf::util::JsonStringToMessage(get.out, &state).ok());
  CHECK(state.name() == "w_1");
  CHECK(state.status() == v1::RUNNING);

  Result bad =
      Meshctl(*host, {"proc", "spawn", "bad", "--command", "/bin/false"});
  CHECK(bad.code == 1);
  CHECK(bad.err.find("exit") != std::string::npos);

  Result actor =
      Meshctl(*host, {"actor", "spawn", "w_0", "a0", "--type", "mesh.echo"});
  INFO(actor.out << actor.err);
  CHECK(actor.code == 0);
  Result actors = Meshctl(*host, {"actor", "list", "w_0"});
  CHECK(actors.code == 0);
  CHECK(actors.out.find("a0") != std::string::npos);
  Result echo =
      Meshctl(*host, {"-o", "json", "actor", "send", "w_0", "a0", "--type",
                      "mesh.v1.Echo", "--json", R"({"text":"hi"})"});
  INFO(echo.out << echo.err);
  CHECK(echo.code == 0);
  CHECK(echo.out.find("\"hi\"") != std::string::npos);
  Result id = Meshctl(*host, {"-o", "json", "actor", "send", "w_0", "a0",
                              "--type", "mesh.v1.GetActorId"});
  INFO(id.out << id.err);
  CHECK(id.code == 0);
  CHECK(id.out.find("w_0") != std::string::npos);
  Result unknown_type =
      Meshctl(*host, {"actor", "spawn", "w_0", "a1", "--type", "no.such"});
  CHECK(unknown_type.code == 1);
  CHECK(unknown_type.err.find("INVALID_ARGUMENT") != std::string::npos);

  CHECK(Meshctl(*host, {"proc", "stop", "w_1", "--grace", "1s"}).code == 0);
  CHECK(Meshctl(*host, {"proc", "stop", "w_1", "--grace", "1s"}).code == 0);
  CHECK(Meshctl(*host, {"proc", "wait", "w_1", "--status", "stopped"}).code ==
        0);
  Result missing = Meshctl(*host, {"proc", "get", "nobody"});
  CHECK(missing.code == 1);
  CHECK(missing.err.find("NOT_FOUND") != std::string::npos);
  CHECK(Meshctl(*host, {"proc", "frobnicate"}).code == 2);

  Result shutdown =
      Meshctl(*host, {"host", "shutdown", "--grace", "1s", "--stay-down"});
  CHECK(shutdown.code == 0);
  absl::StatusOr<ExitInfo> exit = host->WaitExit();
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == std::optional<int>(0));
}

}  // namespace
}  // namespace mesh
