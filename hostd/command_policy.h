// CommandPolicy: what a caller may run on this host, with which environment,
// and as whom. Transport-free.
//
// A proc spec's `command` is code execution by design, so a host runs only
// what its operator allowed:
//  - a command runs only if it resolves (realpath: every symlink and `..`
//    followed) to a file listed by `--allow-command FILE`, or to a file at
//    any depth under a directory listed as `--allow-command DIR/`; the
//    entries are resolved the same way, so a symlink inside an allowed
//    directory that points outside it does not escape. hostd always adds
//    its default bootstrap command (the procd beside it). The proc runs the
//    resolved path, never a name that could be re-pointed after the check.
//  - environment variables that change what code a program loads or runs
//    (IsDangerousEnv: LD_*, PYTHONPATH, NODE_OPTIONS, BASH_ENV, ...) and
//    hostd's own HOSTMESH_* variables are refused unless `--allow-env NAME`
//    names them.
//  - `--allow-any-command` turns both checks off: a host a client starts for
//    itself (same uid) runs whatever that client names.
// A refusal is PERMISSION_DENIED naming the rule and the flag that would
// allow it. Immutable after construction, so thread-safe; entries are
// resolved at each check (a directory created after start-up counts).
//
// ProcUser: a user procs run as (`--proc-user`), so they cannot read
// hostd's keys or ptrace it. posix_spawn cannot change uid, so the child is
// started through util-linux's setpriv, which drops to the user's uid and
// primary gid, clears supplementary groups, inheritable and ambient
// capabilities, sets no_new_privs and then execs the command (same pid,
// same process group, same descriptors): see WrapForProcUser.
#ifndef HOSTMESH_HOSTD_COMMAND_POLICY_H_
#define HOSTMESH_HOSTD_COMMAND_POLICY_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mesh {

// True for a variable hostd refuses in a proc's env unless --allow-env names
// it: the dynamic loader's and allocator's (LD_*, MALLOC_*, GLIBC_TUNABLES,
// and the rest of glibc's list of variables unsafe for setuid programs), the
// start-up hooks of interpreters (PYTHONPATH, PYTHONSTARTUP, PERL5OPT,
// RUBYOPT, NODE_OPTIONS, JAVA_TOOL_OPTIONS, BASH_ENV, ENV, BASH_FUNC_*, ...),
// and hostd's own HOSTMESH_*.
bool IsDangerousEnv(absl::string_view name);

class CommandPolicy {
 public:
  struct Options {
    // Absolute paths: files, or directories written with a trailing '/'.
    std::vector<std::string> allow_commands;
    // Variable names allowed even though IsDangerousEnv.
    std::vector<std::string> allow_env;
    // Anything goes (commands and environment).
    bool allow_any_command = false;
  };

  // INVALID_ARGUMENT naming the flag for a relative or empty entry or a bad
  // variable name.
  static absl::StatusOr<CommandPolicy> Create(Options options);
  // Allows nothing.
  CommandPolicy() = default;

  // The path to execute for `command` (an absolute path: the spec's command
  // or the default procd): its resolved path if a rule allows it; with
  // allow_any_command, `command` unchanged. PERMISSION_DENIED naming the
  // rule if no rule allows it; FAILED_PRECONDITION if it is under an
  // allowed entry but does not resolve to a regular file.
  absl::StatusOr<std::string> CheckCommand(const std::string& command) const;
  // PERMISSION_DENIED naming the first refused variable (in name order) and
  // the --allow-env flag that would allow it.
  absl::Status CheckEnv(std::vector<std::string> names) const;

  // The entries as given, for messages and the start-up log: "(/a, /b/)".
  std::string Describe() const;
  // What looks wrong with the entries now (one that does not resolve, a
  // directory written without its trailing '/'): warnings for start-up.
  std::vector<std::string> Warnings() const;
  bool allow_any_command() const { return options_.allow_any_command; }

 private:
  explicit CommandPolicy(Options options) : options_(std::move(options)) {}
  Options options_;
};

struct ProcUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;  // the user's primary group
  std::string home;
  std::string setpriv = "/usr/bin/setpriv";
};

// The user named `name` (getpwnam). INVALID_ARGUMENT naming --proc-user if
// there is none, or if it is root (procs as root is what leaving
// --proc-user unset does when hostd is root).
absl::StatusOr<ProcUser> LookUpProcUser(const std::string& name);

// The group named `name` (getgrnam); INVALID_ARGUMENT naming
// --operators-group if there is none.
absl::StatusOr<gid_t> LookUpOperatorsGroup(const std::string& name);

// argv (after argv[0] = user.setpriv) that runs `path args...` as `user`.
std::vector<std::string> WrapForProcUser(const ProcUser& user,
                                         const std::string& path,
                                         const std::vector<std::string>& args);

// Whether this process can start procs as `user` and signal them: it needs
// CAP_SETUID, CAP_SETGID and CAP_KILL effective, and (unless it is root,
// whose exec of setpriv regains them) CAP_SETUID and CAP_SETGID ambient, so
// the setpriv it executes still has them. FAILED_PRECONDITION naming what is
// missing and how systemd grants it.
absl::Status CheckCanRunAs(const ProcUser& user);

// Makes hostd's state dir (proc logs and state) and its procs/ readable by
// hostd's user alone (0700), or with `operators_group` by that group too
// (0750, of that group; the supervisor gives each proc's log dir and files
// the group too). No setgid bit (systemd's RestrictSUIDSGID= refuses it).
// Fails naming the dir if its mode or group cannot be set (for a group,
// hostd must be a member of it or hold CAP_CHOWN).
absl::Status MakeStateDirPrivate(const std::string& dir,
                                 std::optional<gid_t> operators_group);

// Protects hostd from its procs, before any exists: non-dumpable (a proc of
// the same uid cannot ptrace hostd or read /proc/<hostd>/mem or environ;
// nor are core dumps written), and, unless procs are started through
// setpriv as another user (`keep_ambient`), no ambient capabilities a proc
// would inherit across exec.
absl::Status ProtectFromProcs(bool keep_ambient);

// A POSIX environment variable name: [A-Za-z_][A-Za-z0-9_]*.
bool IsEnvName(absl::string_view name);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_COMMAND_POLICY_H_
