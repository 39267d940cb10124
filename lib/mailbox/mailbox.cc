#include "lib/mailbox/mailbox.h"

#include <glog/logging.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/names.h"
#include "lib/status.h"

namespace mesh {

Mailbox::Mailbox(std::string host, std::string id, Outbound outbound,
                 size_t max_local_queue)
    : host_(std::move(host)),
      id_(std::move(id)),
      sender_(MailboxName(host_, id_)),
      outbound_(std::move(outbound)),
      max_local_queue_(max_local_queue) {
  local_thread_ = std::thread([this] { LocalLoop(); });
}

Mailbox::~Mailbox() { Shutdown(); }

bool Mailbox::IsLocal(const v1::Envelope& envelope) const {
  return envelope.targets_size() == 0 && envelope.to_mailbox() == id_ &&
         (envelope.to_host().empty() || envelope.to_host() == host_);
}

void Mailbox::Send(v1::Envelope envelope) {
  envelope.set_sender(sender_);
  if (IsLocal(envelope)) {
    size_t queued = 0;
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      queued = local_queue_.size();
      const size_t cap =
          CarriesError(envelope) ? 2 * max_local_queue_ : max_local_queue_;
      if (queued < cap) {
        local_queue_.push_back(std::move(envelope));
        return;
      }
    }
    absl::Status refused = absl::ResourceExhaustedError(
        absl::StrCat("mailbox ", sender_, " has ", queued,
                     " envelopes queued for local delivery, its limit"));
    LOG_EVERY_N(WARNING, 1000)
        << refused.message() << " (" << google::COUNTER << " refused so far)";
    ReplyWithError(envelope, refused);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) {
      VLOG(1) << "mailbox " << sender_ << " is shut down; dropping envelope to "
              << MailboxName(envelope.to_host(), envelope.to_mailbox());
      return;
    }
  }
  absl::Status sent = outbound_(envelope);
  if (!sent.ok()) ReplyWithError(envelope, sent);
}

void Mailbox::Deliver(v1::Envelope envelope) {
  switch (envelope.dest_case()) {
    case v1::Envelope::kPort: {
      std::shared_ptr<const PortHandler> handler;
      {
        absl::ReaderMutexLock lock(&routes_mu_);
        auto it = ports_.find(envelope.port());
        if (it != ports_.end()) handler = it->second;
      }
      if (handler == nullptr) {
        VLOG(1) << "mailbox " << sender_ << ": dropping envelope from "
                << QuoteForError(envelope.sender())
                << " to closed or unknown port " << envelope.port();
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
        ReplyWithError(envelope,
                       absl::NotFoundError(absl::StrCat(
                           "mailbox ", sender_, " hosts no actors (to actor ",
                           QuoteForError(envelope.actor()), ")")));
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
      LOG(WARNING) << "mailbox " << sender_
                   << ": dropping envelope without destination from "
                   << QuoteForError(envelope.sender());
      return;
  }
}

void Mailbox::ReplyWithError(const v1::Envelope& envelope,
                             const absl::Status& error) {
  if (!envelope.has_reply_to()) {
    VLOG(1) << "mailbox " << sender_ << ": " << error.message()
            << " (no reply_to)";
    return;
  }
  v1::Envelope reply;
  AddressTo(envelope.reply_to(), &reply);
  reply.set_correlation(envelope.correlation());
  *reply.mutable_error() = ToErrorProto(error);
  Send(std::move(reply));
}

v1::PortRef Mailbox::OpenPort(std::function<void(v1::Envelope)> handler) {
  v1::PortRef ref;
  ref.set_host(host_);
  ref.set_mailbox(id_);
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

uint64_t Mailbox::WatchPeer(const std::string& host, const std::string& mailbox,
                            std::function<void(const absl::Status&)> on_lost) {
  absl::MutexLock lock(&mu_);
  uint64_t id = next_watch_++;
  if (!shutdown_) watches_[id] = Watch{host, mailbox, std::move(on_lost)};
  return id;
}

void Mailbox::UnwatchPeer(uint64_t id) {
  absl::MutexLock lock(&mu_);
  watches_.erase(id);
}

void Mailbox::ReportLost(const std::string& host, const std::string& mailbox,
                         const absl::Status& why) {
  std::vector<std::function<void(const absl::Status&)>> callbacks;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    for (auto it = watches_.begin(); it != watches_.end();) {
      if (it->second.host == host &&
          (mailbox.empty() || it->second.mailbox == mailbox)) {
        callbacks.push_back(std::move(it->second.on_lost));
        watches_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  for (auto& callback : callbacks) callback(why);
}

void Mailbox::LocalLoop() {
  auto ready = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return shutdown_ || !local_queue_.empty();
  };
  while (true) {
    std::deque<v1::Envelope> batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ready));
      if (shutdown_) return;
      batch.swap(local_queue_);
    }
    for (v1::Envelope& envelope : batch) Deliver(std::move(envelope));
  }
}

void Mailbox::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    watches_.clear();
    local_queue_.clear();
  }
  if (std::this_thread::get_id() != local_thread_.get_id()) {
    std::call_once(local_join_once_, [this] { local_thread_.join(); });
  }
}

absl::Status UnpackPayload(const v1::Envelope& envelope,
                           google::protobuf::Message* message) {
  if (CarriesError(envelope)) {
    return FromErrorProto(envelope.error());
  }
  if (!envelope.has_payload() || !envelope.payload().UnpackTo(message)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected a payload of type ", message->GetDescriptor()->full_name(),
        ", got ", QuoteForError(envelope.payload().type_url())));
  }
  return absl::OkStatus();
}

void PackPayload(const google::protobuf::Message& message,
                 v1::Envelope* envelope) {
  envelope->mutable_payload()->PackFrom(message);
}

bool IsPortSet(const v1::PortRef& port) {
  return port.port() != 0 || !port.host().empty() || !port.mailbox().empty();
}

void AddressTo(const v1::PortRef& port, v1::Envelope* envelope) {
  envelope->set_to_host(port.host());
  envelope->set_to_mailbox(port.mailbox());
  envelope->set_port(port.port());
}

void AddressTo(const v1::ActorRef& actor, v1::Envelope* envelope) {
  envelope->set_to_host(actor.host());
  envelope->set_to_mailbox(actor.proc());
  envelope->set_actor(actor.actor());
}

v1::Envelope EnvelopeToPort(const v1::PortRef& port,
                            const google::protobuf::Message& message) {
  v1::Envelope envelope;
  AddressTo(port, &envelope);
  PackPayload(message, &envelope);
  return envelope;
}

v1::Envelope EnvelopeToActor(const v1::ActorRef& actor,
                             const google::protobuf::Message& message) {
  v1::Envelope envelope;
  AddressTo(actor, &envelope);
  PackPayload(message, &envelope);
  return envelope;
}

std::string MailboxName(const std::string& host, const std::string& mailbox) {
  if (host.empty()) return mailbox;
  return absl::StrCat(mailbox.empty() ? "host" : mailbox, "@", host);
}

bool IsMailboxName(absl::string_view name, absl::string_view host,
                   absl::string_view mailbox) {
  if (host.empty()) return name == mailbox;
  absl::string_view id = mailbox.empty() ? "host" : mailbox;
  return name.size() == id.size() + 1 + host.size() &&
         absl::StartsWith(name, id) && name[id.size()] == '@' &&
         absl::EndsWith(name, host);
}

}  // namespace mesh
