// meshctl against real hostds: spawn, list, get, wait, stop, actors,
// shutdown — with the exit codes an operator's scripts rely on; two hosts
// at once, -o yaml, several names per verb, a user's message type.
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "lib/testing/temp_dir.h"
#include "meshctl/meshctl.h"
#include "tests/testing/meshctl_run.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using Result = testing::MeshctlResult;

// meshctl as the test host's admin (tests/testing/meshctl_run.h).
Result Meshctl(const testing::TestHost& host, std::vector<std::string> args) {
  return testing::RunMeshctlAs(host, std::move(args));
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

// A 0600 file holding `text`.
std::string WriteSecret(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  REQUIRE(chmod(path.c_str(), 0600) == 0);
  return path;
}

Result Ctl(std::vector<std::string> args) {
  args.insert(args.begin(), "meshctl");
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  std::ostringstream out, err;
  int code = RunMeshctl(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

TEST_CASE(
    "meshctl works across two real hosts, in yaml, with several names per "
    "verb") {
  testing::TempDir dir;
  // One operator token both hosts accept.
  const std::string token = "ops-token-0123456789abcdef0123456789";
  const std::string tokens =
      WriteSecret(dir.path() + "/tokens", absl::StrCat("ops admin ", token));
  const std::string token_file = WriteSecret(dir.path() + "/token", token);
  auto a = testing::TestHost::Start({"--tokens-file=" + tokens});
  auto b = testing::TestHost::Start({"--tokens-file=" + tokens});
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  auto on = [&](const std::string& hosts, std::vector<std::string> args) {
    args.insert(args.begin(), {"--hosts", hosts, "--token-file", token_file});
    return Ctl(args);
  };
  const std::string both = absl::StrCat(a->address(), ",", b->address());

  Result spawn_a = on(a->address(), {"proc", "spawn", "wa", "--count", "2"});
  INFO(spawn_a.err);
  REQUIRE(spawn_a.code == 0);
  REQUIRE(on(b->address(), {"proc", "spawn", "wb"}).code == 0);

  // One list of both hosts' procs, each with its host.
  Result list = on(both, {"proc", "list"});
  INFO(list.out << list.err);
  CHECK(list.code == 0);
  for (const std::string& row : {absl::StrCat("wa_0  0     RUNNING"),
                                 absl::StrCat("wb    0     RUNNING")}) {
    CHECK(list.out.find(row) != std::string::npos);
  }
  CHECK(list.out.find(a->address()) != std::string::npos);
  CHECK(list.out.find(b->address()) != std::string::npos);

  // A hosts file, with a host that is down: reported, the others shown.
  {
    std::ofstream hosts(dir.path() + "/hosts");
    hosts << "# the cluster\n"
          << a->address() << "\n127.0.0.1:1  # down\n"
          << b->address() << "\n";
  }
  Result status = Ctl({"--hosts-file", dir.path() + "/hosts", "--token-file",
                       token_file, "--timeout", "2s", "host", "status"});
  INFO(status.out << status.err);
  CHECK(status.code == 1);
  CHECK(status.out.find("unreachable") != std::string::npos);
  CHECK(status.err.find("\"127.0.0.1:1\"") != std::string::npos);
  CHECK(status.out.find(absl::StrCat(a->address(), "  ")) != std::string::npos);

  // -o yaml: a sequence of HostInfo for two hosts; one proc as a mapping.
  Result yaml = on(both, {"-o", "yaml", "host", "status"});
  INFO(yaml.out << yaml.err);
  CHECK(yaml.code == 0);
  CHECK(yaml.out.rfind(absl::StrCat("- address: \"", a->address(), "\"\n"),
                       0) == 0);
  CHECK(yaml.out.find(absl::StrCat("\n- address: \"", b->address(), "\"\n")) !=
        std::string::npos);
  CHECK(yaml.out.find("\n  num_procs: 2\n") != std::string::npos);
  Result proc_yaml = on(a->address(), {"-o", "yaml", "proc", "get", "wa_1"});
  CHECK(proc_yaml.code == 0);
  CHECK(proc_yaml.out.rfind("name: wa_1\nrank: 1\nstatus: RUNNING\n", 0) == 0);

  // Several names: each answered, the missing one reported, exit 1.
  Result get = on(a->address(), {"proc", "get", "wa_0", "nobody", "wa_1"});
  CHECK(get.code == 1);
  CHECK(get.out.find("name:        wa_0") != std::string::npos);
  CHECK(get.out.find("name:        wa_1") != std::string::npos);
  CHECK(get.err.find("NOT_FOUND: get proc \"nobody\"") != std::string::npos);

  REQUIRE(
      on(a->address(), {"actor", "spawn", "wa_0", "e1", "--type", "mesh.echo"})
          .code == 0);
  REQUIRE(
      on(a->address(), {"actor", "spawn", "wa_0", "e2", "--type", "mesh.echo"})
          .code == 0);
  Result actors = on(a->address(), {"actor", "get", "wa_0", "e1", "e2"});
  CHECK(actors.code == 0);
  CHECK(actors.out.find("  e1\n") != std::string::npos);
  CHECK(actors.out.find("  e2\n") != std::string::npos);

  // A user's message type: built from its .proto and sent as an Any with
  // its type URL; the echo actor has no handler for it and the proc says so.
  {
    std::ofstream proto(dir.path() + "/greeting.proto");
    proto << "syntax = \"proto3\";\npackage demo;\n"
             "message Greeting { string text = 1; }\n";
  }
  Result send =
      on(a->address(), {"actor", "send", "wa_0", "e1", "--proto",
                        "greeting.proto", "--import-path", dir.path(), "--type",
                        "demo.Greeting", "--json", R"({"text":"hi"})"});
  INFO(send.err);
  CHECK(send.code == 1);
  CHECK(send.err.find("meshctl: INVALID_ARGUMENT: send demo.Greeting to actor "
                      "\"e1\"") != std::string::npos);
  CHECK(send.err.find("no handler for message type "
                      "\"type.googleapis.com/demo.Greeting\"") !=
        std::string::npos);

  // Stopping several at once; then the two hosts' lists agree.
  Result stop = on(a->address(), {"proc", "stop", "wa_0", "wa_1", "--grace",
                                  "2s", "--reason", "rebalance"});
  INFO(stop.out << stop.err);
  CHECK(stop.code == 0);
  Result after = on(both, {"-o", "json", "proc", "list"});
  REQUIRE(after.code == 0);
  v1::ListProcsResponse procs;
  REQUIRE(google::protobuf::util::JsonStringToMessage(after.out, &procs).ok());
  int stopped = 0;
  for (const v1::ProcState& proc : procs.procs()) {
    if (proc.status() == v1::STOPPED) {
      ++stopped;
      CHECK(proc.reason().find("rebalance") != std::string::npos);
    }
  }
  CHECK(procs.procs_size() == 3);
  CHECK(stopped == 2);
}

}  // namespace
}  // namespace mesh
