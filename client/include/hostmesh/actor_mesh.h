// ActorMesh: N actors of one type, one per proc of a ProcMesh, named and
// ranked, used as one: Cast sends a message to every actor of the view,
// Call gathers one reply or error per rank, Reduce folds the replies into
// one value, Slice narrows the view.
//
// Each of Cast, Call and Reduce sends one envelope per host of the view
// (listing that host's ranks) on the client's relay stream to the host; the
// host hands a copy to each of its actors, and for Reduce folds their
// replies itself, so one reply per host comes back.
//
// A value type (copies share the Client); thread-safe for concurrent calls.
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_ACTOR_MESH_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_ACTOR_MESH_H_

#include <google/protobuf/message.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hostmesh/client.h"
#include "hostmesh/extent.h"
#include "proto/mailbox.pb.h"

namespace mesh {

class ActorMesh {
 public:
  ActorMesh(std::shared_ptr<Client> client, std::string name, std::string type,
            Extent extent, std::vector<v1::ActorRef> actors);

  const std::string& name() const { return name_; }
  const std::string& type() const { return type_; }
  // The view's extent (labels of the proc mesh, sizes of this view).
  const Extent& extent() const { return view_.extent(); }
  size_t num_ranks() const { return view_.num_ranks(); }
  // The actor at view rank `rank`.
  const v1::ActorRef& actor(size_t rank) const {
    return (*actors_)[view_.base_rank(rank)];
  }

  // Supervision (see Client::OnSupervisionEvent): `handler` gets every
  // event about this mesh's actors (shared by every copy and slice of the
  // mesh; the last one set wins), on the client's event thread; it must
  // not block. A failure it gets is handled: the mesh is not poisoned.
  void OnSupervisionEvent(
      std::function<void(const v1::SupervisionEvent&)> handler) const;
  // OK, or the unhandled failure that poisoned the mesh
  // (FAILED_PRECONDITION naming the first failing rank and its root cause;
  // SupervisionEventOf gives the event). Cast, Call and Reduce return it.
  absl::Status status() const;

  // A view of ranks [begin, end) of dimension `label` (or the one index).
  absl::StatusOr<ActorMesh> Slice(const std::string& label, size_t begin,
                                  size_t end) const;
  absl::StatusOr<ActorMesh> Slice(const std::string& label,
                                  size_t index) const {
    return Slice(label, index, index + 1);
  }

  // Sends `message` to every actor of the view; each sees its view rank as
  // ctx.cast_rank(). Returns once queued (one envelope per host); messages
  // from this client to one actor arrive in the order sent. An error names
  // each host that the message could not be queued for (UNAVAILABLE: the
  // stream to it broke; RESOURCE_EXHAUSTED: too much is queued for it); the
  // other hosts got it.
  absl::Status Cast(const google::protobuf::Message& message) const;

  // Casts `message` and gathers one reply per rank, in view-rank order. A
  // rank whose actor fails, whose proc is gone (UNAVAILABLE naming the rank,
  // proc and host, at once), whose host cannot be reached, or that does not
  // answer within `timeout` (DEADLINE_EXCEEDED) gets an error instead of a
  // reply; Call never hangs. A poisoned mesh (status()) fails every rank
  // with its failure.
  template <typename Reply>
  std::vector<absl::StatusOr<Reply>> Call(
      const google::protobuf::Message& message,
      absl::Duration timeout = absl::Seconds(30)) const {
    std::vector<absl::StatusOr<v1::Envelope>> raw = CallRaw(message, timeout);
    std::vector<absl::StatusOr<Reply>> replies;
    replies.reserve(raw.size());
    for (auto& envelope : raw) {
      if (!envelope.ok()) {
        replies.push_back(envelope.status());
        continue;
      }
      Reply reply;
      absl::Status unpacked = internal::UnpackEnvelope(*envelope, &reply);
      if (unpacked.ok()) {
        replies.push_back(std::move(reply));
      } else {
        replies.push_back(unpacked);
      }
    }
    return replies;
  }

  // Call with the replies as raw envelopes.
  std::vector<absl::StatusOr<v1::Envelope>> CallRaw(
      const google::protobuf::Message& message, absl::Duration timeout) const;

  // Casts `message` and folds the replies with the built-in reducer
  // `reduce` (mesh.v1.Reduce in proto/mailbox.proto): each host folds the
  // replies of its own ranks and sends one mesh.v1.Reduced back, and the
  // client combines those (lib/mailbox/reduce.h), so the traffic back is
  // one message per host however many ranks there are.
  //
  //   COLLECT      every reply (or error), in view-rank order
  //   COUNT        value = how many ranks replied without error
  //   SUM/MIN/MAX  value = the fold of the numeric field `field` (empty:
  //                "value") of the replies; hosts read it by reflection, so
  //                the reply type must be one hostd knows (protobuf's
  //                well-known types, e.g. google.protobuf.DoubleValue, and
  //                hostd's own); any other type fails each rank with
  //                INVALID_ARGUMENT naming it
  //   FIRST_ERROR  only the error of the lowest failing rank, if any
  //
  // Every fold counts `ok` and `failed` ranks and carries the first error
  // (lowest failing view rank) in first_error / first_error_rank. A rank
  // fails if its actor answers with an error, its proc is gone, or it does
  // not reply within `timeout`; a host that is gone, cannot be reached, or
  // does not answer within `timeout` plus a second fails all its ranks.
  // Those failures are in the result, not its status: the status is an
  // error only for a bad `reduce` (INVALID_ARGUMENT; REDUCE_NONE is what
  // Call does).
  absl::StatusOr<v1::Reduced> Reduce(const google::protobuf::Message& message,
                                     v1::Reduce reduce,
                                     absl::Duration timeout = absl::Seconds(30),
                                     const std::string& field = "") const;

 private:
  ActorMesh(std::shared_ptr<Client> client, std::string name, std::string type,
            std::shared_ptr<const std::vector<v1::ActorRef>> actors,
            std::shared_ptr<const std::vector<std::string>> hosts, View view,
            std::shared_ptr<MeshSupervision> supervision)
      : client_(std::move(client)),
        name_(std::move(name)),
        type_(std::move(type)),
        actors_(std::move(actors)),
        hosts_(std::move(hosts)),
        view_(std::move(view)),
        supervision_(std::move(supervision)) {}
  friend class Client;

  std::shared_ptr<Client> client_;
  std::string name_;
  std::string type_;
  std::shared_ptr<const std::vector<v1::ActorRef>> actors_;  // by mesh rank
  // The mesh's hosts in order of their lowest mesh rank: the order of its
  // tree of hosts (ClientOptions::cast_tree_fanout). Made once, shared by
  // every copy and slice.
  std::shared_ptr<const std::vector<std::string>> hosts_;
  View view_;
  // Shared by every copy and slice (client.h).
  std::shared_ptr<MeshSupervision> supervision_;
};

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_ACTOR_MESH_H_
