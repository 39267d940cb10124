#include "hostd/command_policy.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

// An executable file at `path` (its directory must exist).
void MakeExecutable(const std::string& path) {
  std::ofstream(path) << "#!/bin/sh\nexit 0\n";
  REQUIRE(chmod(path.c_str(), 0755) == 0);
}

// A tree: <root>/allowed/{tool, sub/deep}, <root>/allowed2/tool,
// <root>/outside/evil, <root>/single, and symlinks
// <root>/allowed/escape -> ../outside/evil, <root>/link-in -> allowed/tool.
struct Tree {
  testing::TempDir temp;
  std::string root = temp.path();
  std::string allowed = root + "/allowed";
  Tree() {
    for (const char* dir :
         {"/allowed", "/allowed/sub", "/allowed2", "/outside"}) {
      REQUIRE(mkdir((root + dir).c_str(), 0755) == 0);
    }
    for (const char* file : {"/allowed/tool", "/allowed/sub/deep",
                             "/allowed2/tool", "/outside/evil", "/single"}) {
      MakeExecutable(root + file);
    }
    REQUIRE(symlink("../outside/evil", (allowed + "/escape").c_str()) == 0);
    REQUIRE(symlink("allowed/tool", (root + "/link-in").c_str()) == 0);
  }
  CommandPolicy Policy(std::vector<std::string> allow_env = {}) {
    CommandPolicy::Options options;
    options.allow_commands = {allowed + "/", root + "/single"};
    options.allow_env = std::move(allow_env);
    absl::StatusOr<CommandPolicy> policy = CommandPolicy::Create(options);
    REQUIRE(policy.ok());
    return *policy;
  }
};

TEST_CASE("a listed file and any file under a listed directory may run") {
  Tree tree;
  CommandPolicy policy = tree.Policy();
  for (const std::string& command :
       {tree.root + "/single", tree.allowed + "/tool",
        tree.allowed + "/sub/deep"}) {
    INFO(command);
    absl::StatusOr<std::string> resolved = policy.CheckCommand(command);
    REQUIRE(resolved.ok());
    CHECK(*resolved == command);
  }
}

TEST_CASE(
    "anything else is PERMISSION_DENIED naming the command, the rule and the "
    "entries") {
  Tree tree;
  CommandPolicy policy = tree.Policy();
  const std::string evil = tree.root + "/outside/evil";
  absl::StatusOr<std::string> denied = policy.CheckCommand(evil);
  REQUIRE(denied.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(denied.status().message() ==
        absl::StrCat("command \"", evil,
                     "\" is not allowed: hostd runs only --allow-command "
                     "entries (",
                     tree.allowed, "/, ", tree.root, "/single)"));
  CHECK(policy.CheckCommand("/bin/sh").status().code() ==
        absl::StatusCode::kPermissionDenied);
  // A directory with the same prefix is another directory.
  CHECK(policy.CheckCommand(tree.root + "/allowed2/tool").status().code() ==
        absl::StatusCode::kPermissionDenied);
  // Relative commands never match.
  CHECK(policy.CheckCommand("allowed/tool").status().code() ==
        absl::StatusCode::kPermissionDenied);
}

TEST_CASE("a symlink or .. cannot escape an allowed directory") {
  Tree tree;
  CommandPolicy policy = tree.Policy();
  absl::StatusOr<std::string> escape =
      policy.CheckCommand(tree.allowed + "/escape");
  REQUIRE(escape.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK_THAT(
      std::string(escape.status().message()),
      Catch::Contains("/escape\" (after following symlinks and ..) is not "
                      "allowed") &&
          !Catch::Contains("outside"));
  CHECK(
      policy.CheckCommand(tree.allowed + "/../outside/evil").status().code() ==
      absl::StatusCode::kPermissionDenied);
  CHECK(policy.CheckCommand(tree.allowed + "/sub/../../single").ok());
}

TEST_CASE("a symlink into an allowed directory runs the resolved file") {
  Tree tree;
  CommandPolicy policy = tree.Policy();
  absl::StatusOr<std::string> resolved =
      policy.CheckCommand(tree.root + "/link-in");
  REQUIRE(resolved.ok());
  CHECK(*resolved == tree.allowed + "/tool");
}

TEST_CASE(
    "a missing file under an allowed entry is FAILED_PRECONDITION; "
    "elsewhere it is only not allowed") {
  Tree tree;
  CommandPolicy policy = tree.Policy();
  absl::StatusOr<std::string> missing =
      policy.CheckCommand(tree.allowed + "/nope");
  REQUIRE(missing.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(missing.status().message()),
             Catch::Contains("No such file or directory"));
  CHECK(policy.CheckCommand("/no/such/binary").status().code() ==
        absl::StatusCode::kPermissionDenied);
  // The allowed directory itself is not a file to run.
  CHECK(policy.CheckCommand(tree.allowed + "/sub").status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("a huge command comes back as a bounded quote") {
  Tree tree;
  CommandPolicy policy = tree.Policy();
  std::string huge = "/" + std::string(60000, 'a');
  absl::Status denied = policy.CheckCommand(huge).status();
  CHECK(denied.code() == absl::StatusCode::kPermissionDenied);
  CHECK(denied.message().size() < 1024);
  CHECK_THAT(std::string(denied.message()), Catch::Contains("(60001 bytes)"));
}

TEST_CASE("--allow-any-command runs anything as given, with any env") {
  CommandPolicy::Options options;
  options.allow_any_command = true;
  absl::StatusOr<CommandPolicy> policy = CommandPolicy::Create(options);
  REQUIRE(policy.ok());
  absl::StatusOr<std::string> command = policy->CheckCommand("/no/such/x");
  REQUIRE(command.ok());
  CHECK(*command == "/no/such/x");
  CHECK(policy->CheckEnv({"LD_PRELOAD", "PYTHONPATH"}).ok());
}

TEST_CASE("a default policy allows nothing") {
  CommandPolicy policy;
  CHECK(policy.CheckCommand("/bin/true").status().code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK_THAT(std::string(policy.CheckCommand("/bin/true").status().message()),
             Catch::Contains("entries (none)"));
}

TEST_CASE("entries and variable names are checked at start-up") {
  CommandPolicy::Options relative;
  relative.allow_commands = {"bin/procd"};
  absl::Status status = CommandPolicy::Create(relative).status();
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(status.message()),
             Catch::Contains("--allow-command \"bin/procd\""));
  CommandPolicy::Options bad_env;
  bad_env.allow_env = {"NOT=OK"};
  status = CommandPolicy::Create(bad_env).status();
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(status.message()), Catch::Contains("--allow-env"));
}

TEST_CASE("start-up warnings name missing entries and slashless directories") {
  Tree tree;
  CommandPolicy::Options options;
  options.allow_commands = {tree.root + "/missing/", tree.allowed,
                            tree.root + "/single/", tree.allowed + "/"};
  absl::StatusOr<CommandPolicy> policy = CommandPolicy::Create(options);
  REQUIRE(policy.ok());
  std::vector<std::string> warnings = policy->Warnings();
  REQUIRE(warnings.size() == 3);
  CHECK_THAT(warnings[0], Catch::Contains("does not resolve"));
  CHECK_THAT(warnings[1], Catch::Contains(absl::StrCat("write ", tree.allowed,
                                                       "/ to allow")));
  CHECK_THAT(warnings[2], Catch::Contains("is not a directory"));
}

TEST_CASE("messages list at most 16 entries") {
  CommandPolicy::Options options;
  for (int i = 0; i < 20; ++i) {
    options.allow_commands.push_back(absl::StrCat("/opt/", i, "/"));
  }
  absl::StatusOr<CommandPolicy> policy = CommandPolicy::Create(options);
  REQUIRE(policy.ok());
  CHECK_THAT(policy->Describe(), Catch::EndsWith("/opt/15/, ... and 4 more)"));
}

TEST_CASE(
    "variables that change what code runs, and hostd's own, are refused "
    "unless --allow-env names them") {
  for (const char* name : {"LD_PRELOAD",
                           "LD_LIBRARY_PATH",
                           "LD_AUDIT",
                           "LD_ANYTHING",
                           "PYTHONPATH",
                           "PYTHONSTARTUP",
                           "PYTHONHOME",
                           "PYTHONINSPECT",
                           "PERL5LIB",
                           "PERL5OPT",
                           "RUBYOPT",
                           "NODE_OPTIONS",
                           "BASH_ENV",
                           "ENV",
                           "GCONV_PATH",
                           "GLIBC_TUNABLES",
                           "MALLOC_CHECK_",
                           "MALLOC_TRACE",
                           "BASH_FUNC_ls%%",
                           "JAVA_TOOL_OPTIONS",
                           "HOSTMESH_CHANNEL_FD",
                           "HOSTMESH_PARENT_FD",
                           "HOSTMESH_TOKEN_FILE"}) {
    INFO(name);
    CHECK(IsDangerousEnv(name));
  }
  for (const char* name : {"PATH", "HOME", "USER", "LANG", "TMPDIR", "TZ",
                           "MY_LD_PRELOAD", "RANK", "PYTHONUNBUFFERED"}) {
    INFO(name);
    CHECK_FALSE(IsDangerousEnv(name));
  }
  Tree tree;
  CommandPolicy strict = tree.Policy();
  CHECK(strict.CheckEnv({"PATH", "RANK"}).ok());
  absl::Status denied = strict.CheckEnv({"RANK", "PYTHONPATH", "LD_PRELOAD"});
  REQUIRE(denied.code() == absl::StatusCode::kPermissionDenied);
  // The first refused name in name order, and the flag that allows it.
  CHECK(denied.message() ==
        "spec.env sets \"LD_PRELOAD\", which can change what code the proc "
        "runs (or is hostd's own); hostd allows it only with --allow-env "
        "LD_PRELOAD");
  CommandPolicy relaxed = tree.Policy({"LD_PRELOAD"});
  CHECK(relaxed.CheckEnv({"LD_PRELOAD", "RANK"}).ok());
  CHECK(relaxed.CheckEnv({"LD_PRELOAD", "LD_LIBRARY_PATH"}).code() ==
        absl::StatusCode::kPermissionDenied);
}

TEST_CASE("a proc user's command runs through setpriv, dropping everything") {
  ProcUser user;
  user.name = "svc";
  user.uid = 1234;
  user.gid = 567;
  CHECK(WrapForProcUser(user, "/opt/x/procd", {"--a", "b"}) ==
        std::vector<std::string>{
            "--reuid=1234", "--regid=567", "--clear-groups", "--inh-caps=-all",
            "--no-new-privs", "--", "/opt/x/procd", "--a", "b"});
}

TEST_CASE("a proc user is looked up by name and may not be root") {
  absl::Status root = LookUpProcUser("root").status();
  CHECK(root.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(root.message()), Catch::Contains("is root"));
  absl::Status none = LookUpProcUser("no-such-user-hostmesh").status();
  CHECK(none.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(none.message()), Catch::Contains("no such user"));
  if (struct passwd* nobody = getpwnam("nobody")) {
    absl::StatusOr<ProcUser> user = LookUpProcUser("nobody");
    REQUIRE(user.ok());
    CHECK(user->uid == nobody->pw_uid);
    CHECK(user->gid == nobody->pw_gid);
  }
  CHECK(LookUpOperatorsGroup("no-such-group-hostmesh").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(LookUpOperatorsGroup("root").ok());
}

}  // namespace
}  // namespace mesh
