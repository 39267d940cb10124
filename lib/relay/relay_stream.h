// RelayStream: the calling end of one mesh.v1.Relay.Connect stream
// (proto/host.proto) to a hostd. A client opens one to each host it talks
// to; a hostd opens one to each other host it forwards to. Frames written go
// out in write order; frames read are handed to `on_frame` in arrival order;
// `on_done` runs once when the stream has ended.
//
//   auto stream = RelayStream::Start(channel, {.sender = "client:0123..."},
//                                    on_frame, on_done);
//   absl::Status queued = stream->Send(envelope);  // never blocks
//   ...
//   stream->Shutdown();  // drains, half-closes, waits for on_done
//
// Writes never block: a frame is queued (one write in flight at a time)
// and Write answers at once. Frames queued behind the write in flight go
// out together as one RelayBatch message (proto/mailbox.proto) once the
// other end announced it reads batches (a Heartbeat's max_batch_bytes), at
// most that many bytes and Options.max_batch_bytes (a frame over it goes
// alone); they still arrive, and reach on_frame, one by one in write order.
// Each heartbeat written carries Options.max_batch_bytes: this end reads
// batches too (read batches are unpacked before on_frame).
// Bytes queued and not yet written are capped (Options.max_queued_bytes);
// past the cap Write is RESOURCE_EXHAUSTED. A stream lives as long as both
// ends: it has no deadline. It remembers when it last read a frame
// (last_frame_at, by a monotonic clock), so its owner can tell a host that
// went silent (hosts send heartbeats, proto/mailbox.proto) from a quiet one.
//
// Threads: the callbacks run on gRPC threads, one at a time, on_done last;
// they must not block and must not call Shutdown() or WaitDone() (Write,
// Send, Close and Cancel are fine). Every method is thread-safe.
//
// Lifetime: the caller owns the handle; the gRPC call behind it deletes
// itself once it has ended. Destroying the handle cancels the stream and
// waits until on_done has returned, so no callback runs afterwards; except
// when the handle is destroyed inside one of its own callbacks (e.g. on_done
// drops it from its owner's map): then it only cancels. The handle holds
// the channel; if it may go inside its own callback, keep a reference to
// the channel elsewhere too (e.g. a channel cache): gRPC 1.51 aborts when a
// channel's last reference is dropped on one of its callback threads.
#ifndef HOSTMESH_LIB_RELAY_RELAY_STREAM_H_
#define HOSTMESH_LIB_RELAY_RELAY_STREAM_H_

#include <grpcpp/channel.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "lib/auth/credentials.h"
#include "lib/time/clock.h"
#include "proto/mailbox.pb.h"

namespace mesh {

// The call metadata key in which a relay stream names its sender
// ("client:<hex>" or "host:<host:port>").
inline constexpr char kRelaySenderMetadata[] = "mesh-sender";

// Relay batches (v1::RelayBatch), shared by both ends of a relay stream.
// The largest batch an end reads and writes unless configured otherwise.
inline constexpr size_t kDefaultMaxRelayBatchBytes = 64 << 10;
// A batch message's bytes besides its entries (its own tag and length).
inline constexpr size_t kRelayBatchOverhead = 6;
// What a frame of `bytes` (ByteSizeLong) adds to a batch: itself, its tag
// and its length.
size_t RelayBatchEntryBytes(size_t bytes);
// Appends `frame` to `out`, or its frames if it is a batch (in order).
void AppendUnbatched(v1::RelayFrame&& frame, std::vector<v1::RelayFrame>* out);

// A channel to hostd at `address` ("host:port") presenting `credentials`,
// carrying messages up to kMaxMessageBytes either way: what clients and
// hosts open streams and call verbs on.
std::shared_ptr<grpc::Channel> NewHostChannel(
    const std::string& address, const ClientCredentials& credentials);

class RelayStream {
 public:
  struct Options {
    // Sent as the call's "mesh-sender" metadata.
    std::string sender;
    // Names the other end in messages, e.g. the host's host:port.
    std::string peer;
    // Bytes queued but not yet written, at most (one frame is always
    // accepted into an empty queue).
    size_t max_queued_bytes = 64 << 20;
    // The largest batch this end writes and reads (announced in each
    // heartbeat it writes); 0: it neither writes nor reads batches.
    size_t max_batch_bytes = kDefaultMaxRelayBatchBytes;
    // Times frames as they are read (last_frame_at); null: the real
    // monotonic clock. Must outlive the stream.
    const MonotonicClock* clock = nullptr;
  };
  // Each frame read, in arrival order (never a batch: its frames come one
  // by one).
  using FrameHandler = std::function<void(v1::RelayFrame frame)>;
  // Once, when the stream has ended: how it ended (OK when the host
  // finished it after our Close; CANCELLED after Cancel), and the frames
  // that were queued but never written, in order. (A frame whose write
  // failed is among them even if, rarely, the host got it anyway.)
  using DoneHandler = std::function<void(const absl::Status& status,
                                         std::vector<v1::RelayFrame> unsent)>;

  // Starts the call on `channel` and returns at once; a host that is down
  // shows as on_done with UNAVAILABLE.
  static std::unique_ptr<RelayStream> Start(
      std::shared_ptr<grpc::Channel> channel, Options options,
      FrameHandler on_frame, DoneHandler on_done);

  // Cancels the stream and waits for on_done (see the class comment).
  ~RelayStream();
  RelayStream(const RelayStream&) = delete;
  RelayStream& operator=(const RelayStream&) = delete;

  // Queues `frame` for writing, moving from it, and returns OK; or leaves it
  // alone and returns why not (a heartbeat gets this end's max_batch_bytes
  // stamped in first): UNAVAILABLE once the stream has broken or
  // ended, FAILED_PRECONDITION after Close(), RESOURCE_EXHAUSTED past the
  // cap. Messages name the peer.
  absl::Status Write(v1::RelayFrame& frame);
  // Write of an envelope frame; on error the envelope is left as it was.
  absl::Status Send(v1::Envelope& envelope);

  // Half-closes the stream once every queued frame is written; the host
  // then ends it. Idempotent.
  void Close();
  // Ends the stream now; what is still queued goes to on_done as unsent.
  void Cancel();
  // Close(), then Cancel() if the stream has not ended within `drain`;
  // returns once on_done has returned.
  void Shutdown(absl::Duration drain = absl::Seconds(1));

  // True once the stream can write no more (it broke or ended); on_done
  // may not have run yet.
  bool ended() const;
  // True once on_done has returned; waits for it up to `timeout`.
  bool WaitDone(absl::Duration timeout);

  const std::string& peer() const;

  // When the last frame was read (Options.clock), or when the stream was
  // started if none was yet; and how many frames were read. Cheap: an
  // atomic load each.
  absl::Duration last_frame_at() const;
  uint64_t frames_read() const;
  // The heartbeat interval the host named in its latest heartbeat; zero
  // before the first. (Heartbeats also go to on_frame.)
  absl::Duration heartbeat_interval() const;

 private:
  struct State;
  class Reactor;
  RelayStream(std::shared_ptr<grpc::Channel> channel,
              std::shared_ptr<State> state);

  // Held by the handle, not by the call: the call ends on a gRPC thread,
  // where the last reference to a channel must not go.
  const std::shared_ptr<grpc::Channel> channel_;
  const std::shared_ptr<State> state_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_RELAY_RELAY_STREAM_H_
