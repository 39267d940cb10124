// Test helpers for a Client's host health events.
#ifndef HOSTMESH_CLIENT_TESTING_HOST_EVENTS_H_
#define HOSTMESH_CLIENT_TESTING_HOST_EVENTS_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostmesh/client.h"

namespace mesh::testing {

// Collects a client's host events; outlives the client. Thread-safe.
class HostEvents {
 public:
  // For ClientOptions::on_host_event.
  std::function<void(const HostEvent&)> Handler();
  // The next event not yet taken; nullopt after `timeout`.
  std::optional<HostEvent> Next(absl::Duration timeout = absl::Seconds(30));
  // The next event for `host` not yet taken (others are skipped), or
  // nullopt after `timeout`.
  std::optional<HostEvent> Next(const std::string& host,
                                absl::Duration timeout = absl::Seconds(30));
  // Every event so far, taken or not.
  std::vector<HostEvent> All();

 private:
  absl::Mutex mu_;
  std::vector<HostEvent> events_ ABSL_GUARDED_BY(mu_);
  size_t taken_ ABSL_GUARDED_BY(mu_) = 0;
};

// A client with the given health bounds that reports its host events to
// `events` (REQUIREs it was created).
std::shared_ptr<Client> NewHealthClient(HostEvents& events,
                                        absl::Duration unreachable_after,
                                        absl::Duration lost_after);

}  // namespace mesh::testing

#endif  // HOSTMESH_CLIENT_TESTING_HOST_EVENTS_H_
