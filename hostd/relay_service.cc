#include "hostd/relay_service.h"

#include <glog/logging.h>

#include <deque>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/grpc_status.h"
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

// One sender's relay stream. Deletes itself in OnDone, after it is out of
// the router (so no sink call can reach a dead reactor).
class RelayStreamReactor final
    : public grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame> {
 public:
  RelayStreamReactor(RelayService* service,
                     grpc::CallbackServerContext* context, std::string sender)
      : service_(service), context_(context), sender_(std::move(sender)) {}

  void Start() {
    absl::StatusOr<uint64_t> route = service_->router_->AddStream(
        sender_,
        [this](v1::RelayFrame frame) { return Enqueue(std::move(frame)); });
    if (!route.ok()) {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      Finish(ToGrpcStatus(route.status()));
      return;
    }
    route_id_ = *route;
    StartRead(&in_);
  }

  void Cancel() { context_->TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // Half-closed by the sender, or cancelled.
      absl::MutexLock lock(&mu_);
      reading_done_ = true;
      MaybeFinishLocked();
      return;
    }
    if (in_.has_envelope()) {
      service_->router_->Route(std::move(*in_.mutable_envelope()), sender_);
    }
    in_.Clear();
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    queued_bytes_ -= out_.front().ByteSizeLong();
    out_.pop_front();
    if (!ok) {
      broken_ = true;
      out_.clear();
      queued_bytes_ = 0;
    }
    if (!out_.empty() && !broken_) {
      WriteFrontLocked();
    } else {
      MaybeFinishLocked();
    }
  }

  void OnDone() override {
    service_->router_->RemoveStream(route_id_);
    service_->Remove(this);
    delete this;
  }

 private:
  absl::Status Enqueue(v1::RelayFrame frame) {
    absl::MutexLock lock(&mu_);
    if (broken_ || finished_) {
      return absl::UnavailableError(
          absl::StrCat("the relay stream of ", sender_, " is closed"));
    }
    size_t bytes = frame.ByteSizeLong();
    if (queued_bytes_ + bytes > service_->options_.max_queued_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the relay stream of ", sender_, " has ", queued_bytes_,
                       " bytes queued (its limit): the sender is not reading"));
    }
    queued_bytes_ += bytes;
    out_.push_back(std::move(frame));
    if (!writing_) WriteFrontLocked();
    return absl::OkStatus();
  }

  void WriteFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = true;
    grpc::WriteOptions options;
    if (out_.size() > 1) options.set_buffer_hint();
    StartWrite(&out_.front(), options);
  }

  // Finishes once the sender is done and nothing is being written.
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_ || !(reading_done_ || broken_)) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  RelayService* const service_;
  grpc::CallbackServerContext* const context_;
  const std::string sender_;
  uint64_t route_id_ = 0;
  v1::RelayFrame in_;

  absl::Mutex mu_;
  std::deque<v1::RelayFrame> out_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
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
  std::string sender;
  auto it = context->client_metadata().find(kRelaySenderMetadata);
  if (it != context->client_metadata().end()) {
    sender = std::string(it->second.data(), it->second.size());
  }
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
