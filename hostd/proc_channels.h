// ProcChannels: hostd's end of the local channel to each proc it spawns
// (proto/proc_channel.proto). It replaces a network register-back: for each
// proc about to be spawned, Expect() makes a socketpair, writes the Welcome
// into it, and hands back the end the child inherits; the proc is
// registered when its Hello (with a matching protocol version) arrives.
// Afterwards the channel carries everything between the proc and the world:
// the stop request, the relayed actor verbs (Request), and mailbox traffic
// (SendEnvelope in; envelopes the proc sends go to the EnvelopeSink).
//
// Threads: one FrameChannel thread per proc reads its frames and runs that
// proc's callbacks, one at a time; request deadlines run on an own
// EventLoop. Every call is thread-safe and never blocks on a proc (a proc
// that does not read fills its channel's bounded queue, then sends fail with
// RESOURCE_EXHAUSTED).
//
// Promises: per child, on_registered runs at most once and before
// on_disconnected, which runs at most once; every Request's callback runs
// exactly once (the response, DEADLINE_EXCEEDED at its deadline, CANCELLED
// by Cancel, UNAVAILABLE when the proc's channel closes or on destruction).
//
// Lifetime: Start() before the first Expect(). The destructor closes every
// channel (joining their threads) and answers every pending request; it must
// not run from a callback.
#ifndef HOSTMESH_HOSTD_PROC_CHANNELS_H_
#define HOSTMESH_HOSTD_PROC_CHANNELS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/channel/proc_channel.h"
#include "lib/event/event_loop.h"
#include "proto/proc_channel.pb.h"

namespace mesh {

class ProcChannels {
 public:
  struct Options {
    // How long a proc whose channel broke lives on (sent in the Welcome).
    absl::Duration orphan_timeout = absl::Seconds(30);
    // Largest frame either way.
    size_t max_frame_bytes = 64 << 20;
    // Bytes queued for a proc that is not reading before sends to it are
    // RESOURCE_EXHAUSTED.
    size_t max_pending_bytes = 64 << 20;
    // After a registered proc's process is gone (Forget), how long its
    // channel may take to deliver its last frames and EOF before it is cut.
    absl::Duration drain_timeout = absl::Seconds(2);
  };

  struct ChildCallbacks {
    // The proc said Hello with our protocol version: it is up.
    std::function<void(pid_t pid)> on_registered;
    // The proc's Hello was refused (e.g. another protocol version); it has
    // been told why and its channel is closed.
    std::function<void(const std::string& why)> on_refused;
    // The channel closed (the proc exited, was killed, or closed it).
    std::function<void()> on_disconnected;
  };

  // An expected child: `child_fd` is the socket end it inherits as
  // kChannelChildFd (the caller closes it after spawning).
  struct Ticket {
    uint64_t id = 0;
    int child_fd = -1;
  };

  // Envelopes a registered proc sends (to anywhere), in the order sent.
  using EnvelopeSink =
      std::function<void(const std::string& proc, v1::Envelope)>;
  using ResponseCallback =
      std::function<void(absl::StatusOr<v1::ProcResponse>)>;

  explicit ProcChannels(Options options);
  ~ProcChannels();
  ProcChannels(const ProcChannels&) = delete;
  ProcChannels& operator=(const ProcChannels&) = delete;

  // `host_address`: this hostd's advertised host:port (the procs' host).
  void Start(std::string host_address, EnvelopeSink on_envelope);

  absl::StatusOr<Ticket> Expect(const std::string& name, uint64_t rank,
                                ChildCallbacks callbacks);
  // Forgets child `id` (its process is gone): no ChildCallbacks of it start
  // after Forget returns (one already running may finish). A registered
  // child's channel first delivers what the proc sent before it went (its
  // last replies) and then closes as usual (pending requests answered); it
  // is cut after Options.drain_timeout. `on_drained` (optional) runs once
  // that is done: at once on this thread if the channel is closed already
  // (or the child never registered), else on the channel's or the
  // deadline's thread. It does not run if the ProcChannels is destroyed
  // first. The caller reports the proc gone from there, after its last
  // replies.
  void Forget(uint64_t id, std::function<void()> on_drained = nullptr);
  // Asks a registered child to stop gracefully. FAILED_PRECONDITION if it
  // has not registered or its channel is closed; NOT_FOUND if unknown.
  absl::Status SendStop(uint64_t id, const std::string& reason,
                        absl::Duration grace);

  // Delivers `envelope` (moved from on success) to the registered proc
  // `proc`. NOT_FOUND if no such proc is registered here; UNAVAILABLE if
  // its channel closed; RESOURCE_EXHAUSTED if it is not reading.
  absl::Status SendEnvelope(const std::string& proc, v1::Envelope& envelope);

  // Relays an actor verb to registered proc `proc`; `done` runs exactly once
  // (see the class comment), possibly before Request returns. Returns the
  // request id (for Cancel).
  uint64_t Request(const std::string& proc, v1::ProcRequest request,
                   absl::Time deadline, ResponseCallback done);
  // The caller is gone: answers request `id` with CANCELLED (if still
  // pending) and tells the proc to drop it.
  void Cancel(uint64_t id);

 private:
  struct Child;
  struct Pending {
    std::string proc;
    ResponseCallback done;
    EventLoop::TimerId timer = 0;
  };

  void OnFrame(uint64_t id, std::string_view frame);
  // Tells `proc` to drop request `id` (best effort).
  void SendCancel(const std::string& proc, uint64_t id);
  void OnClosed(uint64_t id, const absl::Status& status);
  void OnHello(uint64_t id, const v1::Hello& hello);
  void OnResponse(v1::ProcResponse response);
  // Removes and returns the pending requests of `proc`.
  std::vector<ResponseCallback> TakePendingLocked(const std::string& proc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(uint64_t request_id, absl::StatusOr<v1::ProcResponse> result);

  const Options options_;
  std::unique_ptr<EventLoop> loop_;

  absl::Mutex mu_;
  std::string host_address_ ABSL_GUARDED_BY(mu_);
  EnvelopeSink on_envelope_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<Child>> children_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Registered procs by name (the current incarnation).
  absl::flat_hash_map<std::string, std::shared_ptr<Child>> by_name_
      ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_ ABSL_GUARDED_BY(mu_) = 1;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_PROC_CHANNELS_H_
