#include "hostd/command_policy.h"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "lib/names.h"

namespace mesh {
namespace {

// How many allow entries a message lists before "... and N more".
constexpr size_t kMaxListedEntries = 16;

bool IsDirEntry(const std::string& entry) {
  return !entry.empty() && entry.back() == '/';
}

// realpath(3), or the errno it failed with.
absl::StatusOr<std::string> RealPath(const std::string& path) {
  std::unique_ptr<char, decltype(&free)> resolved(
      realpath(path.c_str(), nullptr), &free);
  if (resolved == nullptr) {
    int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err), strerror(err));
  }
  return std::string(resolved.get());
}

// An allow entry resolved (a directory entry without its trailing '/', so
// that one naming a file says "not a directory" rather than ENOTDIR).
absl::StatusOr<std::string> ResolveEntry(const std::string& entry) {
  absl::string_view path = entry;
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return RealPath(std::string(path));
}

// True if `path` is below `dir` (both resolved or both lexically normal;
// `dir` without a trailing '/').
bool IsUnder(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return absl::StartsWith(path, dir) && path.size() > dir.size() &&
         path[dir.size()] == '/';
}

// The variables glibc drops for setuid programs (unsecure-envvars.h) that do
// not start with LD_ or MALLOC_, minus TMPDIR and TZDIR (data, not code),
// plus the start-up hooks of common interpreters and runtimes.
constexpr absl::string_view kDangerousNames[] = {
    // glibc: loader, iconv modules, resolver, locales, getconf.
    "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN",
    "LOCPATH", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS",
    // Shells: files sourced at start, exported functions, xtrace hooks.
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS",
    // Python.
    "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONINSPECT",
    "PYTHONUSERBASE", "PYTHONBREAKPOINT", "PYTHONWARNINGS", "PYTHONEXECUTABLE",
    "PYTHONPLATLIBDIR", "PYTHONPYCACHEPREFIX",
    // Perl, Ruby, Node, Lua, the JVM.
    "PERL5LIB", "PERLLIB", "PERL5OPT", "PERL5DB", "RUBYOPT", "RUBYLIB",
    "NODE_OPTIONS", "NODE_PATH", "LUA_INIT", "LUA_PATH", "LUA_CPATH",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    // GPU and parallel runtimes that load a library named by the variable.
    "CUDA_INJECTION64_PATH", "OMP_TOOL_LIBRARIES", "NCCL_NET_PLUGIN",
    "NCCL_TUNER_PLUGIN", "HSA_TOOLS_LIB",
    // git runs commands named by these.
    "GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH", "GIT_ASKPASS",
    // TLS libraries write session keys to this file.
    "SSLKEYLOGFILE",
    // OpenSSL loads engines and providers named by its config.
    "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES"};

// Prefixes: the dynamic loader (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...),
// glibc's allocator (MALLOC_TRACE writes files), bash's exported functions,
// hostd's own variables (HOSTMESH_CHANNEL_FD, HOSTMESH_PARENT_FD, the
// credential paths), Lua 5.x's versioned init hooks, git's injected config.
constexpr absl::string_view kDangerousPrefixes[] = {
    "LD_", "MALLOC_", "BASH_FUNC_", "HOSTMESH_", "LUA_INIT_", "GIT_CONFIG"};

// Parses one "CapXxx:\t<hex>" line of /proc/self/status.
absl::StatusOr<uint64_t> ReadCapSet(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::string prefix = field + ":";
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, prefix)) continue;
    absl::string_view hex = absl::StripAsciiWhitespace(
        absl::string_view(line).substr(prefix.size()));
    uint64_t value = 0;
    if (!absl::SimpleHexAtoi(hex, &value)) break;
    return value;
  }
  return absl::InternalError(
      absl::StrCat("cannot read ", field, " from /proc/self/status"));
}

std::string CapNames(uint64_t caps) {
  std::vector<std::string> names;
  if (caps & (uint64_t{1} << CAP_SETUID)) names.push_back("CAP_SETUID");
  if (caps & (uint64_t{1} << CAP_SETGID)) names.push_back("CAP_SETGID");
  if (caps & (uint64_t{1} << CAP_KILL)) names.push_back("CAP_KILL");
  return absl::StrJoin(names, " ");
}

}  // namespace

bool IsDangerousEnv(absl::string_view name) {
  for (absl::string_view prefix : kDangerousPrefixes) {
    if (absl::StartsWith(name, prefix)) return true;
  }
  for (absl::string_view dangerous : kDangerousNames) {
    if (name == dangerous) return true;
  }
  return false;
}

absl::StatusOr<CommandPolicy> CommandPolicy::Create(Options options) {
  for (const std::string& entry : options.allow_commands) {
    if (entry.empty() || entry[0] != '/' ||
        entry.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--allow-command %s: must be an absolute path (a file, or a "
          "directory ending in '/')",
          QuoteForError(entry)));
    }
  }
  for (const std::string& name : options.allow_env) {
    if (!IsEnvName(name)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--allow-env %s: not a variable name (letters, "
                          "digits and '_', not starting with a digit)",
                          QuoteForError(name)));
    }
  }
  return CommandPolicy(std::move(options));
}

std::string CommandPolicy::Describe() const {
  const std::vector<std::string>& entries = options_.allow_commands;
  if (entries.empty()) return "(none)";
  std::vector<std::string> shown(
      entries.begin(),
      entries.begin() + std::min(entries.size(), kMaxListedEntries));
  std::string more = entries.size() > kMaxListedEntries
                         ? absl::StrFormat(", ... and %d more",
                                           entries.size() - kMaxListedEntries)
                         : "";
  return absl::StrCat("(", absl::StrJoin(shown, ", "), more, ")");
}

std::vector<std::string> CommandPolicy::Warnings() const {
  std::vector<std::string> warnings;
  for (const std::string& entry : options_.allow_commands) {
    absl::StatusOr<std::string> resolved = ResolveEntry(entry);
    if (!resolved.ok()) {
      warnings.push_back(
          absl::StrFormat("--allow-command %s does not resolve "
                          "(%s); it allows nothing until it does",
                          entry, resolved.status().message()));
      continue;
    }
    struct stat st;
    if (stat(resolved->c_str(), &st) != 0) continue;
    if (IsDirEntry(entry) && !S_ISDIR(st.st_mode)) {
      warnings.push_back(absl::StrFormat(
          "--allow-command %s ends in '/' but is not a directory; it allows "
          "nothing",
          entry));
    } else if (!IsDirEntry(entry) && S_ISDIR(st.st_mode)) {
      warnings.push_back(absl::StrFormat(
          "--allow-command %s is a directory; write %s/ to allow the files "
          "in it",
          entry, entry));
    }
  }
  return warnings;
}

absl::StatusOr<std::string> CommandPolicy::CheckCommand(
    const std::string& command) const {
  if (options_.allow_any_command) return command;
  // Built only for a refusal: an allowed command pays no formatting.
  auto rule = [this] {
    return absl::StrCat("hostd runs only --allow-command entries ", Describe());
  };
  if (command.empty() || command[0] != '/') {
    return absl::PermissionDeniedError(absl::StrFormat(
        "command %s is not allowed: %s", QuoteForError(command), rule()));
  }
  absl::StatusOr<std::string> resolved = RealPath(command);
  if (!resolved.ok()) {
    // Under an allowed entry (as written) but missing: say so plainly;
    // anywhere else the caller learns only that it is not allowed.
    std::filesystem::path normal =
        std::filesystem::path(command).lexically_normal();
    for (const std::string& entry : options_.allow_commands) {
      std::string entry_normal = std::string(absl::StripSuffix(
          std::filesystem::path(entry).lexically_normal().string(), "/"));
      if (entry_normal.empty()) entry_normal = "/";
      bool match = IsDirEntry(entry) ? IsUnder(normal.string(), entry_normal)
                                     : normal.string() == entry_normal;
      if (match) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "command %s cannot run: %s (it is under --allow-command %s)",
            QuoteForError(command), resolved.status().message(), entry));
      }
    }
    return absl::PermissionDeniedError(absl::StrFormat(
        "command %s is not allowed: %s", QuoteForError(command), rule()));
  }
  // Where it resolves to is not told: a root hostd resolving
  // /proc/<pid>/cwd would tell the caller another process's directory.
  const std::string resolves_to =
      *resolved == command ? "" : " (after following symlinks and ..)";
  for (const std::string& entry : options_.allow_commands) {
    absl::StatusOr<std::string> allowed = ResolveEntry(entry);
    if (!allowed.ok()) continue;
    bool match = IsDirEntry(entry) ? IsUnder(*resolved, *allowed)
                                   : *resolved == *allowed;
    if (!match) continue;
    struct stat st;
    if (stat(resolved->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("command %s%s cannot run: not a regular file",
                          QuoteForError(command), resolves_to));
    }
    return *resolved;
  }
  return absl::PermissionDeniedError(
      absl::StrFormat("command %s%s is not allowed: %s", QuoteForError(command),
                      resolves_to, rule()));
}

absl::Status CommandPolicy::CheckEnv(std::vector<std::string> names) const {
  if (options_.allow_any_command) return absl::OkStatus();
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (!IsDangerousEnv(name)) continue;
    if (std::find(options_.allow_env.begin(), options_.allow_env.end(), name) !=
        options_.allow_env.end()) {
      continue;
    }
    return absl::PermissionDeniedError(absl::StrFormat(
        "spec.env sets %s, which can change what code the proc runs (or is "
        "hostd's own); hostd allows it only with --allow-env %s",
        QuoteForError(name),
        name.size() <= kMaxEchoBytes ? name : std::string("NAME")));
  }
  return absl::OkStatus();
}

absl::StatusOr<ProcUser> LookUpProcUser(const std::string& name) {
  std::vector<char> buffer(64 * 1024);
  struct passwd pw;
  struct passwd* found = nullptr;
  int rc = getpwnam_r(name.c_str(), &pw, buffer.data(), buffer.size(), &found);
  if (rc != 0 || found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--proc-user %s: no such user%s", QuoteForError(name),
                        rc != 0 ? absl::StrCat(" (", strerror(rc), ")") : ""));
  }
  if (pw.pw_uid == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--proc-user %s is root: procs must run as an unprivileged user (leave "
        "--proc-user unset to run them as hostd's own user)",
        QuoteForError(name)));
  }
  ProcUser user;
  user.name = pw.pw_name;
  user.uid = pw.pw_uid;
  user.gid = pw.pw_gid;
  user.home = pw.pw_dir != nullptr ? pw.pw_dir : "/";
  return user;
}

absl::StatusOr<gid_t> LookUpOperatorsGroup(const std::string& name) {
  std::vector<char> buffer(64 * 1024);
  struct group gr;
  struct group* found = nullptr;
  int rc = getgrnam_r(name.c_str(), &gr, buffer.data(), buffer.size(), &found);
  if (rc != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--operators-group %s: no such group%s", QuoteForError(name),
        rc != 0 ? absl::StrCat(" (", strerror(rc), ")") : ""));
  }
  return gr.gr_gid;
}

std::vector<std::string> WrapForProcUser(const ProcUser& user,
                                         const std::string& path,
                                         const std::vector<std::string>& args) {
  // No --bounding-set: dropping it needs CAP_SETPCAP, and no_new_privs
  // already keeps the proc from gaining anything through setuid binaries or
  // file capabilities. Lowering the inheritable set also clears the ambient
  // one, so nothing of hostd's capabilities survives the exec.
  std::vector<std::string> argv = {absl::StrCat("--reuid=", user.uid),
                                   absl::StrCat("--regid=", user.gid),
                                   "--clear-groups",
                                   "--inh-caps=-all",
                                   "--no-new-privs",
                                   "--",
                                   path};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

absl::Status CheckCanRunAs(const ProcUser& user) {
  if (access(user.setpriv.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "--proc-user %s needs %s (util-linux) to start procs as that user: %s",
        user.name, user.setpriv, strerror(errno)));
  }
  absl::StatusOr<uint64_t> effective = ReadCapSet("CapEff");
  if (!effective.ok()) return effective.status();
  absl::StatusOr<uint64_t> ambient = ReadCapSet("CapAmb");
  if (!ambient.ok()) return ambient.status();
  absl::StatusOr<uint64_t> bounding = ReadCapSet("CapBnd");
  if (!bounding.ok()) return bounding.status();
  const uint64_t set_ids =
      (uint64_t{1} << CAP_SETUID) | (uint64_t{1} << CAP_SETGID);
  const uint64_t needed = set_ids | (uint64_t{1} << CAP_KILL);
  uint64_t missing_effective = needed & ~*effective;
  // root regains its capabilities (up to the bounding set) when it execs
  // setpriv; anyone else keeps only its ambient ones.
  uint64_t missing_exec =
      geteuid() == 0 ? set_ids & ~*bounding : set_ids & ~*ambient;
  if (missing_effective == 0 && missing_exec == 0) return absl::OkStatus();
  std::vector<std::string> missing;
  if (missing_effective != 0) {
    missing.push_back(
        absl::StrCat(CapNames(missing_effective), " (effective)"));
  }
  if (missing_exec != 0) {
    missing.push_back(
        absl::StrCat(CapNames(missing_exec),
                     geteuid() == 0 ? " (bounding set)" : " (ambient)"));
  }
  return absl::FailedPreconditionError(absl::StrFormat(
      "--proc-user %s: hostd needs CAP_SETUID and CAP_SETGID (effective and "
      "ambient, so the setpriv it runs has them) and CAP_KILL (to signal "
      "procs of another uid); missing %s. Under systemd: "
      "AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL",
      user.name, absl::StrJoin(missing, ", ")));
}

absl::Status MakeStateDirPrivate(const std::string& dir,
                                 std::optional<gid_t> operators_group) {
  const mode_t mode = operators_group.has_value() ? 0750 : 0700;
  if (operators_group.has_value() &&
      chown(dir.c_str(), static_cast<uid_t>(-1), *operators_group) != 0) {
    return absl::ErrnoToStatus(
        errno,
        absl::StrFormat("cannot give state dir %s to --operators-group (gid "
                        "%d; hostd must be a member of it or hold CAP_CHOWN)",
                        dir, *operators_group));
  }
  if (chmod(dir.c_str(), mode) != 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrFormat("cannot make state dir %s private (mode %04o)",
                               dir, mode));
  }
  // Logs of an earlier hostd live under procs/: that dir gets the same mode
  // (a proc's own dir and files get theirs when it is spawned again).
  const std::string procs = dir + "/procs";
  struct stat st;
  if (lstat(procs.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    if ((operators_group.has_value() &&
         chown(procs.c_str(), static_cast<uid_t>(-1), *operators_group) != 0) ||
        chmod(procs.c_str(), mode) != 0) {
      return absl::ErrnoToStatus(
          errno,
          absl::StrFormat("cannot make %s private (mode %04o)", procs, mode));
    }
  }
  return absl::OkStatus();
}

absl::Status ProtectFromProcs(bool keep_ambient) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return absl::ErrnoToStatus(errno, "prctl(PR_SET_DUMPABLE, 0)");
  }
  if (!keep_ambient &&
      prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 &&
      errno != EINVAL) {  // EINVAL: a kernel without ambient capabilities.
    return absl::ErrnoToStatus(errno, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
  }
  return absl::OkStatus();
}

bool IsEnvName(absl::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

}  // namespace mesh
