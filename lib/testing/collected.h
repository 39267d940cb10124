// Collected<T>: what arrives from other threads (a fake proc's frames, a
// stream's messages), kept in order for the test thread to wait on and read.
// Thread-safe. Tests assert only on their own thread: Catch2's assertions
// are not thread-safe, so callbacks on other threads Add here instead.
#ifndef HOSTMESH_LIB_TESTING_COLLECTED_H_
#define HOSTMESH_LIB_TESTING_COLLECTED_H_

#include <cstddef>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mesh::testing {

template <typename T>
class Collected {
 public:
  void Add(T item) {
    absl::MutexLock lock(&mu_);
    items_.push_back(std::move(item));
  }
  // True once at least `n` arrived.
  bool WaitFor(size_t n, absl::Duration timeout = absl::Seconds(20)) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return items_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  }
  std::vector<T> items() {
    absl::MutexLock lock(&mu_);
    return items_;
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return items_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<T> items_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh::testing

#endif  // HOSTMESH_LIB_TESTING_COLLECTED_H_
