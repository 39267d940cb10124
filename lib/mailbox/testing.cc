#include "lib/mailbox/testing.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace mesh::testing {

std::function<void(v1::Envelope)> Inbox::Handler() {
  return [this](v1::Envelope envelope) {
    absl::MutexLock lock(&mu_);
    envelopes_.push_back(std::move(envelope));
  };
}

bool Inbox::WaitFor(size_t n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return envelopes_.size() >= n;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

std::vector<v1::Envelope> Inbox::envelopes() const {
  absl::MutexLock lock(&mu_);
  return envelopes_;
}

size_t Inbox::size() const {
  absl::MutexLock lock(&mu_);
  return envelopes_.size();
}

absl::StatusOr<v1::Envelope> Request(Mailbox& mailbox, v1::Envelope envelope,
                                     absl::Duration timeout) {
  auto inbox = std::make_shared<Inbox>();
  v1::PortRef port = mailbox.OpenPort(
      [inbox](v1::Envelope reply) { inbox->Handler()(std::move(reply)); });
  *envelope.mutable_reply_to() = port;
  std::string to = MailboxName(envelope.to_host(), envelope.to_mailbox());
  mailbox.Send(std::move(envelope));
  bool got = inbox->WaitFor(1, timeout);
  mailbox.ClosePort(port.port());
  if (!got) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no reply from ", to, " within ", absl::FormatDuration(timeout)));
  }
  return inbox->envelopes()[0];
}

Router::Router() : thread_([this] { Loop(); }) {}

Router::~Router() {
  std::vector<Mailbox*> mailboxes;
  {
    absl::MutexLock lock(&mu_);
    for (auto& mailbox : mailboxes_) mailboxes.push_back(mailbox.get());
  }
  for (Mailbox* mailbox : mailboxes) mailbox->Shutdown();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

Mailbox& Router::Add(const std::string& host, const std::string& id) {
  auto mailbox = std::make_unique<Mailbox>(
      host, id, [this](v1::Envelope& envelope) { return Route(envelope); });
  Mailbox& ref = *mailbox;
  absl::MutexLock lock(&mu_);
  mailboxes_.push_back(std::move(mailbox));
  return ref;
}

absl::Status Router::Route(v1::Envelope& envelope) {
  if (envelope.targets_size() > 0) {
    return absl::UnimplementedError("the test router delivers no casts");
  }
  absl::MutexLock lock(&mu_);
  for (const auto& mailbox : mailboxes_) {
    if (mailbox->host() == envelope.to_host() &&
        mailbox->id() == envelope.to_mailbox()) {
      queue_.push_back(std::move(envelope));
      return absl::OkStatus();
    }
  }
  return absl::UnavailableError(absl::StrCat(
      "no mailbox ", MailboxName(envelope.to_host(), envelope.to_mailbox()),
      " in the test router"));
}

void Router::Loop() {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || !queue_.empty();
  };
  while (true) {
    v1::Envelope envelope;
    Mailbox* to = nullptr;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      envelope = std::move(queue_.front());
      queue_.pop_front();
      for (const auto& mailbox : mailboxes_) {
        if (mailbox->host() == envelope.to_host() &&
            mailbox->id() == envelope.to_mailbox()) {
          to = mailbox.get();
        }
      }
    }
    // Mailboxes live until the router is destroyed, after this thread.
    if (to != nullptr) to->Deliver(std::move(envelope));
  }
}

}  // namespace mesh::testing
