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
// same client id opens first, which re-owns its procs. Once it runs out,
// Check() stops each of its live procs once through `stop`, with the reason
// `owner client:<id> (<identity>) vanished: no relay stream for <lease>
// (--owner-lease)`. Procs without a client (detached) are never told here.
// A client's record goes once it has no live proc and no stream, so memory
// is bounded by the live procs and open streams.
//
// Times come from a MonotonicClock (lib/relay/clock.h; a FakeClock in
// tests). Thread-safe; `stop` is called without the lock, on the thread of
// the call that found the lease run out (Check, or StreamEnded/ProcStarted
// with a zero lease), and must not block.
#ifndef HOSTMESH_HOSTD_OWNER_LEASES_H_
#define HOSTMESH_HOSTD_OWNER_LEASES_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/relay/clock.h"
#include "proto/host.pb.h"

namespace mesh {

class OwnerLeases {
 public:
  struct Options {
    // How long a vanished client's procs live on (hostd --owner-lease).
    absl::Duration lease = absl::Seconds(60);
    const MonotonicClock* clock = &MonotonicClock::Real();
  };
  // Stops proc `proc` (ProcManager::Stop, stopped_by "lease").
  using StopProc =
      std::function<void(const std::string& proc, const std::string& reason)>;

  OwnerLeases(Options options, StopProc stop);
  OwnerLeases(const OwnerLeases&) = delete;
  OwnerLeases& operator=(const OwnerLeases&) = delete;

  // A relay stream of `client` (belonging to `identity`) opened / ended.
  void StreamOpened(const std::string& client, const std::string& identity);
  void StreamEnded(const std::string& client);
  // Proc `proc`, leased to `client` (of `identity`), was created / ended
  // (reached STOPPED or FAILED).
  void ProcStarted(const std::string& client, const std::string& identity,
                   const std::string& proc);
  void ProcEnded(const std::string& client, const std::string& proc);

  // Stops the live procs of every client whose lease has run out (each proc
  // once).
  void Check();

  // Every client that holds procs or has a stream, by id; only those of
  // `identity` if set.
  std::vector<v1::OwnerLease> List(
      const std::optional<std::string>& identity = std::nullopt);

  absl::Duration lease() const { return options_.lease; }

 private:
  struct Client {
    std::string identity;
    int streams = 0;
    // Live procs; true once asked to stop.
    std::map<std::string, bool> procs;
    // Set while it has no stream.
    std::optional<absl::Duration> vanished_at;
  };

  // Drops `it` if it holds nothing any more.
  void ForgetIfEmptyLocked(std::map<std::string, Client>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string ReasonLocked(const std::string& id, const Client& client) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const StopProc stop_;
  absl::Mutex mu_;
  std::map<std::string, Client> clients_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_OWNER_LEASES_H_
