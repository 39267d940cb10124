// OwnerLeases: which client keeps which procs of this host alive, and
// stopping them once that client is gone. Transport-free: the relay service
// says when a client's relay stream opens and ends, the proc manager when a
// leased proc starts and ends, and Check() (run every tick of the relay
// service's heartbeat thread) stops what is due.
//
// Per client id ("client:<hex>", its relay id): the identity it belongs to,
// its open relay streams and its live procs. A client with no stream (its
// last one ended, or it created a proc before opening one) has vanished:
// its lease runs out `lease` later (zero: at once) unless a stream of the
// same client id opens first, which re-owns its procs. A client that has
// not had a stream here yet gets max(lease, kFirstStreamGrace) for its
// first one: a client opens its streams asynchronously, so its first
// CreateOrUpdateProc may come before its stream, and a short (or zero)
// lease must not stop its procs as they are created. Once the lease runs
// out, Check() stops each of its live procs once through `stop`, with the
// reason `owner client:<id> (<identity>) vanished: no relay stream for
// <lease> (--owner-lease)`. Procs without a client (detached) are never
// told here. A client's record goes once it has no live proc and no
// stream, so memory is bounded by the live procs and open streams.
//
// A client id is one identity's: a stream or proc of the id under another
// identity than its record's is refused (PERMISSION_DENIED), and while it
// has a record its claim is pinned in `claims` (hostd/sender_claims.h), so
// it is not forgotten and taken by another identity.
//
// A name may be created again once its proc ended, and the hooks of two
// incarnations may arrive out of order (the end of the old one after the
// start of the new one): each proc is held with its incarnation, a start
// of an older incarnation than the one held changes nothing, and an end
// forgets the proc only if it is of the incarnation held.
//
// Times come from a MonotonicClock (lib/time/clock.h; a FakeClock in
// tests). Thread-safe; `stop` is called without the lock, on the thread of
// the call that found the lease run out (Check, or StreamEnded/ProcStarted
// with a zero lease), and must not block. Lock order: this, then `claims`.
#ifndef HOSTMESH_HOSTD_OWNER_LEASES_H_
#define HOSTMESH_HOSTD_OWNER_LEASES_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostd/sender_claims.h"
#include "lib/time/clock.h"
#include "proto/host.pb.h"

namespace mesh {

class OwnerLeases {
 public:
  // The least a client gets for its first stream (see the class comment).
  static constexpr absl::Duration kFirstStreamGrace = absl::Seconds(5);

  struct Options {
    // How long a vanished client's procs live on (hostd --owner-lease).
    absl::Duration lease = absl::Seconds(60);
    const MonotonicClock* clock = &MonotonicClock::Real();
    // Where each client's id is pinned while it has a record; null: none.
    SenderClaims* claims = nullptr;
  };
  // Stops incarnation `incarnation` of proc `proc` (ProcManager::Stop,
  // stopped_by "lease"); a later incarnation of the name is not touched.
  using StopProc =
      std::function<void(const std::string& proc, uint64_t incarnation,
                         const std::string& reason)>;

  OwnerLeases(Options options, StopProc stop);
  ~OwnerLeases();
  OwnerLeases(const OwnerLeases&) = delete;
  OwnerLeases& operator=(const OwnerLeases&) = delete;

  // A relay stream of `client` (belonging to `identity`) opened / ended.
  // PERMISSION_DENIED if the client's record is another identity's (the
  // stream is then not counted and must be refused), or the error of
  // pinning its claim.
  absl::Status StreamOpened(const std::string& client,
                            const std::string& identity);
  // Only for a stream whose StreamOpened returned OK.
  void StreamEnded(const std::string& client);

  // OK if `identity` may hold procs leased to `client` (ProcStarted would
  // accept them): PERMISSION_DENIED if the record is another identity's.
  absl::Status MayHold(const std::string& client, const std::string& identity);
  // Incarnation `incarnation` of proc `proc`, leased to `client` (of
  // `identity`), was created / ended (reached STOPPED or FAILED). A refused
  // start (as StreamOpened) leaves the proc unleased: the caller stops it.
  absl::Status ProcStarted(const std::string& client,
                           const std::string& identity, const std::string& proc,
                           uint64_t incarnation);
  void ProcEnded(const std::string& client, const std::string& proc,
                 uint64_t incarnation);

  // Stops the live procs of every client whose lease has run out (each proc
  // once).
  void Check();

  // Every client that holds procs or has a stream, by id; only those of
  // `identity` if set.
  std::vector<v1::OwnerLease> List(
      const std::optional<std::string>& identity = std::nullopt);

  absl::Duration lease() const { return options_.lease; }

 private:
  struct Held {
    uint64_t incarnation = 0;
    // Asked to stop (by Check) already.
    bool asked = false;
  };
  struct Client {
    std::string identity;
    int streams = 0;
    // It has had a stream since the record was made.
    bool streamed = false;
    // Its live procs, by name.
    std::map<std::string, Held> procs;
    // Set while it has no stream.
    std::optional<absl::Duration> vanished_at;
    // Its claim is pinned (once) in options_.claims.
    bool pinned = false;
  };
  using Clients = std::map<std::string, Client>;

  // The record of `client` for `identity`, made (and its claim pinned) if
  // there is none; PERMISSION_DENIED if it is another identity's.
  absl::StatusOr<Clients::iterator> RecordLocked(const std::string& client,
                                                 const std::string& identity)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops `it` if it holds nothing any more.
  void ForgetIfEmptyLocked(Clients::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // How long `client` may have no stream (see the class comment).
  absl::Duration LeaseOf(const Client& client) const;
  std::string ReasonLocked(const std::string& id, const Client& client) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const StopProc stop_;
  absl::Mutex mu_;
  Clients clients_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_OWNER_LEASES_H_
