#include "hostd/relay_service.h"

#include <glog/logging.h>

#include <deque>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/grpc_status.h"
#include "lib/relay/relay_server_stream.h"
#include "lib/relay/relay_stream.h"

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

namespace internal {

// One sender's relay stream. It is out of the router before it is deleted
// (OnStreamDone), so no sink call reaches a dead stream.
class RelayStreamReactor final : public RelayServerStream {
 public:
  RelayStreamReactor(RelayService* service,
                     grpc::CallbackServerContext* context, std::string sender)
      : RelayServerStream(context, service->options_.max_queued_bytes),
        service_(service),
        sender_(std::move(sender)) {}

  void Start() {
    absl::StatusOr<uint64_t> route = service_->router_->AddStream(
        sender_,
        [this](v1::RelayFrame frame) { return Write(std::move(frame)); });
    if (!route.ok()) {
      Refuse(ToGrpcStatus(route.status()));
      return;
    }
    route_id_ = *route;
    StartReading();
  }

 private:
  void OnFrame(v1::RelayFrame& frame) override {
    if (frame.has_envelope()) {
      service_->router_->Route(std::move(*frame.mutable_envelope()), sender_);
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

RelayService::RelayService(Router* router, Options options)
    : router_(router), options_(options) {}

RelayService::~RelayService() { Shutdown(); }

grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame>* RelayService::Connect(
    grpc::CallbackServerContext* context) {
  std::string sender = RelayServerStream::SenderOf(*context);
  if (absl::Status valid = ValidateSender(sender); !valid.ok()) {
    return new internal::RejectedStream(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT, std::string(valid.message())));
  }
  auto* stream = new internal::RelayStreamReactor(this, context, sender);
  if (!Add(stream)) {
    delete stream;
    return new internal::RejectedStream(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "hostd is shutting down"));
  }
  stream->Start();
  return stream;
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

void RelayService::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (internal::RelayStreamReactor* stream : streams_) stream->Cancel();
}

}  // namespace mesh
