#include "hostd/host_watch.h"

#include <google/protobuf/util/time_util.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace mesh {

HostWatch::Watcher::Next HostWatch::Watcher::Take(v1::HostEvent* event,
                                                  absl::Status* end) {
  absl::MutexLock lock(&mu_);
  if (removed_) {
    *end = absl::CancelledError("the watch was cancelled");
    queue_.clear();
    return Next::kEnd;
  }
  if (!queue_.empty()) {
    *event = *queue_.front().first;
    queued_bytes_ -= queue_.front().second;
    queue_.pop_front();
    started_ = true;
    return Next::kEvent;
  }
  if (overflowed_ && !closed_) return Next::kResync;
  if (closed_) {
    *end = absl::OkStatus();
    return Next::kEnd;
  }
  armed_ = true;
  return Next::kIdle;
}

bool HostWatch::Watcher::Push(const std::shared_ptr<const v1::HostEvent>& event,
                              size_t bytes, const Limits& limits) {
  absl::MutexLock lock(&mu_);
  if (removed_ || closed_) return false;
  if (overflowed_) {
    ++dropped_;
    return false;
  }
  if (queue_.size() >= limits.max_queue ||
      queued_bytes_ + bytes > limits.max_queue_bytes) {
    // Behind by more than the bound: what is queued is of no use now; a
    // fresh snapshot replaces it once the watcher reads again.
    dropped_ += queue_.size() + 1;
    queue_.clear();
    queued_bytes_ = 0;
    overflowed_ = true;
  } else {
    queue_.emplace_back(event, bytes);
    queued_bytes_ += bytes;
  }
  const bool was_armed = armed_;
  armed_ = false;
  return was_armed;
}

bool HostWatch::Watcher::End(bool closed) {
  absl::MutexLock lock(&mu_);
  if (closed) {
    closed_ = true;
  } else {
    removed_ = true;
    queue_.clear();
    queued_bytes_ = 0;
  }
  const bool was_armed = armed_;
  armed_ = false;
  return was_armed;
}

bool HostWatch::empty() {
  absl::MutexLock lock(&mu_);
  return watchers_.empty();
}

size_t HostWatch::watchers() {
  absl::MutexLock lock(&mu_);
  return watchers_.size();
}

uint64_t HostWatch::sequence() {
  absl::MutexLock lock(&mu_);
  return sequence_;
}

v1::HostEvent HostWatch::Filtered(const v1::HostEvent& snapshot,
                                  const Visible& visible) {
  v1::HostEvent filtered = snapshot;
  filtered.clear_procs();
  for (const v1::ProcState& proc : snapshot.procs()) {
    if (visible(proc)) *filtered.add_procs() = proc;
  }
  return filtered;
}

absl::StatusOr<std::shared_ptr<HostWatch::Watcher>> HostWatch::Add(
    v1::HostEvent snapshot, Visible visible, std::function<void()> ready) {
  absl::MutexLock lock(&mu_);
  if (closed_) {
    return absl::FailedPreconditionError(
        "the host is going away; no new watch");
  }
  if (watchers_.size() >= limits_.max_watchers) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this host has ", watchers_.size(),
        " open WatchHost streams, its limit; cancel one or use ListProcs"));
  }
  std::shared_ptr<Watcher> watcher(
      new Watcher(std::move(visible), std::move(ready)));
  snapshot.set_kind(v1::HostEvent::SNAPSHOT);
  snapshot.set_sequence(sequence_);
  {
    absl::MutexLock watcher_lock(&watcher->mu_);
    watcher->queue_.emplace_back(std::make_shared<const v1::HostEvent>(
                                     Filtered(snapshot, watcher->visible_)),
                                 0);
  }
  watchers_.insert(watcher);
  return watcher;
}

void HostWatch::Publish(v1::HostEvent event, Deferred& deferred) {
  absl::MutexLock lock(&mu_);
  if (watchers_.empty()) {
    ++sequence_;
    return;
  }
  event.set_sequence(++sequence_);
  if (!event.has_at()) {
    *event.mutable_at() =
        google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
            absl::ToUnixNanos(absl::Now()));
  }
  const size_t bytes = event.ByteSizeLong();
  const bool for_all = !event.has_proc();
  auto shared = std::make_shared<const v1::HostEvent>(std::move(event));
  for (const std::shared_ptr<Watcher>& watcher : watchers_) {
    if (!for_all && !watcher->visible_(shared->proc())) continue;
    if (watcher->Push(shared, bytes, limits_)) {
      deferred.push_back(watcher->ready_);
    }
  }
}

void HostWatch::Resync(Watcher& watcher, v1::HostEvent snapshot) {
  uint64_t sequence;
  {
    absl::MutexLock lock(&mu_);
    sequence = sequence_;
  }
  snapshot.set_sequence(sequence);
  v1::HostEvent filtered = Filtered(snapshot, watcher.visible_);
  absl::MutexLock lock(&watcher.mu_);
  if (!watcher.overflowed_ || watcher.removed_) return;
  // One that overflowed before its snapshot was sent still starts with a
  // snapshot (this one).
  if (watcher.started_) {
    filtered.set_kind(v1::HostEvent::RESYNC);
    filtered.set_dropped(watcher.dropped_);
  } else {
    filtered.set_kind(v1::HostEvent::SNAPSHOT);
  }
  watcher.queue_.clear();
  watcher.queue_.emplace_back(
      std::make_shared<const v1::HostEvent>(std::move(filtered)), 0);
  watcher.queued_bytes_ = 0;
  watcher.dropped_ = 0;
  watcher.overflowed_ = false;
}

void HostWatch::Remove(Watcher& watcher) {
  {
    absl::MutexLock lock(&mu_);
    for (auto it = watchers_.begin(); it != watchers_.end(); ++it) {
      if (it->get() == &watcher) {
        watchers_.erase(it);
        break;
      }
    }
  }
  if (watcher.End(/*closed=*/false)) watcher.ready_();
}

void HostWatch::Close() {
  std::vector<std::shared_ptr<Watcher>> all;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    all.assign(watchers_.begin(), watchers_.end());
  }
  for (const std::shared_ptr<Watcher>& watcher : all) {
    if (watcher->End(/*closed=*/true)) watcher->ready_();
  }
}

}  // namespace mesh
