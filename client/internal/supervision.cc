#include "client/internal/supervision.h"

#include <set>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "hostmesh/client.h"
#include "lib/status.h"

namespace mesh {
namespace {

// Where a status carries its event.
constexpr char kEventPayload[] = "type.googleapis.com/mesh.v1.SupervisionEvent";

}  // namespace

std::optional<v1::SupervisionEvent> SupervisionEventOf(
    const absl::Status& status) {
  auto payload = status.GetPayload(kEventPayload);
  if (!payload.has_value()) return std::nullopt;
  v1::SupervisionEvent event;
  if (!event.ParseFromString(std::string(*payload))) return std::nullopt;
  return event;
}

absl::Status SupervisionStatus(absl::StatusCode code, const std::string& prefix,
                               const v1::SupervisionEvent& event) {
  absl::Status status(code, absl::StrCat(prefix, event.message()));
  status.SetPayload(kEventPayload, absl::Cord(event.SerializeAsString()));
  return status;
}

absl::Status ProcEndStatus(const v1::MailboxLost& lost,
                           const std::string& fallback) {
  if (lost.has_exit() && !lost.exit().reason().empty()) {
    return absl::UnavailableError(lost.exit().reason());
  }
  absl::Status why = FromErrorProto(lost.reason());
  if (!why.ok()) return why;
  return absl::UnavailableError(fallback);
}

std::string DescribeEvent(const v1::SupervisionEvent& event) {
  const v1::ActorState& actor = event.actor();
  std::string what =
      absl::StrCat("actor ", actor.ref().proc(), "/", actor.name(), " (rank ",
                   event.rank(), " of actor mesh ", event.mesh(), ") ");
  switch (event.cause()) {
    case v1::SupervisionEvent::PROC_ENDED:
      return absl::StrCat(what, event.failure() ? "failed" : "stopped", ": ",
                          event.proc_exit().reason());
    case v1::SupervisionEvent::HOST_LOST:
      return absl::StrCat(what, "failed: host ", actor.ref().host(),
                          " is lost: ", event.host_reason());
    default:
      return absl::StrCat(
          what, actor.status() == v1::FAILED ? "failed: " : "stopped: ",
          actor.reason());
  }
}

MeshSupervision::MeshSupervision(std::string name, size_t num_ranks)
    : name_(std::move(name)), ended_(num_ranks, false) {}

void MeshSupervision::SetHandler(SupervisionHandler handler) {
  absl::MutexLock lock(&mu_);
  handler_ = std::move(handler);
}

SupervisionHandler MeshSupervision::handler() const {
  absl::MutexLock lock(&mu_);
  return handler_;
}

bool MeshSupervision::MarkEnded(size_t rank) {
  absl::MutexLock lock(&mu_);
  if (rank >= ended_.size() || ended_[rank]) return false;
  ended_[rank] = true;
  return true;
}

void MeshSupervision::Ended(const v1::SupervisionEvent& event) {
  std::vector<Watcher> watchers;
  absl::Status ended;
  {
    absl::MutexLock lock(&mu_);
    if (!first_end_.ok()) return;
    first_end_ = SupervisionStatus(absl::StatusCode::kUnavailable, "", event);
    ended = first_end_;
    watchers.swap(watchers_);
  }
  for (Watcher& watcher : watchers) {
    if (!watcher.alive.expired()) watcher.fail(ended);
  }
}

bool MeshSupervision::Poison(const v1::SupervisionEvent& event) {
  absl::MutexLock lock(&mu_);
  if (!poison_.ok()) return false;
  poison_ = SupervisionStatus(
      absl::StatusCode::kFailedPrecondition,
      absl::StrCat("actor mesh \"", name_,
                   "\" is poisoned by an unhandled failure: "),
      event);
  return true;
}

absl::Status MeshSupervision::status() const {
  absl::MutexLock lock(&mu_);
  return poison_;
}

void MeshSupervision::OnEnd(std::weak_ptr<void> alive,
                            std::function<void(const absl::Status&)> fail) {
  absl::Status ended;
  {
    absl::MutexLock lock(&mu_);
    if (first_end_.ok()) {
      // Amortized: drop the watchers of closed ports once they doubled.
      if (watchers_.size() >= 2 * pruned_at_ + 64) {
        std::erase_if(watchers_, [](const Watcher& watcher) {
          return watcher.alive.expired();
        });
        pruned_at_ = watchers_.size();
      }
      watchers_.push_back({std::move(alive), std::move(fail)});
      return;
    }
    ended = first_end_;
  }
  fail(ended);
}

void SupervisionIndex::Add(const std::shared_ptr<MeshSupervision>& mesh,
                           const std::vector<v1::ActorRef>& actors) {
  absl::MutexLock lock(&mu_);
  for (size_t rank = 0; rank < actors.size(); ++rank) {
    by_proc_[actors[rank].proc()].push_back({mesh, rank, actors[rank]});
    ++entries_;
  }
  // Amortized: prune once the index doubled since the last time.
  if (entries_ > 2 * pruned_at_ + 64) PruneLocked();
}

void SupervisionIndex::PruneLocked() {
  entries_ = 0;
  for (auto it = by_proc_.begin(); it != by_proc_.end();) {
    std::erase_if(it->second,
                  [](const Entry& entry) { return entry.mesh.expired(); });
    entries_ += it->second.size();
    it = it->second.empty() ? by_proc_.erase(it) : std::next(it);
  }
  pruned_at_ = entries_;
}

std::vector<SupervisionIndex::Entry*> SupervisionIndex::MatchLocked(
    const std::string& host, const std::string& proc) {
  std::vector<Entry*> matched;
  auto it = by_proc_.find(proc);
  if (it == by_proc_.end()) return matched;
  std::set<std::string> hosts;
  for (Entry& entry : it->second) {
    hosts.insert(entry.ref.host());
    if (entry.ref.host() == host) matched.push_back(&entry);
  }
  if (matched.empty() && hosts.size() == 1) {
    for (Entry& entry : it->second) matched.push_back(&entry);
  }
  return matched;
}

std::vector<SupervisionIndex::Member> SupervisionIndex::Find(
    const std::string& host, const std::string& proc,
    const std::string& actor) {
  std::vector<Member> members;
  absl::MutexLock lock(&mu_);
  for (Entry* entry : MatchLocked(host, proc)) {
    if (!actor.empty() && entry->ref.actor() != actor) continue;
    std::shared_ptr<MeshSupervision> mesh = entry->mesh.lock();
    if (mesh != nullptr)
      members.push_back({std::move(mesh), entry->rank, entry->ref});
  }
  return members;
}

std::vector<SupervisionIndex::Member> SupervisionIndex::Take(
    const std::string& host, const std::string& proc) {
  std::vector<Member> members;
  absl::MutexLock lock(&mu_);
  std::vector<Entry*> matched = MatchLocked(host, proc);
  if (matched.empty()) return members;
  std::set<Entry*> gone(matched.begin(), matched.end());
  std::vector<Entry>& entries = by_proc_[proc];
  std::vector<Entry> kept;
  for (Entry& entry : entries) {
    if (!gone.contains(&entry)) {
      kept.push_back(std::move(entry));
    } else if (std::shared_ptr<MeshSupervision> mesh = entry.mesh.lock()) {
      members.push_back({std::move(mesh), entry.rank, entry.ref});
    }
  }
  entries_ -= entries.size() - kept.size();
  if (kept.empty()) {
    by_proc_.erase(proc);
  } else {
    entries = std::move(kept);
  }
  return members;
}

}  // namespace mesh
