#include "hostd/relay_service.h"

#include <glog/logging.h>

#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/grpc_status.h"
#include "lib/names.h"
#include "lib/relay/relay_server_stream.h"
#include "lib/relay/relay_stream.h"
#include "lib/status.h"

namespace mesh {

absl::Status ValidateSender(const std::string& sender) {
  constexpr size_t kMaxSender = 300;
  bool known = absl::StartsWith(sender, kClientMailboxPrefix) ||
               absl::StartsWith(sender, "host:");
  size_t colon = sender.find(':');
  if (!known || sender.size() > kMaxSender || colon + 1 >= sender.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metadata \"", kRelaySenderMetadata,
        "\" must be \"client:<id>\" or \"host:<host:port>\" (at most ",
        kMaxSender, " characters)"));
  }
  for (char c : sender) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(
          absl::StrCat("metadata \"", kRelaySenderMetadata,
                       "\" must be printable ASCII without spaces"));
    }
  }
  return absl::OkStatus();
}

namespace {

uint64_t RandomIncarnation() {
  absl::BitGen random;
  uint64_t incarnation = 0;
  while (incarnation == 0) incarnation = absl::Uniform<uint64_t>(random);
  return incarnation;
}

}  // namespace

namespace internal {

// One sender's relay stream. It is out of the router before it is deleted
// (OnStreamDone), so no sink call reaches a dead stream.
class RelayStreamReactor final : public RelayServerStream {
 public:
  RelayStreamReactor(RelayService* service,
                     grpc::CallbackServerContext* context, std::string sender,
                     std::optional<std::string> owner)
      : RelayServerStream(context, service->options_.max_queued_bytes),
        service_(service),
        sender_(std::move(sender)),
        owner_(std::move(owner)) {}

  void Start() {
    absl::StatusOr<uint64_t> route = service_->router_->AddStream(
        sender_,
        [this](v1::RelayFrame frame) { return Write(std::move(frame)); },
        owner_);
    if (!route.ok()) {
      Refuse(ToGrpcStatus(route.status()));
      return;
    }
    route_id_ = *route;
    // The first heartbeat: the sender learns who answers, at once.
    if (service_->options_.heartbeat_interval > absl::ZeroDuration()) {
      Write(service_->HeartbeatFrame(/*closing=*/false)).IgnoreError();
    }
    StartReading();
  }

 private:
  void OnFrame(v1::RelayFrame& frame) override {
    if (frame.has_envelope()) {
      v1::Envelope& envelope = *frame.mutable_envelope();
      service_->router_->Route(std::move(envelope), sender_);
    }
  }

  void OnStreamDone() override {
    service_->router_->RemoveStream(route_id_);
    service_->Remove(this);
  }
  std::string name() const override {
    return absl::StrCat("relay stream of ", sender_);
  }

  RelayService* const service_;
  const std::string sender_;
  // Set for a client (not an admin): the identity whose procs it reaches
  // (the router checks).
  const std::optional<std::string> owner_;
  uint64_t route_id_ = 0;
};

// Answers a stream that cannot be served; touches no service state.
class RejectedStream final
    : public grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame> {
 public:
  explicit RejectedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace internal

RelayService::RelayService(Router* router, const ServerAuth* auth,
                           Options options)
    : router_(router),
      auth_(auth),
      options_(options),
      incarnation_(options.incarnation != 0 ? options.incarnation
                                            : RandomIncarnation()) {
  if (options_.heartbeat_interval > absl::ZeroDuration()) {
    LOG(INFO) << "relay: incarnation "
              << absl::StrCat(absl::Hex(incarnation_, absl::kZeroPad16))
              << ", heartbeats every "
              << absl::FormatDuration(options_.heartbeat_interval);
    heartbeats_ = std::thread([this] { SendHeartbeats(); });
  }
}

RelayService::~RelayService() { Shutdown(); }

grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* RelayService::Connect(
    grpc::CallbackServerContext* context) {
  std::string sender = RelayServerStream::SenderOf(*context);
  if (absl::Status valid = ValidateSender(sender); !valid.ok()) {
    return new internal::RejectedStream(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT, std::string(valid.message())));
  }
  // A client's stream speaks for a client, a peer's for a host.
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
  absl::Status allowed = caller.status();
  if (caller.ok()) {
    allowed =
        absl::StartsWith(sender, kClientMailboxPrefix)
            ? Authorize(*caller, "Relay.Connect as a client", {Role::kClient})
            : Authorize(*caller, "Relay.Connect as a host", {Role::kPeer});
  }
  if (allowed.ok()) allowed = ClaimSender(sender, caller->identity);
  if (!allowed.ok()) {
    return new internal::RejectedStream(ToGrpcStatus(allowed));
  }
  auto* stream = new internal::RelayStreamReactor(
      this, context, sender,
      caller->role == Role::kClient ? std::optional(caller->identity)
                                    : std::nullopt);
  if (!Add(stream)) {
    delete stream;
    return new internal::RejectedStream(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "hostd is shutting down"));
  }
  stream->Start();
  return stream;
}

absl::Status RelayService::ClaimSender(const std::string& sender,
                                       const std::string& identity) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = sender_claims_.try_emplace(sender, identity);
  if (!inserted) {
    if (it->second == identity) return absl::OkStatus();
    return absl::PermissionDeniedError(
        absl::StrCat("relay sender ", QuoteForError(sender),
                     " belongs to another identity than ", identity));
  }
  claim_order_.push_back(sender);
  if (claim_order_.size() > kMaxSenderClaims) {
    sender_claims_.erase(claim_order_.front());
    claim_order_.pop_front();
  }
  return absl::OkStatus();
}

bool RelayService::Add(internal::RelayStreamReactor* stream) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return false;
  streams_.insert(stream);
  return true;
}

void RelayService::Remove(internal::RelayStreamReactor* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

v1::RelayFrame RelayService::HeartbeatFrame(bool closing) const {
  v1::RelayFrame frame;
  v1::Heartbeat* heartbeat = frame.mutable_heartbeat();
  heartbeat->set_incarnation(incarnation_);
  heartbeat->set_interval_ms(static_cast<uint32_t>(
      absl::ToInt64Milliseconds(options_.heartbeat_interval)));
  heartbeat->set_closing(closing);
  return frame;
}

void RelayService::SendHeartbeats() {
  const v1::RelayFrame frame = HeartbeatFrame(/*closing=*/false);
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&shut_down_),
                               options_.heartbeat_interval)) {
    // A stream whose queue is full misses one: its sender is not reading.
    for (internal::RelayStreamReactor* stream : streams_) {
      stream->Write(frame).IgnoreError();
    }
  }
}

void RelayService::Shutdown() {
  // How long the streams get to write their closing heartbeat.
  constexpr absl::Duration kGoodbye = absl::Milliseconds(500);
  {
    absl::MutexLock lock(&mu_);
    if (!shut_down_) {
      shut_down_ = true;
      if (options_.heartbeat_interval > absl::ZeroDuration()) {
        for (internal::RelayStreamReactor* stream : streams_) {
          stream->WriteLast(HeartbeatFrame(/*closing=*/true));
        }
        auto all_gone = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return streams_.empty();
        };
        mu_.AwaitWithTimeout(absl::Condition(&all_gone), kGoodbye);
      }
    }
    for (internal::RelayStreamReactor* stream : streams_) stream->Cancel();
  }
  if (heartbeats_.joinable() &&
      heartbeats_.get_id() != std::this_thread::get_id()) {
    heartbeats_.join();
  }
}

}  // namespace mesh
