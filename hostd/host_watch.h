// HostWatch: WatchHost's fan-out, transport-free.
//
// The publisher (ProcManager) hands it every change under the publisher's
// own lock, so each watcher gets events in the order the changes happened;
// a watcher is added with its snapshot under that same lock, so it misses
// no change and sees none twice. Publishing never blocks and never waits
// for a watcher: each has a bounded queue (Limits), and one that falls
// behind loses its queue and is marked for a RESYNC -- a fresh snapshot,
// taken (Resync, under the publisher's lock again) once it is ready to
// send. At most Limits::max_watchers watchers; more are RESOURCE_EXHAUSTED.
//
// The transport (a gRPC write reactor) drives a Watcher with Take: the next
// thing to send, an end, or nothing yet -- then the watcher is "armed" and
// its Ready callback runs exactly once, when there is something (an event,
// a resync, its end). Ready never runs under HostWatch's lock: Publish
// appends it to the caller's Deferred (run after the publisher's lock is
// released), Remove and Close run it before they return.
//
// Lock order: the publisher's lock, then HostWatch's, then a watcher's.
// Thread-safe.
#ifndef HOSTMESH_HOSTD_HOST_WATCH_H_
#define HOSTMESH_HOSTD_HOST_WATCH_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/resource/status_waiters.h"
#include "proto/host.pb.h"

namespace mesh {

class HostWatch {
 public:
  struct Limits {
    // Watchers at once (WatchHost streams).
    size_t max_watchers = 64;
    // Events queued for one watcher at most, and their bytes (serialized);
    // past either it gets a RESYNC instead.
    size_t max_queue = 1024;
    size_t max_queue_bytes = 4 << 20;
  };

  // Whether a watcher may see (and asked for) a proc.
  using Visible = std::function<bool(const v1::ProcState&)>;

  class Watcher {
   public:
    enum class Next {
      // `event` is the next to send.
      kEvent,
      // The watcher fell behind: call HostWatch's publisher to Resync it,
      // then Take again.
      kResync,
      // Nothing yet: Ready runs once there is something.
      kIdle,
      // The stream ends with `end` (OK once the host closed the watch and
      // every queued event was taken; CANCELLED once removed).
      kEnd,
    };
    // The next thing to send.
    Next Take(v1::HostEvent* event, absl::Status* end);

   private:
    friend class HostWatch;
    Watcher(Visible visible, std::function<void()> ready)
        : visible_(std::move(visible)), ready_(std::move(ready)) {}
    // `event` into the queue, or the overflow; true if the watcher was
    // armed (its Ready is due).
    bool Push(const std::shared_ptr<const v1::HostEvent>& event, size_t bytes,
              const Limits& limits);
    // Ends it (`closed`: once its queue is sent; else at once); true if it
    // was armed.
    bool End(bool closed);

    const Visible visible_;
    const std::function<void()> ready_;
    absl::Mutex mu_;
    // Each event with its bytes (0 for a snapshot or resync: not counted).
    std::deque<std::pair<std::shared_ptr<const v1::HostEvent>, size_t>> queue_
        ABSL_GUARDED_BY(mu_);
    size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
    // Events dropped since the queue was last reset (RESYNC).
    uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
    bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
    bool armed_ ABSL_GUARDED_BY(mu_) = false;
    // Its first message (the snapshot) was taken.
    bool started_ ABSL_GUARDED_BY(mu_) = false;
    // Closed: the queue is sent, then the stream ends OK. Removed: it ends
    // at once, CANCELLED.
    bool closed_ ABSL_GUARDED_BY(mu_) = false;
    bool removed_ ABSL_GUARDED_BY(mu_) = false;
  };

  explicit HostWatch(Limits limits) : limits_(limits) {}
  HostWatch() : HostWatch(Limits()) {}
  HostWatch(const HostWatch&) = delete;
  HostWatch& operator=(const HostWatch&) = delete;

  // Under the publisher's lock: whether anyone watches (events need not be
  // made otherwise).
  bool empty();

  // Under the publisher's lock: adds a watcher whose first message is
  // `snapshot` (kind SNAPSHOT; its procs are filtered by `visible`).
  // RESOURCE_EXHAUSTED past max_watchers, or FAILED_PRECONDITION once the
  // watch is closed.
  absl::StatusOr<std::shared_ptr<Watcher>> Add(v1::HostEvent snapshot,
                                               Visible visible,
                                               std::function<void()> ready);

  // Under the publisher's lock: one change for every watcher that may see
  // it (host events go to all). Sets the event's sequence. Ready callbacks
  // of armed watchers are appended to `deferred`.
  void Publish(v1::HostEvent event, Deferred& deferred);
  // The last sequence handed out (a snapshot taken now includes it).
  uint64_t sequence();

  // Under the publisher's lock, for a watcher that Take said kResync:
  // `snapshot` (taken under that lock) replaces its queue, as a RESYNC
  // with the count of events it missed.
  void Resync(Watcher& watcher, v1::HostEvent snapshot);

  // The watcher's stream is gone (cancelled, done): it gets nothing more,
  // its queue is freed, its slot is free. Idempotent.
  void Remove(Watcher& watcher);

  // The host is going away: every watcher ends once it has sent its queue
  // (OK); later Adds are refused. Not under the publisher's lock.
  void Close();

  size_t watchers();

 private:
  static v1::HostEvent Filtered(const v1::HostEvent& snapshot,
                                const Visible& visible);

  const Limits limits_;
  absl::Mutex mu_;
  std::set<std::shared_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_HOST_WATCH_H_
