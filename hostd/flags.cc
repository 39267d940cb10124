#include "hostd/flags.h"

#include <glog/logging.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "lib/nearest_name.h"
#include "lib/version.h"

namespace mesh {
namespace {

constexpr char kLogLevels[][8] = {"INFO", "WARNING", "ERROR"};

// A positive int flag ("Value 0 not in range 1 to 2147483647").
CLI::Range Positive() { return CLI::Range(1, std::numeric_limits<int>::max()); }

// A flag's duration ("500ms", "10s"; "0" too if `zero_ok`), or
// INVALID_ARGUMENT naming the flag.
absl::Status ParseFlagDuration(const std::string& flag, const std::string& text,
                               absl::Duration* out, bool zero_ok = false) {
  if (absl::ParseDuration(text, out) &&
      (*out > absl::ZeroDuration() ||
       (zero_ok && *out == absl::ZeroDuration())) &&
      *out < absl::InfiniteDuration()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--", flag, ": \"", text, "\" is not a ",
      zero_ok ? "non-negative" : "positive", " duration (e.g. 10s, 500ms)"));
}

// The defaults of --v and --log-level: what glog's environment says
// (GLOG_v, GLOG_minloglevel; e.g. the unit's EnvironmentFile), so a config
// without these keys keeps them.
int DefaultVerbosity() {
  int v = 0;
  const char* env = std::getenv("GLOG_v");
  if (env == nullptr || !absl::SimpleAtoi(env, &v) || v < 0) return 0;
  return v;
}

std::string DefaultLogLevel() {
  int level = 0;
  const char* env = std::getenv("GLOG_minloglevel");
  if (env == nullptr || !absl::SimpleAtoi(env, &level) || level <= 0) {
    return kLogLevels[0];
  }
  return kLogLevels[level >= 2 ? 2 : 1];
}

}  // namespace

absl::StatusOr<std::optional<TestCrashAt>> ParseTestCrashAt(
    const std::string& text) {
  if (text.empty()) return std::nullopt;
  const size_t colon = text.rfind(':');
  int n = 0;
  if (colon != std::string::npos &&
      absl::SimpleAtoi(text.substr(colon + 1), &n) && n >= 1) {
    for (CrashPoint point : kCrashPoints) {
      if (absl::string_view(text).substr(0, colon) == CrashPointName(point)) {
        return TestCrashAt{point, n};
      }
    }
  }
  std::vector<std::string> names;
  for (CrashPoint point : kCrashPoints) {
    names.emplace_back(CrashPointName(point));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--test-crash-at: \"", text.substr(0, 64),
      "\" is not <point>:<n> (n >= 1; points: ", absl::StrJoin(names, ", "),
      ")"));
}

namespace {

// A config line's key as CLI11 reads it (hostd.conf is CLI11's TOML-like
// format, CLI::ConfigBase::from_config), or "" for a blank, comment or
// [section] line.
std::string KeyOfLine(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  // CLI11 skips lines shorter than 3 characters.
  if (line.size() < 3 || line.front() == '#' || line.front() == ';' ||
      (line.front() == '[' && line.back() == ']')) {
    return "";
  }
  const size_t equals = line.find('=');
  absl::string_view key = absl::StripAsciiWhitespace(line.substr(
      0, equals != absl::string_view::npos ? equals : line.find('#')));
  if (key.size() >= 2 && (key.front() == '"' || key.front() == '\'') &&
      key.back() == key.front()) {
    key = key.substr(1, key.size() - 2);
  }
  return std::string(key);
}

// CLI11's config file reader, plus the line each item came from: `on_read`
// sees the items and their lines (0: not found) before CLI11 applies any,
// and may throw a CLI::ParseError to refuse the file.
class LocatingConfig : public CLI::ConfigTOML {
 public:
  using OnRead = std::function<void(const std::vector<CLI::ConfigItem>& items,
                                    const std::vector<int>& lines)>;
  explicit LocatingConfig(OnRead on_read) : on_read_(std::move(on_read)) {}

  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    const std::string text{std::istreambuf_iterator<char>(input),
                           std::istreambuf_iterator<char>()};
    std::istringstream copy(text);
    std::vector<CLI::ConfigItem> items = CLI::ConfigTOML::from_config(copy);
    std::vector<std::string> keys;  // keys[i]: line i + 1's
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      keys.push_back(KeyOfLine(line));
    }
    // Items come in file order (CLI11 merges a key repeated on consecutive
    // lines into the first's item).
    std::vector<int> lines;
    size_t next = 0;
    for (const CLI::ConfigItem& item : items) {
      int line = 0;
      for (size_t i = next;
           item.name != "++" && item.name != "--" && i < keys.size(); ++i) {
        if (keys[i] == item.name ||
            absl::EndsWith(keys[i], absl::StrCat(".", item.name))) {
          line = static_cast<int>(i) + 1;
          next = i + 1;
          break;
        }
      }
      lines.push_back(line);
    }
    on_read_(items, lines);
    return items;
  }

 private:
  OnRead on_read_;
};

// Option values as a config file writes them: numbers and switches bare,
// text quoted.
std::string ConfigValue(const std::string& value) {
  int64_t number = 0;
  if (absl::SimpleAtoi(value, &number) || value == "true" || value == "false") {
    return value;
  }
  return absl::StrCat("\"", value, "\"");
}

// Every flag of hostd over one HostdOptions (durations as text until
// Finish). One per parse; not copyable (the config reader points at it).
class HostdFlags {
 public:
  HostdFlags() {
    options_.v = DefaultVerbosity();
    options_.log_level = DefaultLogLevel();
    // Defaults another source than hostd gave (--print-config says so).
    if (std::getenv("GLOG_v") != nullptr && DefaultVerbosity() > 0) {
      environment_["v"] = "GLOG_v";
    }
    if (std::getenv("GLOG_minloglevel") != nullptr &&
        DefaultLogLevel() != kLogLevels[0]) {
      environment_["log-level"] = "GLOG_minloglevel";
    }
    if (!SystemdDirectoryOr("STATE_DIRECTORY", "").empty()) {
      environment_["state-dir"] = "STATE_DIRECTORY";
    }
    if (!SystemdDirectoryOr("RUNTIME_DIRECTORY", "").empty()) {
      environment_["runtime-dir"] = "RUNTIME_DIRECTORY";
    }
    CLI::App& app = app_;
    // Strict: a config key or flag hostd does not have is an error naming
    // it and the one meant (OnConfigRead, CheckExtras), never ignored.
    app.config_formatter(std::make_shared<LocatingConfig>(
        [this](const std::vector<CLI::ConfigItem>& items,
               const std::vector<int>& lines) { OnConfigRead(items, lines); }));
    app.allow_extras();
    app.set_version_flag("--version", absl::StrCat("hostd ", kHostmeshVersion),
                         "Print hostd's version and exit");
    app.add_flag("--print-config", print_config_,
                 "Print the effective configuration (every key, its value "
                 "and where it came from: default, environment, config "
                 "file:line or command line) and exit without starting. "
                 "Checks the flags and config file, not the files they name")
        ->configurable(false);
    app.set_config("--config", "",
                   "Config file (key = value lines, flag names); SIGHUP "
                   "reads it again (README \"Running hostd under systemd\")");
    app.add_option("--listen", options_.listen,
                   "host:port to serve the Host API on (port 0: any)")
        ->capture_default_str();
    app.add_option("--advertise", options_.advertise,
                   "Host name or IP to advertise (default: the listen host; "
                   "for a wildcard listen, this machine's hostname)");
    app.add_flag("--advertise-unchecked", options_.advertise_unchecked,
                 "Advertise --advertise even if it is not an address of this "
                 "machine (NAT, a DNS name only others resolve)");
    app.add_option("--state-dir", options_.state_dir,
                   "Proc logs and state (default under systemd: "
                   "$STATE_DIRECTORY)")
        ->capture_default_str();
    app.add_option("--runtime-dir", options_.runtime_dir,
                   "Private (0700) dir: hostd's lock and admin.token "
                   "(default under systemd: $RUNTIME_DIRECTORY)")
        ->capture_default_str();
    app.add_option(
        "--procd", options_.procd_path,
        "Default proc bootstrap command (default: procd beside hostd)");
    app.add_option("--proc-template", options_.proc_template,
                   "Fork procs of --procd from one pre-loaded procd (fast "
                   "start-up); false: exec every proc")
        ->capture_default_str();
    app.add_option("--registration-timeout", registration_timeout_,
                   "How long a proc has to register back")
        ->capture_default_str();
    app.add_option("--stop-grace", stop_grace_,
                   "Grace before SIGTERM, and again before SIGKILL")
        ->capture_default_str();
    app.add_option("--heartbeat-interval", heartbeat_interval_,
                   "How often relay streams get a heartbeat (clients tell a "
                   "silent host from a quiet one)")
        ->capture_default_str();
    app.add_option("--owner-lease", owner_lease_,
                   "How long the procs a client spawned live on once it has "
                   "no relay stream to this host (or its stream went silent); "
                   "a client that reconnects in time keeps them. 0: stop them "
                   "at once. A client gets at least 5s for its first stream. "
                   "Detached procs (meshctl's) never expire")
        ->capture_default_str();
    app.add_option("--parent", options_.parent,
                   "Where the channel to the parent that started this hostd "
                   "is: \"env\" (default), the socket whose fd "
                   "$HOSTMESH_PARENT_FD names, if set; \"stdio\": stdin and "
                   "stdout (a client started it through srun); command line "
                   "only")
        ->capture_default_str()
        ->configurable(false);
    app.add_option("--orphan-timeout", orphan_timeout_,
                   "How long procs outlive a lost channel to this hostd")
        ->capture_default_str();
    app.add_option("--max-procs", options_.max_procs, "Live procs at most")
        ->capture_default_str()
        ->check(Positive());
    app.add_option("--max-finished-procs", options_.max_finished_procs,
                   "Stopped or failed procs remembered at most (in memory "
                   "and the proc table); the earliest to end is forgotten "
                   "first")
        ->capture_default_str()
        ->check(Positive());
    app.add_option("--max-message-bytes", options_.max_message_bytes,
                   "Largest control message: a gRPC request hostd accepts "
                   "(or an answer it sends), and a frame on a proc's channel "
                   "either way (plus a little for the frame itself)")
        ->capture_default_str()
        ->check(Positive());
    app.add_option("--proc-log-max-bytes", options_.proc_log_max_bytes,
                   "A live proc's stdout.log or stderr.log past this many "
                   "bytes is rotated (checked every 100 ms; 0: never). The "
                   "proc is never blocked; offsets stay monotonic (README "
                   "\"Logs\")")
        ->capture_default_str()
        ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 50));
    app.add_option("--proc-log-keep", options_.proc_log_keep,
                   "Rotated copies kept per file (stdout.log.1 newest; 0: "
                   "rotated output is dropped)")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    app.add_option("--max-log-streams", options_.max_log_streams,
                   "StreamLogs calls open at once at most (more are refused "
                   "with RESOURCE_EXHAUSTED)")
        ->capture_default_str()
        ->check(Positive());
    app.add_option("--cgroup", options_.cgroup,
                   "Where procs' cgroup v2 leaves go: empty (default) a "
                   "subtree hostmesh-<hash of --state-dir> of hostd's own "
                   "cgroup; \"none\": process groups only; else a cgroup "
                   "directory, or the name of a subtree of hostd's cgroup");
    app.add_option("--v", options_.v,
                   "Verbose logging level (glog's VLOG; default: $GLOG_v "
                   "or 0); SIGHUP reloads it")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    app.add_option("--log-level", options_.log_level,
                   "Least severity logged: INFO, WARNING or ERROR (default: "
                   "from $GLOG_minloglevel, or INFO); SIGHUP reloads it")
        ->capture_default_str()
        ->transform(CLI::IsMember({kLogLevels[0], kLogLevels[1], kLogLevels[2]},
                                  CLI::ignore_case));
    app.add_option("--audit-log", options_.audit_log,
                   "The audit trail's file, one line per state-changing "
                   "verb, rotated to .1 past 8 MiB (default: <state-dir>/"
                   "audit.log; \"none\": no file; README \"Audit\")");
    auto* metrics = app.add_option_group(
        "Metrics", "The Prometheus endpoint (README \"Metrics\")");
    metrics->add_option(
        "--metrics-listen", options_.metrics_listen,
        "host:port (an IP) to serve GET /metrics on (e.g. 127.0.0.1:9464; "
        "port 0: any); empty (default): no endpoint. Not loopback: needs "
        "--tls-cert, --tls-key and --metrics-token-file (served over TLS)");
    metrics->add_option("--metrics-token-file", options_.metrics_token_file,
                        "Token a scrape must present as \"Authorization: "
                        "Bearer <token>\" (one line, mode 0600 or 0640)");
    auto* auth = app.add_option_group(
        "Authentication",
        "Who may call (README \"Security\"). A listen address that is not "
        "loopback needs --tls-cert, --tls-key and --tls-ca.");
    auth->add_option("--tls-cert", options_.auth.tls_cert_file,
                     "PEM certificate this host serves (and presents to "
                     "peers)");
    auth->add_option("--tls-key", options_.auth.tls_key_file,
                     "PEM private key of --tls-cert (mode 0600)");
    auth->add_option("--tls-ca", options_.auth.tls_ca_file,
                     "PEM CA that signs hosts' and clients' certificates");
    auth->add_flag("--tls-require-client-cert",
                   options_.auth.tls_require_client_cert,
                   "Refuse TLS clients without a certificate of --tls-ca");
    auth->add_option("--tokens-file", options_.auth.tokens_file,
                     "Accepted tokens, lines \"<identity> <role> <token>\" "
                     "(role: admin, client or peer; mode 0600 or 0640); "
                     "SIGHUP reads the file again");
    auth->add_option("--peer-token-file", options_.auth.peer_token_file,
                     "Token this host presents when it dials other hosts");
    auth->add_option("--admin", options_.auth.admins,
                     "Certificate name (CN) with role admin (repeatable)");
    auth->add_option("--peer", options_.auth.peers,
                     "Certificate name (CN) of a peer host (role peer; "
                     "repeatable)");
    auto* run = app.add_option_group(
        "Run policy",
        "What callers may run, and as whom (README \"Security\"). The procd "
        "beside hostd (or --procd) is always allowed. SIGHUP reloads "
        "--allow-command, --allow-env and --allow-any-command.");
    run->add_option("--allow-command", options_.allow_commands,
                    "An executable procs may run, or a directory (written "
                    "with a trailing '/') whose files at any depth they may "
                    "run; repeatable. Symlinks and .. are resolved first");
    run->add_option("--allow-env", options_.allow_env,
                    "A variable a proc's env may set although it changes "
                    "what code runs (LD_PRELOAD, PYTHONPATH, HOSTMESH_*, "
                    "...); repeatable");
    run->add_flag("--allow-any-command", options_.allow_any_command,
                  "Run any command with any env (a host a client starts for "
                  "itself)");
    run->add_option("--proc-user", options_.proc_user,
                    "Run procs as this user (uid and primary gid, no other "
                    "groups); needs CAP_SETUID, CAP_SETGID and CAP_KILL");
    run->add_option("--operators-group", options_.operators_group,
                    "Group that may read the state dir and proc logs "
                    "(default: hostd's user alone)");
    // Tests only: in no help group (CLI11 does not list group "").
    app.add_option("--test-crash-at", options_.test_crash_at,
                   "Tests only: exit at once at <point>:<n>, the n-th time "
                   "hostd's proc table write reaches <point>")
        ->group("")
        ->configurable(false);
    app.add_option("--test-wedge-loop-after", test_wedge_loop_after_,
                   "Tests only: this long after READY, block the proc "
                   "manager's event loop for good (the systemd watchdog "
                   "stops)")
        ->group("")
        ->configurable(false);
  }

  HostdFlags(const HostdFlags&) = delete;
  HostdFlags& operator=(const HostdFlags&) = delete;

  CLI::App& app() { return app_; }
  bool print_config() const { return print_config_; }

  // Parses `args` (args[0]: the program): CLI11, then the words it did not
  // know (CheckExtras). Throws CLI::ParseError.
  void Parse(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    for (const std::string& arg : args) argv.push_back(arg.c_str());
    app_.parse(static_cast<int>(argv.size()), argv.data());
    CheckExtras();
  }

  // `message` (CLI11's, or Finish's "--stop-grace: ...") followed by where
  // the flag it names was set, if in the config file: " (FILE line N)".
  std::string Locate(absl::string_view message) const {
    for (const auto& [key, line] : config_lines_) {
      const std::string flag = absl::StrCat("--", key);
      for (size_t at = message.find(flag); at != absl::string_view::npos;
           at = message.find(flag, at + 1)) {
        const size_t end = at + flag.size();
        if (end == message.size() ||
            !(absl::ascii_isalnum(message[end]) || message[end] == '-')) {
          return absl::StrCat(message, " (", Where(line), ")");
        }
      }
    }
    return std::string(message);
  }

  // --print-config's text: a config file hostd reads as is, each key
  // followed by where its value came from.
  std::string EffectiveConfig() {
    std::string text = absl::StrCat(
        "# hostd ", kHostmeshVersion,
        ": the effective configuration. After each key, where its value "
        "came from:\n# default, environment ($VAR), <config file>:<line> or "
        "command line.\n# config file: ",
        config_path_.empty() ? "none" : config_path_, "\n");
    for (CLI::Option* option : Keys()) {
      const std::string& key = option->get_lnames().front();
      const std::string origin = Origin(option);
      // Test hooks (no help group) only when set.
      if (option->get_group().empty() && origin == "default") continue;
      std::string line;
      if (option->get_expected_max() > 1) {
        // Repeatable: a list (CLI11 reads no empty one: commented out).
        line = option->results().empty()
                   ? absl::StrCat("# ", key, " = []")
                   : absl::StrCat(
                         key, " = [",
                         absl::StrJoin(
                             option->results(), ", ",
                             [](std::string* out, const std::string& value) {
                               absl::StrAppend(out, "\"", value, "\"");
                             }),
                         "]");
      } else if (option->get_expected_max() == 0) {
        line = absl::StrCat(
            key, " = ",
            option->count() > 0 && option->as<bool>() ? "true" : "false");
      } else {
        option->capture_default_str();
        line = absl::StrCat(key, " = ", ConfigValue(option->get_default_str()));
      }
      absl::StrAppend(&text, absl::StrFormat("%-40s # %s\n", line, origin));
    }
    return text;
  }

  // The options, once the durations and --test-crash-at are checked.
  absl::StatusOr<HostdOptions> Finish(std::vector<std::string> args) {
    for (absl::Status status :
         {ParseFlagDuration("registration-timeout", registration_timeout_,
                            &options_.registration_timeout),
          ParseFlagDuration("stop-grace", stop_grace_, &options_.stop_grace),
          ParseFlagDuration("orphan-timeout", orphan_timeout_,
                            &options_.orphan_timeout),
          ParseFlagDuration("heartbeat-interval", heartbeat_interval_,
                            &options_.heartbeat_interval),
          ParseFlagDuration("owner-lease", owner_lease_, &options_.owner_lease,
                            /*zero_ok=*/true),
          ParseTestCrashAt(options_.test_crash_at).status(),
          options_.parent == kParentEnv || options_.parent == kParentStdio
              ? absl::OkStatus()
              : absl::InvalidArgumentError(absl::StrCat(
                    "--parent: \"", options_.parent.substr(0, 64),
                    "\" is not a parent channel (valid: ", kParentEnv, ", ",
                    kParentStdio, ")")),
          options_.proc_log_max_bytes == 0 ||
                  options_.proc_log_max_bytes >= 4096
              ? absl::OkStatus()
              : absl::InvalidArgumentError(absl::StrCat(
                    "--proc-log-max-bytes ", options_.proc_log_max_bytes,
                    " is below 4096 (one file system block); 0 turns "
                    "rotation off")),
          test_wedge_loop_after_.empty()
              ? absl::OkStatus()
              : ParseFlagDuration("test-wedge-loop-after",
                                  test_wedge_loop_after_,
                                  &options_.test_wedge_loop_after)}) {
      if (!status.ok()) {
        return absl::InvalidArgumentError(Locate(status.message()));
      }
    }
    options_.command_line = std::move(args);
    return options_;
  }

 private:
  // Every option a config key may set (configurable, with a long name), in
  // --help order: the app's, then each option group's.
  std::vector<CLI::Option*> Keys() {
    std::vector<CLI::Option*> all = app_.get_options();
    for (CLI::App* group : app_.get_subcommands(
             [](CLI::App* sub) { return sub->get_name().empty(); })) {
      for (CLI::Option* option : group->get_options()) all.push_back(option);
    }
    std::vector<CLI::Option*> keys;
    for (CLI::Option* option : all) {
      if (option->get_configurable() && !option->get_lnames().empty()) {
        keys.push_back(option);
      }
    }
    return keys;
  }

  // What a mistyped key or flag may have meant: `keys` only the ones a
  // config file may set; either way not the test hooks.
  std::vector<std::string> Names(bool keys) {
    std::vector<std::string> names;
    std::vector<CLI::Option*> options = keys ? Keys() : app_.get_options();
    if (!keys) {
      for (CLI::Option* option : Keys()) options.push_back(option);
    }
    for (CLI::Option* option : options) {
      if (!option->get_lnames().empty() && !option->get_group().empty()) {
        names.push_back(option->get_lnames().front());
      }
    }
    return names;
  }

  std::string Where(int line) const {
    return line > 0 ? absl::StrCat(config_path_, " line ", line) : config_path_;
  }

  // Where `option`'s value came from (--print-config).
  std::string Origin(CLI::Option* option) const {
    const std::string& key = option->get_lnames().front();
    if (config_read_ ? from_command_line_.contains(option)
                     : option->count() > 0) {
      return "command line";
    }
    if (auto it = config_lines_.find(key); it != config_lines_.end()) {
      return it->second > 0 ? absl::StrCat(config_path_, ":", it->second)
                            : config_path_;
    }
    if (auto it = environment_.find(key); it != environment_.end()) {
      return absl::StrCat("environment ($", it->second, ")");
    }
    return "default";
  }

  // The config file, read after the command line and before any of its
  // values apply: refuses (throws CLI::ConfigError naming each, with its
  // line and the key meant) unknown keys, keys a file may not set, and a
  // key given twice (CLI11 would keep the first and drop the other).
  void OnConfigRead(const std::vector<CLI::ConfigItem>& items,
                    const std::vector<int>& lines) {
    config_read_ = true;
    config_path_ = app_.get_config_ptr()->as<std::string>();
    for (CLI::Option* option : app_.get_options()) {
      if (option->count() > 0) from_command_line_.insert(option);
    }
    for (CLI::Option* option : Keys()) {
      if (option->count() > 0) from_command_line_.insert(option);
    }
    std::vector<std::string> errors;
    std::map<std::string, int> seen;
    for (size_t i = 0; i < items.size(); ++i) {
      const CLI::ConfigItem& item = items[i];
      if (item.name == "++" || item.name == "--") continue;
      const std::string key = item.fullname();
      CLI::Option* option = item.parents.empty()
                                ? app_.get_option_no_throw("--" + item.name)
                                : nullptr;
      if (option == nullptr) {
        errors.push_back(absl::StrCat(
            "unknown key \"", key, "\" in ", Where(lines[i]),
            item.parents.empty() ? "" : " (hostd's config has no sections)",
            item.parents.empty() ||
                    app_.get_option_no_throw("--" + item.name) == nullptr
                ? DidYouMean(item.name, Names(/*keys=*/true),
                             "; did you mean \"", "\"?")
                : absl::StrCat("; did you mean \"", item.name, "\"?")));
        continue;
      }
      if (!option->get_configurable()) {
        errors.push_back(absl::StrCat("key \"", key, "\" in ", Where(lines[i]),
                                      " is a command-line flag only"));
        continue;
      }
      if (auto [it, first] = seen.emplace(item.name, lines[i]); !first) {
        errors.push_back(absl::StrCat(
            "key \"", key, "\" appears twice in ", config_path_, " (lines ",
            it->second, " and ", lines[i], "); give it once",
            option->get_expected_max() > 1
                ? absl::StrCat(", with a list: ", key, " = [\"a\", \"b\"]")
                : ""));
        continue;
      }
      if (!from_command_line_.contains(option)) {
        config_lines_[item.name] = lines[i];
      }
    }
    if (!errors.empty()) throw CLI::ConfigError(absl::StrJoin(errors, "\n"));
  }

  // After CLI11's parse: a word it did not know (allow_extras keeps them)
  // is an error naming it, and for a flag the one meant.
  void CheckExtras() {
    const std::vector<std::string> extras = app_.remaining();
    if (extras.empty()) return;
    for (const std::string& extra : extras) {
      if (extra.size() < 2 || extra[0] != '-') continue;
      const std::string flag = extra.substr(0, extra.find('='));
      const size_t dashes = flag.find_first_not_of('-');
      const std::string name =
          dashes == std::string::npos ? "" : flag.substr(dashes);
      const std::vector<std::string> names = Names(/*keys=*/false);
      std::string meant;
      if (std::find(names.begin(), names.end(), name) != names.end()) {
        meant = absl::StrCat("; did you mean \"--", name, "\"?");
      } else if (!name.empty()) {
        meant = DidYouMean(name, names, "; did you mean \"--", "\"?");
      }
      throw CLI::ExtrasError(absl::StrCat("unknown flag \"", flag, "\"", meant),
                             CLI::ExitCodes::ExtrasError);
    }
    throw CLI::ExtrasError(
        absl::StrCat("unexpected argument \"", extras.front(),
                     "\" (hostd takes flags only: hostd --help)"),
        CLI::ExitCodes::ExtrasError);
  }

  CLI::App app_{
      "hostd: the hostmesh host daemon. Spawns and supervises procs."};
  HostdOptions options_;
  bool print_config_ = false;
  // Keys whose default came from the environment: key -> variable.
  std::map<std::string, std::string> environment_;
  // Set by OnConfigRead: whether a config file was read, its path, the
  // options the command line had set by then, and each key the file set
  // (not overridden by the command line) -> its line.
  bool config_read_ = false;
  std::string config_path_;
  std::set<CLI::Option*> from_command_line_;
  std::map<std::string, int> config_lines_;
  std::string registration_timeout_ = "10s";
  std::string stop_grace_ = "5s";
  std::string orphan_timeout_ = "30s";
  std::string heartbeat_interval_ = "500ms";
  std::string owner_lease_ = "60s";
  std::string test_wedge_loop_after_;
};

}  // namespace

absl::StatusOr<HostdOptions> ParseHostdFlags(
    const std::vector<std::string>& args) {
  if (args.empty()) {
    return absl::InvalidArgumentError("no command line (not even argv[0])");
  }
  HostdFlags flags;
  try {
    flags.Parse(args);
  } catch (const CLI::CallForHelp&) {
    return absl::InvalidArgumentError("--help asked for help, not options");
  } catch (const CLI::CallForVersion&) {
    return absl::InvalidArgumentError("--version asked for it, not options");
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(flags.Locate(e.what()));
  }
  return flags.Finish(args);
}

std::optional<int> ParseHostdCommandLine(const std::vector<std::string>& args,
                                         HostdOptions* options,
                                         std::ostream& out, std::ostream& err) {
  HostdFlags flags;
  auto fail = [&err](absl::string_view message) {
    for (absl::string_view line : absl::StrSplit(message, '\n')) {
      err << "hostd: " << line << "\n";
    }
    err << "Run with --help for more information." << std::endl;
    return 2;
  };
  try {
    if (args.empty()) throw CLI::ConfigError("no command line");
    flags.Parse(args);
  } catch (const CLI::ParseError& e) {
    // --help and --version print to `out` and exit 0.
    if (e.get_exit_code() == 0) return flags.app().exit(e, out, err);
    return fail(flags.Locate(e.what()));
  }
  absl::StatusOr<HostdOptions> parsed = flags.Finish(args);
  if (!parsed.ok()) return fail(parsed.status().message());
  if (flags.print_config()) {
    out << flags.EffectiveConfig() << std::flush;
    return 0;
  }
  *options = *std::move(parsed);
  return std::nullopt;
}

std::optional<int> ParseHostdCommandLine(int argc, char** argv,
                                         HostdOptions* options) {
  return ParseHostdCommandLine(std::vector<std::string>(argv, argv + argc),
                               options, std::cout, std::cerr);
}

void ApplyLogLevels(int v, const std::string& log_level) {
  FLAGS_v = v;
  int level = 0;
  for (int i = 0; i < 3; ++i) {
    if (log_level == kLogLevels[i]) level = i;
  }
  FLAGS_minloglevel = level;
}

}  // namespace mesh
