#include "procd/testing.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "lib/mailbox/mailbox.h"
#include "proto/actors.pb.h"

namespace mesh::testing {

GateActor::GateActor(std::shared_ptr<Gate> gate) : gate_(std::move(gate)) {
  Handle<v1::Echo, v1::Echo>(
      [this](const v1::Echo& echo, ActorContext&) -> absl::StatusOr<v1::Echo> {
        if (!gate_->entered.HasBeenNotified()) gate_->entered.Notify();
        gate_->open.WaitForNotificationWithTimeout(gate_->timeout);
        return echo;
      });
}

absl::Status FakeClient::Outbound(v1::Envelope& envelope) {
  absl::MutexLock lock(&mu_);
  if (envelope.to_mailbox() == mailbox_ && envelope.to_host().empty()) {
    sent_[envelope.port()].push_back(std::move(envelope));
    return absl::OkStatus();
  }
  return absl::UnavailableError(
      absl::StrCat("the test routes nothing to ",
                   MailboxName(envelope.to_host(), envelope.to_mailbox())));
}

v1::PortRef FakeClient::OpenPort() {
  v1::PortRef port;
  port.set_mailbox(mailbox_);
  absl::MutexLock lock(&mu_);
  port.set_port(next_port_++);
  return port;
}

std::vector<v1::Envelope> FakeClient::WaitEnvelopes(const v1::PortRef& port,
                                                    size_t n) {
  absl::MutexLock lock(&mu_);
  auto arrived = [this, &port, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return sent_[port.port()].size() >= n;
  };
  REQUIRE(mu_.AwaitWithTimeout(absl::Condition(&arrived), timeout_));
  const std::vector<v1::Envelope>& got = sent_[port.port()];
  return {got.begin(), got.begin() + static_cast<std::ptrdiff_t>(n)};
}

std::vector<v1::Envelope> FakeClient::Sent(const v1::PortRef& port) {
  absl::MutexLock lock(&mu_);
  return sent_[port.port()];
}

}  // namespace mesh::testing
