// RelayServerStream: the serving end of one mesh.v1.Relay.Connect stream
// (proto/host.proto), for hostd and for tests that play a host. Frames read
// are handed to OnFrame one at a time, in arrival order: the next read
// starts only after OnFrame returned, so a sender's frames are handled in
// the order written (a RelayBatch read is handed over frame by frame).
// Write queues frames for the other end: in order, one write in flight, at
// most max_queued_bytes queued; frames queued behind the write in flight go
// out as one RelayBatch once the other end announced it reads batches (a
// Heartbeat's max_batch_bytes), at most that and max_batch_bytes in all (a
// frame over it goes alone). Heartbeats written carry max_batch_bytes: this
// end reads batches of up to that. The stream finishes OK once the other end
// half-closed and every queued frame is written, or once the frame given to
// WriteLast is written; a failed write or a cancelled call ends it.
//
// Threads: reactions run on gRPC threads; Write, WriteLast, Cancel and
// Refuse are thread-safe and never block. Lifetime: self-deleting; OnStreamDone
// runs once, last, just before the object is deleted (a subclass unregisters
// itself there, so nothing calls Write on a deleted stream).
#ifndef HOSTMESH_LIB_RELAY_RELAY_SERVER_STREAM_H_
#define HOSTMESH_LIB_RELAY_RELAY_SERVER_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
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

  // `max_batch_bytes`: the largest batch this end writes and reads (at
  // most the server's message size limits); 0: none.
  RelayServerStream(grpc::CallbackServerContext* context,
                    size_t max_queued_bytes = 64 << 20,
                    size_t max_batch_bytes = 64 << 10);

  // Starts reading; call once, when the subclass is ready for OnFrame.
  void StartReading();
  // Ends the call now with `status` (e.g. the sender is refused).
  void Refuse(const grpc::Status& status);
  // Queues `frame` for the other end (a heartbeat gets max_batch_bytes
  // stamped in). UNAVAILABLE once the stream ended,
  // RESOURCE_EXHAUSTED past the cap (naming `name`).
  absl::Status Write(v1::RelayFrame frame);
  // Queues `frame` as the stream's last (a goodbye): the stream finishes OK
  // once it and everything queued before it are written, and Write refuses
  // from now on. Past the cap, or once the stream ended, it does nothing.
  void WriteLast(v1::RelayFrame frame);
  void Cancel() { context_->TryCancel(); }

 protected:
  ~RelayServerStream() override = default;
  // Each frame read, in order (never a batch); may move from `frame`.
  virtual void OnFrame(v1::RelayFrame& frame) = 0;
  // Around the OnFrame calls for the frames of one batch read, e.g. to
  // write what they cause together after the last.
  virtual void OnBatchStart() {}
  virtual void OnBatchEnd() {}
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
  // Replaces the frames at the queue's front by one batch of them, as many
  // as fit both ends' caps, if that is two or more.
  void BatchFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A frame read: a heartbeat's batch cap is noted, then OnFrame.
  void OnOneFrame(v1::RelayFrame& frame);
  // Stamps this end's batch cap into a heartbeat.
  void StampHeartbeat(v1::RelayFrame& frame) const;
  // Finishes once the other end is done (or the stream broke, or the last
  // frame is written) and nothing is being written.
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  grpc::CallbackServerContext* const context_;
  const size_t max_queued_bytes_;
  const size_t max_batch_bytes_;
  v1::RelayFrame in_;
  // The largest batch the other end said it reads (0: none yet).
  std::atomic<uint32_t> peer_batch_bytes_{0};

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
