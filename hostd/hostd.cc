#include "hostd/hostd.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "hostd/audit.h"
#include "hostd/command_policy.h"
#include "hostd/dir_lock.h"
#include "hostd/flags.h"
#include "hostd/health.h"
#include "hostd/host_metrics.h"
#include "hostd/host_service.h"
#include "hostd/metrics_http.h"
#include "hostd/missed_ends.h"
#include "hostd/notify.h"
#include "hostd/owner_leases.h"
#include "hostd/peer_hosts.h"
#include "hostd/proc_channels.h"
#include "hostd/proc_logs.h"
#include "hostd/proc_manager.h"
#include "hostd/proc_service.h"
#include "hostd/relay_service.h"
#include "hostd/reload.h"
#include "hostd/router.h"
#include "hostd/sender_claims.h"
#include "lib/auth/credentials.h"
#include "lib/auth/server_auth.h"
#include "lib/auth/sha256.h"
#include "lib/bootstrap/parent_channel.h"
#include "lib/mailbox/mailbox.h"
#include "lib/net/address.h"
#include "lib/net/host_port.h"
#include "lib/process/cgroup.h"
#include "lib/process/signals.h"
#include "lib/process/supervisor.h"
#include "lib/store/durable_file.h"
#include "proto/actors.pb.h"

namespace mesh {
namespace {

// procd beside this binary (installed layout) or in Bazel's output tree.
std::string DefaultProcdPath() {
  std::error_code error;
  std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "procd";
  std::filesystem::path dir = self.parent_path();
  for (const auto& candidate :
       {dir / "procd", dir / ".." / "procd" / "procd"}) {
    if (access(candidate.c_str(), X_OK) == 0) {
      return std::filesystem::weakly_canonical(candidate).string();
    }
  }
  return (dir / "procd").string();
}

// Where the same user's tools find an admin token for this hostd.
std::string AdminTokenPath(const std::string& runtime_dir) {
  return (std::filesystem::path(runtime_dir) / "admin.token").string();
}

// Writes `token` to <runtime_dir>/admin.token, mode 0600, replacing the file
// of an earlier hostd atomically (the runtime dir is locked by now).
absl::Status WriteAdminTokenFile(const std::string& runtime_dir,
                                 const std::string& token) {
  const std::string path = AdminTokenPath(runtime_dir);
  const std::string temp = path + ".tmp";
  unlink(temp.c_str());
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", temp));
  }
  std::string line = token + "\n";
  bool written =
      write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  close(fd);
  if (!written || rename(temp.c_str(), path.c_str()) != 0) {
    unlink(temp.c_str());
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

// --test-crash-at (tests only): SIGKILLs hostd itself the n-th time a proc
// table write reaches the point (hostd/flags.h parsed and checked it).
DurableFile::CrashHook CrashHookFromFlag(const std::string& flag) {
  absl::StatusOr<std::optional<TestCrashAt>> crash = ParseTestCrashAt(flag);
  if (!crash.ok() || !crash->has_value()) return nullptr;
  const TestCrashAt at = **crash;
  auto count = std::make_shared<std::atomic<int>>(0);
  return [at, count](CrashPoint point) {
    if (point != at.point || ++*count != at.n) return;
    LOG(WARNING) << "--test-crash-at: killing hostd " << CrashPointName(point)
                 << " of proc table write " << at.n;
    google::FlushLogFiles(google::INFO);
    kill(getpid(), SIGKILL);
  };
}

// Where each proc's cgroup v2 leaf goes (--cgroup, hostd/options.h): a
// directory, "" (none: process groups only) if the flag says "none" or, for
// the automatic default, the machine has no writable cgroup v2.
absl::StatusOr<std::string> ProcCgroupParent(const std::string& flag,
                                             const std::string& state_dir) {
  if (flag == "none") return std::string();
  absl::StatusOr<CgroupRoot> root = CgroupRoot::Find();
  absl::StatusOr<std::string> dir = absl::UnknownError("no cgroup root");
  if (!root.ok()) {
    dir = root.status();
  } else {
    std::error_code error;
    std::string canonical =
        std::filesystem::weakly_canonical(state_dir, error).string();
    if (error) canonical = state_dir;
    // One subtree per state dir (one hostd each): a restarted hostd finds
    // its procs' leaves where it left them.
    dir = root->Create(
        flag.empty()
            ? absl::StrCat(
                  "hostmesh-",
                  absl::BytesToHexString(Sha256(canonical)).substr(0, 16))
            : flag);
  }
  if (!dir.ok() && flag.empty()) {
    LOG(WARNING) << "procs are tracked by process group only (a proc's "
                    "descendants that leave its group escape Stop): no "
                    "cgroup v2 subtree: "
                 << dir.status().message();
    return std::string();
  }
  return dir;
}

}  // namespace

int RunHostd(HostdOptions options) {
  // First, before any key is read or any proc exists: a proc of hostd's uid
  // cannot ptrace hostd or read its memory or environ, and inherits no
  // ambient capability (those stay only for setpriv, with --proc-user).
  absl::Status protect = ProtectFromProcs(!options.proc_user.empty());
  if (!protect.ok()) {
    LOG(ERROR) << "cannot protect hostd from its procs: " << protect;
    return 1;
  }
  // Before any thread starts: SIGTERM/SIGINT (stop), SIGUSR2 (restart) and
  // SIGHUP (reload) go to one thread (below).
  HostSignals::Block();
  // Also before any thread starts: takes the channel to a parent that
  // spawned us (unsetting its variable; the fd becomes close-on-exec), or
  // with --parent=stdio our stdin and stdout (moved to private fds; fd 1
  // becomes stderr before anything is printed).
  absl::StatusOr<std::optional<ParentChannel::Inherited>> bootstrap =
      options.parent == kParentStdio
          ? absl::StatusOr<std::optional<ParentChannel::Inherited>>(
                ParentChannel::ReadFromStdio())
          : ParentChannel::ReadFromEnv();
  if (!bootstrap.ok()) {
    LOG(ERROR) << "bad bootstrap info: " << bootstrap.status();
    return 1;
  }

  // Reducers read reply fields by reflection from the types linked into
  // hostd: the built-in actors' messages (referenced so they are linked).
  (void)v1::Count::descriptor();
  if (options.procd_path.empty()) options.procd_path = DefaultProcdPath();
  // What callers may run, and as whom (hostd/command_policy.h).
  // (SIGHUP makes them again from the config: hostd/reload.h.)
  absl::StatusOr<CommandPolicy> policy =
      CommandPolicy::Create(PolicyOptionsFor(options));
  if (!policy.ok()) {
    LOG(ERROR) << policy.status().message();
    return 2;
  }
  for (const std::string& warning : policy->Warnings()) {
    LOG(WARNING) << warning;
  }
  std::optional<ProcUser> proc_user;
  if (!options.proc_user.empty()) {
    absl::StatusOr<ProcUser> user = LookUpProcUser(options.proc_user);
    absl::Status can = user.ok() ? CheckCanRunAs(*user) : user.status();
    if (!can.ok()) {
      LOG(ERROR) << can.message();
      return 2;
    }
    proc_user = *std::move(user);
  } else if (geteuid() == 0) {
    LOG(WARNING) << "procs run as root: set --proc-user to run them as an "
                    "unprivileged user";
  }
  std::optional<gid_t> operators_group;
  if (!options.operators_group.empty()) {
    absl::StatusOr<gid_t> group = LookUpOperatorsGroup(options.operators_group);
    if (!group.ok()) {
      LOG(ERROR) << group.status().message();
      return 2;
    }
    operators_group = *group;
  }
  std::error_code error;
  std::filesystem::create_directories(options.state_dir, error);
  if (error) {
    LOG(ERROR) << "cannot create state dir " << options.state_dir << ": "
               << error.message();
    return 1;
  }
  // Proc logs and state: hostd's user (and the operators' group) alone.
  absl::Status state_private =
      MakeStateDirPrivate(options.state_dir, operators_group);
  if (!state_private.ok()) {
    LOG(ERROR) << state_private.message();
    return 1;
  }
  absl::StatusOr<HostPort> listen =
      ParseHostPort(options.listen, "--listen", /*allow_port_zero=*/true);
  if (!listen.ok()) {
    LOG(ERROR) << listen.status().message();
    return 2;
  }
  // Who may call: read every credential file before any proc exists.
  absl::StatusOr<std::unique_ptr<ServerAuth>> auth_or =
      ServerAuth::Create(options.auth, IsLoopbackHost(listen->host));
  if (!auth_or.ok()) {
    std::fprintf(stderr, "hostd: %s\n",
                 std::string(auth_or.status().message()).c_str());
    return 2;
  }
  std::unique_ptr<ServerAuth> auth = *std::move(auth_or);
  // The Prometheus endpoint (README "Metrics"), checked and bound now: a
  // non-loopback --metrics-listen without TLS and a token never starts.
  // It shows little until SetSources (below), and is stopped first at exit.
  std::unique_ptr<HostMetrics> metrics;
  std::unique_ptr<MetricsHttpServer> metrics_http;  // Goes first.
  if (!options.metrics_listen.empty()) {
    metrics = std::make_unique<HostMetrics>(options.state_dir);
    MetricsHttpOptions http_options;
    http_options.listen = options.metrics_listen;
    http_options.tls_cert_file = options.auth.tls_cert_file;
    http_options.tls_key_file = options.auth.tls_key_file;
    http_options.token_file = options.metrics_token_file;
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> started =
        MetricsHttpServer::Start(http_options,
                                 [&metrics] { return metrics->Render(); });
    if (!started.ok()) {
      std::fprintf(stderr, "hostd: %s\n",
                   std::string(started.status().message()).c_str());
      return 2;
    }
    metrics_http = *std::move(started);
    LOG(INFO) << "serving metrics at " << metrics_http->url();
  }
  // Set once the procs of an earlier hostd are taken over: a proc created
  // after that is a spawn.
  std::atomic<bool> procs_recovered{false};

  absl::StatusOr<std::string> advertised = ChooseAdvertisedHost(
      *listen, options.advertise, options.advertise_unchecked);
  if (!advertised.ok()) {
    std::fprintf(stderr, "hostd: %s\n",
                 std::string(advertised.status().message()).c_str());
    return 2;
  }
  const std::string advertise = *advertised;
  // The same user's tools get in with the runtime dir's admin token -- not
  // where it would hand admin to callers of lesser roles: their procs run
  // as hostd's user unless --proc-user is set, and could read the file.
  const bool admin_token_file =
      !options.proc_user.empty() || !auth->admits_others();
  const std::string local_token = NewRandomToken();
  if (admin_token_file) {
    auth->AddToken(kLocalIdentity, Role::kAdmin, local_token);
  } else {
    LOG(WARNING) << "no " << AdminTokenPath(options.runtime_dir)
                 << ": without --proc-user procs run as this user and could "
                    "read it; give operators a token or certificate instead";
  }
  if (bootstrap->has_value()) {
    // A client that started this hostd for itself: its token, and the one
    // its other hosts present.
    const v1::BootstrapInfo& info = (*bootstrap)->info();
    if (!info.admin_token().empty()) {
      auth->AddToken(kParentIdentity, Role::kAdmin, info.admin_token());
    }
    // Its peer token is accepted; presented too, unless --peer-token-file
    // names the one this host presents.
    if (!info.peer_token().empty() && options.auth.peer_token_file.empty()) {
      auth->SetPeerToken(info.peer_token());
    } else if (!info.peer_token().empty()) {
      auth->AddToken(kPeerIdentity, Role::kPeer, info.peer_token());
    }
  }

  // A subreaper: a proc's descendants that leave it are reparented to hostd
  // and reaped (not left to an init that may never reap them).
  absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
      ProcessSupervisor::Create(ProcessSupervisor::Options{.subreaper = true});
  if (!supervisor.ok()) {
    LOG(ERROR) << "cannot start the process supervisor: "
               << supervisor.status();
    return 1;
  }
  std::filesystem::create_directories(options.runtime_dir, error);
  if (error) {
    LOG(ERROR) << "cannot create runtime dir " << options.runtime_dir << ": "
               << error.message();
    return 1;
  }
  // A pre-loaded procd that procs of --procd are forked from (it loads
  // while hostd starts). Without it they are exec'd, as a user's own procd
  // always is.
  std::unique_ptr<ProcessTemplate> proc_template;
  if (options.proc_template) {
    absl::StatusOr<std::unique_ptr<ProcessTemplate>> started =
        ProcessTemplate::Start(options.procd_path, kServiceManagerEnv);
    if (started.ok()) {
      proc_template = *std::move(started);
      LOG(INFO) << "procs of " << options.procd_path
                << " are forked from a pre-loaded template (pid "
                << proc_template->pid() << ")";
    } else {
      LOG(WARNING) << "no proc template (procs are exec'd): "
                   << started.status();
    }
  }
  chmod(options.runtime_dir.c_str(), 0700);
  // One hostd per state dir and per runtime dir (held until exit).
  std::vector<std::unique_ptr<DirLock>> locks;
  for (const auto& [dir, what] :
       {std::pair{options.state_dir, "state dir"},
        std::pair{options.runtime_dir, "runtime dir"}}) {
    absl::StatusOr<std::unique_ptr<DirLock>> lock = DirLock::Acquire(dir, what);
    if (!lock.ok()) {
      LOG(ERROR) << lock.status().message();
      return 1;
    }
    locks.push_back(*std::move(lock));
  }
  // The audit trail (hostd/audit.h): its own file, and the journal under
  // systemd; written by Audit() alone, whatever the log level.
  if (absl::Status audit = OpenAuditLog(
          {.path = AuditLogPath(options.audit_log, options.state_dir),
           .group = operators_group,
           .journal = UnderJournal()});
      !audit.ok()) {
    LOG(ERROR) << audit.message() << " (--audit-log)";
    return 1;
  }

  // Each proc's local channel; envelopes from procs go to the router.
  ProcChannels::Options channel_options;
  channel_options.orphan_timeout = options.orphan_timeout;
  // The control message cap, for frames either way (the Welcome tells the
  // proc).
  channel_options.max_frame_bytes =
      FrameBytesFor(static_cast<size_t>(options.max_message_bytes));
  auto channels = std::make_unique<ProcChannels>(channel_options);
  // Other hosts, for envelopes routed through them (set once we listen).
  std::unique_ptr<PeerHosts> peers;
  // Which relay id belongs to which identity (relay streams, proc leases).
  SenderClaims claims;
  // Who holds each proc's lease; outlives the manager, whose hooks tell it
  // of procs (the manager outlives every lease check).
  std::unique_ptr<OwnerLeases> leases;
  // What each client missed; outlives the channels, whose threads report
  // procs gone (the manager's on_lost), and the router reports through.
  std::unique_ptr<MissedEnds> missed;
  // Procs' output files: cap and rotation, the time index, StreamLogs
  // (hostd/proc_logs.h). Outlives the server, whose log streams read
  // through it.
  ProcLogs::Options proc_logs_options;
  proc_logs_options.max_bytes = options.proc_log_max_bytes;
  proc_logs_options.keep = options.proc_log_keep;
  proc_logs_options.max_streams = options.max_log_streams;
  proc_logs_options.max_chunk_bytes =
      std::min<size_t>(proc_logs_options.max_chunk_bytes,
                       static_cast<size_t>(options.max_message_bytes) / 2);
  proc_logs_options.default_chunk_bytes = std::min(
      proc_logs_options.default_chunk_bytes, proc_logs_options.max_chunk_bytes);
  auto proc_logs = std::make_unique<ProcLogs>(proc_logs_options);
  // Whose each proc is (the manager, created next, outlives routing).
  std::unique_ptr<ProcManager> manager;
  auto router = std::make_unique<Router>(
      channels.get(),
      [&peers](const std::string& host, v1::Envelope& e) {
        return peers->Send(host, e);
      },
      options.max_message_bytes,
      [&manager](const std::string& proc) { return manager->OwnerOf(proc); },
      [&manager](const std::string& proc) { return manager->EndOf(proc); });

  ProcManager::Options manager_options;
  manager_options.procd_path = options.procd_path;
  manager_options.proc_template = proc_template.get();
  manager_options.state_dir = options.state_dir;
  manager_options.registration_timeout = options.registration_timeout;
  manager_options.stop_grace = options.stop_grace;
  manager_options.max_procs = options.max_procs;
  manager_options.max_finished_procs = options.max_finished_procs;
  manager_options.policy = *policy;
  manager_options.proc_user = proc_user;
  manager_options.log_group = operators_group;
  // A vanished client's procs are stopped through the manager.
  OwnerLeases::Options lease_options;
  lease_options.lease = options.owner_lease;
  lease_options.claims = &claims;
  // Stops one incarnation of a proc as "lease" (hostd asks, not its owner:
  // its end is not requested).
  auto lease_stop = [&manager](const std::string& proc, uint64_t incarnation,
                               const std::string& reason) {
    v1::StopProcRequest stop;
    stop.set_name(proc);
    stop.set_reason(reason);
    manager->Stop(
        stop, [](absl::StatusOr<v1::ProcState>) {},
        ProcManager::StopBy{.label = "lease", .incarnation = incarnation});
  };
  leases = std::make_unique<OwnerLeases>(lease_options, lease_stop);
  manager_options.on_created = [&leases, lease_stop](const v1::ProcState& state,
                                                     uint64_t incarnation) {
    if (state.client().empty()) return;
    absl::Status leased = leases->ProcStarted(state.client(), state.owner(),
                                              state.name(), incarnation);
    if (!leased.ok()) {
      // HostService checked first; a proc nobody may hold goes at once.
      LOG(ERROR) << "proc " << state.name() << " has no lease: " << leased;
      lease_stop(state.name(), incarnation,
                 absl::StrCat("no lease: ", leased.message()));
    }
  };
  manager_options.on_ended = [&leases](const v1::ProcState& state,
                                       uint64_t incarnation) {
    if (!state.client().empty()) {
      leases->ProcEnded(state.client(), state.name(), incarnation);
    }
  };
  // Told once per proc, after its last frames: its owner's, admins' and
  // peers' streams, and the host's own folds; kept for its client if that
  // has no stream.
  missed = std::make_unique<MissedEnds>(
      [&router](const v1::ProcExit& exit) { router->ProcLost(exit); });
  manager_options.on_lost = [&missed](const v1::ProcState& state,
                                      const v1::ProcExit& exit) {
    missed->Report(state.client(), state.owner(), exit);
  };
  manager_options.table_path =
      (std::filesystem::path(options.state_dir) / "procs.table").string();
  manager_options.table_crash_hook = CrashHookFromFlag(options.test_crash_at);
  absl::StatusOr<std::string> cgroup_parent =
      ProcCgroupParent(options.cgroup, options.state_dir);
  if (!cgroup_parent.ok()) {
    LOG(ERROR) << "--cgroup=" << options.cgroup << ": "
               << cgroup_parent.status().message();
    return 1;
  }
  manager_options.cgroup_parent = *cgroup_parent;
  LOG_IF(INFO, !cgroup_parent->empty())
      << "each proc runs in its own cgroup under " << *cgroup_parent;
  if (metrics != nullptr) {
    manager_options.on_created =
        [&metrics, &procs_recovered,
         created = std::move(manager_options.on_created)](
            const v1::ProcState& state, uint64_t incarnation) {
          if (procs_recovered) metrics->ProcSpawned();
          if (created) created(state, incarnation);
        };
    manager_options.on_ended =
        [&metrics, ended = std::move(manager_options.on_ended)](
            const v1::ProcState& state, uint64_t incarnation) {
          metrics->ProcEnded(state);
          if (ended) ended(state, incarnation);
        };
  }
  // The logs follow the procs: where each spawn's output begins (before
  // it runs; a taken-over proc has a pid already), and each end.
  manager_options.on_created =
      [&proc_logs, created = std::move(manager_options.on_created)](
          const v1::ProcState& state, uint64_t incarnation) {
        proc_logs->Started(state.name(), state.log_dir(), incarnation,
                           /*spawning=*/state.pid() == 0,
                           ProcLogs::CreatedOf(state));
        if (created) created(state, incarnation);
      };
  manager_options.on_ended =
      [&proc_logs, ended = std::move(manager_options.on_ended)](
          const v1::ProcState& state, uint64_t incarnation) {
        proc_logs->Ended(state.name(), incarnation);
        if (ended) ended(state, incarnation);
      };
  manager = std::make_unique<ProcManager>(manager_options, supervisor->get(),
                                          channels.get());
  // Before anything is served: the procs an earlier hostd left are known
  // (and their names taken) before any CreateOrUpdate.
  if (absl::Status recovered = manager->Recover(); !recovered.ok()) {
    LOG(ERROR) << "cannot take over the procs of an earlier hostd: "
               << recovered.message();
    return 1;
  }
  if (metrics != nullptr) metrics->ProcsReadopted(manager->LiveProcs());
  // The procs taken over: their logs are watched (capped) too.
  const v1::ListProcsResponse taken_over = manager->List();
  for (const v1::ProcState& state : taken_over.procs()) {
    if (!IsTerminal(state.status())) {
      proc_logs->Started(state.name(), state.log_dir(), 0, /*spawning=*/false,
                         ProcLogs::CreatedOf(state));
    }
  }
  procs_recovered = true;

  absl::Notification exit_requested;
  std::once_flag exit_once;
  auto request_exit = [&] {
    std::call_once(exit_once, [&] { exit_requested.Notify(); });
  };
  // What systemd hears (hostd/notify.h): READY, STATUS with the live proc
  // count, WATCHDOG while the manager's loop and the gRPC server answer
  // (the probes start at Ready, once both exist), STOPPING.
  std::string served_address;  // Set before Ready.
  std::unique_ptr<ServingProbe> serving_probe;
  SystemdNotifier::Options notify_options;
  notify_options.probes.push_back(
      {"the proc manager's event loop",
       [&manager](std::function<void(bool)> done) {
         manager->RunOnLoop([done = std::move(done)] { done(true); });
       }});
  notify_options.probes.push_back(
      {"the gRPC server", [&serving_probe](std::function<void(bool)> done) {
         serving_probe->Start(std::move(done));
       }});
  notify_options.status = [&manager, &served_address, max = options.max_procs] {
    const int live = manager->LiveProcs();
    return absl::StrCat(live, live == 1 ? " live proc" : " live procs",
                        " (max ", max, ") on ", served_address);
  };
  notify_options.test_wedge_after = options.test_wedge_loop_after;
  notify_options.test_wedge = [&manager] {
    manager->RunOnLoop([] {
      LOG(WARNING) << "--test-wedge-loop-after: the proc manager's event "
                      "loop is wedged for good";
      for (;;) absl::SleepFor(absl::Hours(1));
    });
  };
  auto notifier = std::make_unique<SystemdNotifier>(std::move(notify_options));
  // grpc.health.v1 (hostd/health.h): NOT_SERVING until Ready and from the
  // start of any shutdown, for authenticated callers.
  HealthService health(
      auth.get(), {v1::Host::service_full_name(), v1::Proc::service_full_name(),
                   v1::Relay::service_full_name()});
  // NOT_SERVING while drained (DrainHost; a drain survives restarts), as
  // the manager has it after each DrainHost, one at a time.
  absl::Mutex drain_health_mu;
  auto follow_drain = [&] {
    absl::MutexLock lock(&drain_health_mu);
    health.SetDraining(manager->drain().draining());
  };
  follow_drain();
  // 0, or kShutdownRestartExitCode after an admin's ShutdownHost that did
  // not ask the host to stay down (deploy/hostd.service restarts it).
  std::atomic<int> exit_code{0};
  // Shuts down once, whichever of signal or parent asks first: stops every
  // proc, then lets main return.
  std::atomic<bool> shutdown_started{false};
  // Every stop and restart begins here, once: health NOT_SERVING for good,
  // STOPPING=1 with `why` (and, for a stop that gives procs `grace`, more
  // time from systemd). False if one already began.
  auto begin_stop = [&](const std::string& why,
                        absl::Duration grace = absl::ZeroDuration()) {
    if (shutdown_started.exchange(true)) return false;
    health.Shutdown();
    notifier->Stopping(why, grace);
    return true;
  };
  // `requester`: the identity that asked ("" : hostd itself; see
  // ProcManager::StopBy).
  auto shutdown = [&](const std::string& reason, const std::string& requester) {
    if (!begin_stop(absl::StrCat("stopping every proc: ", reason),
                    options.stop_grace)) {
      return;
    }
    manager->Shutdown(reason, options.stop_grace, requester,
                      [&](v1::ShutdownHostResponse) { request_exit(); });
  };
  HostService::Info info;
  info.state_dir = options.state_dir;
  info.max_procs = options.max_procs;
  info.stop_grace = options.stop_grace;
  // ShutdownHost stops the procs through the manager itself; the service
  // calls back as it starts (a stop already under way keeps its exit
  // status) and once its answer is on its way.
  HostService::ShutdownHooks shutdown_hooks;
  shutdown_hooks.started = [&](const v1::ShutdownHostRequest& request) {
    // The grace HostService gives the manager (0: --stop-grace).
    const absl::Duration grace = request.grace_ms() == 0
                                     ? options.stop_grace
                                     : absl::Milliseconds(request.grace_ms());
    if (!begin_stop(
            absl::StrCat("ShutdownHost: stopping every proc",
                         request.stay_down() ? "" : "; ",
                         request.stay_down() ? "" : "the unit restarts hostd"),
            grace)) {
      return;
    }
    exit_code = request.stay_down() ? 0 : kShutdownRestartExitCode;
  };
  shutdown_hooks.answered = [&](const v1::ShutdownHostRequest&) {
    request_exit();
  };
  shutdown_hooks.drain_changed = follow_drain;
  HostService service(manager.get(), channels.get(), auth.get(), &claims,
                      leases.get(), info, std::move(shutdown_hooks));
  service.set_proc_logs(proc_logs.get());
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, auth->ServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // One hostd per port: gRPC's default SO_REUSEPORT would let a second one
  // bind the same port and answer half the calls.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service);
  ProcService proc_service(manager.get(), channels.get(), auth.get());
  builder.RegisterService(&proc_service);
  RelayService::Options relay_options;
  relay_options.heartbeat_interval = options.heartbeat_interval;
  relay_options.missed_ends = missed.get();
  RelayService relay_service(router.get(), auth.get(), &claims, leases.get(),
                             relay_options);
  builder.RegisterService(&relay_service);
  builder.RegisterService(&health);
  // Server reflection, behind the same authentication (hostd/health.h).
  builder.SetOption(ReflectionOption());
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(NewReflectionGate(auth.get()));
  if (metrics != nullptr) interceptors.push_back(metrics->NewRpcInterceptor());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // Reflection is a synchronous service: cap the threads that serve it.
  builder.SetResourceQuota(grpc::ResourceQuota("hostd").SetMaxThreads(32));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  // Any return before hostd serves: watchers and streams (Watch,
  // reflection) are ended, so the server's destructor does not wait on
  // them. Cancelled once hostd is ready; the normal exit does its own.
  absl::Cleanup stop_server_early = [&health, &server] {
    health.Shutdown();
    if (server != nullptr) {
      server->Shutdown(std::chrono::system_clock::now() +
                       std::chrono::seconds(1));
    }
  };
  // Read once the server is up: only the same user (and root) can.
  absl::Status token_written =
      admin_token_file ? WriteAdminTokenFile(options.runtime_dir, local_token)
                       : absl::OkStatus();
  if (!admin_token_file) {
    std::filesystem::remove(AdminTokenPath(options.runtime_dir), error);
  }
  if (server == nullptr || port == 0) {
    LOG(ERROR) << "cannot listen on " << options.listen;
    return 1;
  }
  if (!token_written.ok()) {
    LOG(ERROR) << token_written.message();
    return 1;
  }
  std::string address = JoinHostPort(advertise, port);
  service.set_address(address);
  served_address = address;
  manager->set_host_address(address);
  peers = std::make_unique<PeerHosts>(
      address, auth->peer_credentials(),
      [&router, address](v1::RelayFrame frame) {
        // What a peer sends back on our stream to it is for us or our procs.
        if (frame.has_envelope()) {
          router->Route(std::move(*frame.mutable_envelope()),
                        absl::StrCat("host:", address));
        }
      },
      [&router](const v1::Envelope& envelope, const absl::Status& why) {
        router->Bounce(envelope, why);
      });
  channels->Start(address,
                  [&router](const std::string& proc, v1::Envelope envelope) {
                    router->Route(std::move(envelope), proc);
                  });
  router->Start(address);
  // Procs of an earlier hostd (and this one's, after a restart) dial back
  // here. With --proc-user they run as another user: the runtime dir lets
  // it through (0711: admin.token stays 0600) and anyone may connect to the
  // socket (hostd may not chown it), but a rejoin must come from the
  // recorded pid and present that proc's secret.
  const std::string rejoin_socket =
      (std::filesystem::path(options.runtime_dir) / "procs.sock").string();
  if (proc_user.has_value()) chmod(options.runtime_dir.c_str(), 0711);
  absl::Status listening = channels->Listen(
      rejoin_socket, proc_user.has_value() ? 0666 : 0600,
      [&manager, &channels](ProcChannels::RejoinRequest request) {
        // The manager goes before the channels at exit.
        if (ProcManager* m = manager.get()) {
          m->OnRejoin(std::move(request));
        } else {
          channels->RefuseRejoin(request.id, "hostd is exiting");
        }
      });
  if (!listening.ok()) {
    LOG(ERROR) << "cannot listen for rejoining procs on " << rejoin_socket
               << ": " << listening.message();
    return 1;
  }
  LOG(INFO) << "hostd listening on " << address << " (state "
            << options.state_dir << ", runtime " << options.runtime_dir
            << ", procd " << options.procd_path << "; a vanished client's "
            << "procs are stopped after "
            << absl::FormatDuration(options.owner_lease) << ")";
  LOG(INFO)
      << "procs may run "
      << (policy->allow_any_command()
              ? std::string("any command (--allow-any-command)")
              : absl::StrCat("--allow-command entries ", policy->Describe()))
      << " as "
      << (proc_user.has_value() ? proc_user->name : std::string("hostd's user"))
      << "; logs readable by "
      << (operators_group.has_value()
              ? absl::StrCat("hostd's user and group ", options.operators_group)
              : std::string("hostd's user alone"));
  std::printf("hostd listening on %s\n", address.c_str());
  std::fflush(stdout);
  // Serving: before a parent hears of this hostd (it may check health at
  // once) and before READY=1.
  health.SetServing(true);

  std::unique_ptr<ParentChannel> parent;
  if (bootstrap->has_value()) {
    ParentChannel::Callbacks callbacks;
    callbacks.on_stop = [&](const std::string& reason, absl::Duration) {
      // The parent (a client that started this hostd) asks for its procs.
      shutdown(absl::StrCat("parent asked: ", reason), kParentIdentity);
    };
    callbacks.on_orphaned = [&] { shutdown("parent is gone", ""); };
    absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
        ParentChannel::Register(std::move(**bootstrap), address,
                                std::move(callbacks));
    if (!channel.ok()) {
      LOG(ERROR) << "register-back with parent failed: " << channel.status();
      return 1;
    }
    parent = *std::move(channel);
  }
  if (notifier->watchdog_period().has_value()) {
    // hostd's own GetHostInfo, in-process, as a peer (the token is known
    // to this process alone), answered within a watchdog period. Reset
    // before the server goes (below).
    const std::string watchdog_token = NewRandomToken();
    auth->AddToken(kWatchdogIdentity, Role::kPeer, watchdog_token);
    serving_probe = std::make_unique<ServingProbe>(
        server.get(), watchdog_token, *notifier->watchdog_period());
  }
  std::move(stop_server_early).Cancel();
  if (metrics != nullptr) {
    metrics->SetSources(manager.get(), channels.get(), router.get(),
                        options.max_procs);
  }
  notifier->Ready();

  // SIGHUP (systemctl reload): re-read the config and apply what can change
  // while hostd runs -- tokens file, allow rules, log levels -- and name the
  // rest as needing a restart (hostd/reload.h). On the signal thread.
  HostdReloader::Options reload_options;
  reload_options.running = options;
  reload_options.default_procd_path = DefaultProcdPath();
  reload_options.auth = auth.get();
  reload_options.set_policy = [&manager](CommandPolicy policy) {
    manager->SetPolicy(std::move(policy));
  };
  HostdReloader reloader(std::move(reload_options));
  // SIGUSR2 (systemctl restart: the unit's RestartKillSignal): exit 0 at
  // once, stopping no proc; the next hostd re-adopts them. On the signal
  // thread; a stop already under way wins (and a stop signal after this
  // one finds shutdown_started set and does nothing).
  // RESTART HOOK: what hostd does to keep its procs before it exits.
  auto restart_keeping_procs = [&] {
    if (!begin_stop("exiting for a restart; the procs keep running")) {
      LOG(INFO) << "received SIGUSR2 while shutting down; the shutdown goes on";
      return;
    }
    LOG(INFO) << "received SIGUSR2; exiting and keeping procs for the next "
                 "hostd";
    // The table is durable and no deadline or exit acts on a proc now.
    manager->Release();
    (*supervisor)->Release();
    request_exit();
  };
  HostSignals::Callbacks signal_callbacks;
  // SIGTERM/SIGINT (systemctl stop): stop every proc, then exit 0.
  signal_callbacks.on_stop = [&](const std::string& name) {
    LOG(INFO) << "received " << name << "; shutting down";
    shutdown(absl::StrCat("hostd received ", name), "");
  };
  signal_callbacks.on_restart = restart_keeping_procs;
  signal_callbacks.on_reload = [&reloader] { reloader.Reload(); };
  auto signals = std::make_unique<HostSignals>(std::move(signal_callbacks));

  exit_requested.WaitForNotification();
  // No scrape reads the manager, channels or router once they begin to go.
  metrics_http.reset();
  health.Shutdown();
  // No probe runs once the server and the manager begin to go.
  notifier.reset();
  serving_probe.reset();
  manager->AnswerAllWaits();
  manager->CloseWatches();
  relay_service.Shutdown();
  router->Shutdown();
  // Following log streams end (UNAVAILABLE) rather than hold the server.
  proc_logs->Close();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  signals.reset();
  parent.reset();
  peers->Shutdown();
  // No proc end is reported (through the router, which asks the manager
  // whose each proc is) once the manager goes.
  missed->Close();
  manager.reset();
  server.reset();
  leases.reset();
  channels.reset();
  missed.reset();
  router.reset();
  peers.reset();
  proc_template.reset();
  supervisor->reset();
  std::filesystem::remove(AdminTokenPath(options.runtime_dir), error);
  LOG(INFO) << "hostd exiting"
            << (exit_code != 0
                    ? absl::StrCat(" with status ", exit_code.load(),
                                   " (ShutdownHost without stay_down: to be "
                                   "restarted)")
                    : std::string());
  return exit_code;
}

}  // namespace mesh
