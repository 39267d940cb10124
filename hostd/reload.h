// HostdReloader: what SIGHUP does to a running hostd (systemctl reload).
//
// Parses hostd's command line again (HostdOptions::command_line, through
// ParseHostdFlags: the same flags, so the --config file is read afresh and
// a flag given on the command line still wins over the file), then applies
// what can change while hostd runs, each part on its own:
//   tokens file   ServerAuth::ReloadTokens: the file's tokens replaced; the
//                 built-in ones (runtime dir's admin token, a parent's) stay;
//                 a bad file keeps the old tokens
//   allow rules   --allow-command, --allow-env, --allow-any-command: a new
//                 CommandPolicy for procs created from then on; bad rules
//                 keep the old policy
//   log levels    --v, --log-level
// Anything else that differs from what hostd runs with (--listen, TLS files,
// dirs, --proc-user, timings, the tokens file's path, ...) is not applied:
// one WARNING names each flag as needing a restart. A command line or config
// file that does not parse (an unknown key too: ParseHostdFlags is strict)
// changes nothing (an ERROR says why, naming the key). Every reload
// logs one INFO line naming what it reloaded. Nothing here ends hostd.
#ifndef HOSTMESH_HOSTD_RELOAD_H_
#define HOSTMESH_HOSTD_RELOAD_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "hostd/command_policy.h"
#include "hostd/options.h"
#include "lib/auth/server_auth.h"

namespace mesh {

// The allow rules `options` give: its procd_path first (always allowed, if
// absolute), then --allow-command, --allow-env, --allow-any-command. At
// start and at each reload.
CommandPolicy::Options PolicyOptionsFor(const HostdOptions& options);

// The flags ("--listen", ...) whose values differ between `running` and
// `fresh` and that only a restart applies, in --help order.
std::vector<std::string> ChangesNeedingRestart(const HostdOptions& running,
                                               const HostdOptions& fresh);

class HostdReloader {
 public:
  struct Options {
    // What hostd runs with now (procd_path filled in), and its command line.
    HostdOptions running;
    // What an empty --procd means here (the procd beside hostd).
    std::string default_procd_path;
    // Whose tokens file is read again; null: none.
    ServerAuth* auth = nullptr;
    // Takes the new allow rules (hostd: ProcManager::SetPolicy); on the
    // reloading thread.
    std::function<void(CommandPolicy)> set_policy;
    // Sets the log levels; default ApplyLogLevels (hostd/flags.h).
    std::function<void(int v, const std::string& log_level)> set_log_levels;
  };

  // What one reload did (also logged).
  struct Result {
    // Not OK: the command line or config did not parse; nothing changed.
    absl::Status status;
    // What was applied: "tokens file /etc/hostmesh/tokens (3 tokens)",
    // "allow rules (/opt/app/bin/)", "log levels (v 1, INFO)".
    std::vector<std::string> reloaded;
    // What could not be, and why (the old stays): "tokens file: ...".
    std::vector<std::string> failed;
    // Flags that changed but need a restart ("--listen", ...).
    std::vector<std::string> needs_restart;
  };

  explicit HostdReloader(Options options);

  // Re-reads and applies (see the top of this file). Any thread (hostd: the
  // signal thread); reloads run one at a time.
  Result Reload();

 private:
  absl::Mutex mu_;
  Options options_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_RELOAD_H_
