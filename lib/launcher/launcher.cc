#include "lib/launcher/launcher.h"

#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "lib/auth/credentials.h"
#include "lib/status.h"

namespace mesh {

struct Launcher::Entry {
  absl::Mutex mu;
  uint64_t ticket ABSL_GUARDED_BY(mu) = 0;
  pid_t pid ABSL_GUARDED_BY(mu) = 0;
  std::string address ABSL_GUARDED_BY(mu);
  pid_t registered_pid ABSL_GUARDED_BY(mu) = 0;
  bool registered ABSL_GUARDED_BY(mu) = false;
  std::optional<ExitInfo> exit ABSL_GUARDED_BY(mu);
};

absl::StatusOr<std::unique_ptr<Launcher>> Launcher::Create(Options options) {
  ASSIGN_OR_RETURN(std::unique_ptr<ProcessSupervisor> supervisor,
                   ProcessSupervisor::Create());
  Registrar::Options registrar_options;
  registrar_options.orphan_timeout = options.orphan_timeout;
  // Fresh per launcher: its children trust it (admin) and each other (peer).
  registrar_options.admin_token = NewRandomToken();
  registrar_options.peer_token = NewRandomToken();
  options.admin_token = registrar_options.admin_token;
  ASSIGN_OR_RETURN(std::unique_ptr<Registrar> registrar,
                   Registrar::Create(registrar_options));
  return std::unique_ptr<Launcher>(new Launcher(
      std::move(options), std::move(supervisor), std::move(registrar)));
}

Launcher::Launcher(Options options,
                   std::unique_ptr<ProcessSupervisor> supervisor,
                   std::unique_ptr<Registrar> registrar)
    : options_(std::move(options)),
      supervisor_(std::move(supervisor)),
      registrar_(std::move(registrar)) {}

Launcher::~Launcher() {
  registrar_.reset();
  supervisor_.reset();
}

std::shared_ptr<Launcher::Entry> Launcher::Find(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = children_.find(name);
  return it == children_.end() ? nullptr : it->second;
}

absl::StatusOr<Launcher::Child> Launcher::Launch(const std::string& name,
                                                 uint64_t rank,
                                                 SpawnOptions spawn,
                                                 absl::Duration timeout,
                                                 ChannelKind channel) {
  if (channel == ChannelKind::kStdio &&
      (spawn.stdin_fd >= 0 || spawn.stdout_fd >= 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "launch of \"%s\" over stdio: its stdin and stdout are the channel; "
        "do not set stdin_fd or stdout_fd",
        name));
  }
  auto entry = std::make_shared<Entry>();
  {
    absl::MutexLock lock(&mu_);
    if (children_.count(name) != 0) {
      return absl::AlreadyExistsError(
          absl::StrFormat("a child named \"%s\" was launched already", name));
    }
    children_[name] = entry;
  }
  Registrar::ChildCallbacks callbacks;
  // `pid` is what the child says; through srun it is a pid on another
  // machine, so it is reported, never checked against the spawned one.
  callbacks.on_registered = [entry](const std::string& address, pid_t pid) {
    absl::MutexLock lock(&entry->mu);
    entry->address = address;
    entry->registered_pid = pid;
    entry->registered = true;
  };
  callbacks.on_disconnected = [] {};
  // A launch that fails leaves no entry behind: the name can be used again
  // and StopAll has nothing to wait for.
  auto forget_entry = [this, &name] {
    absl::MutexLock lock(&mu_);
    children_.erase(name);
  };
  // The child's ends of its channel: closed here once it is spawned, so
  // that it holds the only copies (its exit is EOF to the registrar).
  std::vector<int> child_ends;
  uint64_t ticket_id = 0;
  if (channel == ChannelKind::kStdio) {
    absl::StatusOr<Registrar::PipeTicket> expected =
        registrar_->ExpectOnPipes(name, rank, std::move(callbacks));
    if (!expected.ok()) {
      forget_entry();
      return expected.status();
    }
    ticket_id = expected->id;
    spawn.stdin_fd = expected->child_stdin;
    spawn.stdout_fd = expected->child_stdout;
    child_ends = {expected->child_stdin, expected->child_stdout};
  } else {
    absl::StatusOr<Registrar::Ticket> expected =
        registrar_->Expect(name, rank, std::move(callbacks));
    if (!expected.ok()) {
      forget_entry();
      return expected.status();
    }
    ticket_id = expected->id;
    spawn.env[kBootstrapFdEnv] = absl::StrCat(kBootstrapChildFd);
    spawn.inherit_fds.emplace_back(expected->child_fd, kBootstrapChildFd);
    child_ends = {expected->child_fd};
  }
  {
    absl::MutexLock lock(&entry->mu);
    entry->ticket = ticket_id;
  }
  // A launched hostd is not the launching process's service.
  spawn.unset_env.insert(spawn.unset_env.end(), kServiceManagerEnv.begin(),
                         kServiceManagerEnv.end());
  if (spawn.log_dir.empty() && !options_.log_root.empty()) {
    spawn.log_dir = absl::StrCat(options_.log_root, "/", name);
  }
  absl::StatusOr<pid_t> pid =
      supervisor_->Spawn(spawn, [this, entry, name](const ExitInfo& info) {
        bool registered;
        std::string address;
        {
          absl::MutexLock lock(&entry->mu);
          entry->exit = info;
          registered = entry->registered;
          address = entry->address;
        }
        if (registered && options_.on_exit) {
          options_.on_exit(name, address, info);
        }
      });
  // Only the child holds the other end now: its EOF means the child is gone.
  for (int fd : child_ends) close(fd);
  if (!pid.ok()) {
    registrar_->Forget(ticket_id);
    forget_entry();
    return Annotate(pid.status(), absl::StrFormat("launch of \"%s\"", name));
  }

  absl::MutexLock lock(&entry->mu);
  entry->pid = *pid;
  auto settled = [&entry]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(entry->mu) {
    return entry->registered || entry->exit.has_value();
  };
  entry->mu.AwaitWithTimeout(absl::Condition(&settled), timeout);
  if (entry->registered) {
    return Child{name, *pid, entry->address, entry->registered_pid};
  }
  if (entry->exit.has_value()) {
    const ExitInfo& exit = *entry->exit;
    return absl::UnavailableError(absl::StrFormat(
        "%s (pid %d) %s before registering; stderr: %s", name, *pid,
        exit.exit_code ? absl::StrCat("exited with code ", *exit.exit_code)
                       : absl::StrCat("was killed by signal ",
                                      exit.term_signal.value_or(0)),
        exit.stderr_tail));
  }
  entry->mu.Unlock();
  supervisor_->SignalGroup(*pid, SIGKILL).IgnoreError();
  entry->mu.Lock();
  return absl::DeadlineExceededError(
      absl::StrFormat("%s (pid %d) did not register within %s; killed", name,
                      *pid, absl::FormatDuration(timeout)));
}

absl::Status Launcher::AskStop(const std::string& name,
                               const std::string& reason,
                               absl::Duration grace) {
  std::shared_ptr<Entry> entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrFormat("no child \"%s\"", name));
  }
  uint64_t ticket;
  {
    absl::MutexLock lock(&entry->mu);
    ticket = entry->ticket;
  }
  return registrar_->SendStop(ticket, reason, grace);
}

absl::Status Launcher::Signal(const std::string& name, int sig) {
  std::shared_ptr<Entry> entry = Find(name);
  pid_t pid = 0;
  if (entry != nullptr) {
    absl::MutexLock lock(&entry->mu);
    pid = entry->pid;
  }
  if (pid == 0) {
    return absl::NotFoundError(absl::StrFormat("no child \"%s\"", name));
  }
  return supervisor_->SignalGroup(pid, sig);
}

absl::StatusOr<ExitInfo> Launcher::WaitExit(const std::string& name,
                                            absl::Duration timeout) {
  std::shared_ptr<Entry> entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrFormat("no child \"%s\"", name));
  }
  absl::MutexLock lock(&entry->mu);
  auto exited = [&entry]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(entry->mu) {
    return entry->exit.has_value();
  };
  if (!entry->mu.AwaitWithTimeout(absl::Condition(&exited), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrFormat("%s (pid %d) still running after %s", name, entry->pid,
                        absl::FormatDuration(timeout)));
  }
  return *entry->exit;
}

void Launcher::StopAll(absl::Duration grace) {
  std::vector<std::string> names;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, entry] : children_) names.push_back(name);
  }
  for (const std::string& name : names) {
    AskStop(name, "launcher stopping", grace).IgnoreError();
  }
  for (int sig : {0, SIGTERM, SIGKILL}) {
    bool all_gone = true;
    for (const std::string& name : names) {
      if (sig != 0) Signal(name, sig).IgnoreError();
      if (!WaitExit(name, sig == SIGKILL ? absl::Seconds(30) : grace).ok()) {
        all_gone = false;
      }
    }
    if (all_gone) return;
  }
}

namespace {

// The file the code of this function was loaded from: the shared library
// (an installed libhostmesh.so) or the program itself; empty if unknown.
std::filesystem::path ThisObjectFile() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&ThisObjectFile), &info) == 0 ||
      info.dli_fname == nullptr || info.dli_fname[0] == '\0') {
    return {};
  }
  std::error_code error;
  std::filesystem::path path =
      std::filesystem::weakly_canonical(info.dli_fname, error);
  return error ? std::filesystem::path() : path;
}

}  // namespace

absl::StatusOr<std::string> FindBinary(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "FindBinary takes a binary's name, not a path: \"", name, "\""));
  }
  std::vector<std::string> tried;
  auto usable = [&tried](const std::filesystem::path& path) {
    tried.push_back(path.string());
    std::error_code error;
    return access(path.c_str(), X_OK) == 0 &&
           std::filesystem::is_regular_file(path, error);
  };
  std::string env_name = absl::StrCat("HOSTMESH_", absl::AsciiStrToUpper(name));
  if (const char* path = std::getenv(env_name.c_str());
      path != nullptr && path[0] != '\0') {
    if (usable(path)) return std::string(path);
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is \"%s\", which is not an executable file; unset it to look "
        "for %s in the usual places",
        env_name, path, name));
  }
  std::error_code error;
  std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  std::vector<std::filesystem::path> candidates;
  if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    candidates.push_back(std::filesystem::path(srcdir) / "hostmesh" / name /
                         name);
  }
  if (!error) {
    std::filesystem::path runfiles = self;
    runfiles += ".runfiles";
    candidates.push_back(runfiles / "hostmesh" / name / name);
    candidates.push_back(self.parent_path() / name);
    // Bazel's output tree: bazel-bin/<pkg>/<bin> beside
    // bazel-bin/<name>/<name>.
    if (self.string().find("/bazel-out/") != std::string::npos) {
      for (std::filesystem::path dir = self.parent_path();
           dir.has_relative_path(); dir = dir.parent_path()) {
        candidates.push_back(dir / name / name);
        if (dir.filename() == "bin") break;
      }
    }
  }
  // An installed library: PREFIX/lib/libhostmesh.so finds PREFIX/bin/<name>.
  if (std::filesystem::path object = ThisObjectFile();
      !object.empty() && object != self) {
    candidates.push_back(object.parent_path().parent_path() / "bin" / name);
  }
  if (const char* path = std::getenv("PATH")) {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      candidates.push_back(std::filesystem::path(std::string(dir)) / name);
    }
  }
  candidates.push_back(std::filesystem::path("/usr/local/bin") / name);
  candidates.push_back(std::filesystem::path("/usr/bin") / name);
  for (const auto& candidate : candidates) {
    if (std::find(tried.begin(), tried.end(), candidate.string()) !=
        tried.end()) {
      continue;
    }
    if (usable(candidate)) {
      return std::filesystem::weakly_canonical(candidate).string();
    }
  }
  return absl::NotFoundError(absl::StrFormat(
      "cannot find the %s binary: install hostmesh (make install), put %s on "
      "the PATH or set %s (tried %s)",
      name, name, env_name, absl::StrJoin(tried, ", ")));
}

}  // namespace mesh
