// The mailbox: how every participant (each procd, each client) sends and
// receives mesh messages (mesh.v1.Envelope) over gRPC.
//
// A Mailbox serves the mesh.v1.Mailbox service (add service() to a server)
// and sends to other mailboxes over one long-lived Deliver stream per
// destination address. Inside a mailbox an envelope goes to a port (a local
// endpoint opened with OpenPort, e.g. where a client gathers replies) or to
// an actor by name (handed to the actor sink that procd installs).
//
// Ordering: envelopes passed to Send for one destination address are
// delivered there in Send order (per sending Mailbox; if Send is called from
// several threads, the order is the order in which the calls took the
// mailbox's lock). The receiver hands the envelopes of one stream to their
// port handler or the actor sink one at a time, in arrival order.
//
// Thread-safe. Port handlers, the actor sink and peer-lost callbacks run on
// gRPC threads or on the mailbox's local-delivery thread; they must not block
// and may call back into the Mailbox (Send, OpenPort, ClosePort, ...).
//
// Lifetime: the gRPC server that serves service() must be shut down before
// the Mailbox is destroyed (a service outlives its server). Call Shutdown()
// first: it cancels the long-lived inbound streams, which would otherwise keep
// grpc::Server::Shutdown() waiting for them:
//
//   mailbox.Shutdown();
//   server->Shutdown();
//   // then destroy the server, then the mailbox
#ifndef HOSTMESH_LIB_MAILBOX_MAILBOX_H_
#define HOSTMESH_LIB_MAILBOX_MAILBOX_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/message.h"
#include "proto/mailbox.grpc.pb.h"
#include "proto/mailbox.pb.h"

namespace mesh {

// Largest message a mailbox channel sends or receives; servers hosting a
// mailbox should raise their receive limit to this too.
inline constexpr int kMaxMessageBytes = 64 << 20;

namespace internal {
class OutboundStream;
class InboundStream;
class MailboxService;
}  // namespace internal

class Mailbox {
 public:
  // `owner_name` names this participant in logs and in Envelope.sender.
  explicit Mailbox(std::string owner_name);
  // Calls Shutdown(). No handler or callback runs after it returns.
  ~Mailbox();
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  // The mesh.v1.Mailbox callback service; add it to your ServerBuilder. Owned
  // by the Mailbox.
  grpc::Service* service();

  // host:port at which the server serving service() is reachable; set once
  // the server listens. Envelopes sent to this address are delivered locally.
  void set_address(const std::string& address);
  std::string address() const;
  const std::string& owner_name() const { return owner_name_; }

  // Queues `envelope` for the mailbox at `address` and returns; never blocks
  // on the network. Sets envelope.sender to "<owner_name>@<address>".
  //
  // Order: each destination address has one long-lived Deliver stream, fed
  // from a FIFO with at most one StartWrite outstanding; the next write starts
  // only when the previous one completed. HTTP/2 delivers the messages of one
  // stream in the order written and the receiver dispatches them one by one
  // before reading the next, so envelopes to one address arrive in Send order.
  // (Separate unary calls would not keep order: each is an independent
  // stream that the transport and the server's thread pool may reorder.)
  // Send to our own address is delivered through a local FIFO on one thread,
  // so it is ordered too.
  //
  // If the stream breaks (or cannot connect), envelopes not yet written (or
  // whose write failed) are dropped; those with a reply_to get an UNAVAILABLE
  // error reply (with the correlation), and peer watchers are told. The
  // next Send opens a new stream. After Shutdown() Send drops everything.
  void Send(const std::string& address, v1::Envelope envelope);

  // Opens a local port whose envelopes go to `handler`, in arrival order per
  // sender. The returned ref (this mailbox's address, as set when called, + a
  // fresh port id) can be put into reply_to or sent to others.
  v1::PortRef OpenPort(std::function<void(v1::Envelope)> handler);
  // Envelopes that arrive for a closed port are dropped (logged at
  // VLOG(1)). A delivery already under way on another thread may still run
  // the handler shortly after this returns, so whatever the handler captures
  // must stay valid on its own (capture shared_ptrs, not raw pointers).
  void ClosePort(uint64_t port);

  // Where envelopes addressed to an actor name go (procd installs its
  // runtime here). A non-OK return is sent as an error reply to
  // envelope.reply_to (if set), with the correlation copied. Without a sink,
  // actor envelopes get a NOT_FOUND error reply.
  void SetActorSink(std::function<absl::Status(v1::Envelope)> sink);

  // `on_lost` runs once, on a gRPC thread, when the outbound stream to
  // `address` breaks or fails to connect after this call (the peer is gone or
  // unreachable). Opens the stream if there is none, so an unreachable peer
  // is reported even if nothing is sent to it. Never fires for our own
  // address or after Shutdown().
  uint64_t WatchPeer(const std::string& address,
                     std::function<void(const absl::Status&)> on_lost);
  // After this returns no new loss is reported to it; a report already
  // under way on another thread may still run the callback shortly after,
  // so what it captures must stay valid on its own (as for ports).
  void UnwatchPeer(uint64_t id);

  // Stops the mailbox: cancels the inbound streams and refuses new ones,
  // flushes outbound streams for up to a second then cancels them, and stops
  // local delivery. Send is a no-op afterwards. Idempotent; blocks until no
  // handler or callback runs, so it must not be called from one.
  void Shutdown();

 private:
  friend class internal::OutboundStream;
  friend class internal::InboundStream;
  friend class internal::MailboxService;

  struct Peer {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Mailbox::Stub> stub;
    internal::OutboundStream* stream = nullptr;  // current, if any
  };
  struct Watch {
    std::string address;
    std::function<void(const absl::Status&)> on_lost;
  };
  using PortHandler = std::function<void(v1::Envelope)>;
  using ActorSink = std::function<absl::Status(v1::Envelope)>;

  // Returns the live stream to `address`, opening one if needed.
  internal::OutboundStream* StreamFor(const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Called by an outbound stream's OnDone, before it deletes itself.
  // `unsent` were never written or their write failed.
  void OnOutboundDone(internal::OutboundStream* stream,
                      const std::string& address, const grpc::Status& status,
                      bool closed_by_us, std::vector<v1::Envelope> unsent);
  // Registers an inbound stream; false if shut down.
  bool AddInbound(internal::InboundStream* stream);
  void RemoveInbound(internal::InboundStream* stream);

  // Hands one received envelope to its port or the actor sink.
  void Dispatch(v1::Envelope envelope);
  // Sends an error reply for `envelope` to its reply_to, if it has one.
  void ReplyWithError(const v1::Envelope& envelope, const absl::Status& error);
  void LocalLoop();

  const std::string owner_name_;
  const std::unique_ptr<internal::MailboxService> service_;

  // Outbound side, watchers, lifecycle.
  mutable absl::Mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);
  std::string sender_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, Peer> peers_ ABSL_GUARDED_BY(mu_);
  // Every outbound stream whose OnDone has not yet run.
  absl::flat_hash_set<internal::OutboundStream*> outbound_ ABSL_GUARDED_BY(mu_);
  // Outbound streams whose OnDone has not yet returned (includes outbound_).
  int live_outbound_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_set<internal::InboundStream*> inbound_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Watch> watches_ ABSL_GUARDED_BY(mu_);
  uint64_t next_watch_ ABSL_GUARDED_BY(mu_) = 1;
  std::deque<v1::Envelope> local_queue_ ABSL_GUARDED_BY(mu_);
  bool local_stop_ ABSL_GUARDED_BY(mu_) = false;

  // Delivery routes, read on every received envelope.
  mutable absl::Mutex routes_mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<const PortHandler>> ports_
      ABSL_GUARDED_BY(routes_mu_);
  uint64_t next_port_ ABSL_GUARDED_BY(routes_mu_) = 1;
  std::shared_ptr<const ActorSink> sink_ ABSL_GUARDED_BY(routes_mu_);

  std::thread local_thread_;
  std::once_flag local_join_once_;
};

// Packs `message` into envelope->payload (a google.protobuf.Any).
void PackPayload(const google::protobuf::Message& message,
                 v1::Envelope* envelope);

// True if the envelope's payload holds a `T`.
template <typename T>
bool PayloadIs(const v1::Envelope& envelope) {
  return envelope.has_payload() && envelope.payload().Is<T>();
}

// Unpacks the payload into `message`: the envelope's error if it carries one
// (an error reply), INVALID_ARGUMENT if the payload is missing or of another
// type.
absl::Status UnpackPayload(const v1::Envelope& envelope,
                           google::protobuf::Message* message);

// The same, returning a `T`.
template <typename T>
absl::StatusOr<T> UnpackPayload(const v1::Envelope& envelope) {
  T message;
  absl::Status unpacked = UnpackPayload(envelope, &message);
  if (!unpacked.ok()) return unpacked;
  return message;
}

// An envelope to port `port.port` carrying `message` (send it to
// port.address).
v1::Envelope EnvelopeToPort(const v1::PortRef& port,
                            const google::protobuf::Message& message);

// An envelope to actor `actor` carrying `message`.
v1::Envelope EnvelopeToActor(const std::string& actor,
                             const google::protobuf::Message& message);

}  // namespace mesh

#endif  // HOSTMESH_LIB_MAILBOX_MAILBOX_H_
