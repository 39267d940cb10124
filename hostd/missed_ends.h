// MissedEnds: the proc ends a client has not heard of, so that a client
// that comes back (a new relay stream of its id) hears what ended while it
// was away: once, and only what it missed.
//
// Every end the proc manager reports (its on_lost hook) goes through
// Report, which delivers it (`deliver`: Router::ProcLost, to the owner's,
// admins' and peers' streams) and, for a proc leased to a client
// (ProcState.client), keeps it for that client unless a stream of the
// client is routed at that moment (the router then queued it there). A
// stream of the client, once the router has it, takes what was kept
// (StreamRouted) and replays it first. Delivery and the "is a stream of it
// routed" check happen under one lock, so no end is both missed by the
// router and not kept; one may reach a stream that opens at that moment
// twice (the client drops what it knew). Streams must be routed before
// StreamRouted and stay routed until after StreamEnded.
//
// Only a stream of the identity the procs belonged to (their owner) gets
// what was kept; one of another identity (the id changed hands) drops it.
//
// Bounded: at most `max_per_client` ends per client and `max_kept` in all;
// past either the oldest go, counted in a warning (when the client comes
// back, or when all it missed went).
//
// Thread-safe. `deliver` is called under the lock and must not call back
// in. Lock order: this, then whatever `deliver` takes (the router's, the
// proc manager's through the router's owner lookup, the streams').
#ifndef HOSTMESH_HOSTD_MISSED_ENDS_H_
#define HOSTMESH_HOSTD_MISSED_ENDS_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "proto/mailbox.pb.h"

namespace mesh {

class MissedEnds {
 public:
  static constexpr size_t kMaxPerClient = 1024;
  static constexpr size_t kMaxKept = 16384;

  using Deliver = std::function<void(const v1::ProcExit&)>;

  explicit MissedEnds(Deliver deliver, size_t max_per_client = kMaxPerClient,
                      size_t max_kept = kMaxKept);
  MissedEnds(const MissedEnds&) = delete;
  MissedEnds& operator=(const MissedEnds&) = delete;

  // Proc `exit.proc` ended; it was leased to `client` ("" : detached) and
  // belonged to `identity`. Delivers it, and keeps it if `client` has no
  // routed stream.
  void Report(const std::string& client, const std::string& identity,
              const v1::ProcExit& exit);
  // A stream of `client` (of `identity`) is in the router: later ends are
  // delivered to it. Returns what the client missed, oldest first, and
  // forgets it.
  std::vector<v1::ProcExit> StreamRouted(const std::string& client,
                                         const std::string& identity);
  // A stream for which StreamRouted was called is leaving the router.
  void StreamEnded(const std::string& client);

  // From now on Report delivers and keeps nothing; returns once no
  // delivery runs. Call before what `deliver` uses goes.
  void Close();

  // Ends kept, in all.
  size_t kept();

 private:
  struct Missed {
    std::string identity;
    // Its ends in kept_, oldest first.
    std::deque<uint64_t> ends;
    // How many of its ends were dropped for the bounds.
    uint64_t dropped = 0;
  };
  struct Kept {
    std::string client;
    v1::ProcExit exit;
  };

  // Drops the oldest end of `client` (its record `missed`).
  void DropOldestLocked(const std::string& client, Missed& missed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Deliver deliver_;
  const size_t max_per_client_;
  const size_t max_kept_;
  absl::Mutex mu_;
  // Routed streams of each client that has any.
  absl::flat_hash_map<std::string, int> routed_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Missed> missed_ ABSL_GUARDED_BY(mu_);
  // Every end kept, by when it was reported (oldest first).
  std::map<uint64_t, Kept> kept_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 1;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_MISSED_ENDS_H_
