// hostd's flags: one CLI11 definition of every flag (and of the --config
// file, whose `key = value` lines are the same flags) read into
// HostdOptions, for main() at start and for SIGHUP's reload
// (hostd/reload.h), which parses the same command line again.
#ifndef HOSTMESH_HOSTD_FLAGS_H_
#define HOSTMESH_HOSTD_FLAGS_H_

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hostd/options.h"
#include "lib/store/durable_file.h"

namespace mesh {

// --test-crash-at "<point>:<n>": hostd kills itself the n-th time a proc
// table write reaches <point> (CrashPointName; tests only).
struct TestCrashAt {
  CrashPoint point;
  int n = 0;
};
// nullopt for "" (off); INVALID_ARGUMENT naming the points if malformed.
absl::StatusOr<std::optional<TestCrashAt>> ParseTestCrashAt(
    const std::string& text);

// Parses `args` (args[0] is the program; then flags, --config FILE among
// them: a flag on the command line wins over the file's key) into
// HostdOptions, with `command_line` = args. Strict: INVALID_ARGUMENT saying
// what is wrong, and where --
//   unknown key "lisen" in /etc/hostmesh/hostd.conf line 3; did you mean
//   "listen"?
//   unknown flag "--max_procs"; did you mean "--max-procs"?
// (a key is a long flag without its dashes, spelt with '-' only; a key the
// file gives twice, a key only the command line may set, an unreadable
// file, a bad value or duration: "--stop-grace: ... (FILE line 4)"). One
// line per unknown or repeated key. --help and --version are errors here
// too. Prints nothing. Thread-compatible (each call builds its own parser).
absl::StatusOr<HostdOptions> ParseHostdFlags(
    const std::vector<std::string>& args);

// main()'s: the same parse, but --help and --version print to `out` (exit
// code 0), --print-config prints the effective configuration to `out` (every
// key, its value and where it came from: default, environment ($VAR),
// FILE:LINE or command line; as a config file) and exits 0, and a bad
// command line or config prints each error as "hostd: <error>" to `err`
// (exit code 2). nullopt: run with *options.
std::optional<int> ParseHostdCommandLine(const std::vector<std::string>& args,
                                         HostdOptions* options,
                                         std::ostream& out, std::ostream& err);
// Over argv, with std::cout and std::cerr.
std::optional<int> ParseHostdCommandLine(int argc, char** argv,
                                         HostdOptions* options);

// Sets glog's verbosity (FLAGS_v = v) and least severity logged
// (FLAGS_minloglevel from "INFO", "WARNING" or "ERROR"; the flag parser
// allows nothing else). Process-wide: for main() and reloads.
void ApplyLogLevels(int v, const std::string& log_level);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_FLAGS_H_
