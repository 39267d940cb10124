#include "hostmesh/client.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "lib/mailbox/mailbox.h"
#include "lib/relay/relay_stream.h"
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

namespace {

// "client:" and 16 random hex digits.
std::string NewClientId() {
  absl::BitGen random;
  return absl::StrCat(
      kClientMailboxPrefix,
      absl::Hex(absl::Uniform<uint64_t>(random), absl::kZeroPad16));
}

// How long a closing client lets its streams drain before cancelling them.
constexpr absl::Duration kDrain = absl::Seconds(1);

}  // namespace

Client::Client() : id_(NewClientId()) {
  mailbox_ = std::make_unique<Mailbox>(
      "", id_, [this](v1::Envelope& envelope) { return Route(envelope); });
}

absl::StatusOr<std::shared_ptr<Client>> Client::Create(Options options) {
  std::shared_ptr<Client> client(new Client());
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
                     << event->actor().name() << " on host "
                     << event->actor().ref().host()
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
  std::vector<std::unique_ptr<RelayStream>> streams;
  {
    absl::MutexLock lock(&streams_mu_);
    shutting_down_ = true;
    for (auto& [host, entry] : streams_) {
      streams.push_back(std::move(entry.stream));
    }
    streams_.clear();
  }
  // No more sends, local deliveries or loss reports.
  mailbox_->Shutdown();
  // Let what is queued go out, then cut what is left; wait for every
  // stream (also those that ended on their own) to be gone: their callbacks
  // use this client.
  for (auto& stream : streams) stream->Close();
  {
    absl::MutexLock lock(&streams_mu_);
    auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
      return live_streams_ == 0;
    };
    if (!streams_mu_.AwaitWithTimeout(absl::Condition(&all_done), kDrain)) {
      for (auto& stream : streams) stream->Cancel();
      while (!streams_mu_.AwaitWithTimeout(absl::Condition(&all_done),
                                           absl::Seconds(10))) {
        LOG(WARNING) << "client " << id_ << " still waiting for "
                     << live_streams_ << " relay streams to end";
      }
    }
  }
  streams.clear();
  mailbox_.reset();
}

const std::string& Client::id() const { return id_; }

absl::Status Client::Connect(const std::string& host) {
  if (host.empty()) {
    return absl::InvalidArgumentError("Connect needs a host address");
  }
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) {
    return absl::FailedPreconditionError(
        absl::StrCat("client ", id_, " is shutting down"));
  }
  StreamLocked(host);
  return absl::OkStatus();
}

absl::Status Client::SendToHost(v1::Envelope envelope) {
  envelope.set_sender(mailbox_->sender());
  return Route(envelope);
}

absl::Status Client::Route(v1::Envelope& envelope) {
  const std::string& host = envelope.to_host();
  if (host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot send to mailbox \"", envelope.to_mailbox(),
        "\" without a host: a client reaches mailboxes only through hosts"));
  }
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) {
    return absl::UnavailableError(
        absl::StrCat("client ", id_, " is shutting down"));
  }
  // A stream that broke stays until its on_done (which fails what waited on
  // it) has run; sends meanwhile fail, and the next one reopens it.
  return StreamLocked(host)->Send(envelope);
}

RelayStream* Client::StreamLocked(const std::string& host) {
  HostStream& entry = streams_[host];
  if (entry.stream != nullptr) return entry.stream.get();
  const uint64_t serial = next_serial_++;
  RelayStream::Options options;
  options.sender = id_;
  options.peer = absl::StrCat("host ", host);
  ++live_streams_;
  // The callbacks hold this client by pointer: the destructor waits until
  // every stream's on_done has returned. An on_done that runs at once waits
  // for streams_mu_, so it finds this entry filled in.
  entry.serial = serial;
  entry.stream = RelayStream::Start(
      Channel(host), std::move(options),
      [this, host](v1::RelayFrame frame) { OnFrame(host, std::move(frame)); },
      [this, host, serial](const absl::Status& status,
                           std::vector<v1::RelayFrame> unsent) {
        OnStreamDone(host, serial, status, std::move(unsent));
      });
  return entry.stream.get();
}

void Client::OnFrame(const std::string& host, v1::RelayFrame frame) {
  switch (frame.frame_case()) {
    case v1::RelayFrame::kEnvelope:
      if (frame.envelope().to_mailbox() != id_) {
        LOG(WARNING) << "client " << id_ << ": host " << host
                     << " sent an envelope for mailbox \""
                     << frame.envelope().to_mailbox() << "\"; dropped";
        return;
      }
      mailbox_->Deliver(std::move(*frame.mutable_envelope()));
      return;
    case v1::RelayFrame::kLost: {
      const v1::MailboxLost& lost = frame.lost();
      absl::Status why = FromErrorProto(lost.reason());
      if (why.ok()) {
        why = absl::UnavailableError(
            absl::StrCat(MailboxName(host, lost.mailbox()), " is gone"));
      }
      // Keyed by the address this client knows the host by.
      mailbox_->ReportLost(host, lost.mailbox(), why);
      return;
    }
    case v1::RelayFrame::FRAME_NOT_SET:
      return;
  }
}

void Client::OnStreamDone(const std::string& host, uint64_t serial,
                          const absl::Status& status,
                          std::vector<v1::RelayFrame> unsent) {
  bool shutting_down;
  {
    absl::MutexLock lock(&streams_mu_);
    shutting_down = shutting_down_;
  }
  if (!shutting_down) {
    absl::Status lost = absl::UnavailableError(absl::StrCat(
        "relay stream to host ", host,
        " ended: ", status.ok() ? "the host closed it" : status.ToString()));
    // A host going away is news, not trouble, unless messages went with it;
    // CANCELLED is an orderly end (the host shut down).
    if (unsent.empty() && status.code() == absl::StatusCode::kCancelled) {
      VLOG(1) << "client " << id_ << ": " << lost.message();
    } else if (unsent.empty()) {
      LOG(INFO) << "client " << id_ << ": " << lost.message();
    } else {
      LOG(WARNING) << "client " << id_ << ": " << lost.message() << "; "
                   << unsent.size() << " frames not sent";
    }
    // Before the stream leaves the table: a send meanwhile fails on the
    // ended stream instead of opening a new one whose watchers this would
    // fail.
    mailbox_->ReportLost(host, "", lost);
    for (const v1::RelayFrame& frame : unsent) {
      // A cast's ranks are failed by the watchers above; one error reply
      // could only answer one of them.
      if (frame.has_envelope() && frame.envelope().targets_size() == 0) {
        mailbox_->ReplyWithError(frame.envelope(), lost);
      }
    }
  }
  absl::MutexLock lock(&streams_mu_);
  auto it = streams_.find(host);
  if (it != streams_.end() && it->second.serial == serial) streams_.erase(it);
  --live_streams_;
}

void Client::OnSupervisionEvent(
    std::function<void(const v1::SupervisionEvent&)> handler) {
  absl::MutexLock lock(&mu_);
  supervision_handler_ = std::move(handler);
}

std::shared_ptr<grpc::Channel> Client::Channel(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(address);
  if (it != channels_.end()) return it->second;
  auto channel = NewHostChannel(address);
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
