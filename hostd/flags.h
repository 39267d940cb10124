// hostd's flags: one CLI11 definition of every flag (and of the --config
// file, whose `key = value` lines are the same flags) read into
// HostdOptions, for main() at start and for SIGHUP's reload
// (hostd/reload.h), which parses the same command line again.
#ifndef HOSTMESH_HOSTD_FLAGS_H_
#define HOSTMESH_HOSTD_FLAGS_H_

#include <optional>
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
// HostdOptions, with `command_line` = args. INVALID_ARGUMENT saying what is
// wrong (CLI11's message: an unreadable config file, a bad value, an
// unknown flag; or a bad duration) -- --help is an error here too. Prints
// nothing. Thread-compatible (each call builds its own parser).
absl::StatusOr<HostdOptions> ParseHostdFlags(
    const std::vector<std::string>& args);

// main()'s: the same parse over argv, but --help prints the help and a bad
// command line prints CLI11's message (or "hostd: --flag: ...") to stderr.
// nullopt: run with *options; otherwise the exit code (0 after --help, 2).
std::optional<int> ParseHostdCommandLine(int argc, char** argv,
                                         HostdOptions* options);

// Sets glog's verbosity (FLAGS_v = v) and least severity logged
// (FLAGS_minloglevel from "INFO", "WARNING" or "ERROR"; the flag parser
// allows nothing else). Process-wide: for main() and reloads.
void ApplyLogLevels(int v, const std::string& log_level);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_FLAGS_H_
