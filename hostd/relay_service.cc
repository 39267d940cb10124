#include "hostd/relay_service.h"

#include <glog/logging.h>

#include <algorithm>
#include <atomic>
#include <memory>
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
  return ValidateSenderId(
      sender, absl::StrCat("metadata \"", kRelaySenderMetadata, "\""),
      /*host_too=*/true);
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
                     std::string identity, std::optional<std::string> owner)
      : RelayServerStream(context, service->options_.max_queued_bytes,
                          std::min(service->options_.max_batch_bytes,
                                   service->router_->max_envelope_bytes())),
        service_(service),
        sender_(std::move(sender)),
        identity_(std::move(identity)),
        owner_(std::move(owner)),
        client_(absl::StartsWith(sender_, kClientMailboxPrefix)),
        last_frame_ns_(Nanos(service->options_.clock->Now())) {}

  void Start() {
    // The lease first: a client id whose lease is another identity's is
    // refused before it can hear anything.
    if (client_ && service_->leases_ != nullptr) {
      absl::Status opened = service_->leases_->StreamOpened(sender_, identity_);
      if (!opened.ok()) {
        Refuse(ToGrpcStatus(opened));
        return;
      }
      leased_ = true;
    }
    absl::StatusOr<uint64_t> route = service_->router_->AddStream(
        sender_,
        [this](v1::RelayFrame frame) { return Write(std::move(frame)); },
        owner_, [this] { Cancel(); });
    if (!route.ok()) {
      Refuse(ToGrpcStatus(route.status()));
      return;
    }
    route_id_ = *route;
    // The first heartbeat: the sender learns who answers, at once.
    if (service_->options_.heartbeat_interval > absl::ZeroDuration()) {
      Write(service_->HeartbeatFrame(/*closing=*/false)).IgnoreError();
    }
    // What ended while the client was away, and from now on nothing more.
    MissedEnds* missed = service_->options_.missed_ends;
    if (client_ && missed != nullptr) {
      std::vector<v1::ProcExit> ends = missed->StreamRouted(sender_, identity_);
      routed_ = true;
      size_t refused = 0;
      absl::Status why;
      for (const v1::ProcExit& exit : ends) {
        absl::Status queued = Write(LostFrame(exit));
        if (!queued.ok()) {
          ++refused;
          why = queued;
        }
      }
      if (refused > 0) {
        LOG(WARNING) << "relay stream of " << sender_ << " (" << identity_
                     << "): " << refused << " of the " << ends.size()
                     << " proc ends it missed could not be queued: " << why;
      }
    }
    StartReading();
  }

  // Called by the ticker (under the service's lock): cancels a client
  // stream that announced heartbeats and then went silent. See the class
  // comment of RelayService.
  void EndIfSilent(absl::Duration now) {
    const int64_t interval_ms = heartbeat_ms_.load(std::memory_order_relaxed);
    if (interval_ms == 0 || ended_silent_) return;
    const absl::Duration bound =
        std::max(3 * std::min(absl::Milliseconds(interval_ms),
                              RelayService::kMaxClientHeartbeat),
                 RelayService::kMinClientSilence);
    const absl::Duration silent =
        now - absl::Nanoseconds(last_frame_ns_.load(std::memory_order_relaxed));
    if (silent <= bound) return;
    ended_silent_ = true;
    LOG(WARNING) << "relay stream of " << sender_ << " (" << identity_
                 << ") sent nothing for " << absl::FormatDuration(silent)
                 << " (bound " << absl::FormatDuration(bound)
                 << ": 3 of its heartbeat intervals of " << interval_ms
                 << "ms, at least 1s); ending it";
    Cancel();
  }

 private:
  static int64_t Nanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

  void OnFrame(v1::RelayFrame& frame) override {
    last_frame_ns_.store(Nanos(service_->options_.clock->Now()),
                         std::memory_order_relaxed);
    if (frame.has_envelope()) {
      v1::Envelope& envelope = *frame.mutable_envelope();
      service_->router_->Route(std::move(envelope), sender_);
    } else if (frame.has_heartbeat() && client_) {
      // Announces the client's interval; from now on silence ends it.
      heartbeat_ms_.store(std::max<int64_t>(1, frame.heartbeat().interval_ms()),
                          std::memory_order_relaxed);
    }
  }

  // A batch's envelopes to procs go out with one write per proc.
  void OnBatchStart() override {
    batch_ = std::make_unique<Router::SendBatch>(service_->router_);
  }
  void OnBatchEnd() override { batch_.reset(); }

  void OnStreamDone() override {
    // Told before the router forgets it (see hostd/missed_ends.h).
    if (routed_) service_->options_.missed_ends->StreamEnded(sender_);
    service_->router_->RemoveStream(route_id_);
    if (leased_) service_->leases_->StreamEnded(sender_);
    service_->claims_->Unpin(sender_);
    service_->Remove(this);
  }
  std::string name() const override {
    return absl::StrCat("relay stream of ", sender_);
  }

  RelayService* const service_;
  const std::string sender_;
  const std::string identity_;
  // Set for a client (not an admin): the identity whose procs it reaches
  // (the router checks).
  const std::optional<std::string> owner_;
  // A "client:" stream (of a client or an admin): leases, silence check.
  const bool client_;
  uint64_t route_id_ = 0;
  // Told to the leases as open / to the missed ends as routed (so told
  // when it ends).
  bool leased_ = false;
  bool routed_ = false;
  // Monotonic time of the last frame read; the client's announced
  // heartbeat interval (0: none yet).
  std::atomic<int64_t> last_frame_ns_;
  std::atomic<int64_t> heartbeat_ms_{0};
  // Only the ticker reads and writes it (under the service's lock).
  bool ended_silent_ = false;
  // Open while the frames of one batch are routed (reactions are serial).
  std::unique_ptr<Router::SendBatch> batch_;
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
                           SenderClaims* claims, OwnerLeases* leases,
                           Options options)
    : router_(router),
      auth_(auth),
      claims_(claims),
      leases_(leases),
      options_(std::move(options)),
      incarnation_(options_.incarnation != 0 ? options_.incarnation
                                             : RandomIncarnation()) {
  if (options_.heartbeat_interval > absl::ZeroDuration()) {
    LOG(INFO) << "relay: incarnation "
              << absl::StrCat(absl::Hex(incarnation_, absl::kZeroPad16))
              << ", heartbeats every "
              << absl::FormatDuration(options_.heartbeat_interval);
  }
  ticker_ = std::thread([this] { Tick(); });
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
  if (allowed.ok()) {
    // Pinned while the stream lives (unpinned by OnStreamDone).
    allowed = claims_->Claim(sender, caller->identity, "relay sender",
                             /*pin=*/true);
  }
  if (!allowed.ok()) {
    return new internal::RejectedStream(ToGrpcStatus(allowed));
  }
  auto* stream = new internal::RelayStreamReactor(
      this, context, sender, caller->identity,
      caller->role == Role::kClient ? std::optional(caller->identity)
                                    : std::nullopt);
  if (!Add(stream)) {
    delete stream;
    claims_->Unpin(sender);
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

v1::RelayFrame RelayService::HeartbeatFrame(bool closing) const {
  v1::RelayFrame frame;
  v1::Heartbeat* heartbeat = frame.mutable_heartbeat();
  heartbeat->set_incarnation(incarnation_);
  heartbeat->set_interval_ms(static_cast<uint32_t>(
      absl::ToInt64Milliseconds(options_.heartbeat_interval)));
  heartbeat->set_closing(closing);
  return frame;
}

void RelayService::Tick() {
  const absl::Duration interval = options_.heartbeat_interval;
  const bool beats = interval > absl::ZeroDuration();
  const absl::Duration tick = beats ? std::min(interval, kTick) : kTick;
  const v1::RelayFrame frame = HeartbeatFrame(/*closing=*/false);
  absl::Duration next_beat = options_.clock->Now() + interval;
  for (;;) {
    // On the monotonic clock: a wall clock stepped back must not stop the
    // heartbeats (which clients judge this host by).
    if (ticker_stop_.SleepFor(tick)) return;
    {
      absl::MutexLock lock(&mu_);
      if (shut_down_) return;
      const absl::Duration now = options_.clock->Now();
      // Half a tick early is on time (a wait may end a little early).
      const bool beat = beats && now >= next_beat - tick / 2;
      if (beat) next_beat = now + interval;
      for (internal::RelayStreamReactor* stream : streams_) {
        // A stream whose queue is full misses one: its sender is not
        // reading.
        if (beat) stream->Write(frame).IgnoreError();
        stream->EndIfSilent(now);
      }
    }
    if (leases_ != nullptr) leases_->Check();
  }
}

void RelayService::Shutdown() {
  // How long the streams get to write their closing heartbeat.
  constexpr absl::Duration kGoodbye = absl::Milliseconds(500);
  {
    absl::MutexLock lock(&mu_);
    if (!shut_down_) {
      shut_down_ = true;
      ticker_stop_.Stop();
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
  if (ticker_.joinable() && ticker_.get_id() != std::this_thread::get_id()) {
    ticker_.join();
  }
}

}  // namespace mesh
