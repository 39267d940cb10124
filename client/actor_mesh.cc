#include "hostmesh/actor_mesh.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
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
// a whole (rather than one target) answers with it, naming the envelope's
// index in the plan (a host group, or a node of the tree).
constexpr uint64_t kWholeCast = uint64_t{1} << 63;

void AddTargets(const ActorMesh& mesh, const std::vector<size_t>& ranks,
                google::protobuf::RepeatedPtrField<v1::CastTarget>* targets) {
  for (size_t rank : ranks) {
    const v1::ActorRef& actor = mesh.actor(rank);
    v1::CastTarget* target = targets->Add();
    target->set_proc(actor.proc());
    target->set_actor(actor.actor());
    target->set_cast_rank(rank);
  }
}

// How one message to a view travels: the envelopes the client sends and,
// by index (an envelope's correlation is kWholeCast | index), the view
// ranks behind each envelope or tree node, which fail together if it is
// refused or cannot go on.
//   - Host by host: one envelope per host of the view, which hands a copy
//     to each of its actors (with its view rank as cast_rank and
//     correlation); index = the host group.
//   - A tree (the mesh is on more than `fanout` hosts): the mesh's hosts in
//     order of their lowest mesh rank form a `fanout`-ary tree, node i's
//     children being nodes fanout*i+1 .. fanout*i+fanout; the client sends
//     one envelope to node 0, with the tree pruned to the nodes on the way
//     to the view's hosts. The tree is the whole mesh's, whatever the
//     view, so every message to an actor of the mesh takes the same path
//     and per-sender order holds. index = the node.
struct CastPlan {
  struct Send {
    v1::Envelope envelope;
    std::string host;
    size_t index = 0;
  };
  std::vector<Send> sends;
  std::vector<std::vector<size_t>> ranks;  // by index
  // The view's hosts (each with its ranks): where the replies come from.
  std::vector<HostGroup> groups;
  bool tree = false;
};

// The hosts of `actors` in order of their lowest rank.
std::vector<std::string> HostsInRankOrder(
    const std::vector<v1::ActorRef>& actors) {
  std::vector<std::string> hosts;
  absl::flat_hash_set<std::string> seen;
  for (const v1::ActorRef& actor : actors) {
    if (seen.insert(actor.host()).second) hosts.push_back(actor.host());
  }
  return hosts;
}

// `hosts`: the whole mesh's (ActorMesh::hosts_).
CastPlan PlanCast(const ActorMesh& mesh, const std::vector<std::string>& hosts,
                  size_t fanout, const v1::Envelope& prototype) {
  CastPlan plan;
  plan.groups = GroupByHost(mesh);
  if (fanout < 2 || hosts.size() <= fanout) {
    for (size_t i = 0; i < plan.groups.size(); ++i) {
      const HostGroup& group = plan.groups[i];
      v1::Envelope envelope = prototype;
      envelope.set_to_host(group.host);
      envelope.set_correlation(kWholeCast | i);
      AddTargets(mesh, group.ranks, envelope.mutable_targets());
      plan.sends.push_back({std::move(envelope), group.host, i});
      plan.ranks.push_back(group.ranks);
    }
    return plan;
  }
  plan.tree = true;
  std::map<std::string, size_t> node_of;
  for (size_t i = 0; i < hosts.size(); ++i) node_of.emplace(hosts[i], i);
  std::vector<const std::vector<size_t>*> own(hosts.size(), nullptr);
  for (const HostGroup& group : plan.groups) {
    own[node_of.at(group.host)] = &group.ranks;
  }
  plan.ranks.resize(hosts.size());
  // Node i with the view's targets there and its subtree; false if nothing
  // of the view is below it (pruned).
  std::function<bool(size_t, v1::CastHost*)> build = [&](size_t i,
                                                         v1::CastHost* node) {
    node->set_host(hosts[i]);
    node->set_correlation(kWholeCast | i);
    if (own[i] != nullptr) {
      AddTargets(mesh, *own[i], node->mutable_targets());
      plan.ranks[i] = *own[i];
    }
    for (size_t c = fanout * i + 1;
         c <= fanout * i + fanout && c < hosts.size(); ++c) {
      v1::CastHost child;
      if (!build(c, &child)) continue;
      plan.ranks[i].insert(plan.ranks[i].end(), plan.ranks[c].begin(),
                           plan.ranks[c].end());
      *node->add_children() = std::move(child);
    }
    return node->targets_size() > 0 || node->children_size() > 0;
  };
  v1::CastHost root;
  if (!build(0, &root)) return plan;  // an empty view
  v1::Envelope envelope = prototype;
  envelope.set_to_host(root.host());
  envelope.set_correlation(root.correlation());
  envelope.mutable_targets()->Swap(root.mutable_targets());
  envelope.mutable_forward()->Swap(root.mutable_children());
  plan.sends.push_back({std::move(envelope), root.host(), 0});
  return plan;
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
      hosts_(std::make_shared<const std::vector<std::string>>(
          HostsInRankOrder(*actors_))),
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
  return ActorMesh(client_, name_, type_, actors_, hosts_, *std::move(view),
                   supervision_);
}

absl::Status ActorMesh::Cast(const google::protobuf::Message& message) const {
  RETURN_IF_ERROR(status());
  v1::Envelope prototype;
  PackPayload(message, &prototype);
  std::vector<std::string> failures;
  absl::StatusCode code = absl::StatusCode::kOk;
  CastPlan plan =
      PlanCast(*this, *hosts_, client_->cast_tree_fanout(), prototype);
  for (CastPlan::Send& send : plan.sends) {
    const size_t ranks = plan.ranks[send.index].size();
    absl::Status sent = client_->SendToHost(std::move(send.envelope));
    if (!sent.ok()) {
      if (code == absl::StatusCode::kOk) code = sent.code();
      failures.push_back(absl::StrFormat("host %s (%d ranks%s): %s", send.host,
                                         ranks, plan.tree ? ", the tree" : "",
                                         sent.message()));
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
  v1::Envelope prototype;
  PackPayload(message, &prototype);
  CastPlan plan =
      PlanCast(*this, *hosts_, client_->cast_tree_fanout(), prototype);
  const std::vector<HostGroup>& groups = plan.groups;
  // Replies name the view rank they answer in their correlation; a host
  // that refused (or could not pass on) a whole envelope names its index.
  auto group_ranks =
      std::make_shared<std::vector<std::vector<size_t>>>(plan.ranks);
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

  // Through a tree, every host of the view answers on its own stream, and
  // tells of its procs' ends there.
  if (plan.tree) {
    for (const HostGroup& group : groups) {
      if (absl::Status open = client_->Connect(group.host); !open.ok()) {
        for (size_t rank : group.ranks) gather->Fill(rank, open);
      }
    }
  }
  for (CastPlan::Send& send : plan.sends) {
    *send.envelope.mutable_reply_to() = port;
    absl::Status sent = client_->SendToHost(std::move(send.envelope));
    if (sent.ok()) continue;
    for (size_t rank : plan.ranks[send.index]) {
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
  using Answer = absl::StatusOr<v1::Reduced>;
  Mailbox& mailbox = client_->mailbox();

  v1::Envelope prototype;
  PackPayload(message, &prototype);
  prototype.set_reduce(reduce);
  prototype.set_reduce_field(field);
  prototype.set_reduce_timeout_ms(static_cast<uint32_t>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(timeout), 1,
                          std::numeric_limits<uint32_t>::max())));
  // One answer per envelope sent: one per host, or the tree's root's for
  // the whole view.
  CastPlan plan =
      PlanCast(*this, *hosts_, client_->cast_tree_fanout(), prototype);
  auto answers = std::make_shared<Slots<Answer>>(plan.sends.size());

  // One port per envelope: its one answer is known by the port it arrives
  // at.
  std::vector<uint64_t> ports;
  std::vector<uint64_t> watches;
  for (size_t i = 0; i < plan.sends.size(); ++i) {
    CastPlan::Send& send = plan.sends[i];
    const std::string host = send.host;
    v1::PortRef port = mailbox.OpenPort([answers, i](v1::Envelope envelope) {
      answers->Fill(i, UnpackPayload<v1::Reduced>(envelope));
    });
    ports.push_back(port.port());
    // Only the host itself: a proc that is gone (or a host below it in the
    // tree) is the host's to count.
    watches.push_back(mailbox.WatchPeer(
        host, "", [answers, i, host](const absl::Status& status) {
          answers->Fill(
              i, absl::UnavailableError(absl::StrFormat(
                     "host %s cannot answer: %s", host, status.message())));
        }));
    *send.envelope.mutable_reply_to() = port;
    absl::Status sent = client_->SendToHost(std::move(send.envelope));
    if (!sent.ok()) answers->Fill(i, sent);
  }

  answers->Wait(timeout + kReduceGrace);
  for (uint64_t watch : watches) mailbox.UnwatchPeer(watch);
  for (uint64_t port : ports) mailbox.ClosePort(port);

  std::vector<std::optional<Answer>> got = answers->Take();
  std::vector<v1::Reduced> parts;
  parts.reserve(plan.sends.size());
  for (size_t i = 0; i < plan.sends.size(); ++i) {
    const CastPlan::Send& send = plan.sends[i];
    absl::Status failed =
        got[i].has_value() ? got[i]->status()
                           : absl::DeadlineExceededError(absl::StrFormat(
                                 "host %s did not answer within %s", send.host,
                                 absl::FormatDuration(timeout + kReduceGrace)));
    if (failed.ok()) {
      parts.push_back(**std::move(got[i]));
      continue;
    }
    // The envelope's ranks all fail, each with its own name in the error.
    const std::vector<size_t>& ranks = plan.ranks[send.index];
    parts.push_back(FailedPart(
        reduce, field, std::vector<uint64_t>(ranks.begin(), ranks.end()),
        [&](uint64_t rank) {
          return absl::Status(failed.code(),
                              absl::StrFormat("%s: %s", RankName(*this, rank),
                                              failed.message()));
        }));
  }
  return Combine(reduce, parts);
}

}  // namespace mesh
