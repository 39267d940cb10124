#include "lib/relay/relay_stream.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lib/grpc_status.h"
#include "lib/mailbox/mailbox.h"
#include "proto/host.grpc.pb.h"

namespace mesh {

size_t RelayBatchEntryBytes(size_t bytes) {
  size_t length_bytes = 1;
  for (size_t rest = bytes >> 7; rest != 0; rest >>= 7) ++length_bytes;
  return 1 + length_bytes + bytes;
}

void AppendUnbatched(v1::RelayFrame&& frame, std::vector<v1::RelayFrame>* out) {
  if (!frame.has_batch()) {
    out->push_back(std::move(frame));
    return;
  }
  for (v1::RelayFrame& inner : *frame.mutable_batch()->mutable_frames()) {
    out->push_back(std::move(inner));
  }
}

std::shared_ptr<grpc::Channel> NewHostChannel(
    const std::string& address, const ClientCredentials& credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return NewAuthedChannel(address, credentials, std::move(args));
}

// What the handle and the call share. The reactor is alive while `reactor`
// is set: OnDone clears it under `mu` before deleting the reactor, so a
// method holding `mu` may call into it.
struct RelayStream::State {
  State(Options options, FrameHandler on_frame, DoneHandler on_done)
      : options(std::move(options)),
        clock(this->options.clock != nullptr ? *this->options.clock
                                             : MonotonicClock::Real()),
        on_frame(std::move(on_frame)),
        on_done(std::move(on_done)),
        last_frame_ns(absl::ToInt64Nanoseconds(clock.Now())) {}

  struct Queued {
    v1::RelayFrame frame;
    size_t bytes;
  };

  const Options options;
  const MonotonicClock& clock;
  // Used by the reactor's reactions only (which never run concurrently).
  FrameHandler on_frame;
  DoneHandler on_done;
  // The thread running on_frame or on_done, while one runs.
  std::atomic<std::thread::id> callback_thread{};
  // When the last frame was read (clock), and how many were.
  std::atomic<int64_t> last_frame_ns;
  std::atomic<uint64_t> frames_read{0};
  std::atomic<uint32_t> heartbeat_ms{0};
  // The largest batch the other end said it reads (0: none yet).
  std::atomic<uint32_t> peer_batch_bytes{0};

  mutable absl::Mutex mu;
  Reactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  // Front is being written while `writing`.
  std::deque<Queued> queue ABSL_GUARDED_BY(mu);
  size_t queued_bytes ABSL_GUARDED_BY(mu) = 0;
  // The frame whose write failed.
  std::vector<v1::RelayFrame> failed ABSL_GUARDED_BY(mu);
  bool writing ABSL_GUARDED_BY(mu) = false;
  // The read side ended or a write failed: nothing more is written.
  bool broken ABSL_GUARDED_BY(mu) = false;
  // Close() was called: WritesDone once the queue is empty.
  bool closing ABSL_GUARDED_BY(mu) = false;
  bool writes_done ABSL_GUARDED_BY(mu) = false;
  // on_done has returned.
  bool done ABSL_GUARDED_BY(mu) = false;
  // How it ended, once known.
  absl::Status end ABSL_GUARDED_BY(mu);
};

// The gRPC call. Created by Start; deletes itself in OnDone. It keeps a hold
// and one outstanding read for its whole life: the read completes (not ok)
// exactly when the stream ends, and only then is the hold removed, so OnDone
// (and deletion) cannot come while a Write on another thread is about to
// start a write (Write checks `broken` under the same lock). Reactions never
// run inline in the call that starts an operation, so starting operations
// under `mu` cannot deadlock.
class RelayStream::Reactor final
    : public grpc::ClientBidiReactor<v1::RelayFrame, v1::RelayFrame> {
 public:
  explicit Reactor(std::shared_ptr<State> state) : state_(std::move(state)) {}

  // The stub (and so the channel) is needed only to start the call.
  void Start(const std::shared_ptr<grpc::Channel>& channel) {
    context_.AddMetadata(kRelaySenderMetadata, state_->options.sender);
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = this;
    }
    v1::Relay::NewStub(channel)->async()->Connect(&context_, this);
    AddHold();
    StartRead(&incoming_);
    StartCall();
  }

  void TryCancel() { context_.TryCancel(); }

  // Starts writing the queue's front. `state` is state_ (named so that
  // the lock annotations match the callers').
  void WriteFront(State& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state.mu) {
    state.writing = true;
    BatchFront(state);
    grpc::WriteOptions options;
    // More is queued behind this one: let the transport coalesce; the last
    // write of a burst goes without the hint, which flushes.
    if (state.queue.size() > 1) options.set_buffer_hint();
    // std::deque keeps references to its elements valid across push_back.
    StartWrite(&state.queue.front().frame, options);
  }

  // Replaces the frames at the queue's front by one batch of them, as many
  // as fit the smaller of both ends' caps, if that is two or more.
  static void BatchFront(State& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state.mu) {
    if (state.queue.size() < 2) return;
    const size_t cap = std::min<size_t>(
        state.options.max_batch_bytes,
        state.peer_batch_bytes.load(std::memory_order_relaxed));
    size_t total = kRelayBatchOverhead;
    size_t count = 0;
    for (const State::Queued& queued : state.queue) {
      const size_t next = total + RelayBatchEntryBytes(queued.bytes);
      if (next > cap || queued.frame.has_batch()) break;
      total = next;
      ++count;
    }
    if (count < 2) return;
    State::Queued batch{v1::RelayFrame(), 0};
    auto* frames = batch.frame.mutable_batch()->mutable_frames();
    frames->Reserve(static_cast<int>(count));
    for (size_t i = 0; i < count; ++i) {
      batch.bytes += state.queue.front().bytes;
      frames->Add(std::move(state.queue.front().frame));
      state.queue.pop_front();
    }
    state.queue.push_front(std::move(batch));
  }

  void FinishWrites(State& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state.mu) {
    state.writes_done = true;
    StartWritesDone();
  }

  void OnWriteDone(bool ok) override {
    State& state = *state_;
    absl::MutexLock lock(&state.mu);
    state.writing = false;
    State::Queued& front = state.queue.front();
    state.queued_bytes -= front.bytes;
    if (!ok) {
      state.broken = true;
      AppendUnbatched(std::move(front.frame), &state.failed);
    }
    state.queue.pop_front();
    if (state.broken) return;
    if (!state.queue.empty()) {
      WriteFront(state);
    } else if (state.closing && !state.writes_done) {
      FinishWrites(state);
    }
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      state_->last_frame_ns.store(absl::ToInt64Nanoseconds(state_->clock.Now()),
                                  std::memory_order_relaxed);
      if (incoming_.has_batch()) {
        for (v1::RelayFrame& frame :
             *incoming_.mutable_batch()->mutable_frames()) {
          if (frame.has_batch()) {
            LOG_EVERY_N(WARNING, 100)
                << "relay stream to " << state_->options.peer
                << ": dropping a batch nested in a batch";
            continue;
          }
          OnOneFrame(frame);
        }
      } else {
        OnOneFrame(incoming_);
      }
      incoming_.Clear();
      StartRead(&incoming_);
      return;
    }
    {
      absl::MutexLock lock(&state_->mu);
      state_->broken = true;
    }
    RemoveHold();
  }

  // A frame read (a batch's, or one alone).
  void OnOneFrame(v1::RelayFrame& frame) {
    state_->frames_read.fetch_add(1, std::memory_order_relaxed);
    if (frame.has_heartbeat()) {
      state_->heartbeat_ms.store(frame.heartbeat().interval_ms(),
                                 std::memory_order_relaxed);
      state_->peer_batch_bytes.store(frame.heartbeat().max_batch_bytes(),
                                     std::memory_order_relaxed);
    }
    if (state_->on_frame) {
      state_->callback_thread = std::this_thread::get_id();
      state_->on_frame(std::move(frame));
      state_->callback_thread = std::thread::id();
    }
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<State> state = state_;
    absl::Status end = FromGrpcStatus(status);
    std::vector<v1::RelayFrame> unsent;
    {
      absl::MutexLock lock(&state->mu);
      state->reactor = nullptr;
      state->broken = true;
      state->end = end;
      unsent = std::move(state->failed);
      for (State::Queued& queued : state->queue) {
        AppendUnbatched(std::move(queued.frame), &unsent);
      }
      state->queue.clear();
      state->queued_bytes = 0;
    }
    delete this;
    DoneHandler on_done = std::move(state->on_done);
    state->on_frame = nullptr;
    state->callback_thread = std::this_thread::get_id();
    if (on_done) on_done(end, std::move(unsent));
    on_done = nullptr;  // what it captured goes before WaitDone returns
    state->callback_thread = std::thread::id();
    absl::MutexLock lock(&state->mu);
    state->done = true;
  }

 private:
  const std::shared_ptr<State> state_;
  grpc::ClientContext context_;
  v1::RelayFrame incoming_;
};

RelayStream::RelayStream(std::shared_ptr<grpc::Channel> channel,
                         std::shared_ptr<State> state)
    : channel_(std::move(channel)), state_(std::move(state)) {}

std::unique_ptr<RelayStream> RelayStream::Start(
    std::shared_ptr<grpc::Channel> channel, Options options,
    FrameHandler on_frame, DoneHandler on_done) {
  auto state = std::make_shared<State>(std::move(options), std::move(on_frame),
                                       std::move(on_done));
  auto* reactor = new Reactor(state);
  reactor->Start(channel);
  return std::unique_ptr<RelayStream>(
      new RelayStream(std::move(channel), std::move(state)));
}

RelayStream::~RelayStream() {
  Cancel();
  if (state_->callback_thread.load() == std::this_thread::get_id()) return;
  while (!WaitDone(absl::Seconds(10))) {
    LOG(WARNING) << "relay stream to " << state_->options.peer
                 << " has not ended 10s after it was cancelled";
  }
}

const std::string& RelayStream::peer() const { return state_->options.peer; }

absl::Duration RelayStream::last_frame_at() const {
  return absl::Nanoseconds(
      state_->last_frame_ns.load(std::memory_order_relaxed));
}

uint64_t RelayStream::frames_read() const {
  return state_->frames_read.load(std::memory_order_relaxed);
}

absl::Duration RelayStream::heartbeat_interval() const {
  return absl::Milliseconds(
      state_->heartbeat_ms.load(std::memory_order_relaxed));
}

absl::Status RelayStream::Write(v1::RelayFrame& frame) {
  State& state = *state_;
  if (frame.has_heartbeat()) {
    frame.mutable_heartbeat()->set_max_batch_bytes(static_cast<uint32_t>(
        std::min<size_t>(state.options.max_batch_bytes, UINT32_MAX)));
  }
  const size_t bytes = frame.ByteSizeLong();
  absl::MutexLock lock(&state.mu);
  if (state.reactor == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("relay stream to ", state.options.peer,
                     " ended: ", state.end.ToString()));
  }
  if (state.broken) {
    return absl::UnavailableError(
        absl::StrCat("relay stream to ", state.options.peer, " broke"));
  }
  if (state.closing) {
    return absl::FailedPreconditionError(
        absl::StrCat("relay stream to ", state.options.peer, " is closing"));
  }
  if (!state.queue.empty() &&
      state.queued_bytes + bytes > state.options.max_queued_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "relay stream to ", state.options.peer, " has ", state.queued_bytes,
        " bytes queued; a frame of ", bytes, " bytes would pass the cap of ",
        state.options.max_queued_bytes));
  }
  state.queue.push_back({std::move(frame), bytes});
  state.queued_bytes += bytes;
  if (!state.writing) state.reactor->WriteFront(state);
  return absl::OkStatus();
}

absl::Status RelayStream::Send(v1::Envelope& envelope) {
  v1::RelayFrame frame;
  frame.mutable_envelope()->Swap(&envelope);
  absl::Status written = Write(frame);
  if (!written.ok()) envelope.Swap(frame.mutable_envelope());
  return written;
}

void RelayStream::Close() {
  State& state = *state_;
  absl::MutexLock lock(&state.mu);
  if (state.closing) return;
  state.closing = true;
  if (state.reactor != nullptr && !state.broken && !state.writing) {
    state.reactor->FinishWrites(state);
  }
}

void RelayStream::Cancel() {
  absl::MutexLock lock(&state_->mu);
  if (state_->reactor != nullptr) state_->reactor->TryCancel();
}

void RelayStream::Shutdown(absl::Duration drain) {
  Close();
  if (WaitDone(drain)) return;
  Cancel();
  while (!WaitDone(absl::Seconds(10))) {
    LOG(WARNING) << "relay stream to " << state_->options.peer
                 << " has not ended 10s after it was cancelled";
  }
}

bool RelayStream::ended() const {
  absl::MutexLock lock(&state_->mu);
  return state_->broken;
}

bool RelayStream::WaitDone(absl::Duration timeout) {
  State& state = *state_;
  absl::MutexLock lock(&state.mu);
  auto done = [&state]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state.mu) {
    return state.done;
  };
  return state.mu.AwaitWithTimeout(absl::Condition(&done), timeout);
}

}  // namespace mesh
