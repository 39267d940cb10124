#include "lib/mailbox/mailbox.h"

#include <glog/logging.h>

#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/status.h"

namespace mesh {
namespace internal {

// One outbound Deliver stream to one destination mailbox.
//
// Created and started by Mailbox::StreamFor under the mailbox lock; deletes
// itself in OnDone. The stream keeps a hold and one outstanding read for its
// whole life: the server never sends anything, so the read completes (not ok)
// exactly when the stream ends. Only then is the hold removed, so OnDone (and
// deletion) cannot happen while a Send on another thread is about to start a
// write. Writes are started under mu_; with the callback API reactions never
// run inline in the call that starts an operation, so that cannot deadlock.
class OutboundStream final
    : public grpc::ClientBidiReactor<v1::Envelope, v1::DeliverAck> {
 public:
  OutboundStream(Mailbox* mailbox, std::string address)
      : mailbox_(mailbox), address_(std::move(address)) {}

  // A mailbox stream lives as long as both ends do: no deadline.
  void Start(v1::Mailbox::Stub* stub) {
    stub->async()->Deliver(&context_, this);
    AddHold();
    StartRead(&ack_);
    StartCall();
  }

  // Takes `envelope` (moves from it) and returns true, or returns false and
  // leaves it alone if the stream is broken or closing.
  bool Enqueue(v1::Envelope& envelope) {
    absl::MutexLock lock(&mu_);
    if (broken_ || closing_) return false;
    queue_.push_back(std::move(envelope));
    if (!writing_) WriteFrontLocked();
    return true;
  }

  // Half-closes the stream once the queue has drained.
  void Close() {
    absl::MutexLock lock(&mu_);
    if (closing_) return;
    closing_ = true;
    if (!writing_ && !broken_) StartWritesDone();
  }

  void Cancel() { context_.TryCancel(); }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      // Not written: the stream broke. Reported with the never-written ones.
      // (Rarely the peer got it anyway; then the sender sees both an error
      // reply and the peer's answer.)
      broken_ = true;
      failed_.push_back(std::move(queue_.front()));
    }
    queue_.pop_front();
    if (broken_) return;
    if (!queue_.empty()) {
      WriteFrontLocked();
    } else if (closing_) {
      StartWritesDone();
    }
  }

  void OnReadDone(bool ok) override {
    if (ok) {  // The receiver sends no acks today; ignore any.
      StartRead(&ack_);
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
    }
    RemoveHold();
  }

  void OnDone(const grpc::Status& status) override {
    std::vector<v1::Envelope> unsent;
    bool closed_by_us;
    {
      absl::MutexLock lock(&mu_);
      unsent = std::move(failed_);
      unsent.insert(unsent.end(), std::make_move_iterator(queue_.begin()),
                    std::make_move_iterator(queue_.end()));
      queue_.clear();
      closed_by_us = closing_;
    }
    Mailbox* mailbox = mailbox_;
    mailbox->OnOutboundDone(this, address_, status, closed_by_us,
                            std::move(unsent));
    delete this;
    // Last: lets ~Mailbox proceed.
    absl::MutexLock lock(&mailbox->mu_);
    --mailbox->live_outbound_;
  }

 private:
  void WriteFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = true;
    grpc::WriteOptions options;
    // More is queued behind this one: let the transport coalesce the writes;
    // the final write of a burst is sent without the hint, which flushes.
    if (queue_.size() > 1) options.set_buffer_hint();
    // std::deque keeps references to elements valid across push_back.
    StartWrite(&queue_.front(), options);
  }

  Mailbox* const mailbox_;
  const std::string address_;
  grpc::ClientContext context_;
  v1::DeliverAck ack_;

  absl::Mutex mu_;
  // Front is being written while writing_.
  std::deque<v1::Envelope> queue_ ABSL_GUARDED_BY(mu_);
  // Whose write failed (ok == false).
  std::vector<v1::Envelope> failed_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

// One inbound Deliver stream from one sender. Each envelope read is
// dispatched synchronously before the next read starts, so the envelopes of a
// stream reach their port or actor in the order written. Deletes itself in
// OnDone.
class InboundStream final
    : public grpc::ServerBidiReactor<v1::Envelope, v1::DeliverAck> {
 public:
  InboundStream(Mailbox* mailbox, grpc::CallbackServerContext* context)
      : mailbox_(mailbox), context_(context) {}

  void Start() { StartRead(&envelope_); }

  // Called under the mailbox lock, which OnDone also takes, so context_ is
  // still valid.
  void Cancel() { context_->TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // Half-closed by the sender, or cancelled.
      Finish(grpc::Status::OK);
      return;
    }
    mailbox_->Dispatch(std::move(envelope_));
    envelope_.Clear();
    StartRead(&envelope_);
  }

  void OnDone() override {
    mailbox_->RemoveInbound(this);
    delete this;
  }

 private:
  Mailbox* const mailbox_;
  grpc::CallbackServerContext* const context_;
  v1::Envelope envelope_;
};

// Answers a stream that arrives after Shutdown(); touches no mailbox state.
class RejectedStream final
    : public grpc::ServerBidiReactor<v1::Envelope, v1::DeliverAck> {
 public:
  RejectedStream() {
    Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "mailbox is shut down"));
  }
  void OnDone() override { delete this; }
};

class MailboxService final : public v1::Mailbox::CallbackService {
 public:
  explicit MailboxService(Mailbox* mailbox) : mailbox_(mailbox) {}

  grpc::ServerBidiReactor<v1::Envelope, v1::DeliverAck>* Deliver(
      grpc::CallbackServerContext* context) override {
    auto* stream = new InboundStream(mailbox_, context);
    if (!mailbox_->AddInbound(stream)) {
      delete stream;
      return new RejectedStream();
    }
    stream->Start();
    return stream;
  }

 private:
  Mailbox* const mailbox_;
};

}  // namespace internal

Mailbox::Mailbox(std::string owner_name)
    : owner_name_(std::move(owner_name)),
      service_(std::make_unique<internal::MailboxService>(this)),
      sender_(owner_name_) {
  local_thread_ = std::thread([this] { LocalLoop(); });
}

Mailbox::~Mailbox() { Shutdown(); }

grpc::Service* Mailbox::service() { return service_.get(); }

void Mailbox::set_address(const std::string& address) {
  absl::MutexLock lock(&mu_);
  address_ = address;
  sender_ = absl::StrCat(owner_name_, "@", address);
}

std::string Mailbox::address() const {
  absl::MutexLock lock(&mu_);
  return address_;
}

void Mailbox::Send(const std::string& address, v1::Envelope envelope) {
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) {
      VLOG(1) << "mailbox " << sender_ << " is shut down; dropping envelope to "
              << address;
      return;
    }
    envelope.set_sender(sender_);
    if (!address_.empty() && address == address_) {
      local_queue_.push_back(std::move(envelope));
      return;
    }
    if (address.empty()) {
      LOG(WARNING) << "mailbox " << sender_
                   << ": dropping an envelope with no destination address";
      return;
    }
    if (StreamFor(address)->Enqueue(envelope)) return;
    // The stream broke and has not finished yet: drop it, open a new one.
    peers_[address].stream = nullptr;
    if (StreamFor(address)->Enqueue(envelope)) return;
  }
  // Broke again at once (peer unreachable). That stream's OnDone tells the
  // watchers; tell this envelope's reply_to, if any.
  ReplyWithError(envelope, absl::UnavailableError(absl::StrCat(
                               "mailbox at ", address, " is unreachable")));
}

internal::OutboundStream* Mailbox::StreamFor(const std::string& address) {
  Peer& peer = peers_[address];
  if (peer.stream != nullptr) return peer.stream;
  if (peer.channel == nullptr) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetMaxSendMessageSize(kMaxMessageBytes);
    peer.channel = grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), args);
    peer.stub = v1::Mailbox::NewStub(peer.channel);
  }
  auto* stream = new internal::OutboundStream(this, address);
  outbound_.insert(stream);
  ++live_outbound_;
  peer.stream = stream;
  stream->Start(peer.stub.get());
  return stream;
}

void Mailbox::OnOutboundDone(internal::OutboundStream* stream,
                             const std::string& address,
                             const grpc::Status& status, bool closed_by_us,
                             std::vector<v1::Envelope> unsent) {
  std::vector<std::function<void(const absl::Status&)>> lost_callbacks;
  bool shutdown;
  {
    absl::MutexLock lock(&mu_);
    outbound_.erase(stream);
    auto peer = peers_.find(address);
    if (peer != peers_.end() && peer->second.stream == stream) {
      peer->second.stream = nullptr;
    }
    shutdown = shutdown_;
    if (!closed_by_us && !shutdown_) {
      for (auto it = watches_.begin(); it != watches_.end();) {
        if (it->second.address == address) {
          lost_callbacks.push_back(std::move(it->second.on_lost));
          watches_.erase(it++);
        } else {
          ++it;
        }
      }
    }
  }
  if (closed_by_us || shutdown) return;
  absl::Status lost = absl::UnavailableError(absl::StrCat(
      "mailbox at ", address, " is gone or unreachable: stream ended with ",
      grpc::StatusCode(status.error_code()) == grpc::StatusCode::OK
          ? std::string("OK")
          : absl::StrCat("code ", status.error_code(), " (",
                         status.error_message(), ")")));
  std::string log_line = absl::StrCat(
      "mailbox ", owner_name_, ": ", lost.message(),
      unsent.empty()
          ? ""
          : absl::StrCat("; ", unsent.size(), " envelopes not delivered"));
  // CANCELLED is an orderly end: the peer shut its mailbox down (which
  // cancels its inbound streams) or this process is shutting down. Worth a
  // line only if envelopes were lost with it.
  if (status.error_code() == grpc::StatusCode::CANCELLED && unsent.empty()) {
    VLOG(1) << log_line;
  } else {
    LOG(INFO) << log_line;
  }
  for (auto& callback : lost_callbacks) callback(lost);
  for (const v1::Envelope& envelope : unsent) ReplyWithError(envelope, lost);
}

bool Mailbox::AddInbound(internal::InboundStream* stream) {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return false;
  inbound_.insert(stream);
  return true;
}

void Mailbox::RemoveInbound(internal::InboundStream* stream) {
  absl::MutexLock lock(&mu_);
  inbound_.erase(stream);
}

void Mailbox::Dispatch(v1::Envelope envelope) {
  switch (envelope.dest_case()) {
    case v1::Envelope::kPort: {
      std::shared_ptr<const PortHandler> handler;
      {
        absl::ReaderMutexLock lock(&routes_mu_);
        auto it = ports_.find(envelope.port());
        if (it != ports_.end()) handler = it->second;
      }
      if (handler == nullptr) {
        VLOG(1) << "mailbox " << owner_name_ << ": dropping envelope from "
                << envelope.sender() << " to closed or unknown port "
                << envelope.port();
        return;
      }
      (*handler)(std::move(envelope));
      return;
    }
    case v1::Envelope::kActor: {
      std::shared_ptr<const ActorSink> sink;
      {
        absl::ReaderMutexLock lock(&routes_mu_);
        sink = sink_;
      }
      if (sink == nullptr) {
        ReplyWithError(envelope, absl::NotFoundError(absl::StrCat(
                                     "mailbox ", owner_name_,
                                     " hosts no actors (to actor \"",
                                     envelope.actor(), "\")")));
        return;
      }
      // Keep what an error reply needs; the sink takes the envelope.
      v1::Envelope reply_info;
      if (envelope.has_reply_to()) {
        *reply_info.mutable_reply_to() = envelope.reply_to();
        reply_info.set_correlation(envelope.correlation());
      }
      absl::Status status = (*sink)(std::move(envelope));
      if (!status.ok()) ReplyWithError(reply_info, status);
      return;
    }
    case v1::Envelope::DEST_NOT_SET:
      LOG(WARNING) << "mailbox " << owner_name_
                   << ": dropping envelope without destination from "
                   << envelope.sender();
      return;
  }
}

void Mailbox::ReplyWithError(const v1::Envelope& envelope,
                             const absl::Status& error) {
  if (!envelope.has_reply_to() || envelope.reply_to().address().empty()) {
    VLOG(1) << "mailbox " << owner_name_ << ": " << error.message()
            << " (no reply_to)";
    return;
  }
  v1::Envelope reply;
  reply.set_port(envelope.reply_to().port());
  reply.set_correlation(envelope.correlation());
  *reply.mutable_error() = ToErrorProto(error);
  Send(envelope.reply_to().address(), std::move(reply));
}

v1::PortRef Mailbox::OpenPort(std::function<void(v1::Envelope)> handler) {
  v1::PortRef ref;
  ref.set_address(address());
  absl::MutexLock lock(&routes_mu_);
  uint64_t id = next_port_++;
  ports_[id] = std::make_shared<const PortHandler>(std::move(handler));
  ref.set_port(id);
  return ref;
}

void Mailbox::ClosePort(uint64_t port) {
  absl::MutexLock lock(&routes_mu_);
  ports_.erase(port);
}

void Mailbox::SetActorSink(std::function<absl::Status(v1::Envelope)> sink) {
  absl::MutexLock lock(&routes_mu_);
  sink_ = sink ? std::make_shared<const ActorSink>(std::move(sink)) : nullptr;
}

uint64_t Mailbox::WatchPeer(const std::string& address,
                            std::function<void(const absl::Status&)> on_lost) {
  absl::MutexLock lock(&mu_);
  uint64_t id = next_watch_++;
  if (shutdown_ || address.empty() || address == address_) return id;
  watches_[id] = Watch{address, std::move(on_lost)};
  StreamFor(address);
  return id;
}

void Mailbox::UnwatchPeer(uint64_t id) {
  absl::MutexLock lock(&mu_);
  watches_.erase(id);
}

void Mailbox::LocalLoop() {
  auto ready = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return local_stop_ || !local_queue_.empty();
  };
  while (true) {
    std::deque<v1::Envelope> batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ready));
      if (local_stop_) return;
      batch.swap(local_queue_);
    }
    for (v1::Envelope& envelope : batch) Dispatch(std::move(envelope));
  }
}

void Mailbox::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (!shutdown_) {
      shutdown_ = true;
      watches_.clear();
      for (internal::InboundStream* stream : inbound_) stream->Cancel();
      for (internal::OutboundStream* stream : outbound_) stream->Close();
      local_stop_ = true;
    }
    auto outbound_done = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return live_outbound_ == 0;
    };
    // Let queued envelopes drain, then cut what is left.
    if (!mu_.AwaitWithTimeout(absl::Condition(&outbound_done),
                              absl::Seconds(1))) {
      for (internal::OutboundStream* stream : outbound_) stream->Cancel();
    }
    auto all_done = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return live_outbound_ == 0 && inbound_.empty();
    };
    while (
        !mu_.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(10))) {
      LOG(WARNING) << "mailbox " << owner_name_ << " still waiting for "
                   << live_outbound_ << " outbound and " << inbound_.size()
                   << " inbound streams to end";
    }
  }
  if (std::this_thread::get_id() != local_thread_.get_id()) {
    std::call_once(local_join_once_, [this] { local_thread_.join(); });
  }
}

absl::Status UnpackPayload(const v1::Envelope& envelope,
                           google::protobuf::Message* message) {
  if (envelope.has_error() && envelope.error().code() != 0) {
    return FromErrorProto(envelope.error());
  }
  if (!envelope.has_payload() || !envelope.payload().UnpackTo(message)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected a payload of type ", message->GetDescriptor()->full_name(),
        ", got \"", envelope.payload().type_url(), "\""));
  }
  return absl::OkStatus();
}

void PackPayload(const google::protobuf::Message& message,
                 v1::Envelope* envelope) {
  envelope->mutable_payload()->PackFrom(message);
}

v1::Envelope EnvelopeToPort(const v1::PortRef& port,
                            const google::protobuf::Message& message) {
  v1::Envelope envelope;
  envelope.set_port(port.port());
  PackPayload(message, &envelope);
  return envelope;
}

v1::Envelope EnvelopeToActor(const std::string& actor,
                             const google::protobuf::Message& message) {
  v1::Envelope envelope;
  envelope.set_actor(actor);
  PackPayload(message, &envelope);
  return envelope;
}

}  // namespace mesh
