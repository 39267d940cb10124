#include "lib/relay/relay_server_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/relay/relay_stream.h"

namespace mesh {

std::string RelayServerStream::SenderOf(
    const grpc::CallbackServerContext& context) {
  auto it = context.client_metadata().find(kRelaySenderMetadata);
  if (it == context.client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

RelayServerStream::RelayServerStream(grpc::CallbackServerContext* context,
                                     size_t max_queued_bytes)
    : context_(context), max_queued_bytes_(max_queued_bytes) {}

void RelayServerStream::StartReading() { StartRead(&in_); }

void RelayServerStream::Refuse(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

absl::Status RelayServerStream::Write(v1::RelayFrame frame) {
  absl::MutexLock lock(&mu_);
  if (broken_ || finished_ || last_queued_) {
    return absl::UnavailableError(absl::StrCat("the ", name(), " is closed"));
  }
  size_t bytes = frame.ByteSizeLong();
  if (!out_.empty() && queued_bytes_ + bytes > max_queued_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the ", name(), " has ", queued_bytes_,
        " bytes queued (its limit): the other end is not reading"));
  }
  queued_bytes_ += bytes;
  out_bytes_.push_back(bytes);
  out_.push_back(std::move(frame));
  if (!writing_) WriteFrontLocked();
  return absl::OkStatus();
}

void RelayServerStream::WriteLast(v1::RelayFrame frame) {
  absl::MutexLock lock(&mu_);
  if (broken_ || finished_ || last_queued_) return;
  size_t bytes = frame.ByteSizeLong();
  if (!out_.empty() && queued_bytes_ + bytes > max_queued_bytes_) return;
  last_queued_ = true;
  queued_bytes_ += bytes;
  out_bytes_.push_back(bytes);
  out_.push_back(std::move(frame));
  if (!writing_) WriteFrontLocked();
}

void RelayServerStream::OnReadDone(bool ok) {
  if (!ok) {  // Half-closed by the other end, or cancelled.
    absl::MutexLock lock(&mu_);
    reading_done_ = true;
    MaybeFinishLocked();
    return;
  }
  OnFrame(in_);
  in_.Clear();
  {
    // Finished (WriteLast): read no more.
    absl::MutexLock lock(&mu_);
    if (finished_) return;
  }
  StartRead(&in_);
}

void RelayServerStream::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  queued_bytes_ -= out_bytes_.front();
  out_bytes_.pop_front();
  out_.pop_front();
  if (!ok) {
    broken_ = true;
    out_.clear();
    out_bytes_.clear();
    queued_bytes_ = 0;
  }
  if (!out_.empty()) {
    WriteFrontLocked();
  } else {
    MaybeFinishLocked();
  }
}

void RelayServerStream::OnCancel() {
  // A stream that does not read learns of its end only here.
  absl::MutexLock lock(&mu_);
  broken_ = true;
  MaybeFinishLocked();
}

void RelayServerStream::OnDone() {
  OnStreamDone();
  delete this;
}

void RelayServerStream::WriteFrontLocked() {
  writing_ = true;
  grpc::WriteOptions options;
  if (out_.size() > 1) options.set_buffer_hint();
  StartWrite(&out_.front(), options);
}

void RelayServerStream::MaybeFinishLocked() {
  if (finished_ || writing_) return;
  if (!(reading_done_ || broken_ || (last_queued_ && out_.empty()))) return;
  finished_ = true;
  Finish(broken_ ? grpc::Status::CANCELLED : grpc::Status::OK);
}

}  // namespace mesh
