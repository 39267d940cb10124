#include "lib/event/event_loop.h"

namespace mesh {

EventLoop::EventLoop() : thread_([this] { Run(); }) {}

EventLoop::~EventLoop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void EventLoop::Post(std::function<void()> fn) {
  PostAt(absl::InfinitePast(), std::move(fn));
}

EventLoop::TimerId EventLoop::PostAt(absl::Time deadline,
                                     std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  TimerId id = next_id_++;
  queue_.emplace(std::make_pair(deadline, id), std::move(fn));
  deadlines_.emplace(id, deadline);
  return id;
}

bool EventLoop::Cancel(TimerId id) {
  absl::MutexLock lock(&mu_);
  auto it = deadlines_.find(id);
  if (it == deadlines_.end()) return false;
  queue_.erase(std::make_pair(it->second, id));
  deadlines_.erase(it);
  return true;
}

bool EventLoop::InLoopThread() const {
  return std::this_thread::get_id() == thread_.get_id();
}

void EventLoop::Run() {
  absl::MutexLock lock(&mu_);
  while (true) {
    if (stopping_) return;
    if (queue_.empty()) {
      mu_.Await(absl::Condition(
          +[](EventLoop* loop) ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop->mu_) {
            return loop->stopping_ || !loop->queue_.empty();
          },
          this));
      continue;
    }
    auto first = queue_.begin();
    absl::Time deadline = first->first.first;
    if (deadline > absl::Now()) {
      // Wake at the deadline, on a new earlier entry, or on stop.
      auto ready = [this, deadline]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || queue_.empty() ||
               queue_.begin()->first.first < deadline;
      };
      mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
      continue;
    }
    std::function<void()> fn = std::move(first->second);
    deadlines_.erase(first->first.second);
    queue_.erase(first);
    mu_.Unlock();
    fn();
    mu_.Lock();
  }
}

}  // namespace mesh
