#include "lib/relay/relay_server_stream.h"

#include <algorithm>
#include <cstdint>
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
                                     size_t max_queued_bytes,
                                     size_t max_batch_bytes)
    : context_(context),
      max_queued_bytes_(max_queued_bytes),
      max_batch_bytes_(max_batch_bytes) {}

void RelayServerStream::StampHeartbeat(v1::RelayFrame& frame) const {
  if (!frame.has_heartbeat()) return;
  frame.mutable_heartbeat()->set_max_batch_bytes(
      static_cast<uint32_t>(std::min<size_t>(max_batch_bytes_, UINT32_MAX)));
}

void RelayServerStream::StartReading() { StartRead(&in_); }

void RelayServerStream::Refuse(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

absl::Status RelayServerStream::Write(v1::RelayFrame frame) {
  StampHeartbeat(frame);
  size_t bytes = frame.ByteSizeLong();
  absl::MutexLock lock(&mu_);
  if (broken_ || finished_ || last_queued_) {
    return absl::UnavailableError(absl::StrCat("the ", name(), " is closed"));
  }
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
  StampHeartbeat(frame);
  size_t bytes = frame.ByteSizeLong();
  absl::MutexLock lock(&mu_);
  if (broken_ || finished_ || last_queued_) return;
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
  if (in_.has_batch()) {
    OnBatchStart();
    for (v1::RelayFrame& frame : *in_.mutable_batch()->mutable_frames()) {
      if (!frame.has_batch()) OnOneFrame(frame);  // never nested
    }
    OnBatchEnd();
  } else {
    OnOneFrame(in_);
  }
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

void RelayServerStream::OnOneFrame(v1::RelayFrame& frame) {
  if (frame.has_heartbeat()) {
    peer_batch_bytes_.store(frame.heartbeat().max_batch_bytes(),
                            std::memory_order_relaxed);
  }
  OnFrame(frame);
}

void RelayServerStream::BatchFrontLocked() {
  if (out_.size() < 2) return;
  const size_t cap = std::min<size_t>(
      max_batch_bytes_, peer_batch_bytes_.load(std::memory_order_relaxed));
  size_t total = kRelayBatchOverhead;
  size_t count = 0;
  for (size_t i = 0; i < out_.size(); ++i) {
    const size_t next = total + RelayBatchEntryBytes(out_bytes_[i]);
    if (next > cap || out_[i].has_batch()) break;
    total = next;
    ++count;
  }
  if (count < 2) return;
  v1::RelayFrame batch;
  size_t bytes = 0;
  auto* frames = batch.mutable_batch()->mutable_frames();
  frames->Reserve(static_cast<int>(count));
  for (size_t i = 0; i < count; ++i) {
    bytes += out_bytes_.front();
    frames->Add(std::move(out_.front()));
    out_.pop_front();
    out_bytes_.pop_front();
  }
  out_.push_front(std::move(batch));
  out_bytes_.push_front(bytes);
}

void RelayServerStream::WriteFrontLocked() {
  writing_ = true;
  BatchFrontLocked();
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
