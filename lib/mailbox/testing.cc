#include "lib/mailbox/testing.h"

#include "absl/strings/str_cat.h"

namespace mesh::testing {

MailboxNode::MailboxNode(const std::string& name,
                         std::vector<grpc::Service*> services)
    : mailbox_(std::make_unique<Mailbox>(name)) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(mailbox_->service());
  for (grpc::Service* service : services) builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  server_ = builder.BuildAndStart();
  if (server_ != nullptr && port > 0) {
    mailbox_->set_address(absl::StrCat("127.0.0.1:", port));
  } else {
    server_.reset();
  }
}

MailboxNode::~MailboxNode() { Stop(); }

void MailboxNode::Stop(std::function<void()> before_server) {
  if (server_ == nullptr) return;
  mailbox_->Shutdown();
  if (before_server) before_server();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_.reset();
}

std::function<void(v1::Envelope)> Inbox::Handler() {
  return [this](v1::Envelope envelope) {
    absl::MutexLock lock(&mu_);
    envelopes_.push_back(std::move(envelope));
  };
}

bool Inbox::WaitFor(size_t n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto enough = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
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

absl::StatusOr<v1::Envelope> Request(Mailbox& mailbox,
                                     const std::string& address,
                                     v1::Envelope envelope,
                                     absl::Duration timeout) {
  auto inbox = std::make_shared<Inbox>();
  v1::PortRef port = mailbox.OpenPort(
      [inbox](v1::Envelope reply) { inbox->Handler()(std::move(reply)); });
  *envelope.mutable_reply_to() = port;
  mailbox.Send(address, std::move(envelope));
  bool got = inbox->WaitFor(1, timeout);
  mailbox.ClosePort(port.port());
  if (!got) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no reply from ", address, " within ", absl::FormatDuration(timeout)));
  }
  return inbox->envelopes()[0];
}

}  // namespace mesh::testing
