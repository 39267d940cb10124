#include "procd/host_link.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mesh {
namespace {

constexpr uint32_t kVersion = v1::PROC_CHANNEL_VERSION_CURRENT;
// How long a proc that refuses hostd's version tries to get its Hello out.
constexpr absl::Duration kMismatchFlush = absl::Seconds(1);

}  // namespace

absl::StatusOr<std::optional<int>> HostLink::ChannelFdFromEnv() {
  const char* value = std::getenv(kChannelFdEnv);
  if (value == nullptr) return std::nullopt;
  const std::string text = value;
  unsetenv(kChannelFdEnv);
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
  FrameChannel::Options options;
  options.name = "proc channel to hostd";
  FrameChannel::Callbacks callbacks;
  callbacks.on_frame = [raw](std::string_view frame) { raw->OnFrame(frame); };
  callbacks.on_closed = [raw](const absl::Status& status) {
    raw->OnClosed(status);
  };
  absl::StatusOr<std::unique_ptr<FrameChannel>> channel =
      FrameChannel::Create(fd, std::move(options), std::move(callbacks));
  if (!channel.ok()) return channel.status();
  link->channel_ = *std::move(channel);

  {
    absl::MutexLock lock(&link->dispatch_mu_);
    link->channel_for_callbacks_ = link->channel_.get();
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
  {
    absl::MutexLock lock(&orphan_mu_);
    destroying_ = true;
  }
  // Closes the channel and joins its thread: no callback runs after this.
  channel_.reset();
  std::thread orphan;
  {
    absl::MutexLock lock(&dispatch_mu_);
    orphan = std::move(orphan_thread_);
  }
  if (orphan.joinable()) orphan.join();
}

void HostLink::Start(Callbacks callbacks, StartOptions options) {
  v1::ProcFrame hello;
  hello.mutable_hello()->set_protocol_version(kVersion);
  hello.mutable_hello()->set_pid(getpid());
  for (std::string& type : options.actor_types) {
    hello.mutable_hello()->add_actor_types(std::move(type));
  }
  absl::MutexLock lock(&dispatch_mu_);
  CHECK(!started_) << "HostLink::Start called twice";
  callbacks_ = std::move(callbacks);
  orphan_timeout_ = options.orphan_timeout.value_or(
      absl::Milliseconds(welcome_.orphan_timeout_ms()));
  started_ = true;
  // Hello first, so that hostd hears nothing from a proc it has not marked
  // RUNNING; then what came meanwhile, before any later frame (the channel
  // thread waits for the lock).
  if (absl::Status sent = SendFrame(hello); !sent.ok()) {
    LOG(ERROR) << "proc " << welcome_.name()
               << ": cannot send Hello to hostd: " << sent;
  }
  while (!early_.empty()) {
    v1::HostFrame frame = std::move(early_.front());
    early_.pop_front();
    DispatchLocked(std::move(frame));
  }
  if (ended_) OnEndedLocked();
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
  return channel_->Flush(timeout);
}

absl::Status HostLink::SendFrame(const v1::ProcFrame& frame) {
  return channel_->Send(frame);
}

void HostLink::OnFrame(std::string_view bytes) {
  absl::MutexLock lock(&dispatch_mu_);
  if (ended_) return;
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
  if (!started_) {
    if (early_.size() >= kMaxEarlyFrames) {
      EndOnErrorLocked(absl::ResourceExhaustedError(
          absl::StrCat("hostd sent more than ", kMaxEarlyFrames,
                       " frames before the proc said Hello")));
      return;
    }
    early_.push_back(std::move(frame));
    return;
  }
  DispatchLocked(std::move(frame));
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
    case v1::HostFrame::kRefused:
      LOG(ERROR) << "proc " << welcome_.name()
                 << ": hostd refused this proc: " << frame.refused().reason();
      refused_ = true;
      if (callbacks_.on_refused) {
        callbacks_.on_refused(frame.refused().reason());
      }
      return;
    case v1::HostFrame::kWelcome:
      LOG(WARNING) << "proc " << welcome_.name()
                   << ": ignoring a second Welcome from hostd";
      return;
    case v1::HostFrame::FRAME_NOT_SET:
      break;
  }
  LOG(WARNING) << "proc " << welcome_.name()
               << ": ignoring a frame from hostd of a kind this proc does "
                  "not know";
}

void HostLink::OnClosed(const absl::Status& status) {
  absl::MutexLock lock(&dispatch_mu_);
  if (ended_) return;
  ended_ = true;
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
  if (started_) OnEndedLocked();
}

void HostLink::EndOnErrorLocked(const absl::Status& error) {
  LOG(ERROR) << "proc " << welcome_.name()
             << ": ending the channel to hostd: " << error;
  ended_ = true;
  if (!got_welcome_.has_value() && !handshake_error_.has_value()) {
    handshake_error_ = error;
  }
  if (channel_for_callbacks_ != nullptr) channel_for_callbacks_->Close();
  if (started_) OnEndedLocked();
}

void HostLink::OnEndedLocked() {
  if (refused_ || orphan_thread_.joinable()) return;
  orphan_thread_ =
      std::thread([this, timeout = orphan_timeout_,
                   on_orphaned = callbacks_.on_orphaned]() mutable {
        WaitOrphaned(timeout, std::move(on_orphaned));
      });
}

void HostLink::WaitOrphaned(absl::Duration timeout,
                            std::function<void()> on_orphaned) {
  LOG(WARNING) << "proc " << welcome_.name() << ": orphaned in " << timeout
               << " unless stopped first";
  {
    absl::MutexLock lock(&orphan_mu_);
    if (orphan_mu_.AwaitWithTimeout(absl::Condition(&destroying_), timeout)) {
      return;
    }
  }
  LOG(WARNING) << "proc " << welcome_.name()
               << " is orphaned: its hostd is gone";
  if (on_orphaned) on_orphaned();
}

}  // namespace mesh
