// Test helper: a recorder of supervision events (Client::OnSupervisionEvent,
// ActorMesh::OnSupervisionEvent).
#ifndef HOSTMESH_CLIENT_TESTING_SUPERVISION_EVENTS_H_
#define HOSTMESH_CLIENT_TESTING_SUPERVISION_EVENTS_H_

#include <cstddef>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/proc.pb.h"

namespace mesh::testing {

// Collects supervision events in arrival order; outlives the client.
// Thread-safe.
class SupervisionEvents {
 public:
  std::function<void(const v1::SupervisionEvent&)> Handler() {
    return [this](const v1::SupervisionEvent& event) {
      absl::MutexLock lock(&mu_);
      events_.push_back(event);
    };
  }
  // Every event so far once there are at least `count` (fewer after
  // `timeout`).
  std::vector<v1::SupervisionEvent> WaitFor(
      size_t count, absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return events_.size() >= count;
    };
    mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
    return events_;
  }
  std::vector<v1::SupervisionEvent> All() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::SupervisionEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh::testing

#endif  // HOSTMESH_CLIENT_TESTING_SUPERVISION_EVENTS_H_
