#include "hostd/proc_manager.h"

#include <glog/logging.h>
#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/util/time_util.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <list>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "hostd/sender_claims.h"
#include "lib/names.h"
#include "lib/process/cgroup.h"
#include "lib/process/exit_cause.h"
#include "lib/process/proc_log.h"
#include "lib/process/process_identity.h"
#include "lib/process/signals.h"

namespace mesh {
namespace {

// `reason` for one log line: a stop reason or a proc's stderr quoted in it
// cannot start a line of its own (e.g. forge an "audit: " line, hostd/audit.h).
std::string OneLogLine(absl::string_view reason) {
  return absl::StrReplaceAll(reason, {{"\n", "\\n"}, {"\r", "\\r"}});
}

// A proc as a list shows it (ListProcs, a wait on every proc): without its
// stderr tail (up to 4 KiB each), so the whole history (--max-finished-procs,
// 1024) and the live procs fit in one message under the 4 MiB cap.
// GetProcState and a wait that names the proc have the tail.
v1::ProcState ListedState(const v1::ProcState& state) {
  v1::ProcState listed = state;
  listed.clear_stderr_tail();
  return listed;
}

using google::protobuf::util::MessageDifferencer;
using google::protobuf::util::TimeUtil;

constexpr size_t kMaxArgs = 1024;
constexpr size_t kMaxArgBytes = 64 * 1024;
constexpr size_t kMaxEnv = 1024;

// Generations reserved ahead in the table (see SetStatus).
constexpr uint64_t kGenerationBlock = 4096;

// How a proc that was not this hostd's child ended: its parent (init or
// systemd) reaped it.
constexpr char kStatusUnknown[] = "ended: exit status unknown (re-adopted)";

// True if `pid` is in the cgroup directory `leaf` (exactly).
bool InLeaf(pid_t pid, const std::string& leaf) {
  if (leaf.empty()) return false;
  absl::StatusOr<std::string> cgroup = CgroupOfPid(pid);
  absl::StatusOr<CgroupRoot> root = CgroupRoot::Find();
  return cgroup.ok() && root.ok() && root->DirOf(*cgroup) == leaf;
}

// Now, to the nanosecond (TimeUtil::GetCurrentTime has whole seconds): when
// a watch event happened.
google::protobuf::Timestamp PreciseNow() {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

absl::Status NoSuchProc(const std::string& name) {
  return absl::NotFoundError(
      absl::StrCat("no proc named ", QuoteForError(name), " on this host"));
}

}  // namespace

absl::Status ValidateCreateRequest(
    const v1::CreateOrUpdateProcRequest& request) {
  absl::Status name_status = ValidateName(request.name(), "proc name");
  if (!name_status.ok()) return name_status;
  if (!request.client().empty()) {
    absl::Status client = ValidateSenderId(request.client(), "client",
                                           /*host_too=*/false);
    if (!client.ok()) return client;
  }
  const v1::ProcSpec& spec = request.spec();
  if (!spec.command().empty()) {
    if (spec.command()[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrFormat("spec.command %s must be an absolute path",
                          QuoteForError(spec.command())));
    }
    if (spec.command().find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("spec.command contains a NUL byte");
    }
  }
  if (static_cast<size_t>(spec.args_size()) > kMaxArgs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("spec.args has %d entries; the limit is %d",
                        spec.args_size(), kMaxArgs));
  }
  for (int i = 0; i < spec.args_size(); ++i) {
    const std::string& arg = spec.args(i);
    if (arg.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("spec.args[%d] contains a NUL byte", i));
    }
    if (arg.size() > kMaxArgBytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("spec.args[%d] is %d bytes; the limit is %d", i,
                          arg.size(), kMaxArgBytes));
    }
  }
  if (static_cast<size_t>(spec.env_size()) > kMaxEnv) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "spec.env has %d entries; the limit is %d", spec.env_size(), kMaxEnv));
  }
  for (const auto& [key, value] : spec.env()) {
    if (!IsEnvName(key)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "spec.env key %s is not a valid variable name", QuoteForError(key)));
    }
    if (key == kChannelFdEnv) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.env must not set ", kChannelFdEnv));
    }
    if (value.find('\0') != std::string::npos || value.size() > kMaxArgBytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "spec.env[%s] has a NUL byte or is longer than %d bytes",
          QuoteForError(key), kMaxArgBytes));
    }
  }
  return absl::OkStatus();
}

// One proc: its public state plus what the manager needs to drive it.
struct ProcManager::Proc {
  v1::CreateOrUpdateProcRequest request;
  // What to execute: the spec's command or the default procd, as the
  // command policy resolved it.
  std::string command;
  // Which spawn of this name callbacks and timers belong to.
  uint64_t incarnation = 0;
  v1::ProcState state;
  uint64_t ticket_id = 0;
  // The proc said Hello over its channel.
  bool registered = false;
  bool stopping = false;
  // Why it is being stopped, and its label if a caller gave one (e.g.
  // "lease").
  std::string stop_reason;
  std::string stop_label;
  // Its owner asked for the stop (StopProc, ShutdownHost): its end is
  // requested.
  bool owner_asked = false;
  // How far a stop has escalated: "exited" (asked), "SIGTERM", "SIGKILL".
  std::string stopped_by;
  // Set when the manager decided the proc failed (e.g. no registration).
  std::string forced_failure;
  EventLoop::TimerId registration_timer = 0;
  EventLoop::TimerId escalation_timer = 0;
  std::vector<StateCallback> stop_waiters;
  // How it ended, once reaped (or unreachable); reported once (on_lost).
  v1::ProcExit exit;
  bool reported = false;

  // What re-adoption needs (kept in the table, proc_table.proto).
  // The process that said Hello if a bootstrap command forked it (in the
  // proc's leaf); 0: the spawned one (see TrackedPid). start_time is
  // TrackedPid's.
  int32_t registered_pid = 0;
  uint64_t start_time = 0;
  std::string verifier;
  std::string previous_verifier;
  std::string cgroup;
  bool accepted = false;
  uint64_t stderr_offset = 0;
  // Recovered from an earlier hostd's table, waiting for its Rejoin.
  bool awaiting_rejoin = false;
  // Recovered: not this hostd's child (its exit status is unknown).
  bool adopted = false;
  // Terminal: its entry in finished_.
  bool finished = false;
  std::list<std::string>::iterator finished_at;
};

ProcManager::ProcManager(Options options, ProcessSupervisor* supervisor,
                         ProcChannels* channels)
    : ProcManager(std::move(options),
                  std::make_unique<SupervisorLauncher>(supervisor), nullptr,
                  channels) {}

ProcManager::ProcManager(Options options, ProcLauncher* launcher,
                         ProcChannels* channels)
    : ProcManager(std::move(options), nullptr, launcher, channels) {}

ProcManager::ProcManager(Options options,
                         std::unique_ptr<SupervisorLauncher> own,
                         ProcLauncher* launcher, ProcChannels* channels)
    : options_(std::move(options)),
      own_launcher_(std::move(own)),
      launcher_(launcher != nullptr ? launcher : own_launcher_.get()),
      channels_(channels),
      policy_(std::make_shared<const CommandPolicy>(options_.policy)),
      loop_(std::make_unique<EventLoop>(*options_.clock)),
      waiters_(
          "proc", &mu_, loop_.get(),
          [this](const std::string& name)
              ABSL_NO_THREAD_SAFETY_ANALYSIS -> std::optional<v1::ProcState> {
                auto it = procs_.find(name);
                if (it == procs_.end()) return std::nullopt;
                return it->second->state;
              },
          [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
            std::vector<v1::ProcState> states;
            for (const auto& [name, proc] : procs_) {
              states.push_back(ListedState(proc->state));
            }
            return states;
          }),
      watch_(options_.watch_limits) {}

ProcManager::~ProcManager() {
  std::vector<pid_t> alive;
  bool released;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    shutting_down_ = true;
    released = released_;
    for (const Proc* proc : LiveLocked()) {
      if (proc->state.pid() != 0 && !released) {
        alive.push_back(proc->state.pid());
      }
    }
  }
  for (pid_t pid : alive) launcher_->SignalGroup(pid, SIGKILL).IgnoreError();
  {
    // Each is reaped by the supervisor, whose callback (OnExit) makes it
    // terminal; only then may the manager go. Released procs live on.
    absl::MutexLock lock(&mu_);
    auto all_reaped = [this, released]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (busy_ > 0) return false;
      if (released) return true;
      for (const Proc* proc : LiveLocked()) {
        if (proc->state.pid() != 0) return false;
      }
      return true;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&all_reaped),
                              absl::Seconds(30))) {
      LOG(ERROR) << "procs still not reaped 30s after SIGKILL";
    }
  }
  AnswerAllWaits();
  watch_.Close();
  loop_.reset();
  // The last state of every proc is written (and its callbacks run) before
  // the channels are forgotten.
  table_.reset();
  std::vector<uint64_t> tickets;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, proc] : procs_) {
      if (proc->ticket_id != 0) tickets.push_back(proc->ticket_id);
    }
  }
  for (uint64_t id : tickets) channels_->Forget(id);
}

pid_t ProcManager::TrackedPid(const Proc& proc) {
  return proc.registered_pid != 0 ? proc.registered_pid : proc.state.pid();
}

ProcManager::Proc* ProcManager::Find(const std::string& name,
                                     uint64_t incarnation) {
  auto it = procs_.find(name);
  if (it == procs_.end() || it->second->incarnation != incarnation) {
    return nullptr;
  }
  return it->second.get();
}

void ProcManager::SetStatus(Proc& proc, v1::Status status,
                            const std::string& reason, Deferred& deferred) {
  const bool ended = IsTerminal(status) && !IsTerminal(proc.state.status());
  const bool created = proc.state.status() == v1::NOT_EXIST;
  proc.state.set_status(status);
  proc.state.set_reason(reason);
  // Host-wide and rising; the table reserves a block ahead, so no
  // generation is ever handed out twice, a crash between writes included.
  last_generation_ = std::max(last_generation_, proc.state.generation()) + 1;
  if (last_generation_ + kGenerationBlock / 2 >= generation_limit_) {
    generation_limit_ = last_generation_ + kGenerationBlock;
  }
  proc.state.set_generation(last_generation_);
  *proc.state.mutable_updated_at() = TimeUtil::GetCurrentTime();
  // Under mu_: every watcher hears of the changes in their order.
  if (!watch_.empty()) {
    v1::HostEvent event;
    event.set_kind(created ? v1::HostEvent::PROC_CREATED
                           : v1::HostEvent::PROC_CHANGED);
    *event.mutable_at() = PreciseNow();
    *event.mutable_proc() = ListedState(proc.state);
    watch_.Publish(std::move(event), deferred);
  }
  // The hook first: the leases forget the proc before a caller that waited
  // for its end can create the name again.
  if (ended && options_.on_ended) {
    deferred.push_back(
        [on_ended = options_.on_ended, state = proc.state,
         incarnation = proc.incarnation] { on_ended(state, incarnation); });
  }
  if (ended) AddFinishedLocked(proc, deferred);
  if (IsTerminal(status) && !proc.stop_waiters.empty()) {
    // A Stop is answered once its end is in the table: a hostd killed
    // after the answer restarts knowing the proc STOPPED, not finding it
    // gone and calling it FAILED.
    SaveTableLocked([waiters = std::move(proc.stop_waiters),
                     final_state = proc.state](const absl::Status& saved) {
      LOG_IF(WARNING, !saved.ok())
          << "proc " << final_state.name() << " "
          << v1::Status_Name(final_state.status())
          << " but the proc table was not written: " << saved;
      for (const StateCallback& waiter : waiters) waiter(final_state);
    });
    proc.stop_waiters.clear();
  } else {
    SaveTableLocked();
  }
  waiters_.Check(deferred);
}

void ProcManager::AddFinishedLocked(Proc& proc, Deferred& deferred) {
  if (proc.finished) return;
  proc.finished = true;
  proc.finished_at = finished_.insert(finished_.end(), proc.state.name());
  const size_t keep =
      static_cast<size_t>(std::max(1, options_.max_finished_procs));
  while (finished_.size() > keep) {
    auto it = procs_.find(finished_.front());
    finished_.pop_front();
    // Only a proc that ended (a name re-created since is another proc).
    if (it == procs_.end() || !it->second->finished) continue;
    VLOG(1) << "forgetting finished proc " << it->first << " ("
            << finished_.size() << " finished procs kept)";
    if (!watch_.empty()) {
      v1::HostEvent event;
      event.set_kind(v1::HostEvent::PROC_REMOVED);
      *event.mutable_proc() = ListedState(it->second->state);
      watch_.Publish(std::move(event), deferred);
    }
    if (it->second->ticket_id != 0) {
      deferred.push_back([channels = channels_, id = it->second->ticket_id] {
        channels->Forget(id);
      });
    }
    procs_.erase(it);
  }
}

absl::StatusOr<std::string> ProcManager::CheckRequest(
    const v1::CreateOrUpdateProcRequest& request) const {
  absl::Status valid = ValidateCreateRequest(request);
  if (!valid.ok()) return valid;
  // The run policy, before anything is stored, created or spawned.
  const v1::ProcSpec& spec = request.spec();
  const std::shared_ptr<const CommandPolicy> policy = this->policy();
  absl::StatusOr<std::string> command = policy->CheckCommand(
      spec.command().empty() ? options_.procd_path : spec.command());
  absl::Status allowed = command.status();
  if (allowed.ok()) {
    std::vector<std::string> env_names;
    for (const auto& [key, value] : spec.env()) env_names.push_back(key);
    allowed = policy->CheckEnv(std::move(env_names));
  }
  if (!allowed.ok()) {
    LOG(WARNING) << "refused proc " << QuoteForError(request.name()) << ": "
                 << allowed.message();
    return allowed;
  }
  return command;
}

absl::Status ProcManager::Admissible(
    const v1::CreateOrUpdateProcRequest& request) const {
  return CheckRequest(request).status();
}

void ProcManager::CreateOrUpdate(const v1::CreateOrUpdateProcRequest& request,
                                 StateCallback done) {
  absl::StatusOr<std::string> command = CheckRequest(request);
  if (!command.ok()) {
    done(command.status());
    return;
  }
  const std::string& name = request.name();
  // Where a new creation's output will begin in its files (which outlive
  // the name's earlier procs): measured before the lock, nothing writes
  // them while no proc of this name runs.
  const std::string log_dir = absl::StrCat(options_.state_dir, "/procs/", name);
  const uint64_t stdout_start = LogSpanOf(log_dir + "/stdout.log").end;
  const uint64_t stderr_start = LogSpanOf(log_dir + "/stderr.log").end;
  uint64_t incarnation = 0;
  std::optional<absl::StatusOr<v1::ProcState>> answer;  // answered at once
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    auto it = procs_.find(name);
    const size_t live = LiveLocked().size();
    if (shutting_down_) {
      answer = absl::FailedPreconditionError(absl::StrFormat(
          "host is shutting down; proc \"%s\" not created", name));
    } else if (it != procs_.end() &&
               !MessageDifferencer::Equals(it->second->request, request)) {
      answer = absl::FailedPreconditionError(absl::StrFormat(
          "proc \"%s\" exists with another spec, rank or client (generation "
          "%d, %s); stop it and use a new name",
          name, it->second->state.generation(),
          v1::Status_Name(it->second->state.status())));
    } else if (it != procs_.end() && !IsTerminal(it->second->state.status())) {
      answer = it->second->state;  // The same request again: the same proc.
    } else if (drain_.draining()) {
      answer = absl::FailedPreconditionError(absl::StrFormat(
          "host %s is draining (since %s, by %s)%s%s; proc \"%s\" not created",
          host_address_.empty() ? std::string("(this hostd)") : host_address_,
          TimeUtil::ToString(drain_.since()), drain_.by(),
          drain_.reason().empty() ? "" : ": ", drain_.reason(), name));
    } else if (live >= static_cast<size_t>(options_.max_procs)) {
      answer = absl::ResourceExhaustedError(absl::StrFormat(
          "host has %d live procs, the --max-procs limit; proc \"%s\" not "
          "created",
          live, name));
    } else {
      incarnation = next_incarnation_++;
      // Generations keep rising across re-creations of a name.
      uint64_t generation =
          it == procs_.end() ? 0 : it->second->state.generation();
      auto proc = std::make_unique<Proc>();
      proc->request = request;
      proc->command = *command;
      proc->incarnation = incarnation;
      v1::ProcState& state = proc->state;
      state.set_name(name);
      state.set_rank(request.rank());
      *state.mutable_spec() = request.spec();
      state.set_owner(request.owner());
      state.set_client(request.client());
      state.set_generation(generation);
      state.set_log_dir(log_dir);
      state.set_stdout_start(stdout_start);
      state.set_stderr_start(stderr_start);
      *state.mutable_created_at() = TimeUtil::GetCurrentTime();
      if (it != procs_.end() && it->second->finished) {
        finished_.erase(it->second->finished_at);  // replaced: not kept
        if (!watch_.empty()) {
          // Watchers see the ended proc go before the new one comes.
          v1::HostEvent removed;
          removed.set_kind(v1::HostEvent::PROC_REMOVED);
          *removed.mutable_proc() = ListedState(it->second->state);
          watch_.Publish(std::move(removed), deferred);
        }
      }
      Proc& stored = *(procs_[name] = std::move(proc));
      SetStatus(stored, v1::INITIALIZING, "spawning", deferred);
      if (options_.on_created) {
        deferred.push_back([on_created = options_.on_created,
                            state = stored.state,
                            incarnation] { on_created(state, incarnation); });
      }
    }
  }
  RunDeferred(deferred);
  if (answer.has_value()) {
    done(*std::move(answer));
    return;
  }
  loop_->Post([this, name, incarnation, done = std::move(done)] {
    SpawnOnLoop(name, incarnation);
    absl::StatusOr<v1::ProcState> state;
    {
      absl::MutexLock lock(&mu_);
      Proc* proc = Find(name, incarnation);
      if (proc != nullptr) {
        state = proc->state;
      } else {
        state = absl::AbortedError(
            absl::StrFormat("proc \"%s\" was replaced while spawning", name));
      }
    }
    done(std::move(state));
  });
}

void ProcManager::SpawnOnLoop(const std::string& name, uint64_t incarnation) {
  SpawnOptions spawn;
  std::string command;  // What runs (spawn.path may be setpriv).
  uint64_t rank = 0;
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    Proc* proc = Find(name, incarnation);
    if (proc == nullptr) return;
    if (proc->stopping || closing_) {
      // Stopped (or the host closed) before it was ever started.
      SetStatus(
          *proc, closing_ ? v1::FAILED : v1::STOPPED,
          absl::StrFormat("proc \"%s\" was stopped before it started", name),
          deferred);
    } else {
      ++busy_;  // Until its pid is recorded (the destructor waits).
      const v1::ProcSpec& spec = proc->request.spec();
      rank = proc->request.rank();
      command = proc->command;
      spawn.path = command;
      spawn.args.assign(spec.args().begin(), spec.args().end());
      // systemd's variables are hostd's alone (kServiceManagerEnv). A
      // spec may still set them itself.
      spawn.unset_env = kServiceManagerEnv;
      spawn.env.insert(spec.env().begin(), spec.env().end());
      spawn.log_dir = proc->state.log_dir();
      spawn.log_group = options_.log_group;
      if (!options_.cgroup_parent.empty()) {
        // A leaf per spawn: an earlier incarnation's may still be going.
        spawn.cgroup_parent = options_.cgroup_parent;
        spawn.cgroup_name = absl::StrCat("proc-", name, "-", incarnation);
        proc->cgroup =
            absl::StrCat(options_.cgroup_parent, "/", spawn.cgroup_name);
      }
      // A spec cannot pose as a template (lib/process/process_template.h).
      spawn.env.erase(kTemplateFdEnv);
      if (options_.proc_template != nullptr &&
          command == options_.proc_template->path() &&
          !options_.proc_user.has_value() && !NeedsFreshExec(spawn.env)) {
        spawn.from_template = options_.proc_template;
      }
      if (options_.proc_user.has_value()) {
        const ProcUser& user = *options_.proc_user;
        spawn.args = WrapForProcUser(user, spawn.path, spawn.args);
        spawn.path = user.setpriv;
        // Where the user's programs look for it (unless the spec says).
        spawn.env.try_emplace("USER", user.name);
        spawn.env.try_emplace("LOGNAME", user.name);
        spawn.env.try_emplace("HOME", user.home);
      }
    }
  }
  if (spawn.path.empty()) {
    RunDeferred(deferred);
    return;
  }
  absl::StatusOr<ProcChannels::Ticket> ticket = channels_->Expect(
      name, rank, incarnation, CallbacksFor(name, incarnation));
  absl::StatusOr<pid_t> pid = absl::UnknownError("not spawned");
  if (!ticket.ok()) {
    pid = ticket.status();
  } else {
    spawn.env[kChannelFdEnv] = absl::StrCat(kChannelChildFd);
    spawn.inherit_fds.emplace_back(ticket->child_fd, kChannelChildFd);
    pid = launcher_->Spawn(spawn,
                           [this, name, incarnation](const ExitInfo& info) {
                             OnExit(name, incarnation, info);
                           });
    close(ticket->child_fd);
  }

  // Channel and supervisor calls happen outside mu_: their callbacks take it.
  bool forget = ticket.ok() && !pid.ok();
  bool kill = false;
  {
    absl::MutexLock lock(&mu_);
    --busy_;
    Proc* proc = Find(name, incarnation);
    if (!pid.ok()) {
      if (proc != nullptr) {
        SetStatus(*proc, v1::FAILED,
                  absl::StrFormat("proc \"%s\": spawn of %s failed: %s", name,
                                  QuoteForError(command),
                                  BoundText(pid.status().message())),
                  deferred);
      }
    } else if (proc == nullptr || IsTerminal(proc->state.status())) {
      // It exited and was reaped before we got here: its secret must not
      // stay valid.
      forget = true;
      if (proc != nullptr && proc->state.pid() == 0) proc->state.set_pid(*pid);
    } else {
      proc->ticket_id = ticket->id;
      proc->state.set_pid(*pid);
      // What names this process to a later hostd, as the supervisor
      // recorded it at the spawn (start time, where its own stderr begins).
      if (std::optional<AdoptOptions> identity =
              launcher_->AdoptOptionsFor(*pid)) {
        if (proc->registered_pid == 0) proc->start_time = identity->start_time;
        proc->stderr_offset = identity->stderr_offset;
      }
      SaveTableLocked();
      LOG(INFO) << "proc " << name << " spawned: pid " << *pid << " ("
                << QuoteForError(command)
                << (options_.proc_user.has_value()
                        ? absl::StrCat(", as user ", options_.proc_user->name)
                        : "")
                << ")";
      // The manager is closing: this child started after its sweep.
      kill = closing_;
      // Only an initializing proc waits for its call-back (it may have
      // registered already).
      if (proc->state.status() == v1::INITIALIZING && !proc->registered) {
        proc->state.set_reason(absl::StrFormat(
            "waiting for registration (up to %s)",
            absl::FormatDuration(options_.registration_timeout)));
        proc->registration_timer = loop_->PostAfter(
            options_.registration_timeout, [this, name, incarnation] {
              OnRegistrationTimeout(name, incarnation);
            });
      }
    }
  }
  if (forget) channels_->Forget(ticket->id);
  if (kill) launcher_->SignalGroup(*pid, SIGKILL).IgnoreError();
  RunDeferred(deferred);
}

ProcChannels::ChildCallbacks ProcManager::CallbacksFor(const std::string& name,
                                                       uint64_t incarnation) {
  ProcChannels::ChildCallbacks callbacks;
  callbacks.on_hello = [this, name, incarnation](pid_t pid,
                                                 std::string verifier,
                                                 std::function<void()> accept) {
    OnHello(name, incarnation, pid, std::move(verifier), std::move(accept));
  };
  callbacks.on_registered = [this, name, incarnation](pid_t pid) {
    OnRegistered(name, incarnation, pid);
  };
  callbacks.on_refused = [this, name, incarnation](const std::string& why) {
    OnRefused(name, incarnation, why);
  };
  callbacks.on_disconnected = [this, name, incarnation] {
    OnDisconnected(name, incarnation);
  };
  return callbacks;
}

void ProcManager::OnHello(const std::string& name, uint64_t incarnation,
                          pid_t pid, std::string verifier,
                          std::function<void()> accept) {
  absl::MutexLock lock(&mu_);
  Proc* proc = Find(name, incarnation);
  if (proc == nullptr || IsTerminal(proc->state.status())) return;
  if (pid != proc->state.pid()) {
    if (InLeaf(pid, proc->cgroup)) {
      // A bootstrap command forked the proc that says Hello: that process
      // is the one a later hostd re-adopts.
      proc->registered_pid = pid;
      absl::StatusOr<uint64_t> started = ProcessStartTime(pid);
      proc->start_time = started.ok() ? *started : 0;
    } else if (proc->state.pid() != 0) {
      // A Hello could name any pid, and the next hostd would adopt that
      // process: only the spawned one, or one in its leaf, is the proc.
      LOG(WARNING) << "proc " << name << " said Hello as pid " << pid
                   << ", not its spawned pid " << proc->state.pid()
                   << " or a process of its cgroup; tracking pid "
                   << proc->state.pid();
    }
    // Else the spawn is not recorded yet: the spawned process it is.
  }
  proc->verifier = std::move(verifier);
  proc->accepted = true;
  // The proc learns it was accepted only once a restarted hostd could
  // verify it: its secret's verifier is on disk first.
  SaveTableLocked([accept = std::move(accept), name](const absl::Status& s) {
    LOG_IF(ERROR, !s.ok()) << "proc " << name
                           << " accepted although the proc table could not "
                              "be written (it cannot rejoin a restarted "
                              "hostd): "
                           << s;
    accept();
  });
}

void ProcManager::OnRegistered(const std::string& name, uint64_t incarnation,
                               pid_t pid) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    Proc* proc = Find(name, incarnation);
    if (proc == nullptr) return;
    proc->registered = true;
    proc->awaiting_rejoin = false;
    proc->state.set_host(host_address_);
    if (proc->registration_timer != 0) loop_->Cancel(proc->registration_timer);
    if (!proc->previous_verifier.empty()) {
      // A rejoined proc holds its new secret: the old one is no use now.
      proc->previous_verifier.clear();
      SaveTableLocked();
    }
    if (proc->state.status() != v1::INITIALIZING) return;
    // The secret proves who called; a different pid is only worth a warning
    // (a bootstrap command may exec or fork the real proc).
    if (proc->state.pid() != 0 && proc->state.pid() != pid) {
      LOG(WARNING) << "proc " << name << " registered with pid " << pid
                   << " but hostd spawned pid " << proc->state.pid();
    }
    LOG(INFO) << "proc " << name << " registered over its channel (pid " << pid
              << ")";
    SetStatus(*proc, v1::RUNNING, "registered", deferred);
  }
  RunDeferred(deferred);
}

void ProcManager::OnRegistrationTimeout(const std::string& name,
                                        uint64_t incarnation) {
  pid_t pid = 0;
  {
    absl::MutexLock lock(&mu_);
    Proc* proc = Find(name, incarnation);
    if (proc == nullptr || proc->registered || released_ ||
        proc->state.status() != v1::INITIALIZING) {
      return;
    }
    proc->forced_failure =
        absl::StrFormat("proc \"%s\" did not register within %s; killed", name,
                        absl::FormatDuration(options_.registration_timeout));
    proc->stopped_by = "SIGKILL";
    pid = proc->state.pid();
    LOG(WARNING) << proc->forced_failure;
  }
  absl::Status signalled = launcher_->SignalGroup(pid, SIGKILL);
  if (!signalled.ok()) VLOG(1) << "SIGKILL of " << name << ": " << signalled;
}

void ProcManager::OnRefused(const std::string& name, uint64_t incarnation,
                            const std::string& why) {
  // The proc was told why and its channel closed: it exits by itself, or is
  // SIGTERMed after the grace (then SIGKILLed after another).
  absl::MutexLock lock(&mu_);
  Proc* proc = Find(name, incarnation);
  if (proc == nullptr || IsTerminal(proc->state.status())) return;
  if (proc->registration_timer != 0) loop_->Cancel(proc->registration_timer);
  proc->forced_failure = why;
  proc->stopped_by = "exited";
  proc->escalation_timer =
      loop_->PostAfter(options_.stop_grace,
                       [this, name, incarnation, grace = options_.stop_grace] {
                         Escalate(name, incarnation, SIGTERM, grace);
                       });
}

void ProcManager::set_host_address(const std::string& address) {
  absl::MutexLock lock(&mu_);
  host_address_ = address;
}

void ProcManager::OnExit(const std::string& name, uint64_t incarnation,
                         const ExitInfo& info) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    Proc* proc = Find(name, incarnation);
    if (proc == nullptr) return;
    // Until its deferred work ran: the destructor waits (that work may
    // touch the manager and what outlives it only as long as it does).
    ++busy_;
    v1::ProcState& state = proc->state;
    if (info.exit_code) state.set_exit_code(*info.exit_code);
    if (info.term_signal) state.set_term_signal(*info.term_signal);
    state.set_stderr_tail(info.stderr_tail);
    if (proc->registration_timer != 0) loop_->Cancel(proc->registration_timer);
    if (proc->escalation_timer != 0) loop_->Cancel(proc->escalation_timer);
    const uint64_t ticket = proc->ticket_id;
    proc->ticket_id = 0;

    std::string how =
        info.status_unknown ? std::string(kStatusUnknown)
        : info.exit_code
            ? absl::StrFormat("exited with code %d", *info.exit_code)
            : absl::StrFormat("was killed by %s",
                              SignalName(info.term_signal.value_or(0)));
    if (info.oom_kills.value_or(0) > 0) {
      absl::StrAppend(
          &how, absl::StrFormat(" (the OOM killer killed %d process(es) of "
                                "its cgroup)",
                                *info.oom_kills));
    }
    std::vector<std::string> lines = ExplainingStderrLines(info.stderr_tail);
    std::string stderr_note =
        lines.empty()
            ? ""
            : absl::StrCat(" (stderr: ", QuoteStderrLines(lines), ")");
    v1::Status status;
    std::string reason;
    // Its owner asked for this end (StopProc, ShutdownHost); a lease, an
    // admin's stop of another's proc, hostd's own shutdown are not.
    const bool requested = proc->owner_asked && proc->forced_failure.empty();
    if (!proc->forced_failure.empty()) {
      status = v1::FAILED;
      reason = absl::StrCat(proc->forced_failure, stderr_note);
      state.set_stopped_by(proc->stopped_by);
    } else if (proc->stopping) {
      status = v1::STOPPED;
      reason = absl::StrFormat("proc \"%s\" stopped: %s (%s)", name, how,
                               proc->stop_reason);
      state.set_stopped_by(!proc->stop_label.empty()  ? proc->stop_label
                           : proc->stopped_by.empty() ? "exited"
                                                      : proc->stopped_by);
    } else if (info.exit_code && *info.exit_code == 0) {
      status = v1::STOPPED;
      reason = absl::StrFormat("proc \"%s\" %s", name, how);
      state.set_stopped_by("exited");
    } else {
      status = v1::FAILED;
      reason = absl::StrFormat("proc \"%s\" (pid %d) %s%s", name, info.pid, how,
                               stderr_note);
      state.set_stopped_by(info.term_signal ? SignalName(*info.term_signal)
                                            : "exited");
    }
    LOG(INFO) << OneLogLine(reason);
    SetStatus(*proc, status, reason, deferred);

    v1::ProcExit& exit = proc->exit;
    exit.Clear();
    exit.set_proc(name);
    exit.set_host(host_address_);
    exit.set_pid(info.pid);
    exit.set_status(status);
    if (info.exit_code) exit.set_exit_code(*info.exit_code);
    if (info.term_signal) exit.set_term_signal(*info.term_signal);
    exit.set_stopped_by(state.stopped_by());
    exit.set_requested(requested);
    for (std::string& line : lines) exit.add_stderr_lines(std::move(line));
    exit.set_reason(reason);
    ReportLostLocked(*proc, ticket, deferred);
  }
  RunDeferred(deferred);
  absl::MutexLock lock(&mu_);
  --busy_;
}

void ProcManager::ReportLostLocked(Proc& proc, uint64_t ticket,
                                   Deferred& deferred) {
  std::function<void()> report;
  if (!proc.reported && options_.on_lost) {
    report = [on_lost = options_.on_lost, state = proc.state,
              exit = proc.exit] { on_lost(state, exit); };
  }
  proc.reported = true;
  if (ticket != 0) {
    // After the last frames the proc sent (its last replies) were routed.
    // Nothing of the manager is captured: the report may run later, on
    // the channels' thread.
    deferred.push_back(
        [channels = channels_, ticket, report = std::move(report)] {
          channels->Forget(ticket, report);
        });
  } else if (report) {
    deferred.push_back(std::move(report));
  }
}

void ProcManager::OnDisconnected(const std::string& name,
                                 uint64_t incarnation) {
  absl::MutexLock lock(&mu_);
  Proc* proc = Find(name, incarnation);
  if (proc == nullptr || IsTerminal(proc->state.status())) return;
  // Usually the process is gone too and is reaped in a moment.
  loop_->PostAfter(options_.unreachable_grace, [this, name, incarnation] {
    Deferred deferred;
    {
      absl::MutexLock lock(&mu_);
      Proc* proc = Find(name, incarnation);
      // A stopping proc is reaped (and reported) once the stop escalated.
      if (proc == nullptr || IsTerminal(proc->state.status()) ||
          proc->stopping || proc->reported) {
        return;
      }
      std::string reason = absl::StrFormat(
          "proc \"%s\" (pid %d) closed its channel to hostd %s ago and is "
          "unreachable (still running)",
          name, proc->state.pid(),
          absl::FormatDuration(options_.unreachable_grace));
      LOG(WARNING) << reason;
      v1::ProcExit& exit = proc->exit;
      exit.set_proc(name);
      exit.set_host(host_address_);
      exit.set_pid(proc->state.pid());
      // For its owner it failed: it can no longer be reached.
      exit.set_status(v1::FAILED);
      exit.set_reason(reason);
      ReportLostLocked(*proc, /*ticket=*/0, deferred);
    }
    RunDeferred(deferred);
  });
}

absl::StatusOr<std::optional<std::string>> ProcManager::EndOf(
    const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = procs_.find(name);
  if (it == procs_.end()) return NoSuchProc(name);
  const v1::ProcState& state = it->second->state;
  if (!IsTerminal(state.status())) return std::nullopt;
  return state.reason();
}

absl::StatusOr<std::string> ProcManager::OwnerOf(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = procs_.find(name);
  if (it == procs_.end()) return NoSuchProc(name);
  return it->second->state.owner();
}

absl::StatusOr<v1::ProcState> ProcManager::GetState(const std::string& name) {
  absl::Status valid = ValidateName(name, "proc name");
  if (!valid.ok()) return valid;
  v1::ProcState state;
  {
    absl::MutexLock lock(&mu_);
    auto it = procs_.find(name);
    if (it == procs_.end()) {
      return NoSuchProc(name);
    }
    state = it->second->state;
  }
  if (!IsTerminal(state.status()) && state.pid() != 0) {
    state.set_stderr_tail(launcher_->StderrTail(state.pid()));
  }
  return state;
}

void ProcManager::OwnerAskedToExit(const std::string& name,
                                   const std::string& identity) {
  absl::MutexLock lock(&mu_);
  auto it = procs_.find(name);
  if (it == procs_.end() || IsTerminal(it->second->state.status())) return;
  if (!identity.empty() && identity == it->second->state.owner()) {
    it->second->owner_asked = true;
  }
}

void ProcManager::Stop(const v1::StopProcRequest& request, StateCallback done,
                       StopBy by) {
  absl::Status valid = ValidateName(request.name(), "proc name");
  if (!valid.ok()) {
    done(valid);
    return;
  }
  absl::Duration grace = request.grace_ms() == 0
                             ? options_.stop_grace
                             : absl::Milliseconds(request.grace_ms());
  std::string reason =
      request.reason().empty() ? "stop requested" : BoundText(request.reason());
  loop_->Post([this, name = request.name(), reason, grace, by = std::move(by),
               done = std::move(done)]() mutable {
    StopOnLoop(name, reason, grace, by, std::move(done));
  });
}

void ProcManager::StopOnLoop(const std::string& name, const std::string& reason,
                             absl::Duration grace, const StopBy& by,
                             StateCallback done) {
  Deferred deferred;
  uint64_t ticket = 0;
  pid_t pid = 0;
  uint64_t incarnation = 0;
  std::optional<absl::StatusOr<v1::ProcState>> answer;  // answered at once
  {
    absl::MutexLock lock(&mu_);
    auto it = procs_.find(name);
    if (it == procs_.end() ||
        (by.incarnation != 0 && it->second->incarnation != by.incarnation)) {
      answer = NoSuchProc(name);
    } else if (IsTerminal(it->second->state.status()) || released_) {
      // Stopping a stopped proc changes nothing; a released one is the
      // next hostd's.
      answer = it->second->state;
    } else {
      Proc& proc = *it->second;
      proc.stop_waiters.push_back(std::move(done));
      if (!by.identity.empty() && by.identity == proc.state.owner()) {
        proc.owner_asked = true;
      }
      if (proc.stopping) return;  // Under way; answered with the others.
      proc.stopping = true;
      proc.stop_reason = reason;
      proc.stop_label = by.label;
      incarnation = proc.incarnation;
      pid = proc.state.pid();
      if (proc.registration_timer != 0) loop_->Cancel(proc.registration_timer);
      ticket = proc.registered ? proc.ticket_id : 0;
      SetStatus(proc, v1::STOPPING, absl::StrCat("stopping: ", reason),
                deferred);
    }
  }
  if (answer.has_value()) {
    done(*std::move(answer));
    return;
  }
  RunDeferred(deferred);
  if (ticket != 0) {
    // Ask first; signals only if the proc does not go within the grace.
    absl::Status asked = channels_->SendStop(ticket, reason, grace);
    if (asked.ok()) {
      absl::MutexLock lock(&mu_);
      Proc* proc = Find(name, incarnation);
      if (proc != nullptr && proc->ticket_id != 0) {
        proc->stopped_by = "exited";
        proc->escalation_timer =
            loop_->PostAfter(grace, [this, name, incarnation, grace] {
              Escalate(name, incarnation, SIGTERM, grace);
            });
      }
      return;
    }
    VLOG(1) << "could not ask proc " << name << " to stop: " << asked;
  }
  if (pid != 0) Escalate(name, incarnation, SIGTERM, grace);
}

void ProcManager::Escalate(const std::string& name, uint64_t incarnation,
                           int signal, absl::Duration next_grace) {
  pid_t pid = 0;
  {
    absl::MutexLock lock(&mu_);
    Proc* proc = Find(name, incarnation);
    if (proc == nullptr || released_ || IsTerminal(proc->state.status())) {
      return;
    }
    proc->stopped_by = SignalName(signal);
    pid = proc->state.pid();
    if (signal != SIGKILL) {
      proc->escalation_timer =
          loop_->PostAfter(next_grace, [this, name, incarnation, next_grace] {
            Escalate(name, incarnation, SIGKILL, next_grace);
          });
    }
  }
  LOG(INFO) << "sending " << SignalName(signal) << " to proc " << name
            << " (process group " << pid << ")";
  absl::Status sent = launcher_->SignalGroup(pid, signal);
  if (!sent.ok()) VLOG(1) << "signal to " << name << ": " << sent;
}

v1::ListProcsResponse ProcManager::List() {
  v1::ListProcsResponse response;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, proc] : procs_) {
    *response.add_procs() = ListedState(proc->state);
  }
  return response;
}

uint64_t ProcManager::Wait(const v1::WaitProcsRequest& request,
                           absl::Duration timeout, WaitCallback done) {
  Deferred deferred;
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    id = waiters_.Add(
        std::vector<std::string>(request.names().begin(),
                                 request.names().end()),
        request.min_status(), timeout,
        [done = std::move(done)](
            absl::StatusOr<StatusWaitResult<v1::ProcState>> result) {
          v1::WaitProcsResponse response;
          if (result.ok()) {
            for (auto& state : result->states) {
              *response.add_procs() = std::move(state);
            }
            response.set_timed_out(result->timed_out);
          }
          done(std::move(response));
        },
        deferred);
  }
  RunDeferred(deferred);
  return id;
}

bool ProcManager::CancelWait(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return waiters_.Cancel(id);
}

void ProcManager::AnswerAllWaits() {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    // The host is going away: this and every later wait is answered with
    // the states as they are.
    waiters_.Close(absl::OkStatus(), deferred);
  }
  RunDeferred(deferred);
}

void ProcManager::Shutdown(const std::string& reason, absl::Duration grace,
                           const std::string& requester,
                           ShutdownCallback done) {
  std::vector<std::string> live;
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    const bool first = !shutting_down_;
    shutting_down_ = true;
    for (const Proc* proc : LiveLocked()) live.push_back(proc->state.name());
    if (first) {
      PublishHostLocked(absl::StrCat("shutting down: ", BoundText(reason)),
                        deferred);
    }
  }
  RunDeferred(deferred);
  LOG(INFO) << "shutting down: stopping " << live.size() << " procs ("
            << QuoteForError(reason, kMaxReasonBytes) << ")";
  StopAll(live, reason, grace, requester, std::move(done));
}

void ProcManager::StopAll(const std::vector<std::string>& live,
                          const std::string& reason, absl::Duration grace,
                          const std::string& requester, ShutdownCallback done) {
  if (live.empty()) {
    done(v1::ShutdownHostResponse());
    return;
  }
  // Gathers the stops; the last one to finish answers.
  struct Gather {
    // Set before the stops share it, so without the lock.
    Gather(size_t remaining, ShutdownCallback done)
        : remaining(remaining), done(std::move(done)) {}
    absl::Mutex mu;
    v1::ShutdownHostResponse response ABSL_GUARDED_BY(mu);
    size_t remaining ABSL_GUARDED_BY(mu);
    ShutdownCallback done;
  };
  auto gather = std::make_shared<Gather>(live.size(), std::move(done));
  for (const std::string& name : live) {
    v1::StopProcRequest stop;
    stop.set_name(name);
    stop.set_reason(reason);
    stop.set_grace_ms(absl::ToInt64Milliseconds(grace));
    Stop(
        stop,
        [gather](absl::StatusOr<v1::ProcState> state) {
          bool last = false;
          {
            absl::MutexLock lock(&gather->mu);
            if (state.ok()) *gather->response.add_stopped() = *state;
            last = --gather->remaining == 0;
          }
          if (last) {
            v1::ShutdownHostResponse response;
            {
              absl::MutexLock lock(&gather->mu);
              response = gather->response;
            }
            gather->done(std::move(response));
          }
        },
        StopBy{.identity = requester});
  }
}

void ProcManager::Drain(const v1::DrainHostRequest& request,
                        absl::Duration grace, const std::string& identity,
                        DrainCallback done) {
  if (request.stop() && request.undrain()) {
    done(absl::InvalidArgumentError(
        "DrainHost: stop and undrain together; stop drains and stops every "
        "proc, undrain lifts a drain"));
    return;
  }
  // The answer waits for the drain on disk and, with stop, for every stop.
  struct Gather {
    Gather(int remaining, DrainCallback done)
        : remaining(remaining), done(std::move(done)) {}
    absl::Mutex mu;
    v1::DrainHostResponse response ABSL_GUARDED_BY(mu);
    int remaining ABSL_GUARDED_BY(mu);
    DrainCallback done;
    void Done(std::function<void(v1::DrainHostResponse&)> add) {
      v1::DrainHostResponse answer;
      {
        absl::MutexLock lock(&mu);
        add(response);
        if (--remaining > 0) return;
        answer = response;
      }
      done(std::move(answer));
    }
  };
  std::vector<std::string> live;
  v1::DrainState drain;
  std::optional<absl::Status> refused;
  Deferred deferred;
  auto gather =
      std::make_shared<Gather>(request.stop() ? 2 : 1, std::move(done));
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      refused = absl::FailedPreconditionError(
          "the host is shutting down; it can be neither drained nor "
          "undrained");
    } else if (request.undrain()) {
      if (drain_.draining()) {
        LOG(WARNING) << "host undrained by " << identity << " (drained since "
                     << TimeUtil::ToString(drain_.since()) << " by "
                     << drain_.by() << "): it accepts new procs again";
        drain_.Clear();
        PublishHostLocked(absl::StrCat("undrained by ", identity), deferred);
      }
    } else {
      if (!drain_.draining()) {
        drain_.set_draining(true);
        *drain_.mutable_since() = TimeUtil::GetCurrentTime();
        drain_.set_by(identity);
        drain_.set_reason(BoundText(request.reason()));
        LOG(WARNING) << "host drained by " << identity
                     << (drain_.reason().empty() ? "" : ": ") << drain_.reason()
                     << "; new procs are refused";
        PublishHostLocked(
            absl::StrCat("drained by ", identity,
                         drain_.reason().empty() ? "" : ": ", drain_.reason()),
            deferred);
      }
      if (request.stop()) {
        for (const Proc* proc : LiveLocked()) {
          live.push_back(proc->state.name());
        }
      }
    }
    drain = drain_;
    if (!refused.has_value()) {
      // Answered once the drain is durable: a hostd restarted after the
      // answer is still drained.
      SaveTableLocked([gather, drain](const absl::Status& saved) {
        LOG_IF(WARNING, !saved.ok())
            << "the drain is not in the proc table (a restarted hostd would "
               "not be drained): "
            << saved;
        gather->Done([&](v1::DrainHostResponse& response) {
          *response.mutable_drain() = drain;
        });
      });
    }
  }
  RunDeferred(deferred);
  if (refused.has_value()) {
    gather->done(*std::move(refused));
    return;
  }
  if (!request.stop()) return;
  const std::string reason =
      drain.reason().empty() ? std::string("host drained")
                             : absl::StrCat("host drained: ", drain.reason());
  LOG(INFO) << "drain: stopping " << live.size() << " procs";
  StopAll(live, reason, grace, identity,
          [gather](v1::ShutdownHostResponse stopped) {
            gather->Done([&](v1::DrainHostResponse& response) {
              for (v1::ProcState& state : *stopped.mutable_stopped()) {
                *response.add_stopped() = std::move(state);
              }
            });
          });
}

v1::DrainState ProcManager::drain() {
  absl::MutexLock lock(&mu_);
  return drain_;
}

v1::HostInfo ProcManager::HostState() {
  absl::MutexLock lock(&mu_);
  return HostLocked();
}

v1::HostInfo ProcManager::HostLocked() const {
  v1::HostInfo host;
  host.set_num_procs(static_cast<uint32_t>(LiveLocked().size()));
  if (drain_.draining()) *host.mutable_drain() = drain_;
  // Released procs are not stopped: the host restarts.
  host.set_shutting_down(shutting_down_ && !released_);
  return host;
}

void ProcManager::PublishHostLocked(const std::string& reason,
                                    Deferred& deferred) {
  if (watch_.empty()) return;
  v1::HostEvent event;
  event.set_kind(v1::HostEvent::HOST_CHANGED);
  *event.mutable_host() = HostLocked();
  event.set_reason(reason);
  watch_.Publish(std::move(event), deferred);
}

v1::HostEvent ProcManager::SnapshotLocked() const {
  v1::HostEvent snapshot;
  *snapshot.mutable_at() = PreciseNow();
  *snapshot.mutable_host() = HostLocked();
  for (const auto& [name, proc] : procs_) {
    *snapshot.add_procs() = ListedState(proc->state);
  }
  return snapshot;
}

absl::StatusOr<std::shared_ptr<HostWatch::Watcher>> ProcManager::Watch(
    HostWatch::Visible visible, std::function<void()> ready) {
  absl::MutexLock lock(&mu_);
  return watch_.Add(SnapshotLocked(), std::move(visible), std::move(ready));
}

void ProcManager::Resync(HostWatch::Watcher& watcher) {
  absl::MutexLock lock(&mu_);
  watch_.Resync(watcher, SnapshotLocked());
}

void ProcManager::Unwatch(HostWatch::Watcher& watcher) {
  watch_.Remove(watcher);
}

void ProcManager::CloseWatches() { watch_.Close(); }

std::vector<const ProcManager::Proc*> ProcManager::LiveLocked() const {
  std::vector<const Proc*> live;
  for (const auto& [name, proc] : procs_) {
    if (!IsTerminal(proc->state.status())) live.push_back(proc.get());
  }
  return live;
}

int ProcManager::LiveProcs() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(LiveLocked().size());
}

int ProcManager::HeldWaits() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiters_.pending());
}

void ProcManager::RunDueTimers() { loop_->RunDue(); }

void ProcManager::RunOnLoop(std::function<void()> fn) {
  loop_->Post(std::move(fn));
}

std::shared_ptr<const CommandPolicy> ProcManager::policy() const {
  absl::MutexLock lock(&policy_mu_);
  return policy_;
}

void ProcManager::SetPolicy(CommandPolicy policy) {
  auto next = std::make_shared<const CommandPolicy>(std::move(policy));
  absl::MutexLock lock(&policy_mu_);
  policy_ = std::move(next);
}

v1::ProcTable ProcManager::TableLocked() const {
  v1::ProcTable table;
  table.set_version(v1::PROC_TABLE_VERSION_CURRENT);
  table.set_boot_id(boot_id_);
  table.set_next_incarnation(next_incarnation_);
  table.set_host(host_address_.empty() ? table_host_ : host_address_);
  table.set_generation_limit(generation_limit_);
  if (drain_.draining()) *table.mutable_drain() = drain_;
  for (const auto& [name, proc] : procs_) {
    v1::ProcRecord& record = *table.add_procs();
    *record.mutable_request() = proc->request;
    record.set_command(proc->command);
    record.set_incarnation(proc->incarnation);
    *record.mutable_state() = proc->state;
    record.set_registered_pid(proc->registered_pid);
    record.set_start_time(proc->start_time);
    record.set_verifier(proc->verifier);
    record.set_previous_verifier(proc->previous_verifier);
    record.set_cgroup(proc->cgroup);
    record.set_accepted(proc->accepted);
    record.set_stderr_offset(proc->stderr_offset);
  }
  return table;
}

void ProcManager::SaveTableLocked(
    DurableFile::Writer::DurableCallback durable) {
  if (table_ == nullptr) {
    // Nothing to wait for; never run a callback under mu_.
    if (durable) {
      loop_->Post(
          [durable = std::move(durable)] { durable(absl::OkStatus()); });
    }
    return;
  }
  // Serialized once per write, when it starts (not once per change): a
  // burst of spawns costs a few snapshots of the table, not one each.
  table_->SaveLatest(
      [this] {
        absl::MutexLock lock(&mu_);
        return TableLocked().SerializeAsString();
      },
      std::move(durable));
}

absl::Status ProcManager::Recover() {
  absl::StatusOr<std::string> boot = BootId();
  LOG_IF(WARNING, !boot.ok())
      << "cannot read this boot's id (" << boot.status()
      << "); procs of an earlier hostd are taken as gone";
  {
    absl::MutexLock lock(&mu_);
    boot_id_ = boot.ok() ? *boot : "";
  }
  if (options_.table_path.empty()) return absl::OkStatus();
  DurableFile file(options_.table_path, options_.table_crash_hook);
  absl::StatusOr<std::string> payload = file.Load();
  if (!payload.ok() && !absl::IsNotFound(payload.status())) {
    return absl::Status(
        payload.status().code(),
        absl::StrCat(payload.status().message(),
                     "; procs an earlier hostd ran may still be running: "
                     "stop them, then move the file aside to start afresh"));
  }
  v1::ProcTable table;
  if (payload.ok()) {
    if (!table.ParseFromString(*payload)) {
      return absl::DataLossError(absl::StrCat(
          "proc table ", options_.table_path,
          " passed its checksum but does not parse as a proc table"));
    }
    if (table.version() > v1::PROC_TABLE_VERSION_CURRENT) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "proc table %s is of version %d; this hostd reads up to version %d "
          "(a newer hostd wrote it)",
          options_.table_path, table.version(),
          v1::PROC_TABLE_VERSION_CURRENT));
    }
  }
  table_ = std::make_unique<DurableFile::Writer>(std::move(file));

  // Procs whose process may still run: watched again outside mu_ (the
  // supervisor's callbacks take it).
  struct Candidate {
    std::string name;
    uint64_t incarnation;
    AdoptOptions adopt;
  };
  std::vector<Candidate> candidates;
  Deferred deferred;
  // Terminal records (generation, name, incarnation), kept as finished below.
  std::vector<std::tuple<uint64_t, std::string, uint64_t>> ended;
  {
    absl::MutexLock lock(&mu_);
    table_host_ = table.host();
    drain_ = table.drain();
    LOG_IF(WARNING, drain_.draining())
        << "the host is drained (since " << TimeUtil::ToString(drain_.since())
        << ", by " << drain_.by() << (drain_.reason().empty() ? "" : ": ")
        << drain_.reason()
        << "): new procs are refused until DrainHost undrains it";
    next_incarnation_ =
        std::max<uint64_t>(next_incarnation_, table.next_incarnation());
    // Past anything the earlier hostd may have handed out.
    last_generation_ = std::max(last_generation_, table.generation_limit());
    generation_limit_ = last_generation_ + kGenerationBlock;
    const bool same_boot = !boot_id_.empty() && table.boot_id() == boot_id_;
    for (const v1::ProcRecord& record : table.procs()) {
      const std::string& name = record.state().name();
      if (!ValidateName(name, "proc name").ok()) {
        LOG(WARNING) << "proc table: skipping a record with a bad name";
        continue;
      }
      next_incarnation_ =
          std::max<uint64_t>(next_incarnation_, record.incarnation() + 1);
      last_generation_ =
          std::max<uint64_t>(last_generation_, record.state().generation());
      auto proc = std::make_unique<Proc>();
      proc->request = record.request();
      proc->command = record.command();
      proc->incarnation = record.incarnation();
      proc->state = record.state();
      proc->registered_pid = record.registered_pid();
      proc->start_time = record.start_time();
      proc->verifier = record.verifier();
      proc->previous_verifier = record.previous_verifier();
      proc->cgroup = record.cgroup();
      proc->accepted = record.accepted();
      proc->stderr_offset = record.stderr_offset();
      Proc& stored = *(procs_[name] = std::move(proc));
      if (IsTerminal(stored.state.status())) {
        stored.reported = true;  // Its end was told by the earlier hostd.
        ended.emplace_back(stored.state.generation(), name, stored.incarnation);
        continue;
      }
      const pid_t pid = TrackedPid(stored);
      std::string gone;
      if (pid == 0) {
        gone = "hostd restarted before it was spawned";
      } else if (!same_boot) {
        gone = "the machine rebooted since hostd last ran";
      } else if (stored.start_time == 0) {
        gone = "its start time was never recorded, so it cannot be verified";
      }
      if (!gone.empty()) {
        stored.state.set_pid(pid);
        stored.forced_failure =
            absl::StrFormat("proc \"%s\" %s: %s", name, kStatusUnknown, gone);
        continue;
      }
      AdoptOptions adopt;
      adopt.pid = pid;
      adopt.start_time = stored.start_time;
      adopt.cgroup_dir = stored.cgroup;
      adopt.log_dir = stored.state.log_dir();
      adopt.stderr_offset = stored.stderr_offset;
      candidates.push_back({name, stored.incarnation, std::move(adopt)});
    }
    // The generation rose with each change: the last change is the end.
    std::sort(ended.begin(), ended.end());
    for (const auto& [generation, name, incarnation] : ended) {
      Proc* proc = Find(name, incarnation);
      if (proc != nullptr) AddFinishedLocked(*proc, deferred);
    }
  }

  for (Candidate& candidate : candidates) {
    const std::string name = candidate.name;
    const uint64_t incarnation = candidate.incarnation;
    absl::Status adopted = launcher_->Adopt(
        candidate.adopt, [this, name, incarnation](const ExitInfo& info) {
          OnExit(name, incarnation, info);
        });
    absl::MutexLock lock(&mu_);
    Proc* proc = Find(name, incarnation);
    if (proc == nullptr || IsTerminal(proc->state.status())) continue;
    if (!adopted.ok()) {
      proc->forced_failure = absl::StrFormat(
          "proc \"%s\" (pid %d) %s while hostd was down (%s)", name,
          candidate.adopt.pid, kStatusUnknown, adopted.message());
      continue;
    }
    proc->adopted = true;
    // Signals and reports name the process that is tracked.
    proc->state.set_pid(candidate.adopt.pid);
    if (!proc->accepted) {
      // Its channel broke before it was accepted: it cannot rejoin.
      proc->forced_failure = absl::StrFormat(
          "proc \"%s\" was not yet accepted when hostd restarted; killed",
          name);
      proc->stopped_by = "SIGKILL";
      loop_->Post([this, name, incarnation] {
        Escalate(name, incarnation, SIGKILL, absl::ZeroDuration());
      });
    } else if (proc->state.status() == v1::STOPPING) {
      // A stop was under way: finish it by signal.
      proc->stopping = true;
      proc->stop_reason = "stop under way when hostd restarted";
      loop_->Post([this, name, incarnation, grace = options_.stop_grace] {
        Escalate(name, incarnation, SIGTERM, grace);
      });
    } else {
      proc->awaiting_rejoin = true;
      proc->state.set_reason(
          absl::StrFormat("re-adopting: waiting up to %s for pid %d to rejoin",
                          absl::FormatDuration(options_.registration_timeout),
                          candidate.adopt.pid));
      proc->registration_timer = loop_->PostAfter(
          options_.registration_timeout,
          [this, name, incarnation] { OnRejoinTimeout(name, incarnation); });
    }
    if (options_.on_created && !proc->state.client().empty()) {
      // Its client's lease holds it again (the client reconnects in time).
      deferred.push_back([on_created = options_.on_created, state = proc->state,
                          incarnation] { on_created(state, incarnation); });
    }
  }

  // What is gone is FAILED now, with what can be known; its leaf (and any
  // descendant left in it) goes too.
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, proc] : procs_) {
      if (IsTerminal(proc->state.status()) || proc->adopted ||
          proc->forced_failure.empty()) {
        continue;
      }
      std::string reason = proc->forced_failure;
      if (!proc->cgroup.empty()) {
        absl::StatusOr<ProcCgroup> leaf = ProcCgroup::Open(proc->cgroup);
        if (leaf.ok()) {
          absl::StatusOr<CgroupMemoryEvents> events = leaf->MemoryEvents();
          if (events.ok() && events->oom_kill > 0) {
            absl::StrAppend(&reason,
                            "; the OOM killer killed a process of its cgroup");
          }
          absl::Status killed = leaf->Kill(absl::Seconds(5));
          absl::Status removed =
              killed.ok() ? leaf->Remove(absl::Seconds(5)) : killed;
          LOG_IF(WARNING, !removed.ok())
              << "proc " << name << ": cannot remove its cgroup: " << removed;
        }
      }
      LOG(WARNING) << OneLogLine(reason);
      // A proc asked to stop that ended meanwhile did what it was asked.
      const v1::Status status =
          proc->state.status() == v1::STOPPING ? v1::STOPPED : v1::FAILED;
      SetStatus(*proc, status, reason, deferred);
      v1::ProcExit& exit = proc->exit;
      exit.set_proc(name);
      exit.set_host(table_host_);
      exit.set_pid(proc->state.pid());
      exit.set_status(status);
      exit.set_reason(reason);
      ReportLostLocked(*proc, /*ticket=*/0, deferred);
    }
    // Every proc taken over gets a generation past any the earlier hostd
    // handed out (one a client saw may not have reached the table).
    for (auto& [name, proc] : procs_) {
      if (proc->adopted && !IsTerminal(proc->state.status())) {
        proc->state.set_generation(++last_generation_);
      }
    }
    SaveTableLocked();
    LOG(INFO) << "proc table " << options_.table_path << ": "
              << candidates.size() << " procs of an earlier hostd to re-adopt";
  }
  RunDeferred(deferred);
  return absl::OkStatus();
}

absl::Status ProcManager::CheckRejoinLocked(
    const Proc& proc, const ProcChannels::RejoinRequest& request) {
  const v1::Rejoin& rejoin = request.rejoin;
  const std::string& name = rejoin.name();
  if (proc.incarnation != rejoin.incarnation()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("proc \"%s\" here is incarnation %d, not %d", name,
                        proc.incarnation, rejoin.incarnation()));
  }
  if (!proc.awaiting_rejoin) {
    return absl::FailedPreconditionError(
        absl::StrFormat("proc \"%s\" is not waiting to rejoin (%s)", name,
                        v1::Status_Name(proc.state.status())));
  }
  const pid_t pid = TrackedPid(proc);
  if (request.peer_pid != pid || rejoin.pid() != pid) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "proc \"%s\" is pid %d; the connection is from pid %d (claiming %d)",
        name, pid, request.peer_pid, rejoin.pid()));
  }
  auto same = [](const std::string& a, const std::string& b) {
    return !a.empty() && a.size() == b.size() &&
           CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
  };
  if (!same(proc.verifier, request.presented_verifier) &&
      !same(proc.previous_verifier, request.presented_verifier)) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "proc \"%s\" (pid %d) presented a wrong secret", name, pid));
  }
  absl::StatusOr<uint64_t> started = ProcessStartTime(pid);
  if (!started.ok() || *started != proc.start_time) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "pid %d is not the process proc \"%s\" was (start time differs)", pid,
        name));
  }
  if (!proc.cgroup.empty()) {
    if (!InLeaf(pid, proc.cgroup)) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "pid %d is not in proc \"%s\"'s cgroup %s", pid, name, proc.cgroup));
    }
  }
  if (!table_host_.empty() && table_host_ != host_address_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "this hostd advertises %s, but proc \"%s\"'s actors are named by %s",
        host_address_, name, table_host_));
  }
  return absl::OkStatus();
}

void ProcManager::OnRejoin(ProcChannels::RejoinRequest request) {
  const std::string name = request.rejoin.name();
  absl::Status allowed;
  {
    absl::MutexLock lock(&mu_);
    auto it = procs_.find(name);
    allowed = closing_             ? absl::UnavailableError("hostd is exiting")
              : it == procs_.end() ? NoSuchProc(name)
                                   : CheckRejoinLocked(*it->second, request);
    if (allowed.ok()) {
      Proc& proc = *it->second;
      // The secret the proc confirmed stays valid until it confirms the
      // new one (Ready): a rejoin cut short may be tried again. It waits
      // (and its deadline runs) until then.
      if (proc.previous_verifier.empty()) {
        proc.previous_verifier = proc.verifier;
      }
      proc.verifier = request.next_verifier;
      proc.ticket_id = request.id;
      proc.state.set_reason(absl::StrFormat(
          "re-adopted after a hostd restart (pid %d)", request.peer_pid));
      LOG(INFO) << "proc " << name << " rejoined (pid " << request.peer_pid
                << ")";
      // It gets its new secret once the verifier is on disk.
      SaveTableLocked([channels = channels_, id = request.id, name,
                       rank = proc.request.rank(),
                       callbacks = CallbacksFor(name, proc.incarnation)](
                          const absl::Status&) {
        channels->AcceptRejoin(id, name, rank, callbacks);
      });
    }
  }
  if (!allowed.ok()) {
    LOG(WARNING) << "refused a rejoin as proc " << QuoteForError(name) << ": "
                 << allowed.message();
    channels_->RefuseRejoin(request.id, std::string(allowed.message()));
  }
}

void ProcManager::OnRejoinTimeout(const std::string& name,
                                  uint64_t incarnation) {
  pid_t pid = 0;
  {
    absl::MutexLock lock(&mu_);
    Proc* proc = Find(name, incarnation);
    if (proc == nullptr || !proc->awaiting_rejoin || released_ ||
        IsTerminal(proc->state.status())) {
      return;
    }
    proc->awaiting_rejoin = false;
    proc->forced_failure = absl::StrFormat(
        "proc \"%s\" did not rejoin within %s after hostd restarted; killed",
        name, absl::FormatDuration(options_.registration_timeout));
    proc->stopped_by = "SIGKILL";
    pid = proc->state.pid();
    LOG(WARNING) << proc->forced_failure;
  }
  absl::Status signalled = launcher_->SignalGroup(pid, SIGKILL);
  LOG_IF(WARNING, !signalled.ok())
      << "SIGKILL of proc " << name << ": " << signalled;
}

void ProcManager::Release() {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    released_ = true;
    closing_ = true;
    shutting_down_ = true;
    PublishHostLocked("exiting for a restart; the procs keep running",
                      deferred);
    for (auto& [name, proc] : procs_) {
      // A stop under way is the next hostd's to finish (it signals a
      // proc that was STOPPING); its callers hear so now.
      for (StateCallback& waiter : proc->stop_waiters) {
        deferred.push_back([waiter = std::move(waiter)] {
          waiter(absl::UnavailableError(
              "hostd is restarting; the next hostd finishes this stop"));
        });
      }
      proc->stop_waiters.clear();
      // No deadline acts on a proc the next hostd owns.
      for (EventLoop::TimerId* timer :
           {&proc->registration_timer, &proc->escalation_timer}) {
        if (*timer != 0) loop_->Cancel(*timer);
        *timer = 0;
      }
    }
    SaveTableLocked();
  }
  RunDeferred(deferred);
  if (table_ != nullptr) {
    absl::Status flushed = table_->Flush();
    LOG_IF(ERROR, !flushed.ok())
        << "the proc table is not durable; the next hostd may not re-adopt "
           "every proc: "
        << flushed;
  }
  LOG(INFO) << "released every proc to the next hostd";
}

}  // namespace mesh
