#include "hostd/missed_ends.h"

#include <glog/logging.h>

#include <utility>

namespace mesh {

MissedEnds::MissedEnds(Deliver deliver, size_t max_per_client, size_t max_kept)
    : deliver_(std::move(deliver)),
      max_per_client_(max_per_client),
      max_kept_(max_kept) {}

void MissedEnds::Report(const std::string& client, const std::string& identity,
                        const v1::ProcExit& exit) {
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  if (deliver_) deliver_(exit);
  if (client.empty() || routed_.contains(client)) return;
  Missed& missed = missed_[client];
  if (missed.identity != identity) {
    // The id changed hands: what the other identity missed is not this
    // one's to hear.
    if (!missed.ends.empty()) {
      LOG(WARNING) << "dropping the " << missed.ends.size() << " proc ends "
                   << client << " (" << missed.identity
                   << ") missed: the id is now " << identity << "'s";
    }
    for (uint64_t end : missed.ends) kept_.erase(end);
    missed = Missed{identity};
  }
  const uint64_t end = next_++;
  kept_.emplace(end, Kept{client, exit});
  missed.ends.push_back(end);
  if (missed.ends.size() > max_per_client_) {
    if (missed.dropped == 0) {
      LOG(WARNING) << client << " (" << identity << ") has missed more than "
                   << max_per_client_
                   << " proc ends; only the latest are kept for it";
    }
    DropOldestLocked(client, missed);
  }
  if (kept_.size() > max_kept_) {
    const std::string oldest = kept_.begin()->second.client;
    auto it = missed_.find(oldest);
    DropOldestLocked(oldest, it->second);
    if (it->second.ends.empty()) {
      LOG(WARNING) << "dropped all " << it->second.dropped << " proc ends "
                   << oldest << " (" << it->second.identity
                   << ") missed: hostd keeps " << max_kept_
                   << " missed ends in all";
      missed_.erase(it);
    }
  }
}

void MissedEnds::DropOldestLocked(const std::string& client, Missed& missed) {
  // The oldest end kept is the oldest of its client's.
  kept_.erase(missed.ends.front());
  missed.ends.pop_front();
  ++missed.dropped;
}

std::vector<v1::ProcExit> MissedEnds::StreamRouted(
    const std::string& client, const std::string& identity) {
  std::vector<v1::ProcExit> ends;
  absl::MutexLock lock(&mu_);
  ++routed_[client];
  auto it = missed_.find(client);
  if (it == missed_.end()) return ends;
  Missed missed = std::move(it->second);
  missed_.erase(it);
  const bool theirs = missed.identity == identity;
  if (!theirs) {
    LOG(WARNING) << "dropping the " << missed.ends.size() << " proc ends "
                 << client << " (" << missed.identity
                 << ") missed: its new stream is " << identity << "'s";
  } else if (missed.dropped > 0) {
    LOG(WARNING) << client << " (" << identity << ") is back having missed "
                 << missed.ends.size() + missed.dropped
                 << " proc ends; it hears the latest " << missed.ends.size()
                 << " (" << missed.dropped << " dropped)";
  }
  for (uint64_t end : missed.ends) {
    auto kept = kept_.find(end);
    if (theirs) ends.push_back(std::move(kept->second.exit));
    kept_.erase(kept);
  }
  return ends;
}

void MissedEnds::StreamEnded(const std::string& client) {
  absl::MutexLock lock(&mu_);
  auto it = routed_.find(client);
  if (it == routed_.end()) return;
  if (--it->second == 0) routed_.erase(it);
}

void MissedEnds::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

size_t MissedEnds::kept() {
  absl::MutexLock lock(&mu_);
  return kept_.size();
}

}  // namespace mesh
