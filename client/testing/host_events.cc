#include "client/testing/host_events.h"

#include <utility>

#include "absl/status/statusor.h"
#include "catch2/catch.hpp"

namespace mesh::testing {

std::function<void(const HostEvent&)> HostEvents::Handler() {
  return [this](const HostEvent& event) {
    absl::MutexLock lock(&mu_);
    events_.push_back(event);
  };
}

std::optional<HostEvent> HostEvents::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return taken_ < events_.size();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return std::nullopt;
  }
  return events_[taken_++];
}

std::optional<HostEvent> HostEvents::Next(const std::string& host,
                                          absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (taken_ < events_.size() && events_[taken_].host != host) {
      ++taken_;
    }
    return taken_ < events_.size();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return std::nullopt;
  }
  return events_[taken_++];
}

std::vector<HostEvent> HostEvents::All() {
  absl::MutexLock lock(&mu_);
  return events_;
}

std::shared_ptr<Client> NewHealthClient(HostEvents& events,
                                        absl::Duration unreachable_after,
                                        absl::Duration lost_after) {
  Client::Options options;
  options.unreachable_after = unreachable_after;
  options.lost_after = lost_after;
  options.on_host_event = events.Handler();
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  REQUIRE(client.ok());
  return *client;
}

}  // namespace mesh::testing
