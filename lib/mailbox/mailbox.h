// The mailbox: how every participant (each proc, each client, each hostd)
// sends and receives mesh messages (mesh.v1.Envelope). It is transport-free:
// the owner hands it an Outbound function for envelopes bound elsewhere and
// feeds it, with Deliver, the envelopes its transport received.
//
//   procd   outbound = its local channel to hostd
//   client  outbound = the relay stream it opened to the envelope's host
//   hostd   outbound = its router (procs, relay streams, other hosts)
//
// A mailbox is named by (host, id): the host it is reached through and its
// id there (a proc's name, a client's "client:<hex>", "" for a host's own
// mailbox). Inside it an envelope goes to a port (a local endpoint opened
// with OpenPort, e.g. where a client gathers replies) or to an actor by name
// (handed to the actor sink that procd installs).
//
// Ordering: Send hands envelopes to the transport in call order (per
// thread), and envelopes to this mailbox itself go through one local FIFO
// and thread; Deliver dispatches on the caller's thread before returning, so
// a transport that delivers one stream's envelopes one by one keeps their
// order up to the port handler or the actor sink.
//
// Thread-safe. Port handlers, the actor sink and peer-lost callbacks run on
// the transport's threads or on the mailbox's local-delivery thread; they
// must not block and may call back into the Mailbox. Shutdown() (also run by
// the destructor) stops local delivery and makes Send a no-op; the owner
// stops its transport from calling Deliver before destroying the mailbox.
#ifndef HOSTMESH_LIB_MAILBOX_MAILBOX_H_
#define HOSTMESH_LIB_MAILBOX_MAILBOX_H_

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
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/message.h"
#include "proto/mailbox.pb.h"

namespace mesh {

// Largest message a mailbox channel sends or receives.
inline constexpr int kMaxMessageBytes = 64 << 20;

// Envelopes waiting for local delivery (a mailbox's sends to itself) at
// most, by default.
inline constexpr size_t kDefaultMaxLocalQueue = 4096;

// The prefix of a client's mailbox id; proc names cannot contain ':'.
inline constexpr char kClientMailboxPrefix[] = "client:";

class Mailbox {
 public:
  // Takes an envelope bound for another mailbox (moving from it) and returns
  // OK, or leaves it alone and returns why it cannot go (the mailbox then
  // answers its reply_to with that error). Must not block.
  using Outbound = std::function<absl::Status(v1::Envelope& envelope)>;

  // `max_local_queue`: envelopes to this mailbox itself waiting in its local
  // FIFO at most (see Send).
  Mailbox(std::string host, std::string id, Outbound outbound,
          size_t max_local_queue = kDefaultMaxLocalQueue);
  // Calls Shutdown().
  ~Mailbox();
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  const std::string& host() const { return host_; }
  const std::string& id() const { return id_; }
  // "<id>@<host>", as put in Envelope.sender.
  const std::string& sender() const { return sender_; }

  // True if `envelope` is addressed to this mailbox.
  bool IsLocal(const v1::Envelope& envelope) const;

  // Sets envelope.sender and sends it: to this mailbox through the local
  // FIFO, elsewhere through the Outbound. Never blocks. An envelope that
  // cannot go gets an error reply to its reply_to (if any): from a full
  // local FIFO (max_local_queue envelopes), RESOURCE_EXHAUSTED. Error
  // replies may fill the FIFO up to twice that, so that what it refused
  // still hears why. After Shutdown() Send drops everything.
  void Send(v1::Envelope envelope);

  // An envelope the transport received for this mailbox: handed to its port
  // handler or the actor sink on this thread, before Deliver returns.
  void Deliver(v1::Envelope envelope);

  // Opens a local port whose envelopes go to `handler`, in arrival order per
  // sender. The returned ref can be put into reply_to or sent to others.
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

  // `on_lost` runs once when the transport reports mailbox `mailbox` on
  // `host` gone (ReportLost), e.g. the proc ended or the stream to its host
  // broke. Never fires after Shutdown().
  uint64_t WatchPeer(const std::string& host, const std::string& mailbox,
                     std::function<void(const absl::Status&)> on_lost);
  // After this returns no new loss is reported to it; a report already
  // under way on another thread may still run the callback shortly after,
  // so what it captures must stay valid on its own (as for ports).
  void UnwatchPeer(uint64_t id);
  // The transport's word that `mailbox` on `host` is gone (empty `mailbox`:
  // every mailbox reached through `host`, e.g. the stream to it broke).
  // Runs the matching watchers on this thread.
  void ReportLost(const std::string& host, const std::string& mailbox,
                  const absl::Status& why);

  // Sends an error reply for `envelope` to its reply_to, if it has one.
  void ReplyWithError(const v1::Envelope& envelope, const absl::Status& error);

  // Stops the mailbox: Send is a no-op, local delivery ends, no watcher
  // fires. Idempotent; blocks until the local-delivery thread ended, so it
  // must not be called from a handler.
  void Shutdown();

 private:
  struct Watch {
    std::string host;
    std::string mailbox;
    std::function<void(const absl::Status&)> on_lost;
  };
  using PortHandler = std::function<void(v1::Envelope)>;
  using ActorSink = std::function<absl::Status(v1::Envelope)>;

  void LocalLoop();

  const std::string host_;
  const std::string id_;
  const std::string sender_;
  const Outbound outbound_;
  const size_t max_local_queue_;

  mutable absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<uint64_t, Watch> watches_ ABSL_GUARDED_BY(mu_);
  uint64_t next_watch_ ABSL_GUARDED_BY(mu_) = 1;
  std::deque<v1::Envelope> local_queue_ ABSL_GUARDED_BY(mu_);

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

// True unless `port` is all empty (ports are numbered from 1; a host's own
// mailbox has an empty id, a client's port an empty host).
bool IsPortSet(const v1::PortRef& port);

// Addresses `envelope` to port `port` / actor `actor`.
void AddressTo(const v1::PortRef& port, v1::Envelope* envelope);
void AddressTo(const v1::ActorRef& actor, v1::Envelope* envelope);

// An envelope to port `port` carrying `message`.
v1::Envelope EnvelopeToPort(const v1::PortRef& port,
                            const google::protobuf::Message& message);

// An envelope to actor `actor` carrying `message`.
v1::Envelope EnvelopeToActor(const v1::ActorRef& actor,
                             const google::protobuf::Message& message);

// "<mailbox>@<host>" (or "<mailbox>" if the host is empty), for messages.
std::string MailboxName(const std::string& host, const std::string& mailbox);
// True if `name` is MailboxName(host, mailbox), without building it.
bool IsMailboxName(absl::string_view name, absl::string_view host,
                   absl::string_view mailbox);

}  // namespace mesh

#endif  // HOSTMESH_LIB_MAILBOX_MAILBOX_H_
