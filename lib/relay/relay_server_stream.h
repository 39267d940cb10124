// RelayServerStream: the serving end of one mesh.v1.Relay.Connect stream
// (proto/host.proto), for hostd and for tests that play a host. Frames read
// are handed to OnFrame one at a time, in arrival order: the next read
// starts only after OnFrame returned, so a sender's frames are handled in
// the order written. Write queues frames for the other end: in order, one
// write in flight (later ones coalesced by gRPC), at most max_queued_bytes
// queued. The stream finishes OK once the other end half-closed and every
// queued frame is written, or once the frame given to WriteLast is written;
// a failed write or a cancelled call ends it.
//
// Threads: reactions run on gRPC threads; Write, WriteLast, Cancel and
// Refuse are thread-safe and never block. Lifetime: self-deleting; OnStreamDone
// runs once, last, just before the object is deleted (a subclass unregisters
// itself there, so nothing calls Write on a deleted stream).
#ifndef HOSTMESH_LIB_RELAY_RELAY_SERVER_STREAM_H_
#define HOSTMESH_LIB_RELAY_RELAY_SERVER_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "proto/mailbox.pb.h"

namespace mesh {

class RelayServerStream
    : public grpc::ServerBidiReactor<v1::RelayFrame, v1::RelayFrame> {
 public:
  // The call's kRelaySenderMetadata ("" if it has none).
  static std::string SenderOf(const grpc::CallbackServerContext& context);

  RelayServerStream(grpc::CallbackServerContext* context,
                    size_t max_queued_bytes = 64 << 20);

  // Starts reading; call once, when the subclass is ready for OnFrame.
  void StartReading();
  // Ends the call now with `status` (e.g. the sender is refused).
  void Refuse(const grpc::Status& status);
  // Queues `frame` for the other end. UNAVAILABLE once the stream ended,
  // RESOURCE_EXHAUSTED past the cap (naming `name`).
  absl::Status Write(v1::RelayFrame frame);
  // Queues `frame` as the stream's last (a goodbye): the stream finishes OK
  // once it and everything queued before it are written, and Write refuses
  // from now on. Past the cap, or once the stream ended, it does nothing.
  void WriteLast(v1::RelayFrame frame);
  void Cancel() { context_->TryCancel(); }

 protected:
  ~RelayServerStream() override = default;
  // Each frame read, in order; may move from `frame`.
  virtual void OnFrame(v1::RelayFrame& frame) = 0;
  // Once, when the call is over, right before deletion.
  virtual void OnStreamDone() {}
  // Names the stream in errors, e.g. its sender.
  virtual std::string name() const { return "relay stream"; }

 private:
  void OnReadDone(bool ok) final;
  void OnWriteDone(bool ok) final;
  void OnCancel() final;
  void OnDone() final;
  void WriteFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes once the other end is done (or the stream broke, or the last
  // frame is written) and nothing is being written.
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  grpc::CallbackServerContext* const context_;
  const size_t max_queued_bytes_;
  v1::RelayFrame in_;

  absl::Mutex mu_;
  std::deque<v1::RelayFrame> out_ ABSL_GUARDED_BY(mu_);
  // Each queued frame's size, as counted into queued_bytes_.
  std::deque<size_t> out_bytes_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_done_ ABSL_GUARDED_BY(mu_) = false;
  // WriteLast queued the last frame: finish once the queue is empty.
  bool last_queued_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_RELAY_RELAY_SERVER_STREAM_H_
