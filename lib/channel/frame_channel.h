// FrameChannel: an ordered, bidirectional channel of frames over a connected
// stream socket (a socketpair end or a Unix socket; Create), or over a pair
// of one-way descriptors, one read and one written (two pipes, e.g. a
// child's stdin and stdout; CreateOnPipes). On the wire each frame is a
// 4-byte little-endian length followed by that many bytes (usually a
// serialized protobuf message); both modes share that one framing and
// differ only in the system calls: sendmsg and shutdown on a socket, writev
// and close on the written descriptor of a pair. No descriptor ever
// crosses a FrameChannel (it has no call that would pass one; pipes could
// not carry it).
//
// Promises:
//  - Owner: the channel owns its fd (or both fds) from Create() (or
//    CreateOnPipes()) on, even when that fails, and closes it; nobody else
//    may read, write or close it.
//  - Threads: one thread per channel reads the socket and flushes what the
//    socket did not take at once. Callbacks run on that thread, one at a
//    time: every frame in arrival order, then at most one on_closed.
//    SendFrame/Send/Queue/WriteQueued/Flush/Close are thread-safe; frames
//    sent (or queued) from one thread go out in call order. Sending never
//    blocks the caller.
//  - Shutdown order: Close() shuts the socket down, or closes the written
//    descriptor of a pair (either way the peer sees EOF), drops
//    unsent frames and returns without waiting; no callback starts after it
//    returns, though one already under way (e.g. the caller itself) may still
//    finish. The destructor closes and then joins the thread, so after it no
//    callback runs. For an orderly end: Flush(), then destroy.
//  - Nothing grows without a bound: incoming frames over max_frame_bytes end
//    the channel; queued outgoing bytes stay under max_pending_bytes (or
//    under one frame, when a single frame is larger).
#ifndef HOSTMESH_LIB_CHANNEL_FRAME_CHANNEL_H_
#define HOSTMESH_LIB_CHANNEL_FRAME_CHANNEL_H_

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "google/protobuf/message_lite.h"

namespace mesh {

class FrameChannel {
 public:
  struct Options {
    // Names the channel in logs and error messages.
    std::string name = "channel";
    // An incoming frame over this ends the channel (RESOURCE_EXHAUSTED);
    // sending one is INVALID_ARGUMENT. At most 2^32 - 1.
    size_t max_frame_bytes = 64 << 20;
    // While bytes are queued (the peer is not keeping up), a Send that would
    // take the queue past this is RESOURCE_EXHAUSTED. A frame is always
    // accepted when nothing is queued.
    size_t max_pending_bytes = 256 << 20;
  };

  struct Callbacks {
    // Each frame, in arrival order, one at a time, on the channel's thread.
    // The view is valid during the call only. May be empty (frames dropped).
    std::function<void(std::string_view frame)> on_frame;
    // Once, on the channel's thread, when the channel ends by itself: OK for
    // a clean EOF at a frame boundary; otherwise the cause, naming the
    // channel: an I/O error (errno's code, e.g. UNAVAILABLE for a reset,
    // FAILED_PRECONDITION for a broken pipe), DATA_LOSS for a frame cut off
    // by EOF, RESOURCE_EXHAUSTED for an oversized frame. A failed write ends
    // the channel too, after the frames the peer had already sent are
    // delivered. Not called if Close() came first. May be empty.
    std::function<void(const absl::Status&)> on_closed;
  };

  // Takes ownership of `fd` (sets it non-blocking and close-on-exec) and
  // starts the channel thread. INVALID_ARGUMENT if `fd` is not a stream
  // socket or max_frame_bytes does not fit the 4-byte length; the fd is
  // closed on every error.
  static absl::StatusOr<std::unique_ptr<FrameChannel>> Create(
      int fd, Options options, Callbacks callbacks);

  // The same channel over two one-way descriptors: frames are read from
  // `read_fd` and written to `write_fd` (pipe ends, or stream sockets used
  // one way). Takes ownership of both (non-blocking, close-on-exec; both
  // closed on every error). The peer's EOF on `read_fd` ends the channel
  // like a socket's; a write to a reader that is gone is the broken pipe
  // (FAILED_PRECONDITION), never a SIGPIPE; Close() closes `write_fd` (the
  // peer reads EOF, once no other process holds a copy of it) and stops
  // reading. A terminal (srun --unbuffered's pty) works too, if the caller
  // made it raw (no output processing). INVALID_ARGUMENT if the two are the
  // same descriptor, either is not a pipe, socket or terminal, `read_fd`
  // is not open for reading or `write_fd` not for writing.
  static absl::StatusOr<std::unique_ptr<FrameChannel>> CreateOnPipes(
      int read_fd, int write_fd, Options options, Callbacks callbacks);

  // Close(), then joins the thread. Must not be called from a callback.
  ~FrameChannel();
  FrameChannel(const FrameChannel&) = delete;
  FrameChannel& operator=(const FrameChannel&) = delete;

  // Queues one frame and returns without blocking: writes at once when
  // nothing is queued (one sendmsg for header and body), else appends to the
  // queue that the channel thread flushes when the socket is writable.
  // FAILED_PRECONDITION once closed (naming the channel and the cause),
  // RESOURCE_EXHAUSTED past max_pending_bytes, INVALID_ARGUMENT for a frame
  // over max_frame_bytes, or the write error that ended the channel.
  absl::Status SendFrame(std::string_view frame);

  // Serializes `message` into a buffer with room for the header, then sends
  // it like SendFrame (the buffer itself is queued if the socket does not
  // take it all: no further copy).
  absl::Status Send(const google::protobuf::MessageLite& message);

  // Like Send, but only queues the frame, even when nothing is queued: it
  // goes out with the next WriteQueued() (or earlier, with whatever the
  // channel thread writes). For a caller that sends several frames in a
  // row and then calls WriteQueued once: one sendmsg for all of them.
  // Same errors as Send.
  absl::Status Queue(const google::protobuf::MessageLite& message);
  // Writes what is queued now, on the caller's thread, as far as the socket
  // takes it; the channel thread writes the rest. Never blocks. A write
  // error ends the channel, as one by the channel thread does.
  void WriteQueued();

  // Waits until every queued frame has been written to the socket or
  // `timeout` passed; false on timeout or if the channel ended with frames
  // unsent. May be called from a callback (it then writes itself).
  bool Flush(absl::Duration timeout);

  // Stops reading and writing: shutdown(SHUT_RDWR) (over a pair: closes the
  // written descriptor), so the peer sees EOF, then the thread closes the
  // fd(s). Queued frames are dropped (Flush first for
  // an orderly end). Returns at once, also when called from a callback; no
  // callback starts after it returns, except one already under way.
  // Idempotent.
  void Close();

  // Changes max_frame_bytes, both ways, from the next frame on (e.g. once
  // the peer said its cap). Thread-safe; may be called from a callback.
  // INVALID_ARGUMENT if it does not fit the 4-byte length.
  absl::Status SetMaxFrameBytes(size_t max_frame_bytes);
  size_t max_frame_bytes() const {
    return max_frame_bytes_.load(std::memory_order_relaxed);
  }

  // True once Close() was called or the channel ended by itself.
  bool closed() const;
  const std::string& name() const { return options_.name; }

 private:
  FrameChannel(int read_fd, int write_fd, int wake_fd, Options options,
               Callbacks callbacks);
  // Create's and CreateOnPipes's common part, once the fds are checked.
  static absl::StatusOr<std::unique_ptr<FrameChannel>> Start(
      int read_fd, int write_fd, Options options, Callbacks callbacks);
  // One non-blocking write of `iovcnt` buffers: sendmsg on a socket, writev
  // on a pair (with SIGPIPE kept from the process). Returns what the
  // system call returned; errno is set on -1.
  ssize_t WriteSome(const struct iovec* iov, int iovcnt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Writes or queues one framed frame, `total` bytes in `iov`. If `owned` is
  // not null it holds exactly those bytes and may be moved into the queue
  // instead of copied.
  absl::Status SendFramed(const struct iovec* iov, int iovcnt, size_t total,
                          std::string* owned, bool write_now = true);
  // Serializes `message` as one frame (header included) and hands it to
  // SendFramed.
  absl::Status SendMessage(const google::protobuf::MessageLite& message,
                           bool write_now);
  absl::Status CheckSendable(size_t frame_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes queued bytes until the socket would block. OK also when it did
  // not write everything; an error is the cause to end the channel with.
  absl::Status WritePendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Enqueue(const char* data, size_t size)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the channel ended by `cause` (unless it already ended), drops the
  // queue and wakes the thread.
  void EndLocked(absl::Status cause) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Flush()'s condition.
  bool FlushDone() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Wake();
  bool InChannelThread() const;

  // The channel thread.
  void Run();
  // Polls until the channel ends. Returns the cause, or nullopt after
  // Close().
  std::optional<absl::Status> Loop();
  // Reads what the socket has and delivers complete frames. Returns the cause
  // when the channel ends (EOF, error, bad frame), nullopt to go on. Reads
  // until the socket would block if `drain`, else a bounded number of times.
  std::optional<absl::Status> ReadAvailable(bool drain);
  // Makes room in the read buffer for the current frame (or a read chunk).
  void PrepareReadBuffer();
  // Delivers the complete frames in the read buffer.
  std::optional<absl::Status> DeliverFrames();

  const Options options_;
  // options_.max_frame_bytes until SetMaxFrameBytes.
  std::atomic<size_t> max_frame_bytes_;
  const Callbacks callbacks_;
  // The socket (read_fd_ == write_fd_), or the pair's two descriptors. The
  // channel thread reads read_fd_ and closes both as it ends; other threads
  // write write_fd_ (or shut it down, or close a pair's) only under mu_
  // while it is open.
  const int read_fd_;
  const int write_fd_;
  bool pair() const { return read_fd_ != write_fd_; }
  const int wake_fd_;  // eventfd: new queued bytes, Close().

  mutable absl::Mutex mu_;
  // Open until the channel thread closes it as it ends.
  bool fd_open_ ABSL_GUARDED_BY(mu_) = true;
  // A pair's write_fd_: open until Close() or the thread's end closes it.
  bool write_fd_open_ ABSL_GUARDED_BY(mu_) = true;
  bool close_called_ ABSL_GUARDED_BY(mu_) = false;
  // Close() was called or the channel ended by itself (then end_status_).
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  // Queued frames were dropped when the channel ended.
  bool dropped_ ABSL_GUARDED_BY(mu_) = false;
  // Bytes not yet written: chunks of whole or partial frames, the first one
  // written from pending_offset_ on.
  std::deque<std::string> pending_ ABSL_GUARDED_BY(mu_);
  size_t pending_offset_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;

  // Set by Close() and read by the thread before each callback, without
  // taking mu_ (senders may hold it).
  std::atomic<bool> closing_{false};

  // The read buffer, used by the channel thread only: received bytes are in
  // [in_begin_, in_end_) of in_ (in_capacity_ bytes).
  std::unique_ptr<char[]> in_;
  size_t in_capacity_ = 0;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;

  std::thread thread_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_CHANNEL_FRAME_CHANNEL_H_
