#include "procd/host_link.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "lib/channel/unix_socket.h"
#include "lib/process/env.h"

namespace mesh {
namespace {

constexpr uint32_t kVersion = v1::PROC_CHANNEL_VERSION_CURRENT;
// How long a proc that refuses hostd's version tries to get its Hello out.
constexpr absl::Duration kMismatchFlush = absl::Seconds(1);
// Redial backoff: the first wait, doubled after each failed dial up to the
// last; each wait is jittered down to half of it.
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(20);
constexpr absl::Duration kMaxBackoff = absl::Seconds(1);

constexpr char kNotAccepted[] = "hostd went away before accepting this proc";

// Overwrites a secret before its memory is reused or freed.
void Wipe(std::string& secret) {
  explicit_bzero(secret.data(), secret.size());
  secret.clear();
}

}  // namespace

absl::StatusOr<std::optional<int>> HostLink::ChannelFdFromEnv() {
  absl::StatusOr<std::optional<std::string>> taken = TakeEnv(kChannelFdEnv);
  if (!taken.ok()) return taken.status();
  if (!taken->has_value()) return std::nullopt;
  const std::string& text = **taken;
  int fd = -1;
  if (!absl::SimpleAtoi(text, &fd) || fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        kChannelFdEnv, "=\"", text, "\" is not a file descriptor number"));
  }
  if (fcntl(fd, F_GETFD) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kChannelFdEnv, "=", fd, " names no open file descriptor (",
                     absl::ErrnoToStatus(errno, "fcntl").message(), ")"));
  }
  return fd;
}

absl::StatusOr<std::unique_ptr<HostLink>> HostLink::Connect(
    int fd, absl::Duration timeout) {
  auto link = absl::WrapUnique(new HostLink());
  HostLink* raw = link.get();
  {
    // Held while the channel starts, so that its first callbacks see it.
    absl::MutexLock lock(&link->dispatch_mu_);
    const uint64_t id = link->next_conn_id_++;
    absl::StatusOr<std::shared_ptr<FrameChannel>> channel =
        link->MakeChannel(fd, id, "proc channel to hostd");
    if (!channel.ok()) return channel.status();
    link->conn_ = *channel;
    link->conn_id_ = id;
    link->SetLive(*channel,
                  absl::UnavailableError("the channel to hostd is closed"));
    auto arrived = [raw]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return raw->got_welcome_.has_value() || raw->handshake_error_.has_value();
    };
    if (!link->dispatch_mu_.AwaitWithTimeout(absl::Condition(&arrived),
                                             timeout)) {
      return absl::DeadlineExceededError(
          absl::StrCat("no Welcome from hostd within ",
                       absl::FormatDuration(timeout), " on its channel"));
    }
    if (link->handshake_error_.has_value()) return *link->handshake_error_;
    link->welcome_ = *link->got_welcome_;
  }
  const uint32_t version = link->welcome_.protocol_version();
  if (version != kVersion) {
    // Tell hostd ours too, so that it can name both versions.
    v1::ProcFrame hello;
    hello.mutable_hello()->set_protocol_version(kVersion);
    hello.mutable_hello()->set_pid(getpid());
    if (link->SendFrame(hello).ok()) link->Flush(kMismatchFlush);
    return absl::FailedPreconditionError(
        absl::StrFormat("hostd speaks proc channel protocol v%d, this proc v%d",
                        version, kVersion));
  }
  return link;
}

HostLink::~HostLink() {
  std::thread link_thread;
  {
    absl::MutexLock lock(&dispatch_mu_);
    destroying_ = true;
    link_thread = std::move(link_thread_);
  }
  destroy_wake_.Stop();
  // Ends its waits at once; no link thread starts after destroying_.
  if (link_thread.joinable()) link_thread.join();
  std::shared_ptr<FrameChannel> conn;
  {
    absl::MutexLock lock(&dispatch_mu_);
    conn = std::move(conn_);
    conn_id_ = 0;  // Whatever a channel still says is stale.
    Wipe(secret_);
  }
  SetLive(nullptr, absl::UnavailableError("the link to hostd is shut down"));
  conn.reset();
  // Closes and joins every channel: no callback runs after this.
  BuryChannels();
}

void HostLink::Start(Callbacks callbacks, StartOptions options) {
  v1::ProcFrame hello;
  hello.mutable_hello()->set_protocol_version(kVersion);
  hello.mutable_hello()->set_pid(getpid());
  for (const std::string& type : options.actor_types) {
    hello.mutable_hello()->add_actor_types(type);
  }
  absl::MutexLock lock(&dispatch_mu_);
  CHECK(!started_) << "HostLink::Start called twice";
  callbacks_ = std::move(callbacks);
  actor_types_ = std::move(options.actor_types);
  orphan_timeout_ = options.orphan_timeout.value_or(
      absl::Milliseconds(welcome_.orphan_timeout_ms()));
  rejoin_answer_timeout_ = options.rejoin_answer_timeout;
  started_ = true;
  // Hello first, so that hostd hears nothing from a proc it has not
  // accepted; then what came meanwhile, before any later frame (the channel
  // thread waits for the lock).
  if (absl::Status sent = SendFrame(hello); !sent.ok()) {
    LOG(ERROR) << "proc " << welcome_.name()
               << ": cannot send Hello to hostd: " << sent;
  }
  while (!early_.empty() && phase_ != Phase::kEnded) {
    v1::HostFrame frame = std::move(early_.front());
    early_.pop_front();
    DispatchLocked(std::move(frame));
  }
  early_.clear();
  if (ended_before_start_.has_value()) {
    OnConnectionEndedLocked(*ended_before_start_);
  }
}

absl::Status HostLink::SendEnvelope(v1::Envelope& envelope) {
  v1::ProcFrame frame;
  frame.mutable_envelope()->Swap(&envelope);
  absl::Status sent = SendFrame(frame);
  // Not sent: the caller keeps its envelope (to answer its reply_to).
  if (!sent.ok()) envelope.Swap(frame.mutable_envelope());
  return sent;
}

absl::Status HostLink::SendResponse(v1::ProcResponse response) {
  v1::ProcFrame frame;
  *frame.mutable_response() = std::move(response);
  return SendFrame(frame);
}

bool HostLink::Flush(absl::Duration timeout) {
  std::shared_ptr<FrameChannel> live;
  {
    absl::MutexLock lock(&send_mu_);
    live = live_;
  }
  return live != nullptr && live->Flush(timeout);
}

absl::Status HostLink::SendFrame(const v1::ProcFrame& frame) {
  absl::MutexLock lock(&send_mu_);
  if (live_ == nullptr) return down_;
  absl::Status sent = live_->Send(frame);
  // The connection ended and the link has not heard yet: say so as it will.
  if (!sent.ok() && live_->closed()) return down_;
  return sent;
}

void HostLink::SetLive(std::shared_ptr<FrameChannel> live, absl::Status down) {
  absl::MutexLock lock(&send_mu_);
  live_ = std::move(live);
  down_ = std::move(down);
}

absl::StatusOr<std::shared_ptr<FrameChannel>> HostLink::MakeChannel(
    int fd, uint64_t id, std::string name) {
  FrameChannel::Options options;
  options.name = std::move(name);
  options.max_frame_bytes = max_frame_bytes_;
  FrameChannel::Callbacks callbacks;
  callbacks.on_frame = [this, id](std::string_view frame) {
    OnFrame(id, frame);
  };
  callbacks.on_closed = [this, id](const absl::Status& status) {
    OnClosed(id, status);
  };
  absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
      FrameChannel::Create(fd, std::move(options), std::move(callbacks));
  if (!channel.ok()) return channel.status();
  // The last reference may go on the channel's own thread (in its
  // on_closed): the channel is deleted later, by BuryChannels.
  return std::shared_ptr<FrameChannel>(channel->release(),
                                       [this](FrameChannel* unused) {
                                         absl::MutexLock lock(&grave_mu_);
                                         graveyard_.push_back(unused);
                                       });
}

void HostLink::BuryChannels() {
  while (true) {
    std::vector<FrameChannel*> dead;
    {
      absl::MutexLock lock(&grave_mu_);
      dead.swap(graveyard_);
    }
    if (dead.empty()) return;
    for (FrameChannel* channel : dead) delete channel;
  }
}

void HostLink::OnFrame(uint64_t id, std::string_view bytes) {
  absl::MutexLock lock(&dispatch_mu_);
  if (id != conn_id_) return;
  v1::HostFrame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    EndOnErrorLocked(absl::DataLossError(absl::StrCat(
        "a frame of ", bytes.size(), " bytes from hostd does not parse")));
    return;
  }
  if (!got_welcome_.has_value()) {
    if (handshake_error_.has_value()) return;
    if (frame.has_welcome()) {
      got_welcome_ = std::move(*frame.mutable_welcome());
      if (absl::Status set =
              TakeFrameCapLocked(got_welcome_->max_frame_bytes());
          !set.ok()) {
        handshake_error_ = absl::InvalidArgumentError(
            absl::StrCat("hostd's Welcome: ", set.message()));
      }
    } else if (frame.has_refused()) {
      handshake_error_ = absl::FailedPreconditionError(
          absl::StrCat("hostd refused this proc: ", frame.refused().reason()));
    } else {
      handshake_error_ = absl::InvalidArgumentError(
          absl::StrCat("hostd's first frame is not a Welcome but frame #",
                       static_cast<int>(frame.frame_case())));
    }
    return;
  }
  switch (phase_) {
    case Phase::kUnaccepted:
    case Phase::kAccepted:
      OnLiveFrameLocked(std::move(frame));
      return;
    case Phase::kReconnecting:
      OnRejoinAnswerLocked(std::move(frame));
      return;
    case Phase::kEnded:
      return;
  }
}

void HostLink::OnLiveFrameLocked(v1::HostFrame frame) {
  if (started_) {
    DispatchLocked(std::move(frame));
    return;
  }
  if (early_.size() >= kMaxEarlyFrames) {
    EndOnErrorLocked(absl::ResourceExhaustedError(
        absl::StrCat("hostd sent more than ", kMaxEarlyFrames,
                     " frames before the proc said Hello")));
    return;
  }
  early_.push_back(std::move(frame));
}

void HostLink::DispatchLocked(v1::HostFrame frame) {
  switch (frame.frame_case()) {
    case v1::HostFrame::kEnvelope:
      if (callbacks_.on_envelope) {
        callbacks_.on_envelope(std::move(*frame.mutable_envelope()));
      }
      return;
    case v1::HostFrame::kRequest:
      if (callbacks_.on_request) {
        callbacks_.on_request(std::move(*frame.mutable_request()));
      }
      return;
    case v1::HostFrame::kCancel:
      if (callbacks_.on_cancel) callbacks_.on_cancel(frame.cancel().id());
      return;
    case v1::HostFrame::kStop:
      LOG(INFO) << "proc " << welcome_.name()
                << ": hostd asks to stop: " << frame.stop().reason();
      if (callbacks_.on_stop) {
        callbacks_.on_stop(frame.stop().reason(),
                           absl::Milliseconds(frame.stop().grace_ms()));
      }
      return;
    case v1::HostFrame::kAccepted:
      OnAcceptedLocked(frame);
      return;
    case v1::HostFrame::kRefused:
      LOG(ERROR) << "proc " << welcome_.name()
                 << ": hostd refused this proc: " << frame.refused().reason();
      EndLocked(absl::UnavailableError(
          absl::StrCat("hostd refused this proc: ", frame.refused().reason())));
      if (callbacks_.on_refused) {
        callbacks_.on_refused(frame.refused().reason());
      }
      return;
    case v1::HostFrame::kWelcome:
      LOG(WARNING) << "proc " << welcome_.name()
                   << ": ignoring a second Welcome from hostd";
      return;
    case v1::HostFrame::kRejoined:
      LOG(WARNING) << "proc " << welcome_.name()
                   << ": ignoring a Rejoined from hostd on a connection that "
                      "did not rejoin";
      return;
    case v1::HostFrame::FRAME_NOT_SET:
      break;
  }
  LOG(WARNING) << "proc " << welcome_.name()
               << ": ignoring a frame from hostd of a kind this proc does "
                  "not know";
}

void HostLink::OnAcceptedLocked(v1::HostFrame& frame) {
  std::string* secret = frame.mutable_accepted()->mutable_secret();
  if (phase_ != Phase::kUnaccepted) {
    LOG(WARNING) << "proc " << welcome_.name()
                 << ": ignoring a second Accepted from hostd";
    Wipe(*secret);
    return;
  }
  LOG_IF(WARNING, secret->empty())
      << "proc " << welcome_.name()
      << ": hostd accepted this proc without a secret; it cannot rejoin";
  Wipe(secret_);
  secret_.swap(*secret);
  Wipe(*secret);
  phase_ = Phase::kAccepted;
  const std::string& socket = welcome_.rejoin_socket();
  v1::ProcFrame ready;
  ready.mutable_ready();
  absl::Status sent;
  {
    absl::MutexLock lock(&send_mu_);
    // If the channel turns out closed before OnClosed ran, Send* say what
    // the link will do about it.
    down_ = absl::UnavailableError(
        socket.empty()
            ? "hostd is gone and this proc cannot rejoin (no rejoin socket)"
            : absl::StrCat("hostd is gone; reconnecting to ", socket));
    sent = live_ != nullptr ? live_->Send(ready) : down_;
  }
  if (!sent.ok()) {
    // The channel is ending; its end starts the reconnection.
    LOG(WARNING) << "proc " << welcome_.name()
                 << ": cannot send Ready to hostd: " << sent;
    return;
  }
  LOG(INFO) << "proc " << welcome_.name() << ": accepted by hostd "
            << welcome_.host() << " (incarnation " << welcome_.incarnation()
            << ")";
}

absl::Status HostLink::TakeFrameCapLocked(uint64_t max_frame_bytes) {
  if (max_frame_bytes == 0) return absl::OkStatus();
  absl::Status set = conn_->SetMaxFrameBytes(max_frame_bytes);
  if (set.ok()) max_frame_bytes_ = max_frame_bytes;
  return set;
}

void HostLink::OnRejoinAnswerLocked(v1::HostFrame frame) {
  if (!rejoin_waiting_) return;
  const std::string& socket = welcome_.rejoin_socket();
  switch (frame.frame_case()) {
    case v1::HostFrame::kRejoined: {
      rejoin_waiting_ = false;
      std::string* secret = frame.mutable_rejoined()->mutable_secret();
      Wipe(secret_);
      secret_.swap(*secret);
      Wipe(*secret);
      LOG_IF(WARNING, secret_.empty())
          << "proc " << welcome_.name()
          << ": hostd re-adopted this proc without a secret; it cannot "
             "rejoin again";
      if (absl::Status set =
              TakeFrameCapLocked(frame.rejoined().max_frame_bytes());
          !set.ok()) {
        LOG(WARNING) << "proc " << welcome_.name()
                     << ": keeping its frame cap of " << max_frame_bytes_
                     << " bytes; hostd's Rejoined: " << set;
      }
      if (frame.rejoined().host() != welcome_.host()) {
        LOG(WARNING) << "proc " << welcome_.name()
                     << ": the hostd that re-adopted it is reached at \""
                     << frame.rejoined().host() << "\", not \""
                     << welcome_.host()
                     << "\" as its Welcome said; keeping going (its actors' "
                        "refs still name the old address)";
      }
      phase_ = Phase::kAccepted;
      v1::ProcFrame ready;
      ready.mutable_ready();
      absl::Status sent;
      {
        // Ready before anything else goes out on the new connection.
        absl::MutexLock lock(&send_mu_);
        sent = conn_->Send(ready);
        live_ = conn_;
        down_ = absl::UnavailableError(
            absl::StrCat("hostd is gone; reconnecting to ", socket));
      }
      if (!sent.ok()) {
        LOG(WARNING) << "proc " << welcome_.name()
                     << ": cannot send Ready to hostd: " << sent;
        return;
      }
      LOG(INFO) << "proc " << welcome_.name() << ": re-adopted by hostd "
                << frame.rejoined().host() << " through " << socket << " after "
                << MonotonicClock::Real().Now() - outage_start_;
      return;
    }
    case v1::HostFrame::kRefused: {
      const std::string reason = frame.refused().reason();
      LOG(ERROR) << "proc " << welcome_.name()
                 << ": hostd refused to re-adopt this proc: " << reason;
      EndLocked(absl::UnavailableError(
          absl::StrCat("hostd refused this proc: ", reason)));
      conn_->Close();
      conn_.reset();
      conn_id_ = 0;
      if (callbacks_.on_refused) callbacks_.on_refused(reason);
      return;
    }
    default:
      EndOnErrorLocked(absl::InvalidArgumentError(absl::StrCat(
          "hostd's first frame on a rejoin connection is not Rejoined or "
          "Refused but frame #",
          static_cast<int>(frame.frame_case()))));
      return;
  }
}

void HostLink::OnClosed(uint64_t id, const absl::Status& status) {
  absl::MutexLock lock(&dispatch_mu_);
  if (id != conn_id_) return;
  conn_.reset();
  conn_id_ = 0;
  if (!got_welcome_.has_value()) {
    if (!handshake_error_.has_value()) {
      handshake_error_ = absl::UnavailableError(absl::StrCat(
          "the channel to hostd closed before its Welcome",
          status.ok() ? "" : absl::StrCat(": ", status.message())));
    }
    return;
  }
  if (status.ok()) {
    LOG(WARNING) << "proc " << welcome_.name() << ": hostd closed the channel";
  } else {
    LOG(WARNING) << "proc " << welcome_.name()
                 << ": the channel to hostd broke: " << status;
  }
  if (!started_) {
    ended_before_start_ = status;
    return;
  }
  OnConnectionEndedLocked(status);
}

void HostLink::EndOnErrorLocked(const absl::Status& error) {
  LOG(ERROR) << "proc " << welcome_.name()
             << ": ending the channel to hostd: " << error;
  if (!got_welcome_.has_value() && !handshake_error_.has_value()) {
    handshake_error_ = error;
  }
  if (conn_ != nullptr) conn_->Close();  // No on_closed after this.
  conn_.reset();
  conn_id_ = 0;
  if (!got_welcome_.has_value()) return;
  if (!started_) {
    ended_before_start_ = error;
    return;
  }
  OnConnectionEndedLocked(error);
}

void HostLink::OnConnectionEndedLocked(const absl::Status& status) {
  switch (phase_) {
    case Phase::kUnaccepted: {
      LOG(ERROR) << "proc " << welcome_.name() << ": " << kNotAccepted
                 << "; ending at once";
      EndLocked(absl::UnavailableError(kNotAccepted));
      if (callbacks_.on_not_accepted) {
        callbacks_.on_not_accepted(kNotAccepted);
      } else if (callbacks_.on_refused) {
        callbacks_.on_refused(kNotAccepted);
      }
      return;
    }
    case Phase::kAccepted: {
      phase_ = Phase::kReconnecting;
      outage_start_ = MonotonicClock::Real().Now();
      const std::string& socket = welcome_.rejoin_socket();
      if (socket.empty()) {
        SetLive(nullptr, absl::UnavailableError(
                             "hostd is gone and this proc cannot rejoin (no "
                             "rejoin socket)"));
        LOG(WARNING) << "proc " << welcome_.name() << ": orphaned in "
                     << orphan_timeout_
                     << " unless stopped first (no rejoin socket)";
      } else {
        SetLive(nullptr, absl::UnavailableError(absl::StrCat(
                             "hostd is gone; reconnecting to ", socket)));
        LOG(WARNING) << "proc " << welcome_.name() << ": redialling hostd at "
                     << socket << "; orphaned in " << orphan_timeout_
                     << " unless re-adopted or stopped first";
      }
      if (!link_thread_.joinable() && !destroying_) {
        link_thread_ = std::thread([this] { RunLink(); });
      }
      return;
    }
    case Phase::kReconnecting:
      // A rejoin connection ended unanswered: the link thread redials.
      VLOG(1) << "proc " << welcome_.name()
              << ": rejoin connection ended: " << status;
      rejoin_waiting_ = false;
      return;
    case Phase::kEnded:
      return;
  }
}

void HostLink::EndLocked(absl::Status why) {
  phase_ = Phase::kEnded;
  rejoin_waiting_ = false;
  SetLive(nullptr, std::move(why));
}

void HostLink::RunLink() {
  while (true) {
    // Without dispatch_mu_: a dying channel's thread may wait for it.
    BuryChannels();
    absl::MutexLock lock(&dispatch_mu_);
    auto outage = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return destroying_ || phase_ == Phase::kReconnecting;
    };
    dispatch_mu_.Await(absl::Condition(&outage));
    if (destroying_) return;
    ReconnectLocked();
    if (destroying_ || phase_ == Phase::kEnded) return;
  }
}

void HostLink::ReconnectLocked() {
  const MonotonicClock& clock = MonotonicClock::Real();
  const absl::Duration deadline = outage_start_ + orphan_timeout_;
  const bool can_rejoin = !welcome_.rejoin_socket().empty();
  std::mt19937_64 random(std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  absl::Duration backoff = kFirstBackoff;
  while (!destroying_ && phase_ == Phase::kReconnecting) {
    if (clock.Now() >= deadline) {
      LOG(WARNING) << "proc " << welcome_.name()
                   << " is orphaned: its hostd is gone and none re-adopted "
                      "it within "
                   << orphan_timeout_;
      EndLocked(absl::UnavailableError(absl::StrCat(
          "hostd is gone: this proc is orphaned (no hostd re-adopted it "
          "within ",
          absl::FormatDuration(orphan_timeout_), ")")));
      std::function<void()> on_orphaned = callbacks_.on_orphaned;
      dispatch_mu_.Unlock();
      if (on_orphaned) on_orphaned();
      dispatch_mu_.Lock();
      return;
    }
    absl::Duration wait = deadline - clock.Now();
    if (can_rejoin) {
      dispatch_mu_.Unlock();
      BuryChannels();
      dispatch_mu_.Lock();
      if (destroying_ || phase_ != Phase::kReconnecting) return;
      TryRejoinLocked(deadline);
      if (destroying_ || phase_ != Phase::kReconnecting) return;
      wait = std::min(wait, backoff * jitter(random));
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
    // The backoff, on the monotonic clock; the destructor ends it.
    dispatch_mu_.Unlock();
    destroy_wake_.SleepFor(wait);
    dispatch_mu_.Lock();
  }
}

void HostLink::TryRejoinLocked(absl::Duration deadline) {
  const std::string& socket = welcome_.rejoin_socket();
  absl::StatusOr<int> fd = DialUnix(socket);
  if (!fd.ok()) {
    VLOG(1) << "proc " << welcome_.name() << ": cannot reach hostd at "
            << socket << ": " << fd.status();
    return;
  }
  const uint64_t id = next_conn_id_++;
  absl::StatusOr<std::shared_ptr<FrameChannel>> channel =
      MakeChannel(*fd, id, absl::StrCat("rejoin connection to ", socket));
  if (!channel.ok()) {
    LOG(WARNING) << "proc " << welcome_.name() << ": " << channel.status();
    return;
  }
  conn_ = *std::move(channel);
  conn_id_ = id;
  rejoin_waiting_ = true;
  // Carries the secret: never logged, wiped once serialized.
  v1::ProcFrame rejoin = RejoinFrameLocked();
  absl::Status sent = conn_->Send(rejoin);
  Wipe(*rejoin.mutable_rejoin()->mutable_secret());
  if (!sent.ok()) {
    VLOG(1) << "proc " << welcome_.name() << ": cannot send Rejoin to "
            << socket << ": " << sent;
    conn_->Close();
    conn_.reset();
    conn_id_ = 0;
    rejoin_waiting_ = false;
    return;
  }
  LOG(INFO) << "proc " << welcome_.name() << ": connected to " << socket
            << ", asked to rejoin";
  auto answered = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return destroying_ || !rejoin_waiting_;
  };
  const absl::Duration wait =
      std::min(rejoin_answer_timeout_, deadline - MonotonicClock::Real().Now());
  if (!dispatch_mu_.AwaitWithTimeout(absl::Condition(&answered), wait)) {
    LOG(WARNING) << "proc " << welcome_.name() << ": no answer to Rejoin from "
                 << socket << " within " << wait << "; redialling";
    conn_->Close();
    conn_.reset();
    conn_id_ = 0;
    rejoin_waiting_ = false;
  }
}

v1::ProcFrame HostLink::RejoinFrameLocked() const {
  v1::ProcFrame frame;
  v1::Rejoin* rejoin = frame.mutable_rejoin();
  rejoin->set_protocol_version(kVersion);
  rejoin->set_name(welcome_.name());
  rejoin->set_incarnation(welcome_.incarnation());
  rejoin->set_pid(getpid());
  rejoin->set_secret(secret_);
  for (const std::string& type : actor_types_) rejoin->add_actor_types(type);
  return frame;
}

}  // namespace mesh
