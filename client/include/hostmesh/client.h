// Client: this process's place in the mesh — its mailbox (a gRPC server),
// its ports, and its channels to hosts and procs. HostMesh, ProcMesh and
// ActorMesh all act through one Client (by default the process-wide one).
//
// A Port<T> is an address in the client's mailbox; messages of type T sent
// to port.ref() (by actors, or anyone) are received with Recv. Thread-safe.
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CLIENT_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CLIENT_H_

#include <grpcpp/channel.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/mailbox.pb.h"
#include "proto/proc.pb.h"

namespace mesh {

class Mailbox;
template <typename T>
class Port;

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

struct ClientOptions {
  // Where the mailbox listens (and what actors reply to). Loopback is
  // enough for hosts on this machine; use a reachable host otherwise.
  std::string listen_host = "127.0.0.1";
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

  // The mailbox's address, host:port.
  const std::string& address() const;

  // Opens a port for messages of type T.
  template <typename T>
  Port<T> OpenPort();

  // Supervision events about actors this client spawned (an actor failed or
  // stopped). Without a handler, a failure is logged as an ERROR.
  void OnSupervisionEvent(
      std::function<void(const v1::SupervisionEvent&)> handler);
  const v1::PortRef& supervisor_port() const { return supervisor_port_; }

  // Internal: the mailbox, and a cached channel per address.
  Mailbox& mailbox() { return *mailbox_; }
  std::shared_ptr<grpc::Channel> Channel(const std::string& address);

 private:
  Client() = default;
  void OpenQueuePort(const std::shared_ptr<internal::PortQueue>& queue,
                     v1::PortRef* ref);
  void ClosePort(uint64_t port);
  template <typename T>
  friend class Port;

  std::unique_ptr<Mailbox> mailbox_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  v1::PortRef supervisor_port_;
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
  ~Port() {
    if (client_ != nullptr) client_->ClosePort(ref_.port());
  }

  const v1::PortRef& ref() const { return ref_; }

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

template <typename T>
Port<T> Client::OpenPort() {
  return Port<T>(this);
}

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CLIENT_H_
