#include "hostd/reload.h"

#include <glog/logging.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "hostd/flags.h"

namespace mesh {

CommandPolicy::Options PolicyOptionsFor(const HostdOptions& options) {
  CommandPolicy::Options policy;
  if (!options.procd_path.empty() && options.procd_path[0] == '/') {
    policy.allow_commands.push_back(options.procd_path);
  }
  policy.allow_commands.insert(policy.allow_commands.end(),
                               options.allow_commands.begin(),
                               options.allow_commands.end());
  policy.allow_env = options.allow_env;
  policy.allow_any_command = options.allow_any_command;
  return policy;
}

std::vector<std::string> ChangesNeedingRestart(const HostdOptions& running,
                                               const HostdOptions& fresh) {
  std::vector<std::string> changed;
  auto check = [&changed](const char* flag, bool same) {
    if (!same) changed.push_back(flag);
  };
  const HostdOptions& a = running;
  const HostdOptions& b = fresh;
  check("--listen", a.listen == b.listen);
  check("--advertise", a.advertise == b.advertise);
  check("--advertise-unchecked",
        a.advertise_unchecked == b.advertise_unchecked);
  check("--state-dir", a.state_dir == b.state_dir);
  check("--runtime-dir", a.runtime_dir == b.runtime_dir);
  check("--procd", a.procd_path == b.procd_path);
  check("--proc-template", a.proc_template == b.proc_template);
  check("--registration-timeout",
        a.registration_timeout == b.registration_timeout);
  check("--stop-grace", a.stop_grace == b.stop_grace);
  check("--heartbeat-interval", a.heartbeat_interval == b.heartbeat_interval);
  check("--owner-lease", a.owner_lease == b.owner_lease);
  check("--orphan-timeout", a.orphan_timeout == b.orphan_timeout);
  check("--max-procs", a.max_procs == b.max_procs);
  check("--max-message-bytes", a.max_message_bytes == b.max_message_bytes);
  check("--max-finished-procs", a.max_finished_procs == b.max_finished_procs);
  check("--cgroup", a.cgroup == b.cgroup);
  check("--tls-cert", a.auth.tls_cert_file == b.auth.tls_cert_file);
  check("--tls-key", a.auth.tls_key_file == b.auth.tls_key_file);
  check("--tls-ca", a.auth.tls_ca_file == b.auth.tls_ca_file);
  check("--tls-require-client-cert",
        a.auth.tls_require_client_cert == b.auth.tls_require_client_cert);
  // The file's contents reload; another file (or none) would change whether
  // hostd may write its admin.token (see hostd.cc): a restart.
  check("--tokens-file", a.auth.tokens_file == b.auth.tokens_file);
  check("--peer-token-file", a.auth.peer_token_file == b.auth.peer_token_file);
  check("--admin", a.auth.admins == b.auth.admins);
  check("--peer", a.auth.peers == b.auth.peers);
  check("--proc-user", a.proc_user == b.proc_user);
  check("--operators-group", a.operators_group == b.operators_group);
  check("--test-crash-at", a.test_crash_at == b.test_crash_at);
  // ProcLogs takes these once, at its start (hostd.cc).
  check("--proc-log-max-bytes", a.proc_log_max_bytes == b.proc_log_max_bytes);
  check("--proc-log-keep", a.proc_log_keep == b.proc_log_keep);
  check("--max-log-streams", a.max_log_streams == b.max_log_streams);
  check("--metrics-listen", a.metrics_listen == b.metrics_listen);
  check("--metrics-token-file", a.metrics_token_file == b.metrics_token_file);
  check("--audit-log", a.audit_log == b.audit_log);
  return changed;
}

HostdReloader::HostdReloader(Options options) : options_(std::move(options)) {
  if (!options_.set_log_levels) options_.set_log_levels = ApplyLogLevels;
}

HostdReloader::Result HostdReloader::Reload() {
  absl::MutexLock lock(&mu_);
  HostdOptions& running = options_.running;
  Result result;
  HostdOptions fresh = running;
  if (!running.command_line.empty()) {
    absl::StatusOr<HostdOptions> parsed = ParseHostdFlags(running.command_line);
    if (!parsed.ok()) {
      result.status = parsed.status();
      // E.g. an unknown key: `unknown key "lisen" in FILE line 3; did you
      // mean "listen"?` (strict, hostd/flags.h).
      LOG(ERROR) << "reload: refused; hostd runs on with its old config "
                    "(kept everything as it was): the command line or config "
                    "does not parse: "
                 << parsed.status().message();
      return result;
    }
    fresh = *std::move(parsed);
    if (fresh.procd_path.empty()) {
      fresh.procd_path = options_.default_procd_path;
    }
  }

  // Tokens file: its path as at start (another path needs a restart).
  if (options_.auth != nullptr && !running.auth.tokens_file.empty()) {
    absl::StatusOr<size_t> tokens = options_.auth->ReloadTokens();
    if (tokens.ok()) {
      result.reloaded.push_back(absl::StrCat(
          "tokens file ", running.auth.tokens_file, " (", *tokens, " tokens)"));
    } else {
      result.failed.push_back(absl::StrCat(
          "tokens file (kept the old tokens): ", tokens.status().message()));
    }
  }

  // Allow rules; the procd hostd runs stays allowed (--procd needs a
  // restart).
  if (options_.set_policy) {
    HostdOptions rules = fresh;
    rules.procd_path = running.procd_path;
    absl::StatusOr<CommandPolicy> policy =
        CommandPolicy::Create(PolicyOptionsFor(rules));
    if (policy.ok()) {
      for (const std::string& warning : policy->Warnings()) {
        LOG(WARNING) << "reload: " << warning;
      }
      result.reloaded.push_back(
          absl::StrCat("allow rules ", policy->allow_any_command()
                                           ? std::string("(any command)")
                                           : policy->Describe()));
      options_.set_policy(*std::move(policy));
      running.allow_commands = fresh.allow_commands;
      running.allow_env = fresh.allow_env;
      running.allow_any_command = fresh.allow_any_command;
    } else {
      result.failed.push_back(absl::StrCat("allow rules (kept the old ones): ",
                                           policy.status().message()));
    }
  }

  // Log levels (the parser allows only valid ones).
  options_.set_log_levels(fresh.v, fresh.log_level);
  running.v = fresh.v;
  running.log_level = fresh.log_level;
  result.reloaded.push_back(
      absl::StrCat("log levels (v ", fresh.v, ", ", fresh.log_level, ")"));

  result.needs_restart = ChangesNeedingRestart(running, fresh);
  for (const std::string& failed : result.failed) {
    LOG(ERROR) << "reload: " << failed;
  }
  if (!result.needs_restart.empty()) {
    LOG(WARNING) << "reload: changed, but each needs a restart (hostd runs "
                    "with the old values until then): "
                 << absl::StrJoin(result.needs_restart, ", ");
  }
  LOG(INFO) << "reload: reloaded " << absl::StrJoin(result.reloaded, ", ");
  return result;
}

}  // namespace mesh
