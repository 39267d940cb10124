// EventLoop: one thread that runs posted work and timers in order.
//
// Components use it for anything that must not run inside a gRPC reaction
// (spawning, signalling, waiting) and for deadlines (registration timeouts,
// stop escalation, server-side waits). Work posted from one thread runs in
// the order posted; a timer runs no earlier than its deadline.
// Thread-safe. The destructor drops pending timers, runs no more work after
// the work in flight, and joins the thread.
#ifndef HOSTMESH_LIB_EVENT_EVENT_LOOP_H_
#define HOSTMESH_LIB_EVENT_EVENT_LOOP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mesh {

class EventLoop {
 public:
  using TimerId = uint64_t;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs `fn` on the loop thread as soon as possible.
  void Post(std::function<void()> fn);

  // Runs `fn` on the loop thread at `deadline` unless cancelled first.
  TimerId PostAt(absl::Time deadline, std::function<void()> fn);
  TimerId PostAfter(absl::Duration delay, std::function<void()> fn) {
    return PostAt(absl::Now() + delay, std::move(fn));
  }

  // Cancels a timer; false if it already ran or was cancelled. Safe from
  // any thread, including the loop's own.
  bool Cancel(TimerId id);

  bool InLoopThread() const;

 private:
  void Run();

  mutable absl::Mutex mu_;
  // Ordered by (deadline, id): ids are increasing, so work posted with the
  // same deadline runs in posting order. Post() uses absl::InfinitePast().
  std::map<std::pair<absl::Time, TimerId>, std::function<void()>> queue_
      ABSL_GUARDED_BY(mu_);
  std::map<TimerId, absl::Time> deadlines_ ABSL_GUARDED_BY(mu_);
  TimerId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_EVENT_EVENT_LOOP_H_
