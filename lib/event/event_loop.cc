#include "lib/event/event_loop.h"

#include <algorithm>
#include <chrono>

#include "absl/synchronization/notification.h"

namespace mesh {

void EventLoop::LoopMutex::WaitFor(std::condition_variable& cv,
                                   absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
  // Long sleeps are cut short (the loop looks again): no chrono overflow.
  cv.wait_for(lock, absl::ToChronoNanoseconds(std::clamp(
                        timeout, absl::ZeroDuration(), absl::Hours(1))));
  lock.release();  // Still held: the caller's LoopLock releases it.
}

EventLoop::EventLoop(const MonotonicClock& clock) : clock_(clock) {
  // A jump of a fake clock may bring the first deadline forward.
  subscription_ = clock_.Subscribe([this] {
    LoopLock lock(&mu_);
    wake_.notify_all();
  });
  thread_ = std::thread([this] { Run(); });
}

EventLoop::~EventLoop() {
  clock_.Unsubscribe(subscription_);
  {
    LoopLock lock(&mu_);
    stopping_ = true;
    wake_.notify_all();
  }
  thread_.join();
}

void EventLoop::Post(std::function<void()> fn) {
  PostAt(-absl::InfiniteDuration(), std::move(fn));
}

EventLoop::TimerId EventLoop::PostAt(absl::Duration deadline,
                                     std::function<void()> fn) {
  LoopLock lock(&mu_);
  TimerId id = next_id_++;
  queue_.emplace(std::make_pair(deadline, id), std::move(fn));
  deadlines_.emplace(id, deadline);
  wake_.notify_all();
  return id;
}

bool EventLoop::Cancel(TimerId id) {
  LoopLock lock(&mu_);
  auto it = deadlines_.find(id);
  if (it == deadlines_.end()) return false;
  queue_.erase(std::make_pair(it->second, id));
  deadlines_.erase(it);
  return true;
}

void EventLoop::RunDue() {
  // Runs after every entry due now: those sort before (now, this id).
  absl::Notification done;
  PostAt(clock_.Now(), [&done] { done.Notify(); });
  done.WaitForNotification();
}

bool EventLoop::InLoopThread() const {
  return std::this_thread::get_id() == thread_.get_id();
}

void EventLoop::Run() {
  LoopLock lock(&mu_);
  while (!stopping_) {
    if (queue_.empty()) {
      mu_.WaitFor(wake_, absl::InfiniteDuration());
      continue;
    }
    auto first = queue_.begin();
    const absl::Duration deadline = first->first.first;
    const absl::Duration now = clock_.Now();
    if (deadline > now) {
      // Until the deadline, a new earlier entry, a clock jump or stop.
      mu_.WaitFor(wake_, deadline - now);
      continue;
    }
    std::function<void()> fn = std::move(first->second);
    deadlines_.erase(first->first.second);
    queue_.erase(first);
    mu_.Unlock();
    fn();
    fn = nullptr;  // What it captured goes before the lock is taken again.
    mu_.Lock();
  }
}

}  // namespace mesh
