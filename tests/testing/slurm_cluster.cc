#include "tests/testing/slurm_cluster.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "lib/process/cgroup.h"
#include "lib/process/process_identity.h"
#include "lib/slurm/slurm.h"

extern char** environ;

namespace mesh::testing {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::ErrnoToStatus(errno, what);
}

// Environment variables a Slurm client or daemon of this cluster must not
// inherit from the test: those naming another job or cluster.
bool IsSlurmInput(absl::string_view name) {
  for (absl::string_view prefix : {"SLURM_", "SBATCH_", "SALLOC_", "SRUN_"}) {
    if (absl::StartsWith(name, prefix)) return true;
  }
  return false;
}

bool IsServiceManagerVar(absl::string_view name) {
  return std::find(kServiceManagerEnv.begin(), kServiceManagerEnv.end(),
                   name) != kServiceManagerEnv.end();
}

std::string EnvName(const char* entry) {
  const char* equals = std::strchr(entry, '=');
  return equals == nullptr ? std::string(entry)
                           : std::string(entry, equals - entry);
}

bool ProcessAlive(pid_t pid) {
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  return stat.ok() && stat->state != 'Z' && stat->state != 'X';
}

std::string Tail(const std::string& text, size_t bytes) {
  return text.size() <= bytes ? text : text.substr(text.size() - bytes);
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status WriteWholeFile(const std::string& path, const std::string& text,
                            mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Errno("open " + path);
  absl::Cleanup closer = [fd] { close(fd); };
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("write " + path);
    done += n;
  }
  if (fchmod(fd, mode) != 0) return Errno("chmod " + path);
  return absl::OkStatus();
}

// Two distinct ports that were free on 127.0.0.1 a moment ago.
absl::Status PickPorts(int* first, int* second) {
  int fds[2] = {-1, -1};
  absl::Cleanup closer = [&fds] {
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
  };
  int* ports[2] = {first, second};
  for (int i = 0; i < 2; ++i) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[i] < 0) return Errno("socket");
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (bind(fds[i], reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
        0) {
      return Errno("bind 127.0.0.1:0");
    }
    socklen_t length = sizeof(address);
    if (getsockname(fds[i], reinterpret_cast<sockaddr*>(&address), &length) !=
        0) {
      return Errno("getsockname");
    }
    *ports[i] = ntohs(address.sin_port);
  }
  return absl::OkStatus();
}

// pidfd_open / pidfd_send_signal (glibc 2.36 has no wrappers in every
// build).
int PidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}
int PidfdSignal(int pidfd, int sig) {
  return static_cast<int>(
      syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

std::vector<pid_t> AllPids() {
  std::vector<pid_t> pids;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return pids;
  while (dirent* entry = readdir(dir)) {
    pid_t pid = 0;
    if (absl::SimpleAtoi(entry->d_name, &pid)) pids.push_back(pid);
  }
  closedir(dir);
  return pids;
}

// Live processes of the sessions `sessions` (this process left out).
std::vector<pid_t> LiveInSessions(const std::vector<pid_t>& sessions) {
  if (sessions.empty()) return {};
  std::set<pid_t> wanted(sessions.begin(), sessions.end());
  std::vector<pid_t> found;
  for (pid_t pid : AllPids()) {
    if (pid == getpid()) continue;
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
    if (stat.ok() && stat->state != 'Z' && stat->state != 'X' &&
        wanted.count(stat->session) > 0) {
      found.push_back(pid);
    }
  }
  return found;
}

constexpr char kMarker[] = "HOSTMESH_SLURM_CLUSTER";

// True if `pid`'s environment holds the entry `entry` ("K=V").
bool HasEnvEntry(pid_t pid, const std::string& entry) {
  std::string environ_text =
      ReadWholeFile(absl::StrCat("/proc/", pid, "/environ"));
  for (absl::string_view item : absl::StrSplit(environ_text, '\0')) {
    if (item == entry) return true;
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------
// SlurmCluster

struct SlurmCluster::DaemonExit {
  absl::Notification done;
  ExitInfo info;  // Written before done is notified.
};

std::vector<std::string> SlurmCluster::Env() const {
  return {"SLURM_CONF=" + conf_path_};
}

std::vector<std::string> SlurmCluster::ClientEnvironment() const {
  std::vector<std::string> env = CurrentEnvironment([](absl::string_view name) {
    return IsSlurmInput(name) || IsServiceManagerVar(name);
  });
  for (std::string& entry : Env()) env.push_back(std::move(entry));
  env.push_back(absl::StrCat(kMarker, "=", dir()));
  return env;
}

absl::StatusOr<std::unique_ptr<PipedProcess>> SlurmCluster::Spawn(
    std::vector<std::string> argv) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  std::string path = FindProgram(argv[0]);
  if (path.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(argv[0], " is not installed"));
  }
  argv[0] = path;
  // Clients run in the temp dir: sbatch's slurm-<job>.out lands there.
  return PipedProcess::Start(argv, ClientEnvironment(), dir());
}

absl::StatusOr<RunResult> SlurmCluster::Run(std::vector<std::string> argv,
                                            const std::string& input,
                                            absl::Duration timeout) {
  // Clients run in the temp dir: sbatch's slurm-<job>.out lands there.
  return RunCommand(std::move(argv), ClientEnvironment(), timeout, input,
                    dir());
}

absl::StatusOr<std::unique_ptr<SlurmCluster>> SlurmCluster::Start(
    Options options) {
  std::unique_ptr<SlurmCluster> cluster(new SlurmCluster(std::move(options)));
  absl::Status started = cluster->StartAll();
  if (!started.ok()) {
    std::string logs = cluster->DaemonLogs();
    cluster->Stop().IgnoreError();
    return absl::Status(
        started.code(),
        absl::StrCat("slurm cluster did not start: ", started.message(), logs));
  }
  return cluster;
}

SlurmCluster::~SlurmCluster() {
  absl::Status stopped = Stop();
  if (!stopped.ok()) {
    fprintf(stderr, "SlurmCluster: %s\n",
            std::string(stopped.message()).c_str());
  }
}

absl::Status SlurmCluster::StartAll() {
  for (const char* program :
       {"munged", "slurmctld", "slurmd", "slurmstepd", "sinfo", "srun",
        "sbatch", "squeue", "scancel", "scontrol"}) {
    if (FindProgram(program).empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          program,
          " is not installed (deploy/install-deps.sh installs munge, "
          "slurmctld, slurmd and slurm-client)"));
    }
  }
  // munged wants every user to be able to reach its socket's directory.
  if (chmod(dir().c_str(), 0711) != 0) return Errno("chmod " + dir());
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) return Errno("gethostname");
  node_name_ = std::string(host).substr(0, std::string(host).find('.'));
  if (node_name_.empty()) node_name_ = "localhost";
  for (const char* sub : {"state", "spool", "log", "run"}) {
    std::string path = absl::StrCat(dir(), "/", sub);
    if (mkdir(path.c_str(), 0700) != 0) return Errno("mkdir " + path);
  }
  conf_path_ = dir() + "/slurm.conf";
  munge_socket_ = dir() + "/run/munge.socket";
  key_path_ = dir() + "/munge.key";
  if (chmod((dir() + "/run").c_str(), 0755) != 0) return Errno("chmod run");
  if (absl::Status key = WriteMungeKey(); !key.ok()) return key;

  absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
      ProcessSupervisor::Create();
  if (!supervisor.ok()) return supervisor.status();
  supervisor_ = *std::move(supervisor);

  if (options_.cgroups && geteuid() == 0) {
    absl::StatusOr<CgroupRoot> root = CgroupRoot::Find();
    static std::atomic<int> counter = 0;
    absl::StatusOr<std::string> subtree =
        root.ok() ? root->Create(absl::StrCat("hostmesh-slurm-", getpid(), "-",
                                              counter++))
                  : absl::StatusOr<std::string>(root.status());
    if (subtree.ok()) {
      cgroup_dir_ = *subtree;
    } else {
      fprintf(stderr,
              "SlurmCluster: no cgroup for the daemons (%s); tracking job "
              "steps by session and marker\n",
              std::string(subtree.status().message()).c_str());
    }
  }

  if (absl::Status started = StartDaemon(
          munged_, "munged",
          {"-F", "--socket=" + munge_socket_, "--key-file=" + key_path_,
           "--pid-file=" + dir() + "/run/munged.pid",
           "--log-file=" + dir() + "/log/munged.log",
           "--seed-file=" + dir() + "/state/munged.seed"});
      !started.ok()) {
    return started;
  }
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (access(munge_socket_.c_str(), F_OK) != 0) {
    if (DaemonExited(munged_)) {
      return absl::FailedPreconditionError("munged exited at start");
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("munged made no socket within 10s");
    }
    absl::SleepFor(absl::Milliseconds(10));
  }

  if (absl::Status ports = PickPorts(&ctld_port_, &slurmd_port_); !ports.ok()) {
    return ports;
  }
  if (absl::Status conf = WriteConf(); !conf.ok()) return conf;
  if (absl::Status started =
          StartDaemon(slurmctld_, "slurmctld", {"-D", "-f", conf_path_});
      !started.ok()) {
    return started;
  }
  if (absl::Status started = StartDaemon(
          slurmd_, "slurmd", {"-D", "-N", node_name_, "-f", conf_path_});
      !started.ok()) {
    return started;
  }
  return WaitNodeIdle();
}

absl::Status SlurmCluster::WriteMungeKey() {
  std::string key(1024, '\0');
  size_t done = 0;
  while (done < key.size()) {
    ssize_t n = getrandom(key.data() + done, key.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("getrandom");
    done += n;
  }
  // Created by this process: owned by the running user, as munged wants.
  return WriteWholeFile(key_path_, key, 0400);
}

absl::Status SlurmCluster::WriteConf() {
  const std::string& d = dir();
  const passwd* entry = getpwuid(geteuid());
  std::string user = entry != nullptr ? entry->pw_name : "root";
  std::vector<std::string> lines = {
      "# A one-node cluster for one test (tests/testing/slurm_cluster.h).",
      "ClusterName=hostmesh-test",
      "SlurmctldHost=localhost(127.0.0.1)",
      absl::StrCat("SlurmctldPort=", ctld_port_),
      absl::StrCat("SlurmdPort=", slurmd_port_),
      // Listen on 127.0.0.1 only (SlurmctldHost's and NodeAddr's address),
      // not on every address of the machine.
      "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
      // The running user (root here: slurmd runs jobs as their submitter).
      "SlurmUser=" + user,
      "SlurmdUser=" + user,
      "AuthType=auth/munge",
      "AuthInfo=socket=" + munge_socket_,
      "CredType=cred/munge",
      "StateSaveLocation=" + d + "/state",
      "SlurmdSpoolDir=" + d + "/spool",
      "SlurmctldPidFile=" + d + "/run/slurmctld.pid",
      "SlurmdPidFile=" + d + "/run/slurmd.pid",
      "SlurmctldLogFile=" + d + "/log/slurmctld.log",
      "SlurmdLogFile=" + d + "/log/slurmd.log",
      "PlugStackConfig=" + d + "/plugstack.conf",
      "MailProg=/bin/true",
      // Steps are tracked by their process tree, not by process group:
      // procs in their own process groups would escape proctrack/pgid.
      "ProctrackType=proctrack/linuxproc",
      "TaskPlugin=task/none",
      "MpiDefault=none",
      "SwitchType=switch/none",
      "SelectType=select/cons_tres",
      "SelectTypeParameters=CR_Core",
      "JobAcctGatherType=jobacct_gather/none",
      "AccountingStorageType=accounting_storage/none",
      "JobCompType=jobcomp/none",
      "ReturnToService=2",
      // SIGTERM to SIGKILL of a cancelled job's tasks: tests stay fast.
      "KillWait=2",
      "InactiveLimit=0",
      "SlurmdParameters=config_overrides",
      absl::StrCat("NodeName=", node_name_, " NodeAddr=127.0.0.1 CPUs=",
                   options_.cpus, " State=UNKNOWN"),
      absl::StrCat("PartitionName=debug Nodes=", node_name_,
                   " Default=YES MaxTime=INFINITE State=UP"),
  };
  for (const std::string& extra : options_.extra_conf) lines.push_back(extra);
  if (absl::Status plugstack = WriteWholeFile(d + "/plugstack.conf", "", 0644);
      !plugstack.ok()) {
    return plugstack;
  }
  return WriteWholeFile(conf_path_, absl::StrJoin(lines, "\n") + "\n", 0644);
}

absl::Status SlurmCluster::StartDaemon(Daemon& daemon,
                                       const std::string& program,
                                       std::vector<std::string> args) {
  SpawnOptions spawn;
  // Through setpriv --pdeathsig: should this test process die without its
  // destructors (a Bazel timeout), the daemons die with it instead of
  // lingering. setpriv execs the daemon: the pid is the daemon's.
  std::string setpriv = FindProgram("setpriv");
  if (setpriv.empty()) {
    spawn.path = FindProgram(program);
  } else {
    spawn.path = setpriv;
    spawn.args = {"--pdeathsig=KILL", FindProgram(program)};
  }
  spawn.args.insert(spawn.args.end(), args.begin(), args.end());
  spawn.env["SLURM_CONF"] = conf_path_;
  spawn.env[kMarker] = dir();
  spawn.unset_env = kServiceManagerEnv;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string name = EnvName(*entry);
    if (IsSlurmInput(name) && name != "SLURM_CONF") {
      spawn.unset_env.push_back(name);
    }
  }
  spawn.log_dir = absl::StrCat(dir(), "/log/", daemon.name);
  if (!cgroup_dir_.empty()) {
    spawn.cgroup_parent = cgroup_dir_;
    spawn.cgroup_name = daemon.name;
  }
  auto exit = std::make_shared<DaemonExit>();
  absl::StatusOr<pid_t> pid =
      supervisor_->Spawn(spawn, [exit](const ExitInfo& info) {
        exit->info = info;
        exit->done.Notify();
      });
  if (!pid.ok()) {
    return absl::Status(pid.status().code(),
                        absl::StrCat("cannot start ", daemon.name, ": ",
                                     pid.status().message()));
  }
  daemon.pid = *pid;
  daemon.exit = std::move(exit);
  return absl::OkStatus();
}

bool SlurmCluster::DaemonExited(const Daemon& daemon) const {
  return daemon.exit != nullptr && daemon.exit->done.HasBeenNotified();
}

absl::Status SlurmCluster::WaitNodeIdle() {
  absl::Time deadline = absl::Now() + options_.start_timeout;
  std::string last;
  for (;;) {
    for (const Daemon* daemon : {&munged_, &slurmctld_, &slurmd_}) {
      if (DaemonExited(*daemon)) {
        const ExitInfo& info = daemon->exit->info;
        return absl::FailedPreconditionError(absl::StrCat(
            daemon->name, " exited before the node was up (",
            info.exit_code.has_value()
                ? absl::StrCat("exit ", *info.exit_code)
                : absl::StrCat("signal ", info.term_signal.value_or(0)),
            ")"));
      }
    }
    absl::StatusOr<RunResult> sinfo =
        Run({"sinfo", "-h", "-N", "-n", node_name_, "-o", "%t"}, "",
            absl::Seconds(10));
    if (sinfo.ok()) {
      last = sinfo->Describe();
      if (sinfo->ok() && absl::StripAsciiWhitespace(sinfo->out) == "idle") {
        return absl::OkStatus();
      }
    } else {
      last = sinfo.status().ToString();
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("node ", node_name_, " not idle in sinfo within ",
                       absl::FormatDuration(options_.start_timeout),
                       " (last sinfo: ", last, ")"));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

absl::StatusOr<std::string> SlurmCluster::Allocate(
    int tasks, const std::string& job_name) {
  absl::StatusOr<RunResult> salloc =
      Run({"salloc", "--no-shell", "-N1", absl::StrCat("-n", tasks),
           absl::StrCat("--job-name=", job_name)});
  if (!salloc.ok()) return salloc.status();
  if (!salloc->ok()) {
    return absl::UnavailableError(
        absl::StrCat("salloc failed: ", salloc->Describe()));
  }
  absl::StatusOr<std::string> job = GrantedJobId(salloc->err);
  if (!job.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "salloc granted no allocation it named: ", salloc->Describe()));
  }
  return job;
}

absl::Status SlurmCluster::CancelAllJobs(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  bool cancelled = false;
  for (;;) {
    absl::StatusOr<RunResult> squeue =
        Run({"squeue", "-h", "-o", "%i"}, "", absl::Seconds(10));
    if (!squeue.ok()) return squeue.status();
    if (!squeue->ok()) {
      return absl::UnavailableError("squeue failed: " + squeue->Describe());
    }
    std::vector<std::string> jobs =
        absl::StrSplit(squeue->out, absl::ByAnyChar(" \n"), absl::SkipEmpty());
    if (jobs.empty()) return absl::OkStatus();
    if (!cancelled) {
      std::vector<std::string> argv = {"scancel"};
      argv.insert(argv.end(), jobs.begin(), jobs.end());
      absl::StatusOr<RunResult> scancel = Run(argv, "", absl::Seconds(10));
      if (!scancel.ok()) return scancel.status();
      cancelled = true;
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "jobs still in the queue after ", absl::FormatDuration(timeout), ": ",
          absl::StrJoin(jobs, " ")));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

void SlurmCluster::RecordStepSessions() {
  absl::StatusOr<RunResult> listpids =
      Run({"scontrol", "listpids"}, "", absl::Seconds(10));
  if (!listpids.ok() || !listpids->ok()) return;
  for (absl::string_view line : absl::StrSplit(listpids->out, '\n')) {
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    pid_t pid = 0;
    if (fields.empty() || !absl::SimpleAtoi(fields[0], &pid)) continue;
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
    if (stat.ok() && stat->session > 1 &&
        std::find(step_sessions_.begin(), step_sessions_.end(),
                  stat->session) == step_sessions_.end()) {
      step_sessions_.push_back(stat->session);
    }
  }
}

std::vector<pid_t> SlurmCluster::Leftovers() const {
  std::set<pid_t> found;
  for (pid_t pid : LiveInSessions(step_sessions_)) found.insert(pid);
  std::string marker = absl::StrCat(kMarker, "=", dir());
  for (pid_t pid : AllPids()) {
    if (pid != getpid() && ProcessAlive(pid) && HasEnvEntry(pid, marker)) {
      found.insert(pid);
    }
  }
  return {found.begin(), found.end()};
}

void SlurmCluster::KillLeftovers() {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  std::set<pid_t> sessions(step_sessions_.begin(), step_sessions_.end());
  std::string marker = absl::StrCat(kMarker, "=", dir());
  while (absl::Now() < deadline) {
    std::vector<pid_t> left = Leftovers();
    if (left.empty()) return;
    for (pid_t pid : left) {
      int pidfd = PidfdOpen(pid);
      if (pidfd < 0) continue;
      // Still one of them once the pidfd holds it: never a reused pid.
      absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
      if (stat.ok() &&
          (sessions.count(stat->session) > 0 || HasEnvEntry(pid, marker))) {
        PidfdSignal(pidfd, SIGKILL);
      }
      close(pidfd);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

std::vector<pid_t> SlurmCluster::LivePids() const {
  std::set<pid_t> pids;
  for (const Daemon* daemon : {&munged_, &slurmctld_, &slurmd_}) {
    if (daemon->pid > 0 && !DaemonExited(*daemon) &&
        ProcessAlive(daemon->pid)) {
      pids.insert(daemon->pid);
    }
  }
  if (!cgroup_dir_.empty()) {
    absl::StatusOr<ProcCgroup> subtree = ProcCgroup::Open(cgroup_dir_);
    if (subtree.ok()) {
      absl::StatusOr<std::vector<pid_t>> procs = subtree->Procs();
      if (procs.ok()) {
        for (pid_t pid : *procs) {
          if (ProcessAlive(pid)) pids.insert(pid);
        }
      }
    }
  }
  if (cgroup_dir_.empty()) {
    for (pid_t pid : Leftovers()) pids.insert(pid);
  }
  return {pids.begin(), pids.end()};
}

std::string SlurmCluster::DaemonLogs() const {
  std::string logs;
  for (const Daemon* daemon : {&munged_, &slurmctld_, &slurmd_}) {
    std::string stderr_tail = ReadWholeFile(
        absl::StrCat(dir(), "/log/", daemon->name, "/stderr.log"));
    std::string log_file =
        ReadWholeFile(absl::StrCat(dir(), "/log/", daemon->name, ".log"));
    if (stderr_tail.empty() && log_file.empty()) continue;
    absl::StrAppend(&logs, "\n--- ", daemon->name, " stderr:\n",
                    Tail(stderr_tail, 1500));
    if (!log_file.empty()) {
      absl::StrAppend(&logs, "\n--- ", daemon->name, ".log:\n",
                      Tail(log_file, 1500));
    }
  }
  return logs;
}

void SlurmCluster::StopDaemon(Daemon& daemon, absl::Duration grace) {
  if (daemon.pid <= 0 || daemon.exit == nullptr) return;
  if (!daemon.exit->done.HasBeenNotified()) {
    supervisor_->SignalGroup(daemon.pid, SIGTERM).IgnoreError();
    if (!daemon.exit->done.WaitForNotificationWithTimeout(grace)) {
      supervisor_->SignalGroup(daemon.pid, SIGKILL).IgnoreError();
      // The supervisor reports it once its leaf is empty too.
      daemon.exit->done.WaitForNotificationWithTimeout(absl::Seconds(20));
    }
  }
  daemon.pid = 0;
}

absl::Status SlurmCluster::Stop() {
  if (stopped_) return stop_status_;
  stopped_ = true;
  std::vector<std::string> problems;
  if (supervisor_ != nullptr) {
    bool controller_up = slurmctld_.pid > 0 && !DaemonExited(slurmctld_);
    bool node_up = slurmd_.pid > 0 && !DaemonExited(slurmd_);
    if (controller_up && node_up) {
      absl::Status cancelled = CancelAllJobs(absl::Seconds(10));
      if (!cancelled.ok()) problems.push_back(std::string(cancelled.message()));
    }
    if (cgroup_dir_.empty() && node_up) RecordStepSessions();
    // slurmd first: with cgroups its leaf holds every slurmstepd and task,
    // and the supervisor reports it only once that leaf is empty.
    StopDaemon(slurmd_, absl::Seconds(3));
    StopDaemon(slurmctld_, absl::Seconds(5));
    if (cgroup_dir_.empty()) KillLeftovers();
    StopDaemon(munged_, absl::Seconds(3));
    std::vector<pid_t> left = LivePids();
    if (!left.empty()) {
      problems.push_back(
          absl::StrCat("left running after the daemons stopped: ",
                       absl::StrJoin(left, " ")));
    }
    supervisor_.reset();  // SIGKILLs and reaps anything it still tracks.
  }
  if (!cgroup_dir_.empty()) {
    absl::StatusOr<ProcCgroup> subtree = ProcCgroup::Open(cgroup_dir_);
    if (subtree.ok()) {
      if (!LivePids().empty()) subtree->Kill().IgnoreError();
      absl::Status removed = subtree->Remove();
      if (!removed.ok()) problems.push_back(std::string(removed.message()));
    }
  }
  if (!problems.empty()) {
    stop_status_ = absl::InternalError(absl::StrJoin(problems, "; "));
  }
  return stop_status_;
}

}  // namespace mesh::testing
