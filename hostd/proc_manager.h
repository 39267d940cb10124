// ProcManager: the host's table of procs and their lifecycle, transport-free.
//
// It turns the resource verbs into real child processes: CreateOrUpdate
// checks the spec against the host's CommandPolicy (a refused command or
// environment is PERMISSION_DENIED and creates nothing), then spawns the
// proc's bootstrap command (as --proc-user if set) through the
// ProcessSupervisor with one end of a local channel from ProcChannels; its
// logs are private to hostd's user (and operators' group). The proc is
// RUNNING once the
// child says Hello on it, FAILED if it does not within the registration
// timeout (the child is then killed), and STOPPED/FAILED once the child is
// reaped (exit code or signal, with its stderr tail and the stderr lines
// that explain a failure). Stop escalates: ask the proc over its channel,
// SIGTERM to its process group after the grace, then SIGKILL. Waits are
// answered server-side when statuses change. Each proc's end is reported
// once (Options::on_lost) with how it ended (v1::ProcExit), after the last
// frames it sent were routed.
//
// Restart without loss: with Options::table_path the table is kept on disk
// (proto/proc_table.proto, crash-consistent, writes grouped) after every
// change. A proc is accepted only once the verifier (SHA-256) of its secret
// is durable, and RUNNING only once the proc confirmed it was accepted
// (Ready), so every RUNNING proc can rejoin a restarted hostd. Recover()
// (before serving) reads the table of an earlier hostd: a proc of this boot
// whose process is still the one it spawned (pidfd, start time; never the
// pid alone) is watched again (ProcessSupervisor::Adopt) and waits up to
// the registration timeout for its Rejoin, which OnRejoin verifies (pid,
// start time, cgroup, secret) before the proc gets a new secret; one that
// is gone is FAILED "exit status unknown (re-adopted)"; one that does not
// rejoin is killed. Incarnations and generations never go backwards.
// Release() (the restart signal) leaves every proc running for the next
// hostd.
//
// Drain and watch: a drained host (Drain) refuses new procs, and the drain
// is in the table; every change (a status, a finished proc forgotten, a
// drain, a shutdown) is published under the manager's lock to the host's
// watchers (hostd/host_watch.h), which Watch registers with a snapshot
// taken under that same lock.
//
// Finished procs: at most Options::max_finished_procs STOPPED or FAILED
// records are kept (in memory and in the table); the one that ended first
// goes first, and its name is then NOT_FOUND (and free to create again).
//
// Seams: processes are started, signalled and watched through a
// ProcLauncher (the ProcessSupervisor in hostd, a fake in tests), and every
// deadline (registration, stop escalation, waits) runs on Options::clock,
// a MonotonicClock, so proc_manager_test drives the lifecycle with a
// FakeClock in milliseconds.
//
// Every verb answers through a callback, never by blocking the caller; the
// blocking work (spawn, signals) runs on the manager's own EventLoop. The
// launcher (supervisor), the clock and the channels must outlive the
// manager. Thread-safe.
#ifndef HOSTMESH_HOSTD_PROC_MANAGER_H_
#define HOSTMESH_HOSTD_PROC_MANAGER_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostd/command_policy.h"
#include "hostd/host_watch.h"
#include "hostd/proc_channels.h"
#include "lib/event/event_loop.h"
#include "lib/process/process_template.h"
#include "lib/process/supervisor.h"
#include "lib/resource/status_waiters.h"
#include "lib/store/durable_file.h"
#include "lib/time/clock.h"
#include "proto/host.pb.h"
#include "proto/mailbox.pb.h"
#include "proto/proc_table.pb.h"

namespace mesh {

// What ProcManager needs of a process supervisor: start, adopt, signal and
// watch its procs. Each call promises what ProcessSupervisor's of the same
// name does (lib/process/supervisor.h): `on_exit` runs once per process, on
// another thread than the caller's and never under the caller's locks.
class ProcLauncher {
 public:
  using ExitCallback = std::function<void(const ExitInfo&)>;
  virtual ~ProcLauncher() = default;
  virtual absl::StatusOr<pid_t> Spawn(const SpawnOptions& options,
                                      ExitCallback on_exit) = 0;
  virtual absl::Status Adopt(const AdoptOptions& options,
                             ExitCallback on_exit) = 0;
  virtual std::optional<AdoptOptions> AdoptOptionsFor(pid_t pid) = 0;
  virtual absl::Status SignalGroup(pid_t pid, int sig) = 0;
  virtual std::string StderrTail(pid_t pid) = 0;
};

// The real launcher: a ProcessSupervisor (not owned).
class SupervisorLauncher final : public ProcLauncher {
 public:
  explicit SupervisorLauncher(ProcessSupervisor* supervisor)
      : supervisor_(supervisor) {}
  absl::StatusOr<pid_t> Spawn(const SpawnOptions& options,
                              ExitCallback on_exit) override {
    return supervisor_->Spawn(options, std::move(on_exit));
  }
  absl::Status Adopt(const AdoptOptions& options,
                     ExitCallback on_exit) override {
    return supervisor_->Adopt(options, std::move(on_exit));
  }
  std::optional<AdoptOptions> AdoptOptionsFor(pid_t pid) override {
    return supervisor_->AdoptOptionsFor(pid);
  }
  absl::Status SignalGroup(pid_t pid, int sig) override {
    return supervisor_->SignalGroup(pid, sig);
  }
  std::string StderrTail(pid_t pid) override {
    return supervisor_->StderrTail(pid);
  }

 private:
  ProcessSupervisor* const supervisor_;
};

class ProcManager {
 public:
  struct Options {
    // Default bootstrap command (the procd binary).
    std::string procd_path;
    // A pre-loaded template of procd_path (not owned; outlives the
    // manager), or null. Procs of procd_path are forked from it, unless
    // they run as proc_user (setpriv execs them) or their env sets what
    // only an exec honours (NeedsFreshExec).
    ProcessTemplate* proc_template = nullptr;
    // Per-proc logs go to <state_dir>/procs/<name>/{stdout,stderr}.log.
    std::string state_dir;
    absl::Duration registration_timeout = absl::Seconds(10);
    absl::Duration stop_grace = absl::Seconds(5);
    // Live (not yet stopped or failed) procs at most.
    int max_procs = 256;
    // Finished (STOPPED or FAILED) procs kept at most, in memory and in the
    // table (--max-finished-procs); the earliest to end is dropped first.
    // At least 1.
    int max_finished_procs = 1024;
    // Every deadline and timer runs on this clock (not owned; a FakeClock
    // in tests). Wall time is only for the timestamps in ProcState.
    const MonotonicClock* clock = &MonotonicClock::Real();
    // What callers may run (command_policy.h); checked before anything is
    // spawned or created. The default allows nothing.
    CommandPolicy policy;
    // Procs run as this user (through setpriv); unset: as hostd's user.
    std::optional<ProcUser> proc_user;
    // A group that may read proc logs (--operators-group): log dirs 0750
    // and files 0640 of that group. Unset: 0700 and 0600.
    std::optional<gid_t> log_group;
    // A registered proc that closes its channel (not while stopping) but
    // does not exit within this is reported lost anyway (on_lost: FAILED,
    // no exit code or signal, not reported again when it exits); hostd
    // leaves it running.
    absl::Duration unreachable_grace = absl::Seconds(2);
    // The proc table on disk (<state_dir>/procs.table); empty: kept in
    // memory only (nothing survives a restart).
    std::string table_path;
    // Tests only: called at each step of every table write (see
    // DurableFile::CrashHook).
    DurableFile::CrashHook table_crash_hook;
    // A cgroup v2 directory (hostd's delegated subtree) in which each proc
    // gets its own leaf; empty: procs are tracked by process group.
    std::string cgroup_parent;
    // WatchHost's bounds (hostd/host_watch.h): watchers at once, and the
    // events queued for one before it gets a RESYNC instead.
    HostWatch::Limits watch_limits;

    // Hooks, each optional, called without the manager's lock (the owner
    // leases and the router follow the procs through them). `incarnation`
    // tells spawns of one name apart (it rises with each): a hook of an
    // older spawn may run after one of a newer, so match on it.
    // A proc was created (INITIALIZING, with its owner and client);
    std::function<void(const v1::ProcState&, uint64_t incarnation)> on_created;
    // a proc became STOPPED or FAILED (before the Stop callers and waiters
    // that this answers are told);
    std::function<void(const v1::ProcState&, uint64_t incarnation)> on_ended;
    // a proc is gone, reported once per incarnation: once it was reaped and
    // its channel delivered the last frames it sent (with how it ended),
    // or once it was unreachable for unreachable_grace (see above). `state`
    // is the proc's then (its owner and client). It may run after the
    // manager is destroyed (on the channels' thread), until the channels
    // are.
    std::function<void(const v1::ProcState& state, const v1::ProcExit&)>
        on_lost;
  };

  using StateCallback = std::function<void(absl::StatusOr<v1::ProcState>)>;
  using WaitCallback = std::function<void(v1::WaitProcsResponse)>;
  using ShutdownCallback = std::function<void(v1::ShutdownHostResponse)>;
  using DrainCallback =
      std::function<void(absl::StatusOr<v1::DrainHostResponse>)>;

  ProcManager(Options options, ProcessSupervisor* supervisor,
              ProcChannels* channels);
  // With any launcher (a fake in tests); `launcher` is not owned.
  ProcManager(Options options, ProcLauncher* launcher, ProcChannels* channels);
  // SIGKILLs every proc still alive and waits until each is reaped and
  // every supervisor callback (spawn, OnExit) has finished (so none
  // outlives the manager), then answers every pending waiter with the
  // states as they are.
  // With Release() first: kills nothing, leaves every proc to a later hostd.
  ~ProcManager();
  ProcManager(const ProcManager&) = delete;
  ProcManager& operator=(const ProcManager&) = delete;

  // Reads the table an earlier hostd left (if any) and takes over its procs
  // (see the class comment). Call once, before serving and before the
  // channels listen for rejoins. Errors (a corrupt table, one of a newer
  // format) name the path: hostd must not start and run procs beside
  // unmanaged ones.
  absl::Status Recover();
  // A proc dialled the rejoin socket (ProcChannels::Listen): accepts it
  // (new secret, durable first) if it is a proc this manager waits for
  // and every check passes, else refuses it naming why.
  void OnRejoin(ProcChannels::RejoinRequest request);
  // The restart signal: hostd exits and its procs live on for the next
  // one. Refuses new procs, stops every timer, writes the table and waits
  // until it is durable. Call before ProcessSupervisor::Release().
  void Release();
  // Replaces the run policy (SIGHUP). Procs already running are left alone.
  void SetPolicy(CommandPolicy policy);

  // OK if `request` is valid (ValidateCreateRequest) and the run policy
  // allows its command and environment; what CreateOrUpdate checks first.
  absl::Status Admissible(const v1::CreateOrUpdateProcRequest& request) const;
  // Spawns the proc, or answers with the existing one if the request is the
  // same (a stopped or failed one is spawned again, as a new incarnation).
  // Answers once the child is started (INITIALIZING, with its pid).
  void CreateOrUpdate(const v1::CreateOrUpdateProcRequest& request,
                      StateCallback done);
  absl::StatusOr<v1::ProcState> GetState(const std::string& name);
  // How proc `name` ended: its reason once its current incarnation is
  // STOPPED or FAILED, nullopt while it lives; NOT_FOUND if there is none.
  absl::StatusOr<std::optional<std::string>> EndOf(const std::string& name);
  // The identity that created proc `name` (its state's owner); NOT_FOUND
  // if there is none. Cheap: checked for every envelope a client sends.
  absl::StatusOr<std::string> OwnerOf(const std::string& name);

  // Who asks for a stop.
  struct StopBy {
    // The identity that asked; "" for hostd itself (a lease, SIGTERM, a
    // parent that is gone). The proc's end is `requested` (v1::ProcExit)
    // only if this is its owner (ProcState.owner).
    std::string identity;
    // Recorded as the proc's stopped_by once it ended, e.g. "lease"; empty:
    // how it went ("exited", "SIGTERM", "SIGKILL").
    std::string label;
    // Only this spawn of the name (0: whichever is there): a later one is
    // answered NOT_FOUND and left alone.
    uint64_t incarnation = 0;
  };
  // Answers once the proc is stopped (or already was). A stop under way
  // keeps its own reason and label; a later one by the owner still makes
  // the end requested.
  void Stop(const v1::StopProcRequest& request, StateCallback done, StopBy by);
  // `identity` asked live proc `name` to exit by itself (StopAll with
  // exit_proc): if it is the proc's owner, the proc's end counts as asked
  // for (ProcExit.requested).
  void OwnerAskedToExit(const std::string& name, const std::string& identity);
  v1::ListProcsResponse List();
  // Answers when every named proc has status >= min_status, or `timeout`
  // from now (on the manager's clock). Returns an id for CancelWait.
  uint64_t Wait(const v1::WaitProcsRequest& request, absl::Duration timeout,
                WaitCallback done);
  // The waiter is gone: drops wait `id` unanswered (its callback never
  // runs). False if it was answered already (its callback runs or ran).
  bool CancelWait(uint64_t id);
  // Refuses new procs, stops every live proc in parallel and answers once
  // all are reaped, listing each with how it ended. `requester`: the
  // identity that asked ("" : hostd itself, e.g. on SIGTERM); see StopBy.
  void Shutdown(const std::string& reason, absl::Duration grace,
                const std::string& requester, ShutdownCallback done);
  // Answers every pending Wait now, with the states as they are, and every
  // later one at once (the host is going away).
  void AnswerAllWaits();

  // Drain (DrainHost): from now on a new proc (a name not live here) is
  // FAILED_PRECONDITION naming the drain, while the same request again for
  // a live proc still answers; live procs run on or, with request.stop,
  // are stopped as Shutdown stops them (`grace`; hostd stays up). Undrain
  // lifts it. The drain is in the table (it survives a restart) before
  // `done` runs (with stop: once every proc is stopped). Refused while the
  // host shuts down. `identity`: who asked (DrainState.by).
  void Drain(const v1::DrainHostRequest& request, absl::Duration grace,
             const std::string& identity, DrainCallback done);
  // The host's drain now (draining unset if none).
  v1::DrainState drain();
  // HostInfo's fields the manager knows: num_procs (live), drain,
  // shutting_down.
  v1::HostInfo HostState();

  // WatchHost (hostd/host_watch.h): a watcher whose first message is a
  // snapshot of every proc (as List shows them) and of the host's state
  // (HostInfo's num_procs, drain and shutting_down; the caller fills the
  // rest), taken at once with its registration: it then gets every change
  // (SetStatus, a finished proc forgotten, drain, shutdown) in order.
  absl::StatusOr<std::shared_ptr<HostWatch::Watcher>> Watch(
      HostWatch::Visible visible, std::function<void()> ready);
  // A watcher that Take said kResync gets a fresh snapshot.
  void Resync(HostWatch::Watcher& watcher);
  // Its stream is gone.
  void Unwatch(HostWatch::Watcher& watcher);
  // The host is going away: every watch ends (OK) once its queue is sent.
  void CloseWatches();

  int LiveProcs();
  // WaitProcs calls held now (answered, timed out or cancelled ones are not).
  int HeldWaits();

  // Tests: returns once every deadline due by now on Options::clock (and
  // all work posted before) has run on the manager's loop.
  void RunDueTimers();
  // Runs `fn` on the manager's loop after the work posted before it: how
  // hostd's watchdog (hostd/notify.h) sees that the loop still turns.
  void RunOnLoop(std::function<void()> fn);

  // This hostd's advertised host:port, put into each proc's state (a proc
  // is reached through its host). Set once the server listens.
  void set_host_address(const std::string& address);

 private:
  struct Proc;

  ProcManager(Options options, std::unique_ptr<SupervisorLauncher> own,
              ProcLauncher* launcher, ProcChannels* channels);

  void SpawnOnLoop(const std::string& name, uint64_t incarnation);
  void StopOnLoop(const std::string& name, const std::string& reason,
                  absl::Duration grace, const StopBy& by, StateCallback done);
  void Escalate(const std::string& name, uint64_t incarnation, int signal,
                absl::Duration next_grace);
  // The proc said Hello: store its secret's verifier durably, then accept.
  void OnHello(const std::string& name, uint64_t incarnation, pid_t pid,
               std::string verifier, std::function<void()> accept);
  void OnRegistered(const std::string& name, uint64_t incarnation, pid_t pid);
  // Callbacks of a proc's channel (spawned or rejoined).
  ProcChannels::ChildCallbacks CallbacksFor(const std::string& name,
                                            uint64_t incarnation);
  // A recovered proc did not rejoin in time: killed.
  void OnRejoinTimeout(const std::string& name, uint64_t incarnation);
  // Why `request` cannot be the rejoin of `proc`; OK if it can.
  absl::Status CheckRejoinLocked(const Proc& proc,
                                 const ProcChannels::RejoinRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The table as it is now (what goes on disk).
  v1::ProcTable TableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues the table for writing; `durable` runs once it is on disk.
  void SaveTableLocked(DurableFile::Writer::DurableCallback durable = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<const CommandPolicy> policy() const;
  void OnRefused(const std::string& name, uint64_t incarnation,
                 const std::string& why);
  void OnRegistrationTimeout(const std::string& name, uint64_t incarnation);
  void OnExit(const std::string& name, uint64_t incarnation,
              const ExitInfo& info);
  // A registered proc closed its channel; not yet reaped.
  void OnDisconnected(const std::string& name, uint64_t incarnation);
  // Reports `proc` lost (on_lost) unless it was already: at once, or with
  // its channel's `ticket` once that delivered its last frames.
  void ReportLostLocked(Proc& proc, uint64_t ticket, Deferred& deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Changes a proc's status, saves the table and collects the waiters it
  // satisfies; the Stop callers of a proc that ended are answered once that
  // save is durable. A proc that ends is recorded as finished, which may
  // drop the earliest finished one (never `proc` itself).
  void SetStatus(Proc& proc, v1::Status status, const std::string& reason,
                 Deferred& deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records terminal `proc` as the latest to finish, then drops the
  // earliest finished procs beyond Options::max_finished_procs. The caller
  // saves the table.
  void AddFinishedLocked(Proc& proc, Deferred& deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Admissible, and the command to run (as the run policy resolved it).
  absl::StatusOr<std::string> CheckRequest(
      const v1::CreateOrUpdateProcRequest& request) const;
  // Stops procs `names` in parallel (StopBy{requester}) and answers once
  // all are stopped, listing each with how it ended (Shutdown, Drain).
  void StopAll(const std::vector<std::string>& names, const std::string& reason,
               absl::Duration grace, const std::string& requester,
               ShutdownCallback done);
  // The host's part of a watch snapshot or host event: num_procs, drain,
  // shutting_down.
  v1::HostInfo HostLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A HOST_CHANGED event for the watchers (`reason`: what happened).
  void PublishHostLocked(const std::string& reason, Deferred& deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A watch snapshot of every proc and the host, now.
  v1::HostEvent SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Procs not yet STOPPED or FAILED.
  std::vector<const Proc*> LiveLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The process that is the proc: the one that said Hello if a bootstrap
  // command forked it, else the spawned one.
  static pid_t TrackedPid(const Proc& proc);
  Proc* Find(const std::string& name, uint64_t incarnation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  // Set by the ProcessSupervisor constructor: the adapter launcher_ uses.
  std::unique_ptr<SupervisorLauncher> own_launcher_;
  ProcLauncher* const launcher_;
  ProcChannels* const channels_;

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Proc>> procs_ ABSL_GUARDED_BY(mu_);
  // Names of the terminal procs in procs_, the earliest to end first.
  std::list<std::string> finished_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // The host's drain (DrainHost), kept in the table.
  v1::DrainState drain_ ABSL_GUARDED_BY(mu_);
  std::string host_address_ ABSL_GUARDED_BY(mu_);
  // Set by the destructor: nothing more is spawned.
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  // Supervisor work under way outside mu_ that the destructor waits for: a
  // spawn whose pid is not recorded yet, an OnExit running its deferred
  // work (hooks, answers).
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_incarnation_ ABSL_GUARDED_BY(mu_) = 1;
  // The last generation handed out (host-wide, so a name's generations
  // keep rising across incarnations and restarts) and the limit the table
  // reserves (see proc_table.proto).
  uint64_t last_generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_limit_ ABSL_GUARDED_BY(mu_) = 0;
  // Set by Release(): the destructor kills nothing.
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  // This boot (procs of another boot are gone), and the address the table
  // was written with (rejoining procs' actors are named by it).
  std::string boot_id_ ABSL_GUARDED_BY(mu_);
  std::string table_host_ ABSL_GUARDED_BY(mu_);
  // The table on disk; null without Options::table_path. Destroyed (its
  // last write done, its callbacks run) before the loop and the procs.
  std::unique_ptr<DurableFile::Writer> table_;

  mutable absl::Mutex policy_mu_;
  std::shared_ptr<const CommandPolicy> policy_ ABSL_GUARDED_BY(policy_mu_);

  // Runs spawns, signals and every deadline. Destroyed before waiters_ (see
  // the destructor), so no deadline runs on a dead manager.
  std::unique_ptr<EventLoop> loop_;
  StatusWaiters<v1::ProcState> waiters_;
  // WatchHost's watchers: each change is published under mu_.
  HostWatch watch_;
};

// INVALID_ARGUMENT naming the field if a CreateOrUpdateProc request is bad.
absl::Status ValidateCreateRequest(
    const v1::CreateOrUpdateProcRequest& request);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_PROC_MANAGER_H_
