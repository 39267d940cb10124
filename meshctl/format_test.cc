// meshctl's output formats (-o table|wide|json|yaml), host lists, the
// completion script, --help examples and user message types; no host.
#include "meshctl/format.h"

#include <stdio.h>
#include <stdlib.h>

#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "lib/testing/temp_dir.h"
#include "meshctl/cli.h"
#include "meshctl/commands.h"
#include "meshctl/meshctl.h"
#include "meshctl/message_types.h"
#include "proto/host.pb.h"

namespace mesh::meshctl {
namespace {

using Catch::Contains;
using ::mesh::testing::TempDir;

constexpr char kGreetingProto[] = "meshctl/testdata/greeting.proto";
constexpr char kGreetingSet[] = "meshctl/testdata/greeting.pb";

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  REQUIRE(out.good());
}

TEST_CASE("a host without a port gets 7450 and a bad one names its source") {
  CHECK(*NormalizeHost("localhost", "--host") == "localhost:7450");
  CHECK(*NormalizeHost("node7:99", "--host") == "node7:99");
  CHECK(*NormalizeHost(" 10.0.0.5 ", "--host") == "10.0.0.5:7450");
  CHECK(*NormalizeHost("::1", "--host") == "[::1]:7450");
  CHECK(*NormalizeHost("[::1]", "--host") == "[::1]:7450");
  CHECK(*NormalizeHost("[::1]:80", "--host") == "[::1]:80");
  absl::StatusOr<std::string> bad = NormalizeHost("node7:http", "MESH_HOST");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(std::string(bad.status().message()), Contains("MESH_HOST"));
  CHECK_FALSE(NormalizeHost("", "--host").ok());
  CHECK_FALSE(NormalizeHost("h:0", "--host").ok());
}

TEST_CASE("host lists come from a comma list, a hosts file and MESH_HOST") {
  CHECK(*ParseHostList("a, b:1 ,c", "--host") ==
        std::vector<std::string>{"a:7450", "b:1", "c:7450"});
  CHECK_FALSE(ParseHostList("a,,b", "--host").ok());

  absl::StatusOr<std::vector<std::string>> file = ParseHostsFile(
      "# the cluster\n"
      "node1\n"
      "\n"
      "  node2:7451   # the odd one\n"
      "#node3\n",
      "hosts.txt");
  REQUIRE(file.ok());
  CHECK(*file == std::vector<std::string>{"node1:7450", "node2:7451"});
  absl::StatusOr<std::vector<std::string>> bad =
      ParseHostsFile("node1\nnode2:x\n", "hosts.txt");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(std::string(bad.status().message()), Contains("hosts.txt line 2"));
  CHECK_FALSE(ParseHostsFile("# nothing\n", "hosts.txt").ok());

  TempDir dir;
  const std::string path = dir.path() + "/hosts";
  WriteFile(path, "node1\nnode3 # third\n");
  // Flags and the file together, duplicates dropped; MESH_HOST only when
  // neither names a host; else the default.
  CHECK(*ResolveHosts({"node1,node2"}, path, "envhost") ==
        std::vector<std::string>{"node1:7450", "node2:7450", "node3:7450"});
  CHECK(*ResolveHosts({}, "", "h1,h2:9") ==
        std::vector<std::string>{"h1:7450", "h2:9"});
  CHECK(*ResolveHosts({}, "", nullptr) ==
        std::vector<std::string>{"127.0.0.1:7450"});
  CHECK(*ResolveHosts({}, "", "") ==
        std::vector<std::string>{"127.0.0.1:7450"});
  absl::StatusOr<std::vector<std::string>> missing =
      ResolveHosts({}, dir.path() + "/nope", nullptr);
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()), Contains("--hosts-file"));
}

TEST_CASE("-o names the four formats and refuses others") {
  CHECK(*ParseOutput("yaml") == Output::kYaml);
  CHECK(*ParseOutput("wide") == Output::kWide);
  CHECK_THAT(std::string(ParseOutput("xml").status().message()),
             Contains("table, wide, json, yaml"));
}

v1::ListProcsResponse TwoProcs() {
  v1::ListProcsResponse list;
  v1::ProcState* a = list.add_procs();
  a->set_name("w_0");
  a->set_status(v1::RUNNING);
  a->set_host("10.0.0.5:7450");
  a->set_generation(7);
  a->mutable_spec()->set_command("/bin/worker");
  a->mutable_spec()->add_args("--v");
  (*a->mutable_spec()->mutable_env())["B"] = "2";
  (*a->mutable_spec()->mutable_env())["A"] = "yes";
  a->set_stderr_tail("line one\n  line two\n");
  v1::ProcState* b = list.add_procs();
  b->set_name("w_1");
  b->set_rank(1);
  b->set_status(v1::FAILED);
  b->set_exit_code(3);
  b->set_reason("exited: \"bad\" # not a comment");
  return list;
}

TEST_CASE("a proc table has more columns with -o wide") {
  v1::ListProcsResponse list = TwoProcs();
  const std::string table = FormatProcTable(list.procs());
  const std::string wide = FormatProcTable(list.procs(), /*wide=*/true);
  CHECK_THAT(table, Catch::StartsWith("NAME  RANK  STATUS   PID  HOST"));
  CHECK_THAT(wide, Contains("GENERATION  STOPPED-BY  COMMAND"));
  CHECK_THAT(wide, Contains("/bin/worker --v"));
  CHECK(table.find("/bin/worker") == std::string::npos);
  CHECK(*Render(list, Output::kWide, table, wide) == wide);
  CHECK(*Render(list, Output::kWide, table) == table);
  CHECK(*Render(list, Output::kTable, table, wide) == table);
}

TEST_CASE(
    "YAML shows every field in proto order, lists as sequences, maps sorted "
    "and multi-line text as a block") {
  absl::StatusOr<std::string> yaml = ToYaml(TwoProcs());
  REQUIRE(yaml.ok());
  INFO(*yaml);
  CHECK_THAT(*yaml, Catch::StartsWith("procs:\n"
                                      "- name: w_0\n"
                                      "  rank: 0\n"
                                      "  status: RUNNING\n"
                                      "  reason: \"\"\n"
                                      "  generation: 7\n"));
  // A host:port is quoted (YAML 1.1 could read digits and colons as a
  // number); a multi-line string is a literal block; env sorted by key;
  // "yes" quoted (a boolean to YAML 1.1).
  CHECK_THAT(*yaml, Contains("  host: \"10.0.0.5:7450\"\n"));
  CHECK_THAT(*yaml, Contains("  stderr_tail: |\n"
                             "    line one\n"
                             "      line two\n"));
  CHECK_THAT(*yaml, Contains("  spec:\n"
                             "    command: /bin/worker\n"
                             "    args:\n"
                             "    - \"--v\"\n"
                             "    env:\n"
                             "      A: \"yes\"\n"
                             "      B: \"2\"\n"));
  CHECK_THAT(*yaml, Contains("- name: w_1\n  rank: 1\n  status: FAILED\n"));
  CHECK_THAT(*yaml, Contains("  reason: \"exited: \\\"bad\\\" # not a "
                             "comment\"\n"));
  // Set optional fields only: w_1 has an exit code, w_0 none.
  CHECK_THAT(*yaml, Contains("  exit_code: 3\n"));
  CHECK(absl::StrContains(*yaml, "term_signal") == false);
  // Empty containers and messages.
  CHECK(*ToYaml(v1::ListProcsResponse()) == "procs: []\n");
  CHECK(*ToYaml(v1::GetHostInfoRequest()) == "{}\n");
}

TEST_CASE("a list renders as a JSON array and a YAML sequence") {
  v1::HostInfo a;
  a.set_address("h1:7450");
  v1::HostInfo b;
  b.set_address("h2:7450");
  absl::StatusOr<std::string> json =
      RenderList({&a, &b}, Output::kJson, "table");
  REQUIRE(json.ok());
  google::protobuf::ListValue parsed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(*json, &parsed).ok());
  REQUIRE(parsed.values_size() == 2);
  CHECK(parsed.values(1).struct_value().fields().at("address").string_value() ==
        "h2:7450");
  absl::StatusOr<std::string> yaml =
      RenderList({&a, &b}, Output::kYaml, "table");
  REQUIRE(yaml.ok());
  CHECK_THAT(*yaml, Catch::StartsWith("- address: h1:7450\n  hostname: "));
  CHECK_THAT(*yaml, Contains("\n- address: h2:7450\n"));
  CHECK(*RenderList({}, Output::kJson, "") == "[]\n");
  CHECK(*RenderList({}, Output::kYaml, "") == "[]\n");
  CHECK(*RenderList({&a}, Output::kTable, "T\n") == "T\n");
}

TEST_CASE("a host table marks the hosts that did not answer") {
  v1::HostInfo info;
  info.set_hostname("node1");
  info.set_version("1.2");
  info.set_num_procs(3);
  info.set_max_procs(8);
  CHECK(FormatHostTable({"h1:7450", "h2:7450"}, {&info, nullptr}) ==
        "HOST     HOSTNAME  VERSION  PROCS        PID  STARTED\n"
        "h1:7450  node1     1.2      3/8          -    -\n"
        "h2:7450  -         -        unreachable  -    -\n");
}

TEST_CASE(
    "a user's message type loads from a .proto or a descriptor set and "
    "packs as an Any with its type URL") {
  for (bool from_set : {false, true}) {
    INFO((from_set ? "descriptor set" : ".proto"));
    MessageTypes types;
    absl::Status loaded =
        from_set ? types.Load({}, {}, {kGreetingSet})
                 : types.Load({"greeting.proto"}, {"meshctl/testdata"}, {});
    REQUIRE(loaded.ok());
    absl::StatusOr<google::protobuf::Any> any = types.Build(
        "demo.Greeting",
        R"({"text":"hi","numbers":[1,2],"at":"2024-01-01T00:00:00Z",)"
        R"("tags":{"k":"v"}})");
    REQUIRE(any.ok());
    CHECK(any->type_url() == "type.googleapis.com/demo.Greeting");
    // The reply printer knows the type through the loaded pool.
    absl::StatusOr<std::string> line =
        FormatReply(*any, Output::kTable, types.pool(), types.factory());
    REQUIRE(line.ok());
    CHECK(*line ==
          "demo.Greeting: {\"text\":\"hi\",\"numbers\":[\"1\",\"2\"],"
          "\"tags\":{\"k\":\"v\"},\"at\":\"2024-01-01T00:00:00Z\"}\n");
    absl::StatusOr<std::string> yaml =
        FormatReply(*any, Output::kYaml, types.pool(), types.factory());
    REQUIRE(yaml.ok());
    CHECK(*yaml ==
          "text: hi\n"
          "numbers:\n"
          "- 1\n"
          "- 2\n"
          "at: \"2024-01-01T00:00:00Z\"\n"
          "tags:\n"
          "  k: v\n");
    absl::StatusOr<google::protobuf::Any> bad =
        types.Build("demo.Greeting", R"({"text":"hi","nope":1})");
    REQUIRE_FALSE(bad.ok());
    CHECK_THAT(std::string(bad.status().message()), Contains("nope"));
    absl::StatusOr<google::protobuf::Any> unknown =
        types.Build("demo.Farewell", "");
    REQUIRE_FALSE(unknown.ok());
    CHECK_THAT(std::string(unknown.status().message()),
               Contains("loaded: demo.Greeting"));
  }
  // Without --proto, the same type is unknown, and the error says how.
  MessageTypes none;
  REQUIRE(none.Load({}, {}, {}).ok());
  CHECK_THAT(std::string(none.Build("demo.Greeting", "").status().message()),
             Contains("--proto FILE or --descriptor-set FILE"));
  // A path outside every import path works too: its directory is one.
  MessageTypes by_path;
  REQUIRE(by_path.Load({kGreetingProto}, {}, {}).ok());
  CHECK(by_path.Build("demo.Greeting", "").ok());
}

TEST_CASE("a .proto that does not parse or a bad descriptor set is named") {
  TempDir dir;
  WriteFile(dir.path() + "/bad.proto",
            "syntax = \"proto3\";\nmessage X {\n  strin a = 1;\n}\n");
  MessageTypes types;
  absl::Status status = types.Load({"bad.proto"}, {dir.path()}, {});
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(status.message()), Contains("bad.proto"));
  CHECK_THAT(std::string(status.message()), Contains("strin"));
  WriteFile(dir.path() + "/junk.pb", "not a descriptor set");
  MessageTypes junk;
  status = junk.Load({}, {}, {dir.path() + "/junk.pb"});
  CHECK_THAT(std::string(status.message()), Contains("junk.pb"));
  MessageTypes missing;
  status = missing.Load({"nope.proto"}, {dir.path()}, {});
  CHECK_THAT(std::string(status.message()), Contains("nope.proto"));
}

// Every verb (a command without subcommands) of the tree.
void Leaves(const CLI::App* app, const std::string& path,
            std::vector<std::pair<std::string, const CLI::App*>>& out) {
  std::vector<const CLI::App*> subs = app->get_subcommands(
      [](const CLI::App* sub) { return !sub->get_name().empty(); });
  if (subs.empty()) out.emplace_back(path, app);
  for (const CLI::App* sub : subs) {
    Leaves(sub, absl::StrCat(path, " ", sub->get_name()), out);
  }
}

TEST_CASE("every verb's --help shows an example") {
  std::ostringstream out, err;
  Cli cli(out, err);
  AddAllCommands(cli);
  std::vector<std::pair<std::string, const CLI::App*>> verbs;
  Leaves(&cli.app(), "meshctl", verbs);
  CHECK(verbs.size() >= 15);
  for (const auto& [path, verb] : verbs) {
    INFO(path);
    CHECK_THAT(verb->get_footer(), Catch::StartsWith("Example:\n  meshctl ") ||
                                       Catch::StartsWith("Example:\n  source"));
  }
  std::string help = absl::StrCat("meshctl proc stop --help");
  std::vector<std::string> args = absl::StrSplit(help, ' ');
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  std::ostringstream help_out, help_err;
  CHECK(RunMeshctl(static_cast<int>(argv.size()), argv.data(), help_out,
                   help_err) == 0);
  CHECK_THAT(help_out.str(),
             Contains("Example:\n  meshctl proc stop trainer_2 --grace 10s"));
}

// The output of `command` run by /bin/sh.
std::string Shell(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0)
    text.append(buffer, n);
  CHECK(pclose(pipe) == 0);
  return text;
}

TEST_CASE(
    "the bash completion script, sourced in a real bash, completes verbs, "
    "flags and flag values") {
  std::vector<std::string> args = {"meshctl", "completion", "bash"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  std::ostringstream out, err;
  // A bad MESH_HOST does not matter to a verb that talks to no host.
  setenv("MESH_HOST", "bad:host:name", 1);
  int code = RunMeshctl(3, argv.data(), out, err);
  unsetenv("MESH_HOST");
  INFO(err.str());
  REQUIRE(code == 0);
  TempDir dir;
  const std::string script = dir.path() + "/meshctl.bash";
  WriteFile(script, out.str());
  const std::string result = Shell(absl::StrCat(
      "bash --norc --noprofile -c '", "source ", script,
      " && complete -p meshctl && ",
      "c() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); _meshctl; ",
      "echo \"$*=${COMPREPLY[*]}\"; }; ",
      "c meshctl pr; c meshctl proc s; c meshctl --host h1 pro; ",
      "c meshctl -o \"\"; c meshctl proc spawn --cou; ",
      "c meshctl proc wait p --status ru; c meshctl actor send p a --ty; ",
      "c meshctl hots'"));
  CHECK_THAT(result, Contains("complete -o default -F _meshctl meshctl\n"));
  CHECK_THAT(result, Contains("meshctl pr=proc\n"));
  CHECK_THAT(result, Contains("meshctl proc s=spawn stop\n"));
  CHECK_THAT(result, Contains("meshctl --host h1 pro=proc\n"));
  CHECK_THAT(result, Contains("meshctl -o =table wide json yaml\n"));
  CHECK_THAT(result, Contains("meshctl proc spawn --cou=--count\n"));
  CHECK_THAT(result, Contains("meshctl proc wait p --status ru=running\n"));
  CHECK_THAT(result, Contains("meshctl actor send p a --ty=--type\n"));
  CHECK_THAT(result, Contains("meshctl hots=\n"));

  std::vector<std::string> zsh_args = {"meshctl", "completion", "zsh"};
  std::vector<char*> zsh_argv;
  for (std::string& arg : zsh_args) zsh_argv.push_back(arg.data());
  std::ostringstream zsh_out, zsh_err;
  REQUIRE(RunMeshctl(3, zsh_argv.data(), zsh_out, zsh_err) == 0);
  CHECK_THAT(zsh_out.str(), Catch::StartsWith("#compdef meshctl\n"));
  CHECK_THAT(zsh_out.str(), Contains("bashcompinit"));
}

}  // namespace
}  // namespace mesh::meshctl
