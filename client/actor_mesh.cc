#include "hostmesh/actor_mesh.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "client/internal/supervision.h"
#include "lib/mailbox/mailbox.h"
#include "lib/mailbox/reduce.h"
#include "lib/status.h"

namespace mesh {
namespace {

// How much longer than a Reduce's timeout the client waits for the hosts,
// which answer at the timeout with what they have.
constexpr absl::Duration kReduceGrace = absl::Seconds(1);

// The view ranks whose actors are on one host.
struct HostGroup {
  std::string host;
  std::vector<size_t> ranks;  // ascending
};

// The hosts of the view in order of their lowest rank.
std::vector<HostGroup> GroupByHost(const ActorMesh& mesh) {
  std::vector<HostGroup> groups;
  std::map<std::string, size_t> index;
  for (size_t rank = 0; rank < mesh.num_ranks(); ++rank) {
    const std::string& host = mesh.actor(rank).host();
    auto [it, inserted] = index.emplace(host, groups.size());
    if (inserted) groups.push_back({host, {}});
    groups[it->second].ranks.push_back(rank);
  }
  return groups;
}

// The correlation of a whole cast envelope: a host that refuses the cast as
// a whole (rather than one target) answers with it, naming the host group.
constexpr uint64_t kWholeCast = uint64_t{1} << 63;

// `prototype` as one envelope to `group`'s host (group number `index`),
// which hands a copy to each of the group's actors (with its view rank as
// cast_rank and correlation).
v1::Envelope CastEnvelope(const ActorMesh& mesh, const HostGroup& group,
                          size_t index, const v1::Envelope& prototype) {
  v1::Envelope envelope = prototype;
  envelope.set_to_host(group.host);
  envelope.set_correlation(kWholeCast | index);
  for (size_t rank : group.ranks) {
    const v1::ActorRef& actor = mesh.actor(rank);
    v1::CastTarget* target = envelope.add_targets();
    target->set_proc(actor.proc());
    target->set_actor(actor.actor());
    target->set_cast_rank(rank);
  }
  return envelope;
}

// "rank 3 (actor p0_3/a0 on host h1:7450)".
std::string RankName(const ActorMesh& mesh, size_t rank) {
  const v1::ActorRef& actor = mesh.actor(rank);
  return absl::StrFormat("rank %d (actor %s/%s on host %s)", rank, actor.proc(),
                         actor.actor(), actor.host());
}

// Results by slot; the first result for a slot wins. Shared with the
// callbacks of ports and watches, which may outlive the call.
template <typename Result>
class Slots {
 public:
  explicit Slots(size_t n) : slots_(n), remaining_(n) {}

  void Fill(size_t slot, Result result) {
    absl::MutexLock lock(&mu_);
    if (slot >= slots_.size() || slots_[slot].has_value()) return;
    slots_[slot] = std::move(result);
    --remaining_;
  }
  // Waits until every slot is filled or `timeout` passed.
  void Wait(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return remaining_ == 0;
    };
    mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  // Takes the slots' results (unfilled ones are empty).
  std::vector<std::optional<Result>> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(slots_);
  }

 private:
  absl::Mutex mu_;
  std::vector<std::optional<Result>> slots_ ABSL_GUARDED_BY(mu_);
  size_t remaining_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

ActorMesh::ActorMesh(std::shared_ptr<Client> client, std::string name,
                     std::string type, Extent extent,
                     std::vector<v1::ActorRef> actors)
    : client_(std::move(client)),
      name_(std::move(name)),
      type_(std::move(type)),
      actors_(
          std::make_shared<const std::vector<v1::ActorRef>>(std::move(actors))),
      view_(std::move(extent)) {
  if (client_ != nullptr)
    supervision_ = client_->SuperviseMesh(name_, *actors_);
}

void ActorMesh::OnSupervisionEvent(
    std::function<void(const v1::SupervisionEvent&)> handler) const {
  if (supervision_ != nullptr) supervision_->SetHandler(std::move(handler));
}

absl::Status ActorMesh::status() const {
  return supervision_ != nullptr ? supervision_->status() : absl::OkStatus();
}

absl::StatusOr<ActorMesh> ActorMesh::Slice(const std::string& label,
                                           size_t begin, size_t end) const {
  absl::StatusOr<View> view = view_.Slice(label, begin, end);
  if (!view.ok()) return view.status();
  return ActorMesh(client_, name_, type_, actors_, *std::move(view),
                   supervision_);
}

absl::Status ActorMesh::Cast(const google::protobuf::Message& message) const {
  RETURN_IF_ERROR(status());
  v1::Envelope prototype;
  PackPayload(message, &prototype);
  std::vector<std::string> failures;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::vector<HostGroup> groups = GroupByHost(*this);
  for (size_t i = 0; i < groups.size(); ++i) {
    const HostGroup& group = groups[i];
    absl::Status sent =
        client_->SendToHost(CastEnvelope(*this, group, i, prototype));
    if (!sent.ok()) {
      if (code == absl::StatusCode::kOk) code = sent.code();
      failures.push_back(absl::StrFormat("host %s (%d ranks): %s", group.host,
                                         group.ranks.size(), sent.message()));
    }
  }
  if (failures.empty()) return absl::OkStatus();
  return absl::Status(
      code, absl::StrFormat("cast to actor mesh \"%s\" did not reach %s", name_,
                            absl::StrJoin(failures, "; ")));
}

std::vector<absl::StatusOr<v1::Envelope>> ActorMesh::CallRaw(
    const google::protobuf::Message& message, absl::Duration timeout) const {
  const size_t n = num_ranks();
  using Reply = absl::StatusOr<v1::Envelope>;
  if (absl::Status poisoned = status(); !poisoned.ok()) {
    return std::vector<Reply>(n, poisoned);
  }
  auto gather = std::make_shared<Slots<Reply>>(n);
  Mailbox& mailbox = client_->mailbox();
  // Replies name the view rank they answer in their correlation; a host
  // that refused the whole cast names the host group.
  std::vector<HostGroup> groups = GroupByHost(*this);
  auto group_ranks = std::make_shared<std::vector<std::vector<size_t>>>();
  for (const HostGroup& group : groups) group_ranks->push_back(group.ranks);
  v1::PortRef port =
      mailbox.OpenPort([gather, group_ranks](v1::Envelope envelope) {
        uint64_t correlation = envelope.correlation();
        if ((correlation & kWholeCast) == 0) {
          gather->Fill(correlation, std::move(envelope));
          return;
        }
        uint64_t group = correlation & ~kWholeCast;
        if (group >= group_ranks->size()) return;
        for (size_t rank : (*group_ranks)[group]) {
          v1::Envelope copy = envelope;
          copy.set_correlation(rank);
          gather->Fill(rank, std::move(copy));
        }
      });

  // A proc that is gone (or goes), or a host that cannot be reached, fails
  // its ranks at once instead of leaving them to the deadline.
  std::vector<uint64_t> watches;
  for (const HostGroup& group : groups) {
    std::map<std::string, std::vector<size_t>> ranks_by_proc;
    for (size_t rank : group.ranks) {
      ranks_by_proc[actor(rank).proc()].push_back(rank);
    }
    for (auto& [proc, ranks] : ranks_by_proc) {
      std::vector<std::pair<size_t, std::string>> named;
      for (size_t rank : ranks) named.emplace_back(rank, RankName(*this, rank));
      watches.push_back(mailbox.WatchPeer(
          group.host, proc,
          [gather, named = std::move(named)](const absl::Status& status) {
            for (const auto& [rank, name] : named) {
              gather->Fill(
                  rank, absl::UnavailableError(absl::StrFormat(
                            "%s cannot answer: %s", name, status.message())));
            }
          }));
    }
  }

  v1::Envelope prototype;
  PackPayload(message, &prototype);
  *prototype.mutable_reply_to() = port;
  for (size_t i = 0; i < groups.size(); ++i) {
    const HostGroup& group = groups[i];
    absl::Status sent =
        client_->SendToHost(CastEnvelope(*this, group, i, prototype));
    if (sent.ok()) continue;
    for (size_t rank : group.ranks) {
      gather->Fill(rank,
                   absl::Status(sent.code(),
                                absl::StrFormat("%s: %s", RankName(*this, rank),
                                                sent.message())));
    }
  }

  gather->Wait(timeout);
  for (uint64_t watch : watches) mailbox.UnwatchPeer(watch);
  mailbox.ClosePort(port.port());

  std::vector<std::optional<Reply>> slots = gather->Take();
  std::vector<Reply> results;
  results.reserve(n);
  for (size_t rank = 0; rank < n; ++rank) {
    if (slots[rank].has_value()) {
      results.push_back(*std::move(slots[rank]));
    } else {
      results.push_back(absl::DeadlineExceededError(
          absl::StrFormat("%s did not reply within %s", RankName(*this, rank),
                          absl::FormatDuration(timeout))));
    }
  }
  return results;
}

absl::StatusOr<v1::Reduced> ActorMesh::Reduce(
    const google::protobuf::Message& message, v1::Reduce reduce,
    absl::Duration timeout, const std::string& field) const {
  if (reduce == v1::REDUCE_NONE) {
    return absl::InvalidArgumentError(
        "Reduce needs a fold; for one reply per rank use Call");
  }
  RETURN_IF_ERROR(ValidateReduce(reduce));
  RETURN_IF_ERROR(status());
  std::vector<HostGroup> groups = GroupByHost(*this);
  using Answer = absl::StatusOr<v1::Reduced>;
  auto answers = std::make_shared<Slots<Answer>>(groups.size());
  Mailbox& mailbox = client_->mailbox();

  v1::Envelope prototype;
  PackPayload(message, &prototype);
  prototype.set_reduce(reduce);
  prototype.set_reduce_field(field);
  prototype.set_reduce_timeout_ms(static_cast<uint32_t>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(timeout), 1,
                          std::numeric_limits<uint32_t>::max())));

  // One port per host: its one answer is known by the port it arrives at.
  std::vector<uint64_t> ports;
  std::vector<uint64_t> watches;
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::string& host = groups[i].host;
    v1::PortRef port = mailbox.OpenPort([answers, i](v1::Envelope envelope) {
      answers->Fill(i, UnpackPayload<v1::Reduced>(envelope));
    });
    ports.push_back(port.port());
    // Only the host itself: a proc that is gone is the host's to count.
    watches.push_back(mailbox.WatchPeer(
        host, "", [answers, i, host](const absl::Status& status) {
          answers->Fill(
              i, absl::UnavailableError(absl::StrFormat(
                     "host %s cannot answer: %s", host, status.message())));
        }));
    v1::Envelope envelope = CastEnvelope(*this, groups[i], i, prototype);
    *envelope.mutable_reply_to() = port;
    absl::Status sent = client_->SendToHost(std::move(envelope));
    if (!sent.ok()) answers->Fill(i, sent);
  }

  answers->Wait(timeout + kReduceGrace);
  for (uint64_t watch : watches) mailbox.UnwatchPeer(watch);
  for (uint64_t port : ports) mailbox.ClosePort(port);

  std::vector<std::optional<Answer>> got = answers->Take();
  std::vector<v1::Reduced> parts;
  parts.reserve(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    const HostGroup& group = groups[i];
    absl::Status failed =
        got[i].has_value() ? got[i]->status()
                           : absl::DeadlineExceededError(absl::StrFormat(
                                 "host %s did not answer within %s", group.host,
                                 absl::FormatDuration(timeout + kReduceGrace)));
    if (failed.ok()) {
      parts.push_back(**std::move(got[i]));
      continue;
    }
    // The host's ranks all fail, each with its own name in the error.
    std::vector<uint64_t> ranks(group.ranks.begin(), group.ranks.end());
    ReplyFold fold(reduce, field, ranks);
    for (size_t rank : group.ranks) {
      fold.Fail(rank,
                absl::Status(failed.code(),
                             absl::StrFormat("%s: %s", RankName(*this, rank),
                                             failed.message())));
    }
    parts.push_back(std::move(fold).Finish(failed));
  }
  return Combine(reduce, parts);
}

}  // namespace mesh
