// SIGHUP's reload (hostd/reload.h) over real config and tokens files, and
// the flags it parses again (hostd/flags.h).
#include "hostd/reload.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "hostd/flags.h"
#include "lib/auth/server_auth.h"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

constexpr char kOpsToken[] = "ops-0123456789abcdef";
constexpr char kBobToken[] = "bob-0123456789abcdef";

void WriteFile(const std::string& path, const std::string& text,
               int mode = 0600) {
  std::ofstream(path) << text;
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

// The auth context of a call without TLS (a token call looks no further).
class NoTlsContext final : public grpc::AuthContext {
 public:
  bool IsPeerAuthenticated() const override { return false; }
  std::vector<grpc::string_ref> GetPeerIdentity() const override { return {}; }
  std::string GetPeerIdentityPropertyName() const override { return ""; }
  std::vector<grpc::string_ref> FindPropertyValues(
      const std::string&) const override {
    return {};
  }
  grpc::AuthPropertyIterator begin() const override { return Iterator(); }
  grpc::AuthPropertyIterator end() const override { return Iterator(); }
  void AddProperty(const std::string&, const grpc::string_ref&) override {}
  bool SetPeerIdentityPropertyName(const std::string&) override {
    return false;
  }

 private:
  struct Iterator : grpc::AuthPropertyIterator {};
};

// A hostd's config and tokens file in a temp dir, the options parsed from
// them, and a reloader whose effects are recorded.
class Reloadable {
 public:
  explicit Reloadable(std::vector<std::string> extra_args = {}) {
    tokens_ = dir_.path() + "/tokens";
    config_ = dir_.path() + "/hostd.conf";
    WriteFile(tokens_, absl::StrCat("ops admin ", kOpsToken, "\n"));
    WriteConfig({"allow-command = [\"/bin/true\"]", "v = 1"});
    std::vector<std::string> args = {"hostd", "--config", config_};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    absl::StatusOr<HostdOptions> options = ParseHostdFlags(args);
    REQUIRE(options.ok());
    running_ = *options;
    running_.procd_path = "/usr/local/bin/procd";
    absl::StatusOr<std::unique_ptr<ServerAuth>> auth =
        ServerAuth::Create(running_.auth, /*listen_is_loopback=*/true);
    REQUIRE(auth.ok());
    auth_ = *std::move(auth);
    HostdReloader::Options reload;
    reload.running = running_;
    reload.default_procd_path = "/usr/local/bin/procd";
    reload.auth = auth_.get();
    reload.set_policy = [this](CommandPolicy policy) {
      policies_.push_back(std::move(policy));
    };
    reload.set_log_levels = [this](int v, const std::string& level) {
      log_levels_.push_back(absl::StrCat(v, " ", level));
    };
    reloader_ = std::make_unique<HostdReloader>(std::move(reload));
  }

  // The config: the tokens file (`tokens`, default tokens()), state dirs
  // of this test, then `lines`.
  void WriteConfig(const std::vector<std::string>& lines,
                   const std::string& tokens = "") {
    std::string text =
        absl::StrCat("tokens-file = \"", tokens.empty() ? tokens_ : tokens,
                     "\"\nstate-dir = \"", dir_.path(),
                     "/state\"\nruntime-dir = \"", dir_.path(), "/run\"\n");
    for (const std::string& line : lines) absl::StrAppend(&text, line, "\n");
    WriteFile(config_, text, 0640);
  }
  void WriteTokens(const std::string& text) { WriteFile(tokens_, text); }
  // Who `token` authenticates as, or "refused".
  std::string Who(const std::string& token) const {
    absl::StatusOr<Principal> caller =
        auth_->Authenticate({absl::StrCat("Bearer ", token)}, NoTlsContext());
    return caller.ok() ? caller->identity : "refused";
  }

  const std::string& config() const { return config_; }
  const std::string& tokens() const { return tokens_; }
  const HostdOptions& running() const { return running_; }
  HostdReloader& reloader() { return *reloader_; }
  const std::vector<CommandPolicy>& policies() const { return policies_; }
  const std::vector<std::string>& log_levels() const { return log_levels_; }

 private:
  testing::TempDir dir_;
  std::string tokens_;
  std::string config_;
  HostdOptions running_;
  std::unique_ptr<ServerAuth> auth_;
  std::vector<CommandPolicy> policies_;
  std::vector<std::string> log_levels_;
  std::unique_ptr<HostdReloader> reloader_;
};

TEST_CASE(
    "a config that does not parse on reload keeps every token, rule and log "
    "level and says why") {
  Reloadable host;
  // The tokens file changed too: not read, since the config is refused.
  host.WriteTokens(absl::StrCat("bob admin ", kBobToken, "\n"));
  SECTION("a bad value") {
    host.WriteConfig({"allow-command = [\"/bin/false\"]", "v = \"lots\""});
    HostdReloader::Result result = host.reloader().Reload();
    REQUIRE_FALSE(result.status.ok());
    CHECK_THAT(std::string(result.status.message()), Catch::Contains("--v"));
  }
  SECTION("a bad duration") {
    host.WriteConfig({"stop-grace = \"soon\""});
    HostdReloader::Result result = host.reloader().Reload();
    REQUIRE_FALSE(result.status.ok());
    CHECK_THAT(std::string(result.status.message()),
               Catch::Contains("--stop-grace") && Catch::Contains("soon"));
  }
  SECTION("a config file that is gone") {
    REQUIRE(unlink(host.config().c_str()) == 0);
    HostdReloader::Result result = host.reloader().Reload();
    REQUIRE_FALSE(result.status.ok());
    CHECK_THAT(std::string(result.status.message()),
               Catch::Contains(host.config()));
  }
  CHECK(host.policies().empty());
  CHECK(host.log_levels().empty());
  CHECK(host.Who(kOpsToken) == "ops");
  CHECK(host.Who(kBobToken) == "refused");
}

TEST_CASE(
    "a reload applies the tokens file, allow rules and log levels, and names "
    "each other change as needing a restart") {
  Reloadable host;
  REQUIRE(host.running().v == 1);
  host.WriteTokens(absl::StrCat("bob admin ", kBobToken, "\n"));
  host.WriteConfig({"allow-command = [\"/bin/true\", \"/usr/bin/\"]",
                    "allow-env = [\"PYTHONPATH\"]", "v = 2",
                    "log-level = \"warning\"", "listen = \"127.0.0.1:7999\"",
                    "stop-grace = \"7s\"", "proc-log-max-bytes = 1048576",
                    "proc-log-keep = 5", "max-log-streams = 8"});
  HostdReloader::Result result = host.reloader().Reload();
  REQUIRE(result.status.ok());
  CHECK(result.failed.empty());
  // Tokens: the file's replaced.
  CHECK(host.Who(kBobToken) == "bob");
  CHECK(host.Who(kOpsToken) == "refused");
  // Allow rules: the new ones, the running procd still first.
  REQUIRE(host.policies().size() == 1);
  CHECK(host.policies()[0].Describe() ==
        "(/usr/local/bin/procd, /bin/true, /usr/bin/)");
  CHECK(host.policies()[0].CheckEnv({"PYTHONPATH"}).ok());
  CHECK(host.log_levels() == std::vector<std::string>{"2 WARNING"});
  CHECK(result.reloaded ==
        std::vector<std::string>{
            absl::StrCat("tokens file ", host.tokens(), " (1 tokens)"),
            "allow rules (/usr/local/bin/procd, /bin/true, /usr/bin/)",
            "log levels (v 2, WARNING)"});
  CHECK(result.needs_restart ==
        std::vector<std::string>{"--listen", "--stop-grace",
                                 "--proc-log-max-bytes", "--proc-log-keep",
                                 "--max-log-streams"});

  // Reloaded again unchanged: the same, still naming the restart ones.
  HostdReloader::Result again = host.reloader().Reload();
  CHECK(again.needs_restart ==
        std::vector<std::string>{"--listen", "--stop-grace",
                                 "--proc-log-max-bytes", "--proc-log-keep",
                                 "--max-log-streams"});
  CHECK(host.policies().size() == 2);
}

TEST_CASE(
    "on reload a flag given on the command line still wins over the config") {
  Reloadable host({"--v", "3", "--allow-command", "/bin/echo"});
  host.WriteConfig({"allow-command = [\"/bin/false\"]", "v = 0"});
  HostdReloader::Result result = host.reloader().Reload();
  REQUIRE(result.status.ok());
  CHECK(host.log_levels() == std::vector<std::string>{"3 INFO"});
  REQUIRE(host.policies().size() == 1);
  CHECK(host.policies()[0].Describe() == "(/usr/local/bin/procd, /bin/echo)");
  CHECK(result.needs_restart.empty());
}

TEST_CASE(
    "on reload a bad tokens file or bad allow rules keep the old ones while "
    "the rest reloads") {
  Reloadable host;
  host.WriteTokens("bob admin short\n");
  host.WriteConfig({"allow-command = [\"relative/cmd\"]", "v = 4"});
  HostdReloader::Result result = host.reloader().Reload();
  REQUIRE(result.status.ok());
  REQUIRE(result.failed.size() == 2);
  CHECK_THAT(result.failed[0], Catch::Contains("tokens file") &&
                                   Catch::Contains(host.tokens()) &&
                                   Catch::Contains("line 1"));
  CHECK_THAT(result.failed[1],
             Catch::Contains("allow rules") && Catch::Contains("relative/cmd"));
  CHECK(host.Who(kOpsToken) == "ops");
  CHECK(host.policies().empty());
  CHECK(host.log_levels() == std::vector<std::string>{"4 INFO"});
  CHECK(result.reloaded == std::vector<std::string>{"log levels (v 4, INFO)"});
}

TEST_CASE(
    "a different tokens file path needs a restart; the old file reloads") {
  Reloadable host;
  std::string other = host.tokens() + ".new";
  WriteFile(other, absl::StrCat("bob admin ", kBobToken, "\n"));
  host.WriteConfig({}, other);
  HostdReloader::Result result = host.reloader().Reload();
  REQUIRE(result.status.ok());
  CHECK(result.needs_restart == std::vector<std::string>{"--tokens-file"});
  CHECK(host.Who(kOpsToken) == "ops");
  CHECK(host.Who(kBobToken) == "refused");
}

TEST_CASE("options made in code reload their tokens file and keep the rest") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  WriteFile(tokens, absl::StrCat("ops admin ", kOpsToken, "\n"));
  HostdOptions options;
  options.auth.tokens_file = tokens;
  options.procd_path = "/opt/procd";
  absl::StatusOr<std::unique_ptr<ServerAuth>> auth =
      ServerAuth::Create(options.auth, true);
  REQUIRE(auth.ok());
  std::vector<std::string> levels;
  HostdReloader::Options reload;
  reload.running = options;
  reload.auth = auth->get();
  reload.set_policy = [](CommandPolicy) {};
  reload.set_log_levels = [&levels](int v, const std::string& level) {
    levels.push_back(absl::StrCat(v, " ", level));
  };
  HostdReloader reloader(std::move(reload));
  WriteFile(tokens, absl::StrCat("bob admin ", kBobToken, "\n"));
  HostdReloader::Result result = reloader.Reload();
  REQUIRE(result.status.ok());
  CHECK(result.needs_restart.empty());
  CHECK(levels == std::vector<std::string>{"0 INFO"});
  CHECK((*auth)
            ->Authenticate({absl::StrCat("Bearer ", kBobToken)}, NoTlsContext())
            .ok());
}

TEST_CASE(
    "--log-level takes INFO, WARNING or ERROR in any case, nothing else") {
  absl::StatusOr<HostdOptions> warning =
      ParseHostdFlags({"hostd", "--log-level", "Warning", "--v", "2"});
  REQUIRE(warning.ok());
  CHECK(warning->log_level == "WARNING");
  CHECK(warning->v == 2);
  CHECK_FALSE(ParseHostdFlags({"hostd", "--log-level", "DEBUG"}).ok());
  CHECK_FALSE(ParseHostdFlags({"hostd", "--v", "-1"}).ok());

  const int old_v = FLAGS_v;
  const int old_min = FLAGS_minloglevel;
  ApplyLogLevels(2, "ERROR");
  CHECK(FLAGS_v == 2);
  CHECK(FLAGS_minloglevel == 2);
  ApplyLogLevels(0, "WARNING");
  CHECK(FLAGS_minloglevel == 1);
  FLAGS_v = old_v;
  FLAGS_minloglevel = old_min;
}

TEST_CASE(
    "--test-crash-at takes <point>:<n> of a known point and --cgroup a "
    "string") {
  absl::StatusOr<HostdOptions> options = ParseHostdFlags(
      {"hostd", "--test-crash-at", "after-rename:3", "--cgroup", "none"});
  REQUIRE(options.ok());
  CHECK(options->test_crash_at == "after-rename:3");
  CHECK(options->cgroup == "none");
  for (const char* bad : {"after-rename", "after-rename:0", "after-rename:x",
                          "somewhere:1", ":1"}) {
    INFO(bad);
    absl::StatusOr<HostdOptions> refused =
        ParseHostdFlags({"hostd", "--test-crash-at", bad});
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(std::string(refused.status().message()),
               Catch::Contains("before-dir-fsync"));
  }
  CHECK(ParseHostdFlags({"hostd"})->test_crash_at.empty());
}

}  // namespace
}  // namespace mesh
