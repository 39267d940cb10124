// meshctl slurm up: a host mesh on a Slurm allocation (HostMesh::Slurm: one
// hostd per Slurm task, started with srun) for as long as meshctl runs, for
// an operator who wants hosts for a session that other clients attach to.
//
// The hosts trust the admin token of the client that started them (this
// meshctl); it goes to --token-file (a new file, mode 0600), so that
// HOSTMESH_TOKEN_FILE=FILE (or meshctl --token-file FILE) reaches them.
// Once the hosts are up, stdout has one line per host, then the job, then
// "ready":
//   host_<rank> <address> <node>
//   job <id>
//   ready
// Then it runs until SIGINT or SIGTERM (exit 0), or until every host is
// lost (the job cancelled or out of time: exit 1 naming each and why); in
// both cases every proc, then every hostd is stopped, an allocation made
// here is released, and the token file removed.
//
// Signals: SIGINT and SIGTERM are blocked from the start of the verb (before
// any thread of the client exists) and taken by one thread of its own
// through a signalfd (lib/process/signals.h: StopSignals). One that arrives
// while the hosts start stops them as soon as they are up (exit 1).
#include <fcntl.h>
#include <glog/logging.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostmesh/client.h"
#include "hostmesh/host_mesh.h"
#include "lib/process/signals.h"
#include "lib/status.h"
#include "meshctl/cli.h"
#include "meshctl/commands.h"

namespace mesh::meshctl {
namespace {

struct UpFlags {
  // What HostMesh::Slurm takes, its defaults as the flags' (but the time
  // limit, given in minutes).
  SlurmOptions slurm;
  int time_minutes = 0;
  std::string hostd;
  std::vector<std::string> hostd_args;
  std::string token_file;
  std::string timeout = "2m";
};

// The flags that only shape a new allocation.
constexpr const char* kAllocationFlags[] = {"--nodes", "--partition", "--time",
                                            "--job-name", "--salloc-arg"};

absl::Status Usage(const std::string& message) {
  return UsageError(absl::InvalidArgumentError(message));
}

// --token-file: created (exclusively, mode 0600, empty) before anything is
// started, so that an existing file is refused with nothing to undo; the
// token is written once the hosts are up. The destructor removes it.
class TokenFile {
 public:
  static absl::StatusOr<std::unique_ptr<TokenFile>> Create(
      const std::string& path) {
    const int fd =
        open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
      return Usage(absl::StrCat(
          "--token-file \"", path,
          "\" exists: slurm up writes the hosts' token to a new file (and "
          "removes it when it ends); give a path that does not exist"));
    }
    if (fd < 0) {
      return Usage(absl::StrCat("--token-file \"", path,
                                "\": cannot create it: ", strerror(errno)));
    }
    // Exactly 0600, whatever the umask.
    (void)!fchmod(fd, 0600);
    return std::unique_ptr<TokenFile>(new TokenFile(path, fd));
  }
  ~TokenFile() {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  absl::Status Write(const std::string& token) {
    const std::string text = token + "\n";
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = write(fd_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return absl::InternalError(absl::StrCat(
            "cannot write --token-file \"", path_, "\": ", strerror(errno)));
      }
      done += static_cast<size_t>(n);
    }
    const int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) {
      return absl::InternalError(absl::StrCat("cannot write --token-file \"",
                                              path_, "\": ", strerror(errno)));
    }
    return absl::OkStatus();
  }

 private:
  TokenFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  const std::string path_;
  int fd_;
};

// What the client's host events and the signal thread tell the verb's
// thread: a stop signal, and each host's loss. Also prints what happens to
// the hosts on stderr while the session runs. Thread-safe.
class Session {
 public:
  explicit Session(std::ostream& err) : err_(err) {}

  // The hosts are up: their addresses, each with its words for messages
  // ("host_0 (127.0.0.1:41234 on node n1)").
  void Up(const std::vector<std::string>& addresses,
          const std::vector<std::string>& names) {
    absl::MutexLock lock(&mu_);
    addresses_ = addresses;
    for (size_t i = 0; i < addresses.size(); ++i) {
      names_[addresses[i]] = names[i];
    }
  }

  // ClientOptions::on_host_event (the client's event thread).
  // Printed once the hosts are up, until they are being stopped.
  void OnHostEvent(const HostEvent& event) {
    absl::MutexLock lock(&mu_);
    const std::string reason = OneLine(event.reason);
    if (event.state == HostState::kLost) lost_.emplace(event.host, reason);
    if (stopping_ || addresses_.empty()) return;
    if (event.state == HostState::kLost) {
      err_ << "meshctl: " << NameLocked(event.host) << " lost: " << reason
           << std::endl;
    } else if (event.state == HostState::kUnreachable) {
      err_ << "meshctl: " << NameLocked(event.host)
           << " unreachable: " << reason << std::endl;
    } else if (event.state == HostState::kReachable &&
               event.previous == HostState::kUnreachable) {
      err_ << "meshctl: " << NameLocked(event.host) << " reachable again"
           << std::endl;
    }
  }

  // A stop signal (the signal thread).
  void OnSignal(const std::string& name) {
    absl::MutexLock lock(&mu_);
    if (!signal_.empty()) {
      err_ << "meshctl: " << name
           << " again: still stopping the hosts; nothing is left once "
              "meshctl exits"
           << std::endl;
      return;
    }
    signal_ = name;
    if (addresses_.empty()) {
      err_ << "meshctl: " << name
           << ": the hosts starting are stopped as soon as they are up"
           << std::endl;
    }
  }

  // The signal taken so far ("" if none).
  std::string signal() {
    absl::MutexLock lock(&mu_);
    return signal_;
  }

  // Blocks until a stop signal came (returns its name) or every host is
  // lost (returns "").
  std::string Wait() {
    absl::MutexLock lock(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !signal_.empty() || AllLostLocked();
    };
    mu_.Await(absl::Condition(&done));
    return signal_;
  }

  // The hosts are being stopped: their events are not news any more.
  void Stopping() {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }

  // "host_0 (…): reason; host_1 (…): reason", in rank order.
  std::string Lost() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> parts;
    for (const std::string& address : addresses_) {
      auto it = lost_.find(address);
      if (it == lost_.end()) continue;
      parts.push_back(absl::StrCat(NameLocked(address), ": ", it->second));
    }
    return absl::StrJoin(parts, "; ");
  }

 private:
  static std::string OneLine(const std::string& text) {
    return absl::StrReplaceAll(absl::StripAsciiWhitespace(text),
                               {{"\r", ""}, {"\n", " | "}});
  }
  std::string NameLocked(const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = names_.find(address);
    return it != names_.end() ? it->second : absl::StrCat("host ", address);
  }
  bool AllLostLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (addresses_.empty()) return false;
    for (const std::string& address : addresses_) {
      if (!lost_.contains(address)) return false;
    }
    return true;
  }

  std::ostream& err_;
  absl::Mutex mu_;
  std::vector<std::string> addresses_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> names_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> lost_ ABSL_GUARDED_BY(mu_);
  std::string signal_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

// SIGINT and SIGTERM, taken by a thread of its own (StopSignals::Block must
// have run on this thread before any other thread started) and handed to
// `on_signal`; the destructor ends the thread (signals after that stay
// blocked and pending until meshctl exits).
class SignalThread {
 public:
  explicit SignalThread(std::function<void(const std::string&)> on_signal)
      : thread_([this, on_signal = std::move(on_signal)] {
          for (;;) {
            const std::string name = signals_.Wait();
            if (name.empty()) return;
            on_signal(name);
          }
        }) {}
  ~SignalThread() {
    signals_.Wake();
    thread_.join();
  }
  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;

 private:
  StopSignals signals_;
  std::thread thread_;
};

// The flag checks that need nothing started: a usage error naming the flag.
absl::Status CheckFlags(CLI::App* up, UpFlags& flags) {
  if (flags.token_file.empty()) {
    return Usage(
        "'meshctl slurm up' needs --token-file FILE (after 'slurm up'): the "
        "new file to write the hosts' admin token to, for "
        "HOSTMESH_TOKEN_FILE=FILE");
  }
  if (flags.slurm.nodes < 1) {
    return Usage(absl::StrCat("--nodes ", flags.slurm.nodes,
                              ": a host mesh needs at least one node"));
  }
  if (flags.slurm.tasks_per_node < 1) {
    return Usage(absl::StrCat("--tasks-per-node ", flags.slurm.tasks_per_node,
                              ": each node needs at least one host"));
  }
  if (flags.time_minutes < 0) {
    return Usage(absl::StrCat("--time ", flags.time_minutes,
                              ": minutes, from 1 (0: the partition's limit)"));
  }
  if (flags.slurm.job_name.empty()) return Usage("--job-name: empty");
  if (flags.slurm.listen.empty()) return Usage("--listen: empty");
  if (flags.slurm.node_dir.empty() || flags.slurm.node_dir.front() != '/') {
    return Usage(absl::StrCat("--node-dir \"", flags.slurm.node_dir,
                              "\": give an absolute path (on every node)"));
  }
  if (!flags.hostd.empty()) {
    if (access(flags.hostd.c_str(), X_OK) != 0 ||
        std::filesystem::is_directory(flags.hostd)) {
      return Usage(absl::StrCat("--hostd \"", flags.hostd,
                                "\": not an executable file"));
    }
    // srun runs it on the nodes, perhaps from another directory.
    flags.hostd = std::filesystem::absolute(flags.hostd).string();
  }
  // An existing job: its own nodes; the flags of a new one do not apply.
  std::string job_from;
  if (!flags.slurm.job_id.empty()) {
    job_from = absl::StrCat("job ", flags.slurm.job_id, " (--job-id)");
  } else if (const char* own = std::getenv("SLURM_JOB_ID");
             own != nullptr && *own != '\0') {
    job_from = absl::StrCat("job ", own, " ($SLURM_JOB_ID)");
  }
  if (!job_from.empty()) {
    std::vector<std::string> given;
    for (const char* name : kAllocationFlags) {
      if (up->get_option(name)->count() > 0) given.push_back(name);
    }
    if (!given.empty()) {
      return Usage(absl::StrCat(
          absl::StrJoin(given, ", "), given.size() == 1 ? " shapes" : " shape",
          " a new allocation, but the hosts go on every node of ", job_from,
          ": drop ", given.size() == 1 ? "it" : "them",
          " (or unset SLURM_JOB_ID for a new allocation)"));
    }
  }
  return absl::OkStatus();
}

absl::Status Up(Cli& cli, CLI::App* up, UpFlags& flags) {
  RETURN_IF_ERROR(CheckFlags(up, flags));
  absl::StatusOr<absl::Duration> timeout = ParseDuration(flags.timeout);
  if (!timeout.ok()) return UsageError(timeout.status());
  ASSIGN_OR_RETURN(std::unique_ptr<TokenFile> token_file,
                   TokenFile::Create(flags.token_file));

  // Before any thread starts (the client's): every later thread inherits
  // the mask, so only the signal thread takes SIGINT and SIGTERM.
  StopSignals::Block();
  auto session = std::make_shared<Session>(cli.err());
  SignalThread signals(
      [session](const std::string& name) { session->OnSignal(name); });

  // The client's own INFO lines (the launcher's) are not an operator's.
  FLAGS_minloglevel = std::max(FLAGS_minloglevel, 1);
  Client::Options client_options;
  // The hosts started here are reached with their own token; nothing from
  // HOSTMESH_TOKEN_FILE and the like.
  client_options.credentials = ClientCredentials();
  client_options.forward_proc_output = false;
  client_options.on_host_event = [session](const HostEvent& event) {
    session->OnHostEvent(event);
  };
  ASSIGN_OR_RETURN(std::shared_ptr<Client> client,
                   Client::Create(std::move(client_options)));

  SlurmOptions slurm = flags.slurm;
  slurm.time_limit = absl::Minutes(flags.time_minutes);
  HostMesh::Options options;
  options.client = client;
  options.hostd_path = flags.hostd;
  options.hostd_args = flags.hostd_args;
  options.timeout = *timeout;

  std::unique_ptr<Progress> progress = cli.NewProgress();
  progress->Show(flags.slurm.job_id.empty() &&
                         std::getenv("SLURM_JOB_ID") == nullptr
                     ? "asking Slurm for an allocation, then starting the "
                       "hosts with srun ..."
                     : "starting the hosts with srun ...");
  absl::StatusOr<HostMesh> mesh = HostMesh::Slurm(slurm, options);
  progress->Done();
  if (!mesh.ok()) {
    return Annotate(mesh.status(), "cannot bring up hosts on Slurm");
  }

  std::vector<std::string> names;
  for (size_t i = 0; i < mesh->num_hosts(); ++i) {
    names.push_back(absl::StrCat("host_", i, " (", mesh->addresses()[i],
                                 " on node ", mesh->nodes()[i], ")"));
  }
  session->Up(mesh->addresses(), names);
  const std::string token =
      client->CredentialsFor(mesh->addresses().front()).token;
  absl::Status ready =
      token.empty() ? absl::InternalError("the hosts' admin token is not known")
                    : token_file->Write(token);

  std::string signal = session->signal();
  const bool stopped_early = !signal.empty();
  if (ready.ok() && !stopped_early) {
    std::ostream& out = cli.out();
    for (size_t i = 0; i < mesh->num_hosts(); ++i) {
      out << "host_" << i << " " << mesh->addresses()[i] << " "
          << mesh->nodes()[i] << "\n";
    }
    out << "job " << mesh->slurm_job() << "\n"
        << "ready" << std::endl;
    signal = session->Wait();
  }

  // Every proc, then the hostds, then an allocation made here.
  session->Stopping();
  progress->Show(absl::StrCat("stopping ", mesh->num_hosts(), " hosts of job ",
                              mesh->slurm_job(), " ..."));
  absl::Status shutdown = mesh->Shutdown();
  progress->Done();
  token_file.reset();
  absl::Status failed = ready;
  if (failed.ok() && stopped_early) {
    failed = absl::CancelledError(
        absl::StrCat("stopped by ", signal,
                     " while the hosts started; they are stopped again (and an "
                     "allocation made here released)"));
  } else if (failed.ok() && signal.empty()) {
    failed = absl::UnavailableError(
        absl::StrCat("every host of Slurm job ", mesh->slurm_job(),
                     " was lost: ", session->Lost()));
  }
  if (failed.ok()) return shutdown;
  // Exit 1; what the shutdown then could not do (e.g. reach hosts gone
  // already) is a second line.
  cli.Fail(failed);
  if (!shutdown.ok()) cli.Fail(Annotate(shutdown, "stopping what was left"));
  return absl::OkStatus();
}

}  // namespace

void AddSlurmCommands(Cli& cli) {
  CLI::App* slurm = cli.Group("slurm", "host meshes on Slurm allocations");
  auto flags = std::make_shared<UpFlags>();
  auto up_ptr = std::make_shared<CLI::App*>(nullptr);
  CLI::App* up = cli.Verb(
      slurm, "up",
      "Bring up one hostd per Slurm task (srun) on an allocation, made here "
      "(salloc; released at the end) or an existing one, for as long as "
      "meshctl runs: other clients attach with HOSTMESH_TOKEN_FILE=FILE. "
      "Prints one line per host \"host_<rank> <address> <node>\", then "
      "\"job <id>\" and \"ready\"; runs until SIGINT/SIGTERM (exit 0) or "
      "until every host is lost (exit 1); then stops every proc and hostd, "
      "releases the allocation if it made it and removes FILE",
      "meshctl slurm up --nodes 2 --time 120 --token-file ~/mesh.token\n"
      "HOSTMESH_TOKEN_FILE=~/mesh.token meshctl --hosts ADDR1,ADDR2 host list",
      [&cli, flags, up_ptr] { return Up(cli, *up_ptr, *flags); });
  *up_ptr = up;
  cli.NoHosts(up);
  up->add_option("--job-id", flags->slurm.job_id,
                 "the allocation to use (default: $SLURM_JOB_ID, else a new "
                 "one made with salloc and released at the end)")
      ->type_name("ID");
  up->add_option("--nodes", flags->slurm.nodes,
                 "a new allocation: this many nodes")
      ->type_name("N")
      ->capture_default_str();
  up->add_option("--tasks-per-node", flags->slurm.tasks_per_node,
                 "hostds per node (Slurm tasks)")
      ->type_name("N")
      ->capture_default_str();
  up->add_option("--partition", flags->slurm.partition,
                 "a new allocation: its partition (default: the cluster's)");
  up->add_option("--time", flags->time_minutes,
                 "a new allocation: its time limit in minutes (0: the "
                 "partition's)")
      ->type_name("MINUTES")
      ->capture_default_str();
  up->add_option("--job-name", flags->slurm.job_name,
                 "a new allocation: its name")
      ->capture_default_str();
  // One value per flag, so that --salloc-arg=--exclusive passes a dash.
  up->add_option("--salloc-arg", flags->slurm.salloc_args,
                 "a new allocation: a further salloc flag, as given "
                 "(repeatable; --salloc-arg=--account=ml)")
      ->allow_extra_args(false)
      ->type_name("ARG");
  up->add_option("--listen", flags->slurm.listen,
                 "each hostd's --listen; across nodes an address clients "
                 "can reach (and TLS flags with --hostd-arg)")
      ->type_name("HOST:PORT")
      ->capture_default_str();
  up->add_option("--node-dir", flags->slurm.node_dir,
                 "where each hostd keeps its state on its node: "
                 "DIR/hostmesh-<job>-<id>/host_<rank>")
      ->type_name("DIR")
      ->capture_default_str();
  up->add_option("--hostd", flags->hostd,
                 "the hostd binary, at this path on every node (default: "
                 "$HOSTMESH_HOSTD, beside meshctl, then $PATH)")
      ->type_name("PATH");
  up->add_option("--hostd-arg", flags->hostd_args,
                 "a further hostd flag (repeatable; "
                 "--hostd-arg=--procd=/opt/procd)")
      ->allow_extra_args(false)
      ->type_name("ARG");
  // Shadows the global --token-file: here it is the file written.
  up->add_option("--token-file", flags->token_file,
                 "required: the new file (mode 0600; an existing one is "
                 "refused) to write the hosts' admin token to, removed at "
                 "the end; clients attach with HOSTMESH_TOKEN_FILE=FILE")
      ->type_name("FILE");
  // Shadows the global --timeout.
  up->add_option("--timeout", flags->timeout,
                 "how long salloc may wait for the nodes, and each host to "
                 "start")
      ->check(DurationValidator())
      ->type_name("DURATION")
      ->capture_default_str();
}

}  // namespace mesh::meshctl
