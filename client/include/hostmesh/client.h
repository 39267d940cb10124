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
// A Port<T> is an address in the client's mailbox; messages of type T sent
// to port.ref() (by actors, or anyone) are received with Recv. Thread-safe.
// Destroying a Client ends its relay streams (each gets a second to drain
// what is queued) and waits until they are gone.
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CLIENT_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CLIENT_H_

#include <grpcpp/channel.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/mailbox.pb.h"
#include "proto/proc.pb.h"

namespace mesh {

class Mailbox;
class RelayStream;
template <typename T>
class Port;
template <typename T>
class OncePort;
template <typename T, typename Acc>
class AccumulatingPort;

namespace internal {

// The queue behind a Port: envelopes in arrival order. Thread-safe.
class PortQueue {
 public:
  void Push(v1::Envelope envelope);
  // The next envelope; DEADLINE_EXCEEDED after `timeout`.
  absl::StatusOr<v1::Envelope> Pop(absl::Duration timeout);

 private:
  absl::Mutex mu_;
  std::deque<v1::Envelope> queue_ ABSL_GUARDED_BY(mu_);
};

// Unpacks an envelope's payload (or its error) as T.
absl::Status UnpackEnvelope(const v1::Envelope& envelope,
                            google::protobuf::Message* message);

}  // namespace internal

// Nothing to set yet; kept so that options can be added without changing
// Create's signature.
struct ClientOptions {};

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

  // Supervision events about actors this client spawned (an actor failed or
  // stopped). Without a handler, a failure is logged as an ERROR.
  void OnSupervisionEvent(
      std::function<void(const v1::SupervisionEvent&)> handler);
  const v1::PortRef& supervisor_port() const { return supervisor_port_; }

  // Internal: the mailbox, and a cached channel per address.
  Mailbox& mailbox() { return *mailbox_; }
  std::shared_ptr<grpc::Channel> Channel(const std::string& address);
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
  void OnFrame(const std::string& host, v1::RelayFrame frame);
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
  absl::Mutex streams_mu_;
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

  absl::Mutex mu_;
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
