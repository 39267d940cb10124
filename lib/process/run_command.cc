#include "lib/process/run_command.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace mesh {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::ErrnoToStatus(errno, what);
}

std::string Tail(const std::string& text, size_t bytes) {
  return text.size() <= bytes ? text : text.substr(text.size() - bytes);
}

}  // namespace

std::string RunResult::Describe() const {
  std::string how = exit_code.has_value() ? absl::StrCat("exit ", *exit_code)
                    : term_signal.has_value()
                        ? absl::StrCat("signal ", *term_signal)
                        : "not ended";
  return absl::StrCat(how, "; stdout: ", Tail(out, 2000),
                      "; stderr: ", Tail(err, 2000));
}

// ---------------------------------------------------------------------------
// PipedProcess

absl::StatusOr<std::unique_ptr<PipedProcess>> PipedProcess::Start(
    const std::vector<std::string>& argv, const std::vector<std::string>& env,
    const std::string& cwd) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    return absl::InvalidArgumentError("argv[0] must be an absolute path");
  }
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0) return Errno("pipe2");
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return Errno("pipe2");
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    for (int fd : {in[0], in[1], out[0], out[1]}) close(fd);
    return Errno("pipe2");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                      POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> c_argv, c_env;
  for (const std::string& arg : argv) {
    c_argv.push_back(const_cast<char*>(arg.c_str()));
  }
  c_argv.push_back(nullptr);
  for (const std::string& entry : env) {
    c_env.push_back(const_cast<char*>(entry.c_str()));
  }
  c_env.push_back(nullptr);
  pid_t pid = 0;
  int spawned = posix_spawn(&pid, argv[0].c_str(), &actions, &attr,
                            c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  for (int fd : {in[0], out[1], err[1]}) close(fd);
  if (spawned != 0) {
    for (int fd : {in[1], out[0], err[0]}) close(fd);
    return absl::ErrnoToStatus(spawned, "posix_spawn " + argv[0]);
  }
  std::unique_ptr<PipedProcess> process(new PipedProcess());
  process->pid_ = pid;
  process->stdin_fd_ = in[1];
  process->stdout_fd_ = out[0];
  process->stderr_fd_ = err[0];
  return process;
}

PipedProcess::~PipedProcess() {
  if (!reaped_ && pid_ > 0) {
    kill(-pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  for (int fd : {stdin_fd_, stdout_fd_, stderr_fd_}) {
    if (fd >= 0) close(fd);
  }
}

absl::Status PipedProcess::Write(absl::string_view data) {
  if (stdin_fd_ < 0) return absl::FailedPreconditionError("stdin is closed");
  // A program that ends early closes its stdin: EPIPE, not a signal.
  static const bool ignored = [] {
    signal(SIGPIPE, SIG_IGN);
    return true;
  }();
  (void)ignored;
  while (!data.empty()) {
    ssize_t n = write(stdin_fd_, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return Errno("write to the stdin of pid " + std::to_string(pid_));
    data.remove_prefix(n);
  }
  return absl::OkStatus();
}

void PipedProcess::Signal(int sig) {
  if (!reaped_ && pid_ > 0) kill(-pid_, sig);
}

void PipedProcess::CloseStdin() {
  if (stdin_fd_ >= 0) close(stdin_fd_);
  stdin_fd_ = -1;
}

bool PipedProcess::Pump(absl::Duration wait) {
  pollfd fds[2];
  int count = 0;
  for (int fd : {stdout_fd_, stderr_fd_}) {
    if (fd >= 0) fds[count++] = {fd, POLLIN, 0};
  }
  if (count == 0) return false;
  int ready = poll(fds, count, absl::ToInt64Milliseconds(wait));
  if (ready <= 0) return true;
  for (int i = 0; i < count; ++i) {
    if (fds[i].revents == 0) continue;
    char buffer[4096];
    ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    bool is_out = fds[i].fd == stdout_fd_;
    if (n <= 0) {
      close(fds[i].fd);
      (is_out ? stdout_fd_ : stderr_fd_) = -1;
      continue;
    }
    (is_out ? out_ : err_).append(buffer, n);
  }
  return stdout_fd_ >= 0 || stderr_fd_ >= 0;
}

absl::StatusOr<std::string> PipedProcess::ReadUntil(absl::string_view needle,
                                                    absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    size_t at = absl::string_view(out_).find(needle);
    if (at != std::string::npos) {
      std::string read = out_.substr(0, at + needle.size());
      out_.erase(0, at + needle.size());
      return read;
    }
    if (stdout_fd_ < 0) {
      return absl::UnavailableError(
          absl::StrCat("stdout ended before \"", needle, "\"; read: \"", out_,
                       "\"; stderr: ", Tail(err_, 2000)));
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no \"", needle, "\" within ", absl::FormatDuration(timeout),
          "; read: \"", out_, "\"; stderr: ", Tail(err_, 2000)));
    }
    Pump(std::min(left, absl::Milliseconds(100)));
  }
}

RunResult PipedProcess::Wait(absl::Duration timeout) {
  if (reaped_) return result_;
  absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  bool killed = false;
  for (;;) {
    Pump(absl::Milliseconds(20));
    pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (done < 0 && errno != EINTR) {
      status = -1;
      break;
    }
    if (!killed && absl::Now() >= deadline) {
      kill(-pid_, SIGKILL);
      killed = true;
    }
  }
  reaped_ = true;
  // What it wrote just before it ended (a pipe that a leftover descendant
  // still holds is not waited for).
  for (int i = 0; i < 50 && (stdout_fd_ >= 0 || stderr_fd_ >= 0); ++i) {
    size_t before = out_.size() + err_.size();
    Pump(absl::Milliseconds(i == 0 ? 20 : 0));
    if (out_.size() + err_.size() == before) break;
  }
  if (status == -1) {
    result_.exit_code = -1;
  } else if (WIFEXITED(status)) {
    result_.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result_.term_signal = WTERMSIG(status);
  }
  result_.out = out_;
  result_.err = err_;
  if (killed) {
    result_.err +=
        absl::StrCat("\n(killed after ", absl::FormatDuration(timeout), ")");
  }
  return result_;
}

std::string FindProgram(const std::string& name) {
  if (!name.empty() && name[0] == '/') {
    return access(name.c_str(), X_OK) == 0 ? name : "";
  }
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    dirs = absl::StrSplit(path, ':', absl::SkipEmpty());
  }
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin",
                          "/usr/local/sbin", "/usr/local/bin"}) {
    dirs.push_back(dir);
  }
  for (const std::string& dir : dirs) {
    std::string candidate = absl::StrCat(dir, "/", name);
    struct stat info;
    if (stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

absl::StatusOr<RunResult> RunCommand(std::vector<std::string> argv,
                                     const std::vector<std::string>& env,
                                     absl::Duration timeout,
                                     const std::string& input,
                                     const std::string& cwd) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  std::string path = FindProgram(argv[0]);
  if (path.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(argv[0],
                     " is not installed (not in $PATH or the sbin "
                     "and bin dirs)"));
  }
  argv[0] = path;
  absl::StatusOr<std::unique_ptr<PipedProcess>> process =
      PipedProcess::Start(argv, env, cwd);
  if (!process.ok()) return process.status();
  if (!input.empty()) (*process)->Write(input).IgnoreError();
  (*process)->CloseStdin();
  return (*process)->Wait(timeout);
}

std::vector<std::string> CurrentEnvironment(
    bool (*drop)(absl::string_view name)) {
  std::vector<std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    absl::string_view text = *entry;
    absl::string_view name = text.substr(0, text.find('='));
    if (drop != nullptr && drop(name)) continue;
    env.emplace_back(text);
  }
  return env;
}

}  // namespace mesh
