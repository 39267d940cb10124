// hostd's strict flags and config file (hostd/flags.h): unknown keys and
// flags named with the one meant, --print-config, --version, and a SIGHUP
// reload that refuses such a config (hostd/reload.h).
#include "hostd/flags.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "catch2/catch.hpp"
#include "hostd/reload.h"
#include "lib/testing/temp_dir.h"
#include "lib/version.h"

namespace mesh {
namespace {

using Catch::Contains;

// A config file in a temp dir.
class Config {
 public:
  explicit Config(const std::vector<std::string>& lines) { Write(lines); }
  void Write(const std::vector<std::string>& lines) {
    std::ofstream(path_) << absl::StrJoin(lines, "\n") << "\n";
  }
  const std::string& path() const { return path_; }

 private:
  testing::TempDir dir_;
  std::string path_ = dir_.path() + "/hostd.conf";
};

// ParseHostdFlags' error for `args` (after "hostd"), or "parsed".
std::string ErrorOf(std::vector<std::string> args) {
  args.insert(args.begin(), "hostd");
  absl::StatusOr<HostdOptions> options = ParseHostdFlags(args);
  if (options.ok()) return "parsed";
  CHECK(options.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(options.status().message());
}

// What main() would do with `args` (after "hostd").
struct CommandLine {
  std::optional<int> exit_code;
  HostdOptions options;
  std::string out;
  std::string err;
};
CommandLine Run(std::vector<std::string> args) {
  args.insert(args.begin(), "hostd");
  CommandLine run;
  std::ostringstream out, err;
  run.exit_code = ParseHostdCommandLine(args, &run.options, out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

// The line of --print-config's output for `key`, or "".
std::string LineOf(const std::string& text, const std::string& key) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(key + " = ", 0) == 0 ||
        line.rfind("# " + key + " = ", 0) == 0) {
      return line;
    }
  }
  return "";
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_.has_value()) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST_CASE(
    "an unknown config key is an error naming the key, the file, the line "
    "and the key meant") {
  Config config({"# hostd", "listen = \"127.0.0.1:0\"", "lisen = \"x\""});
  CHECK(ErrorOf({"--config", config.path()}) ==
        absl::StrCat("unknown key \"lisen\" in ", config.path(),
                     " line 3; did you mean \"listen\"?"));
}

TEST_CASE(
    "a key spelt with underscores is refused with its dashed spelling, not "
    "ignored") {
  Config config({"max_procs = 3"});
  CHECK(ErrorOf({"--config", config.path()}) ==
        absl::StrCat("unknown key \"max_procs\" in ", config.path(),
                     " line 1; did you mean \"max-procs\"?"));
  config.Write({"max-procs = 3"});
  absl::StatusOr<HostdOptions> options =
      ParseHostdFlags({"hostd", "--config", config.path()});
  REQUIRE(options.ok());
  CHECK(options->max_procs == 3);
}

TEST_CASE(
    "every unknown key is named on a line of its own, and a key near nothing "
    "gets no guess") {
  Config config({"lisen = \"x\"", "", "frobnicate = 1", "[hostd]", "v = 1"});
  CHECK(ErrorOf({"--config", config.path()}) ==
        absl::StrCat("unknown key \"lisen\" in ", config.path(),
                     " line 1; did you mean \"listen\"?\n",
                     "unknown key \"frobnicate\" in ", config.path(),
                     " line 3\n", "unknown key \"hostd.v\" in ", config.path(),
                     " line 5 (hostd's config has no sections); did you mean "
                     "\"v\"?"));
}

TEST_CASE(
    "a key given twice, or one only the command line may set, is refused "
    "with its lines") {
  Config config({"allow-command = [\"/bin/true\"]", "v = 1",
                 "allow-command = [\"/bin/false\"]"});
  CHECK(ErrorOf({"--config", config.path()}) ==
        absl::StrCat("key \"allow-command\" appears twice in ", config.path(),
                     " (lines 1 and 3); give it once, with a list: "
                     "allow-command = [\"a\", \"b\"]"));
  config.Write({"v = 1", "print-config = true"});
  CHECK(ErrorOf({"--config", config.path()}) ==
        absl::StrCat("key \"print-config\" in ", config.path(),
                     " line 2 is a command-line flag only"));
}

TEST_CASE("a bad value from the config file names its line") {
  Config config({"v = 1", "stop-grace = \"soon\""});
  CHECK(ErrorOf({"--config", config.path()}) ==
        absl::StrCat("--stop-grace: \"soon\" is not a positive duration (e.g. "
                     "10s, 500ms) (",
                     config.path(), " line 2)"));
  config.Write({"max-procs = 0"});
  CHECK_THAT(ErrorOf({"--config", config.path()}),
             Contains("--max-procs") &&
                 Contains(absl::StrCat(config.path(), " line 1")));
}

TEST_CASE("a misspelt flag is an error naming the flag meant") {
  CHECK(ErrorOf({"--lisen", "127.0.0.1:0"}) ==
        "unknown flag \"--lisen\"; did you mean \"--listen\"?");
  CHECK(ErrorOf({"--max_procs=3"}) ==
        "unknown flag \"--max_procs\"; did you mean \"--max-procs\"?");
  CHECK(ErrorOf({"-listen", "127.0.0.1:0"}) ==
        "unknown flag \"-listen\"; did you mean \"--listen\"?");
  CHECK(ErrorOf({"--print-confg"}) ==
        "unknown flag \"--print-confg\"; did you mean \"--print-config\"?");
  CHECK(ErrorOf({"--frobnicate"}) == "unknown flag \"--frobnicate\"");
  CHECK(ErrorOf({"serve"}) ==
        "unexpected argument \"serve\" (hostd takes flags only: hostd --help)");
}

TEST_CASE(
    "main's parse prints each error after hostd: on stderr and exits 2, "
    "printing nothing on stdout") {
  Config config({"lisen = \"x\"", "max_procs = 3"});
  CommandLine run = Run({"--config", config.path()});
  CHECK(run.exit_code == std::optional<int>(2));
  CHECK(run.out.empty());
  CHECK(run.err ==
        absl::StrCat("hostd: unknown key \"lisen\" in ", config.path(),
                     " line 1; did you mean \"listen\"?\n",
                     "hostd: unknown key \"max_procs\" in ", config.path(),
                     " line 2; did you mean \"max-procs\"?\n",
                     "Run with --help for more information.\n"));
  run = Run({"--lisen=x"});
  CHECK(run.exit_code == std::optional<int>(2));
  CHECK_THAT(run.err, Contains("hostd: unknown flag \"--lisen\"; did you mean "
                               "\"--listen\"?"));
}

TEST_CASE("--version prints hostd's version and exits 0") {
  CommandLine run = Run({"--version"});
  CHECK(run.exit_code == std::optional<int>(0));
  CHECK(run.out == absl::StrCat("hostd ", kHostmeshVersion, "\n"));
  CHECK(run.err.empty());
  CHECK_THAT(ErrorOf({"--version"}), Contains("--version"));
}

TEST_CASE(
    "--print-config prints every key with its value and where it came from, "
    "and exits 0") {
  ScopedEnv glog_v("GLOG_v", "2");
  Config config({"# a comment", "max-procs = 3",
                 "allow-command = [\"/bin/true\", \"/opt/app/\"]",
                 "stop-grace = \"2s\"", "listen = \"127.0.0.1:1\""});
  CommandLine run = Run(
      {"--config", config.path(), "--listen=127.0.0.1:0", "--print-config"});
  REQUIRE(run.exit_code == std::optional<int>(0));
  CHECK(run.err.empty());
  INFO(run.out);
  CHECK_THAT(run.out, Contains(absl::StrCat("# config file: ", config.path())));
  CHECK_THAT(LineOf(run.out, "max-procs"),
             Contains("max-procs = 3 ") &&
                 Contains(absl::StrCat("# ", config.path(), ":2")));
  CHECK_THAT(LineOf(run.out, "allow-command"),
             Contains("allow-command = [\"/bin/true\", \"/opt/app/\"]") &&
                 Contains(absl::StrCat("# ", config.path(), ":3")));
  CHECK_THAT(LineOf(run.out, "stop-grace"),
             Contains("stop-grace = \"2s\"") &&
                 Contains(absl::StrCat("# ", config.path(), ":4")));
  // The command line wins over the file.
  CHECK_THAT(LineOf(run.out, "listen"), Contains("listen = \"127.0.0.1:0\"") &&
                                            Contains("# command line"));
  CHECK_THAT(LineOf(run.out, "max-finished-procs"),
             Contains("max-finished-procs = 1024 ") && Contains("# default"));
  CHECK_THAT(LineOf(run.out, "v"),
             Contains("v = 2 ") && Contains("# environment ($GLOG_v)"));
  CHECK_THAT(LineOf(run.out, "allow-any-command"),
             Contains("allow-any-command = false ") && Contains("# default"));
  CHECK_THAT(LineOf(run.out, "allow-env"), Contains("# allow-env = []"));
  // Every key hostd --help lists under its long name is there; the test
  // hooks (no help group) only when set.
  for (const char* key : {"advertise",
                          "advertise-unchecked",
                          "state-dir",
                          "runtime-dir",
                          "procd",
                          "registration-timeout",
                          "heartbeat-interval",
                          "owner-lease",
                          "orphan-timeout",
                          "max-message-bytes",
                          "cgroup",
                          "log-level",
                          "tls-cert",
                          "tls-key",
                          "tls-ca",
                          "tls-require-client-cert",
                          "tokens-file",
                          "peer-token-file",
                          "admin",
                          "peer",
                          "proc-user",
                          "operators-group"}) {
    INFO(key);
    CHECK_FALSE(LineOf(run.out, key).empty());
  }
  CHECK(LineOf(run.out, "test-crash-at").empty());
  CHECK(LineOf(run.out, "config").empty());

  // hostd reads what it printed as a config file, to the same options.
  Config printed({run.out});
  absl::StatusOr<HostdOptions> again =
      ParseHostdFlags({"hostd", "--config", printed.path()});
  REQUIRE(again.ok());
  CHECK(again->listen == "127.0.0.1:0");
  CHECK(again->max_procs == 3);
  CHECK(again->stop_grace == absl::Seconds(2));
  CHECK(again->allow_commands ==
        std::vector<std::string>{"/bin/true", "/opt/app/"});
  CHECK(again->v == 2);
}

TEST_CASE("--print-config refuses a bad config as hostd would, exit 2") {
  Config config({"lisen = \"x\""});
  CommandLine run = Run({"--config", config.path(), "--print-config"});
  CHECK(run.exit_code == std::optional<int>(2));
  CHECK(run.out.empty());
  CHECK_THAT(run.err, Contains("did you mean \"listen\"?"));
}

TEST_CASE("the shipped example config has only keys hostd knows") {
  // deploy/hostd.conf.example, a data dependency; every commented-out key
  // uncommented too.
  std::ifstream example("deploy/hostd.conf.example");
  REQUIRE(example.good());
  std::vector<std::string> as_is, uncommented;
  int keys_uncommented = 0;
  for (std::string line; std::getline(example, line);) {
    as_is.push_back(line);
    const size_t equals = line.find(" = ");
    const std::string key =
        line.rfind("# ", 0) == 0 && equals != std::string::npos
            ? line.substr(2, equals - 2)
            : "";
    if (!key.empty() &&
        key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") ==
            std::string::npos) {
      uncommented.push_back(line.substr(2));
      ++keys_uncommented;
    } else {
      uncommented.push_back(line);
    }
  }
  CHECK(keys_uncommented >= 15);
  Config config(as_is);
  CHECK(ErrorOf({"--config", config.path()}) == "parsed");
  config.Write(uncommented);
  CHECK(ErrorOf({"--config", config.path()}) == "parsed");
}

TEST_CASE(
    "a reload refuses a config with an unknown key, names it, and changes "
    "nothing") {
  Config config({"allow-command = [\"/bin/true\"]", "v = 1"});
  absl::StatusOr<HostdOptions> running =
      ParseHostdFlags({"hostd", "--config", config.path()});
  REQUIRE(running.ok());
  std::vector<std::string> policies, log_levels;
  HostdReloader::Options options;
  options.running = *running;
  options.default_procd_path = "/usr/local/bin/procd";
  options.set_policy = [&policies](CommandPolicy policy) {
    policies.push_back(policy.Describe());
  };
  options.set_log_levels = [&log_levels](int v, const std::string& level) {
    log_levels.push_back(absl::StrCat(v, " ", level));
  };
  HostdReloader reloader(std::move(options));

  config.Write({"allow-command = [\"/bin/true\", \"/bin/false\"]", "v = 2",
                "max_procs = 3"});
  HostdReloader::Result refused = reloader.Reload();
  CHECK(refused.status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(refused.status.message() ==
        absl::StrCat("unknown key \"max_procs\" in ", config.path(),
                     " line 3; did you mean \"max-procs\"?"));
  CHECK(refused.reloaded.empty());
  CHECK(policies.empty());
  CHECK(log_levels.empty());

  // Fixed, the next reload applies it.
  config.Write({"allow-command = [\"/bin/true\", \"/bin/false\"]", "v = 2"});
  HostdReloader::Result applied = reloader.Reload();
  CHECK(applied.status.ok());
  CHECK(policies.size() == 1);
  CHECK(log_levels == std::vector<std::string>{"2 INFO"});
}

}  // namespace
}  // namespace mesh
