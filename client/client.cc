#include "hostmesh/client.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/mailbox/mailbox.h"
#include "lib/status.h"

namespace mesh {
namespace internal {

void PortQueue::Push(v1::Envelope envelope) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(envelope));
}

absl::StatusOr<v1::Envelope> PortQueue::Pop(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no message arrived within ", absl::FormatDuration(timeout)));
  }
  v1::Envelope envelope = std::move(queue_.front());
  queue_.pop_front();
  return envelope;
}

absl::Status UnpackEnvelope(const v1::Envelope& envelope,
                            google::protobuf::Message* message) {
  return UnpackPayload(envelope, message);  // the mailbox's own rule
}

}  // namespace internal

absl::StatusOr<std::shared_ptr<Client>> Client::Create(Options options) {
  std::shared_ptr<Client> client(new Client());
  client->mailbox_ = std::make_unique<Mailbox>("client");
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.listen_host, ":0"),
                           grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.RegisterService(client->mailbox_->service());
  client->server_ = builder.BuildAndStart();
  if (client->server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "client mailbox cannot listen on ", options.listen_host, ":0"));
  }
  client->address_ = absl::StrCat(options.listen_host, ":", port);
  client->mailbox_->set_address(client->address_);
  Client* raw = client.get();
  client->supervisor_port_ =
      client->mailbox_->OpenPort([raw](v1::Envelope envelope) {
        absl::StatusOr<v1::SupervisionEvent> event =
            UnpackPayload<v1::SupervisionEvent>(envelope);
        if (!event.ok()) return;
        std::function<void(const v1::SupervisionEvent&)> handler;
        {
          absl::MutexLock lock(&raw->mu_);
          handler = raw->supervision_handler_;
        }
        if (handler) {
          handler(*event);
        } else if (event->actor().status() == v1::FAILED) {
          LOG(ERROR) << "actor " << event->actor().ref().proc() << "/"
                     << event->actor().name()
                     << " failed: " << event->actor().reason();
        }
      });
  return client;
}

absl::StatusOr<std::shared_ptr<Client>> Client::Default() {
  static absl::Mutex mu(absl::kConstInit);
  // Never destroyed: it may be in use until the process exits.
  static std::shared_ptr<Client>* client = nullptr;
  absl::MutexLock lock(&mu);
  if (client == nullptr) {
    absl::StatusOr<std::shared_ptr<Client>> created = Create();
    if (!created.ok()) return created.status();
    client = new std::shared_ptr<Client>(*std::move(created));
  }
  return *client;
}

Client::~Client() {
  if (mailbox_ != nullptr) mailbox_->Shutdown();
  if (server_ != nullptr) server_->Shutdown();
  server_.reset();
  mailbox_.reset();
}

const std::string& Client::address() const { return address_; }

void Client::OnSupervisionEvent(
    std::function<void(const v1::SupervisionEvent&)> handler) {
  absl::MutexLock lock(&mu_);
  supervision_handler_ = std::move(handler);
}

std::shared_ptr<grpc::Channel> Client::Channel(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(address);
  if (it != channels_.end()) return it->second;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  auto channel = grpc::CreateCustomChannel(
      address, grpc::InsecureChannelCredentials(), args);
  channels_.emplace(address, channel);
  return channel;
}

void Client::OpenQueuePort(const std::shared_ptr<internal::PortQueue>& queue,
                           v1::PortRef* ref) {
  *ref = mailbox_->OpenPort(
      [queue](v1::Envelope envelope) { queue->Push(std::move(envelope)); });
}

v1::PortRef Client::OpenHandlerPort(std::function<void(v1::Envelope)> handler) {
  return mailbox_->OpenPort(std::move(handler));
}

void Client::ClosePort(uint64_t port) { mailbox_->ClosePort(port); }

}  // namespace mesh
