// Client: this process's place in the mesh — its mailbox, its ports, and
// its connections to hosts. HostMesh, ProcMesh and ActorMesh all act
// through one Client (by default the process-wide one).
//
// A client serves no port and listens on nothing. Its mailbox is named
// "client:<16 hex digits>" and is reached through hosts: for each host it
// talks to, the client opens one relay stream (hostd's Relay.Connect), on
// which it sends everything bound for that host's procs and receives what
// they send to its ports. A stream that broke is reopened by the next send
// to that host; whatever was waiting on it (a Call's ranks on that host)
// fails at once.
//
// Host health: every hostd sends a heartbeat on each relay stream (every
// 500 ms by default, carrying its incarnation: a random id chosen when it
// started). From a host's first heartbeat on, the client tells apart two
// events with two bounds (Options):
//   - unreachable: the stream broke, or nothing came on it for
//     unreachable_after (2 s; at least two of the host's heartbeat
//     intervals). Sends to the host (Call, Cast, Reduce) fail at once with
//     UNAVAILABLE naming it, and so does whatever was waiting on it; no
//     proc is declared dead. The client reconnects in the background
//     (backoff 0.1 s doubling to 1 s). A host heard from again with the
//     same incarnation is reachable again: nothing was lost.
//   - lost: unreachable for lost_after (30 s), or back as another
//     incarnation (its hostd restarted), or it shut down (it says so on
//     its way out). Every proc this client spawned there (ProcMesh) is
//     reported lost to on_host_event (calls pending on them fail); the
//     client stops reconnecting. The next send or Connect() to the host
//     opens a stream again (what waits on one that gets no answer within
//     unreachable_after fails then); a heartbeat makes the host reachable,
//     what was lost stays lost.
// Detection takes at most the bound plus a tick (a tenth of it, at most
// 200 ms). With hostd's defaults: a stopped host is unreachable about 2 s
// after its last heartbeat, and a call to it then fails in under 1 ms.
// HostHealth(host) tells the current state; on_host_event gets every change. A
// host that never sent a heartbeat (nothing listens there, say) is kUnknown:
// its stream failing is what its callers see, as before.
//
// A Port<T> is an address in the client's mailbox; messages of type T sent
// to port.ref() (by actors, or anyone) are received with Recv. Thread-safe.
// Destroying a Client ends its relay streams (each gets a second to drain
// what is queued) and waits until they are gone.
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CLIENT_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CLIENT_H_

#include <grpcpp/channel.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostmesh/credentials.h"
#include "hostmesh/host_state.h"
#include "proto/host.pb.h"
#include "proto/mailbox.pb.h"
#include "proto/proc.pb.h"

namespace mesh {

class ActorMesh;
class EventLoop;
struct HostHealthChange;
class Mailbox;
class MeshSupervision;
class SupervisionIndex;
class RelayStream;
template <typename T>
class Port;
template <typename T>
class OncePort;
template <typename T, typename Acc>
class AccumulatingPort;

namespace internal {

class OutputForwarder;

// The queue behind a Port: envelopes in arrival order. Thread-safe.
class PortQueue {
 public:
  void Push(v1::Envelope envelope);
  // From now on, once the queue is empty, Pop returns `error` at once (the
  // first error given stays).
  void Fail(absl::Status error);
  // The next envelope; the failure once empty (see Fail); DEADLINE_EXCEEDED
  // after `timeout`.
  absl::StatusOr<v1::Envelope> Pop(absl::Duration timeout);

 private:
  absl::Mutex mu_;
  std::deque<v1::Envelope> queue_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

// Unpacks an envelope's payload (or its error) as T.
absl::Status UnpackEnvelope(const v1::Envelope& envelope,
                            google::protobuf::Message* message);

}  // namespace internal

// A host's health as a client sees it (see Client): a change, given to
// ClientOptions::on_host_event, or the current state, from
// Client::HostHealth.
struct HostEvent {
  // host:port, as the client names it.
  std::string host;
  // kReachable, kUnreachable or kLost (kUnknown: never heard from).
  HostState state = HostState::kUnknown;
  // The state before this change.
  HostState previous = HostState::kUnknown;
  // Why, naming the host, e.g. "no frame from host 10.0.0.2:7450 for 2.05s
  // (unreachable after 2s)".
  std::string reason;
  // kLost: the procs this client spawned on the host that had not ended,
  // now lost (calls pending on them fail). HostHealth: those procs now.
  std::vector<std::string> procs;
  // The hostd incarnation it is about (for a restart's kLost, the old
  // one); 0 before the first heartbeat.
  uint64_t incarnation = 0;
};

// What a client does with an actor failure that no handler took (no
// ActorMesh::OnSupervisionEvent on its mesh, no Client::OnSupervisionEvent).
enum class UnhandledFailure {
  // Poison the mesh: every later Cast, Call and Reduce on it (and on its
  // slices) returns the failure (ActorMesh::status()); logged once as an
  // ERROR.
  kPoisonMesh,
  // Log it as an ERROR and exit the process with status 1.
  kExitProcess,
};

// The supervision event an error carries (a call on a poisoned mesh, a
// supervised port that failed), if any.
std::optional<v1::SupervisionEvent> SupervisionEventOf(
    const absl::Status& status);

struct ClientOptions {
  // What the client presents to hosts: a token and/or TLS (README
  // "Security"). Unset: ClientCredentials::FromEnv(), i.e. the files named
  // by HOSTMESH_TOKEN_FILE, HOSTMESH_TLS_CA, HOSTMESH_TLS_CERT and
  // HOSTMESH_TLS_KEY. Hosts a mesh starts for itself (Local, Process) are
  // reached with their own per-host credentials instead.
  std::optional<ClientCredentials> credentials;

  // Host health (see Client): a host that sent nothing for this long is
  // unreachable (at least two of its heartbeat intervals; > 0) ...
  absl::Duration unreachable_after = absl::Seconds(2);
  // ... and one unreachable for this long is lost (>= 0).
  absl::Duration lost_after = absl::Seconds(30);
  // Every change of a host's health, in order, one at a time, on the
  // client's event thread (with supervision events): it should not block
  // (that delays the events after it) and must not destroy the Client
  // (capture a weak_ptr). Unset: changes are
  // logged (lost procs as an ERROR).
  std::function<void(const HostEvent&)> on_host_event;

  // See UnhandledFailure.
  UnhandledFailure on_unhandled_failure = UnhandledFailure::kPoisonMesh;
  // How often the client sends a heartbeat on each relay stream (> 0). A
  // host ends a client stream silent for max(3 intervals, 1 s); once the
  // client has had no stream to a host for that host's --owner-lease, the
  // procs it spawned there are stopped (a client that reconnects in time
  // keeps them).
  absl::Duration heartbeat_interval = absl::Seconds(1);

  // The procs this client spawns (HostMesh::Spawn) have their stdout and
  // stderr shown here, each line prefixed by its proc ("[p0_3] ..."):
  // stdout to this process's stdout, stderr to its stderr (README "Logs").
  // A proc never waits for it, nor does the client's other work; output
  // the host rotated away before it was shown is noted as "[p0_3] ... N
  // bytes dropped".
  bool forward_proc_output = true;
  // Bytes of forwarded output buffered at most before the streams pause.
  size_t proc_output_buffer_bytes = 1 << 20;
  // Where forwarded output goes instead of fds 1 and 2 (tests, a UI): each
  // call is whole lines of one stream, on the forwarder's thread.
  std::function<void(v1::LogStream, absl::string_view)> proc_output_sink;

  // Casts, calls and reduces to an actor mesh on more hosts than this go
  // through a tree of its hosts (each forwards to at most this many), so
  // the client sends one envelope, and a Reduce gets one answer, whatever
  // the number of hosts; a mesh on this many hosts or fewer is sent to host
  // by host. Every message to one mesh goes the same way, so per-sender
  // order holds. 0 or 1: always host by host.
  size_t cast_tree_fanout = 16;
};

class Client {
 public:
  using Options = ClientOptions;

  static absl::StatusOr<std::shared_ptr<Client>> Create(Options options = {});
  // The process-wide client, created on first use.
  static absl::StatusOr<std::shared_ptr<Client>> Default();
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The client's mailbox id, "client:<16 hex digits>": what hosts route
  // messages for its ports by. Its ports' refs carry it with an empty host.
  const std::string& id() const;

  // Opens the relay stream to host `host` (host:port) now rather than at
  // the first send, so that actors there can reach this client's ports
  // before it sent anything to that host. Returns once the stream is
  // started (not once it is connected): a host that cannot be reached shows
  // up as that stream's end (watchers of the host fire) and the next send
  // opens it again. INVALID_ARGUMENT for an empty host, FAILED_PRECONDITION
  // once the client is being destroyed.
  absl::Status Connect(const std::string& host);

  // Ports for messages of type T: a stream (every message, in arrival
  // order), a once port (the first message only), and an accumulating port
  // (each message folded into a value by `reducer`).
  template <typename T>
  Port<T> OpenPort();
  template <typename T>
  OncePort<T> OpenOncePort();
  template <typename T, typename Acc>
  AccumulatingPort<T, Acc> OpenAccumulatingPort(
      Acc initial, std::function<Acc(Acc, const T&)> reducer);

  // The health of host `host` as this client sees it now (see the class
  // comment); kUnknown for a host never heard from.
  HostEvent HostHealth(const std::string& host) const;

  // Supervision: an actor of a mesh this client spawned ended. Its handler
  // failed (cause ACTOR_ENDED), its proc ended (PROC_ENDED: exit code or
  // signal and the stderr lines that explain it) or its host was lost
  // (HOST_LOST); a host merely unreachable ends nothing. The client makes
  // one v1::SupervisionEvent per actor and end, and gives it, on the
  // client's event thread (the one of on_host_event, in order), to the
  // mesh's own handler (ActorMesh::OnSupervisionEvent), else to this
  // client-wide one; a failure neither takes is unhandled (see
  // UnhandledFailure). Whatever waits on the actor (a Call's rank, a port
  // the mesh supervises) fails at once with the same cause, handled or
  // not. A handler should not block (it delays the events after it; the
  // client's heartbeats run on a thread of their own) and must not hold the
  // last reference to the Client or to its own mesh (capture weak_ptrs):
  // the Client cannot be destroyed on its own event thread.
  void OnSupervisionEvent(
      std::function<void(const v1::SupervisionEvent&)> handler);
  const v1::PortRef& supervisor_port() const { return supervisor_port_; }

  // See ClientOptions::cast_tree_fanout. Setting it changes how messages
  // sent from then on go: one sent before the change to a mesh whose path
  // changed may be overtaken by one sent after (order holds per path).
  size_t cast_tree_fanout() const { return cast_tree_fanout_.load(); }
  void SetCastTreeFanout(size_t fanout) { cast_tree_fanout_.store(fanout); }

  // Internal: host `host` is gone for `reason` (its launcher saw it end,
  // e.g. the srun of a Slurm host exited): it is lost now, as if it had
  // said it shut down, without waiting for lost_after. No-op for a host
  // already lost or one this client never connected to.
  void HostGone(const std::string& host, const std::string& reason);

  // Internal: the mailbox, and a cached channel per address.
  Mailbox& mailbox() { return *mailbox_; }
  std::shared_ptr<grpc::Channel> Channel(const std::string& address);
  // Internal: what to present to host `address` instead of the client's
  // credentials (a host this client started, which trusts its token).
  // Later channels to it use them; streams already open keep theirs.
  void SetHostCredentials(const std::string& address,
                          ClientCredentials credentials);
  // What this client presents to host `address`.
  ClientCredentials CredentialsFor(const std::string& address);
  // Internal: proc `proc` (pid `pid`, 0 if unknown) on host `host` is this
  // client's (ProcMesh): it is reported if the host is lost, until the host
  // says the proc ended. A host's word that an older incarnation of it
  // (another pid) ended is stale and dropped.
  void TrackProc(const std::string& host, const std::string& proc,
                 int32_t pid = 0);
  // Internal: shows the output of `procs` on `host` (just created) if
  // Options::forward_proc_output (see there).
  void ForwardProcOutput(const std::string& host,
                         std::vector<std::string> procs);
  // Internal: waits (at most `timeout`) until the forwarded output of
  // procs that ended is all shown.
  void FlushProcOutput(absl::Duration timeout);
  // Internal: the supervision state of a new actor mesh, registered so its
  // actors' ends reach it (kept until the last copy of the mesh is gone).
  std::shared_ptr<MeshSupervision> SuperviseMesh(
      const std::string& name, const std::vector<v1::ActorRef>& actors);
  // Internal: `fail` is called once with the first end of an actor of
  // `mesh` (at once if one has ended already), while `alive` lives. For
  // Port::Watch.
  void OnMeshEnd(const ActorMesh& mesh, std::weak_ptr<void> alive,
                 std::function<void(const absl::Status&)> fail);
  // Internal: sends `envelope` (with to_host set) on the relay stream to its
  // host, from this client's mailbox. Unlike mailbox().Send, a refusal is
  // returned (naming the host) instead of answered to reply_to: a cast to
  // many ranks needs one answer per rank.
  absl::Status SendToHost(v1::Envelope envelope);

 private:
  Client();
  // The mailbox's Outbound: routes `envelope` to the relay stream of its
  // host, opening one if there is none.
  absl::Status Route(v1::Envelope& envelope);
  RelayStream* StreamLocked(const std::string& host)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_);
  void OnFrame(const std::string& host, uint64_t serial, v1::RelayFrame frame);
  // Host health (see the class comment): one record per host (client.cc).
  struct HostRecord;
  // The record of `host`, made if there is none.
  HostRecord& RecordLocked(const std::string& host)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_);
  // The record of `host`, or null.
  HostRecord* FindRecordLocked(const std::string& host) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_);
  void StartHealth(const Options& options);
  // Checks every host's silence and grace; reconnects; runs on the health
  // loop every tick.
  void HealthTick();
  // Queues, for the health loop, the events of host `host`'s `changes`.
  void HealthChangedLocked(const std::string& host, HostRecord& record,
                           HostState previous,
                           std::vector<HostHealthChange> changes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_);
  void DeliverHostEvent(const HostEvent& event);
  // Supervision (see OnSupervisionEvent), on the event thread: a proc's
  // SupervisionEvent for an actor; proc `lost.mailbox()` of `host` ended;
  // host `host` was lost with `procs`.
  void ActorEnded(const std::string& host, v1::SupervisionEvent event);
  // A proc's SupervisionEvent envelope that came on the stream of `host`:
  // checked (its sender, stamped by the host, is the actor's proc) and
  // handed to ActorEnded on the event thread.
  void SupervisionFrom(const std::string& host, const v1::Envelope& envelope);
  // True if `lost` is about an earlier incarnation of a proc this client
  // tracks (another pid): a late report that must not fail the new one.
  bool StaleLoss(const std::string& host, const v1::MailboxLost& lost);
  void ProcEnded(const std::string& host, const v1::MailboxLost& lost,
                 const absl::Status& why);
  void HostLost(const HostEvent& event);
  // One event per actor of proc `proc` of `host` (which ended): `prototype`
  // with the actor filled in.
  void EndActorsOf(const std::string& host, const std::string& proc,
                   const v1::SupervisionEvent& prototype);
  // Completes `event` (mesh, rank, message), marks the rank ended and gives
  // the event to its handler, or treats it as unhandled. Drops a second end
  // of the same actor.
  void Dispatch(const std::shared_ptr<MeshSupervision>& mesh, size_t rank,
                v1::SupervisionEvent event);
  // Sends a heartbeat on every relay stream; runs on the event loop.
  void SendHeartbeats();
  void OnStreamDone(const std::string& host, uint64_t serial,
                    const absl::Status& status,
                    std::vector<v1::RelayFrame> unsent);
  void OpenQueuePort(const std::shared_ptr<internal::PortQueue>& queue,
                     v1::PortRef* ref);
  v1::PortRef OpenHandlerPort(std::function<void(v1::Envelope)> handler);
  void ClosePort(uint64_t port);
  template <typename T>
  friend class Port;
  template <typename T>
  friend class OncePort;
  template <typename T, typename Acc>
  friend class AccumulatingPort;

  const std::string id_;
  std::unique_ptr<Mailbox> mailbox_;
  v1::PortRef supervisor_port_;

  // Lock order: streams_mu_, then mu_.
  mutable absl::Mutex streams_mu_;
  // The current stream to each host; a stream leaves when it has ended.
  struct HostStream {
    uint64_t serial = 0;
    std::unique_ptr<RelayStream> stream;
  };
  std::map<std::string, HostStream> streams_ ABSL_GUARDED_BY(streams_mu_);
  uint64_t next_serial_ ABSL_GUARDED_BY(streams_mu_) = 1;
  // Streams started whose on_done has not returned yet.
  size_t live_streams_ ABSL_GUARDED_BY(streams_mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(streams_mu_) = false;
  // Every host heard from (or with a tracked proc).
  std::map<std::string, std::unique_ptr<HostRecord>> hosts_
      ABSL_GUARDED_BY(streams_mu_);
  // ClientOptions' unreachable_after and lost_after.
  absl::Duration unreachable_after_;
  absl::Duration lost_after_;
  std::atomic<size_t> cast_tree_fanout_{16};
  std::function<void(const HostEvent&)> on_host_event_;
  // How often HealthTick runs.
  absl::Duration health_tick_ = absl::Milliseconds(200);
  // Runs HealthTick and heartbeats; never user code, so a handler that
  // blocks delays no heartbeat. Made by Create, gone first when the client
  // is destroyed.
  std::unique_ptr<EventLoop> health_loop_;
  // The client's event thread: delivers host and supervision events to
  // their handlers, in order. Gone right after health_loop_.
  std::unique_ptr<EventLoop> event_loop_;
  absl::Duration heartbeat_interval_ = absl::Seconds(1);
  UnhandledFailure on_unhandled_failure_ = UnhandledFailure::kPoisonMesh;
  // Which mesh and rank each actor of this client is.
  std::unique_ptr<SupervisionIndex> supervised_;
  // Forwarded proc output (Options::forward_proc_output); null if off.
  std::unique_ptr<internal::OutputForwarder> forwarder_;

  absl::Mutex mu_;
  ClientCredentials credentials_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ClientCredentials> host_credentials_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_
      ABSL_GUARDED_BY(mu_);
  std::function<void(const v1::SupervisionEvent&)> supervision_handler_
      ABSL_GUARDED_BY(mu_);
};

// Messages of type T sent to ref(). Move-only; closed when destroyed (its
// Client must outlive it).
template <typename T>
class Port {
 public:
  Port(Port&&) = default;
  Port& operator=(Port&&) = default;
  ~Port() { Close(); }

  const v1::PortRef& ref() const { return ref_; }
  // For a port that actors of `mesh` answer on: once an actor of `mesh`
  // ends (its handler failed, its proc ended, its host was lost, or it was
  // stopped), Recv returns that end (UNAVAILABLE, with the event:
  // SupervisionEventOf) at once after what is queued, instead of waiting
  // out its timeout.
  void Watch(const ActorMesh& mesh) {
    std::weak_ptr<internal::PortQueue> queue = queue_;
    client_->OnMeshEnd(mesh, queue, [queue](const absl::Status& ended) {
      if (auto alive = queue.lock()) alive->Fail(ended);
    });
  }
  // Stops receiving; later messages to ref() are dropped.
  void Close() {
    if (client_ != nullptr) client_->ClosePort(ref_.port());
    client_.reset();
  }

  // The next message, in arrival order; DEADLINE_EXCEEDED after `timeout`,
  // or the error the sender replied with.
  absl::StatusOr<T> Recv(absl::Duration timeout = absl::Seconds(30)) {
    absl::StatusOr<v1::Envelope> envelope = queue_->Pop(timeout);
    if (!envelope.ok()) return envelope.status();
    T message;
    absl::Status unpacked = internal::UnpackEnvelope(*envelope, &message);
    if (!unpacked.ok()) return unpacked;
    return message;
  }

 private:
  friend class Client;
  explicit Port(Client* client)
      : client_(client), queue_(std::make_shared<internal::PortQueue>()) {
    client_->OpenQueuePort(queue_, &ref_);
  }
  struct NoClose {
    void operator()(Client*) const {}
  };
  std::unique_ptr<Client, NoClose> client_;
  std::shared_ptr<internal::PortQueue> queue_;
  v1::PortRef ref_;
};

// The first message of type T sent to ref(); later ones are dropped.
template <typename T>
class OncePort {
 public:
  OncePort(OncePort&&) = default;
  OncePort& operator=(OncePort&&) = default;

  const v1::PortRef& ref() const { return port_.ref(); }
  // See Port::Watch.
  void Watch(const ActorMesh& mesh) { port_.Watch(mesh); }
  // The one message (or the sender's error); DEADLINE_EXCEEDED after
  // `timeout`; FAILED_PRECONDITION if it was received already.
  absl::StatusOr<T> Recv(absl::Duration timeout = absl::Seconds(30)) {
    if (received_) {
      return absl::FailedPreconditionError("a once port receives one message");
    }
    absl::StatusOr<T> message = port_.Recv(timeout);
    if (message.status().code() != absl::StatusCode::kDeadlineExceeded) {
      received_ = true;
      port_.Close();
    }
    return message;
  }

 private:
  friend class Client;
  explicit OncePort(Port<T> port) : port_(std::move(port)) {}
  Port<T> port_;
  bool received_ = false;
};

// Folds every message of type T sent to ref() into a value of type Acc (the
// reducer runs on a delivery thread, one message at a time). Thread-safe.
template <typename T, typename Acc>
class AccumulatingPort {
 public:
  AccumulatingPort(AccumulatingPort&&) = default;
  AccumulatingPort& operator=(AccumulatingPort&&) = default;
  ~AccumulatingPort() {
    if (client_ != nullptr) client_->ClosePort(ref_.port());
  }

  const v1::PortRef& ref() const { return ref_; }
  // See Port::Watch: Wait returns the failure at once.
  void Watch(const ActorMesh& mesh) {
    std::weak_ptr<State> state = state_;
    client_->OnMeshEnd(mesh, state, [state](const absl::Status& ended) {
      if (auto alive = state.lock()) {
        absl::MutexLock lock(&alive->mu);
        if (alive->error.ok()) alive->error = ended;
      }
    });
  }

  // The value once `count` messages were folded in; DEADLINE_EXCEEDED
  // (saying how many arrived) after `timeout`. An error message fails it.
  absl::StatusOr<Acc> Wait(size_t count,
                           absl::Duration timeout = absl::Seconds(30)) {
    State& state = *state_;
    absl::MutexLock lock(&state.mu);
    auto ready = [&state, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state.mu) {
      return state.count >= count || !state.error.ok();
    };
    if (!state.mu.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
      return absl::DeadlineExceededError(
          absl::StrCat(state.count, " of ", count, " messages arrived within ",
                       absl::FormatDuration(timeout)));
    }
    if (!state.error.ok()) return state.error;
    return state.value;
  }

 private:
  friend class Client;
  struct State {
    absl::Mutex mu;
    Acc value ABSL_GUARDED_BY(mu);
    size_t count ABSL_GUARDED_BY(mu) = 0;
    absl::Status error ABSL_GUARDED_BY(mu);
    std::function<Acc(Acc, const T&)> reducer;
  };
  AccumulatingPort(Client* client, Acc initial,
                   std::function<Acc(Acc, const T&)> reducer)
      : client_(client), state_(std::make_shared<State>()) {
    state_->value = std::move(initial);
    state_->reducer = std::move(reducer);
    ref_ = client_->OpenHandlerPort([state = state_](v1::Envelope envelope) {
      T message;
      absl::Status unpacked = internal::UnpackEnvelope(envelope, &message);
      absl::MutexLock lock(&state->mu);
      if (!unpacked.ok()) {
        state->error = unpacked;
        return;
      }
      state->value = state->reducer(std::move(state->value), message);
      ++state->count;
    });
  }
  struct NoClose {
    void operator()(Client*) const {}
  };
  std::unique_ptr<Client, NoClose> client_;
  std::shared_ptr<State> state_;
  v1::PortRef ref_;
};

template <typename T>
Port<T> Client::OpenPort() {
  return Port<T>(this);
}

template <typename T>
OncePort<T> Client::OpenOncePort() {
  return OncePort<T>(Port<T>(this));
}

template <typename T, typename Acc>
AccumulatingPort<T, Acc> Client::OpenAccumulatingPort(
    Acc initial, std::function<Acc(Acc, const T&)> reducer) {
  return AccumulatingPort<T, Acc>(this, std::move(initial), std::move(reducer));
}

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CLIENT_H_
