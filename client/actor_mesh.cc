#include "hostmesh/actor_mesh.h"

#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "lib/mailbox/mailbox.h"

namespace mesh {

ActorMesh::ActorMesh(std::shared_ptr<Client> client, std::string name,
                     std::string type, Extent extent,
                     std::vector<v1::ActorRef> actors)
    : client_(std::move(client)),
      name_(std::move(name)),
      type_(std::move(type)),
      actors_(
          std::make_shared<const std::vector<v1::ActorRef>>(std::move(actors))),
      view_(std::move(extent)) {}

absl::StatusOr<ActorMesh> ActorMesh::Slice(const std::string& label,
                                           size_t begin, size_t end) const {
  absl::StatusOr<View> view = view_.Slice(label, begin, end);
  if (!view.ok()) return view.status();
  return ActorMesh(client_, name_, type_, actors_, *std::move(view));
}

void ActorMesh::SendToAll(const v1::Envelope& prototype) const {
  for (size_t rank = 0; rank < num_ranks(); ++rank) {
    const v1::ActorRef& target = actor(rank);
    v1::Envelope envelope = prototype;
    envelope.set_actor(target.actor());
    envelope.set_cast_rank(rank);
    envelope.set_correlation(rank);  // a reply names the rank it answers
    client_->mailbox().Send(target.address(), std::move(envelope));
  }
}

absl::Status ActorMesh::Cast(const google::protobuf::Message& message) const {
  v1::Envelope prototype;
  PackPayload(message, &prototype);
  SendToAll(prototype);
  return absl::OkStatus();
}

std::vector<absl::StatusOr<v1::Envelope>> ActorMesh::CallRaw(
    const google::protobuf::Message& message, absl::Duration timeout) const {
  const size_t n = num_ranks();
  // Replies land in their rank's slot; the first answer for a rank wins.
  struct Gather {
    absl::Mutex mu;
    std::vector<std::optional<absl::StatusOr<v1::Envelope>>> slots
        ABSL_GUARDED_BY(mu);
    size_t remaining ABSL_GUARDED_BY(mu) = 0;
    void Fill(size_t rank, absl::StatusOr<v1::Envelope> result) {
      absl::MutexLock lock(&mu);
      if (rank >= slots.size() || slots[rank].has_value()) return;
      slots[rank] = std::move(result);
      --remaining;
    }
  };
  auto gather = std::make_shared<Gather>();
  {
    absl::MutexLock lock(&gather->mu);
    gather->slots.resize(n);
    gather->remaining = n;
  }
  Mailbox& mailbox = client_->mailbox();
  v1::PortRef port = mailbox.OpenPort([gather](v1::Envelope envelope) {
    size_t rank = envelope.correlation();
    gather->Fill(rank, std::move(envelope));
  });

  // A proc that is gone (or goes) fails its ranks at once instead of
  // leaving them to the deadline.
  std::map<std::string, std::vector<size_t>> ranks_by_address;
  for (size_t rank = 0; rank < n; ++rank) {
    ranks_by_address[actor(rank).address()].push_back(rank);
  }
  std::vector<uint64_t> watches;
  for (const auto& [address, ranks] : ranks_by_address) {
    watches.push_back(mailbox.WatchPeer(
        address,
        [gather, ranks, address = address, proc = actor(ranks.front()).proc(),
         name = name_](const absl::Status& status) {
          for (size_t rank : ranks) {
            gather->Fill(
                rank, absl::UnavailableError(absl::StrFormat(
                          "rank %d (actor %s/%s at %s) is gone: %s", rank, proc,
                          name, address, status.message())));
          }
        }));
  }

  v1::Envelope prototype;
  PackPayload(message, &prototype);
  *prototype.mutable_reply_to() = port;
  SendToAll(prototype);

  {
    absl::MutexLock lock(&gather->mu);
    auto done = [&gather]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gather->mu) {
      return gather->remaining == 0;
    };
    gather->mu.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  for (uint64_t watch : watches) mailbox.UnwatchPeer(watch);
  mailbox.ClosePort(port.port());

  std::vector<absl::StatusOr<v1::Envelope>> results;
  results.reserve(n);
  absl::MutexLock lock(&gather->mu);
  for (size_t rank = 0; rank < n; ++rank) {
    if (gather->slots[rank].has_value()) {
      results.push_back(*std::move(gather->slots[rank]));
    } else {
      results.push_back(absl::DeadlineExceededError(absl::StrFormat(
          "rank %d (actor %s/%s at %s) did not reply within %s", rank,
          actor(rank).proc(), name_, actor(rank).address(),
          absl::FormatDuration(timeout))));
    }
  }
  return results;
}

}  // namespace mesh
