// ActorMesh: N actors of one type, one per proc of a ProcMesh, named and
// ranked, used as one: Cast sends a message to every actor of the view,
// Call gathers one reply or error per rank, Slice narrows the view.
// A value type (copies share the Client); thread-safe for concurrent calls.
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_ACTOR_MESH_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_ACTOR_MESH_H_

#include <google/protobuf/message.h>

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

  // A view of ranks [begin, end) of dimension `label` (or the one index).
  absl::StatusOr<ActorMesh> Slice(const std::string& label, size_t begin,
                                  size_t end) const;
  absl::StatusOr<ActorMesh> Slice(const std::string& label,
                                  size_t index) const {
    return Slice(label, index, index + 1);
  }

  // Sends `message` to every actor of the view; each sees its view rank as
  // ctx.cast_rank(). Returns once queued; messages from this client to one
  // actor arrive in the order sent.
  absl::Status Cast(const google::protobuf::Message& message) const;

  // Casts `message` and gathers one reply per rank, in view-rank order. A
  // rank whose actor fails, whose proc is gone, or that does not answer by
  // the deadline gets an error instead of a reply; Call never hangs.
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

 private:
  ActorMesh(std::shared_ptr<Client> client, std::string name, std::string type,
            std::shared_ptr<const std::vector<v1::ActorRef>> actors, View view)
      : client_(std::move(client)),
        name_(std::move(name)),
        type_(std::move(type)),
        actors_(std::move(actors)),
        view_(std::move(view)) {}

  // Sends a copy of `prototype` to every actor of the view, addressed, with
  // its view rank as cast_rank and correlation.
  void SendToAll(const v1::Envelope& prototype) const;

  std::shared_ptr<Client> client_;
  std::string name_;
  std::string type_;
  std::shared_ptr<const std::vector<v1::ActorRef>> actors_;  // by mesh rank
  View view_;
};

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_ACTOR_MESH_H_
