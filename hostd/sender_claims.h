// SenderClaims: which identity a relay id ("client:<id>", "host:<addr>")
// belongs to. An id belongs to the first identity that used it, to open a
// relay stream (RelayService) or to hold procs (CreateOrUpdateProcRequest
// .client, HostService); another identity using it is PERMISSION_DENIED, so
// no caller takes over a client's replies, its procs' lease or what it
// missed while it reconnects.
//
// Pins: an id in use is pinned -- by each live relay stream of it
// (RelayService), by its owner lease record while it has one
// (OwnerLeases), and by a CreateOrUpdateProc naming it while that runs
// (HostService) -- and is never forgotten while pinned. At most kMaxClaims
// ids are remembered: a new one makes room by forgetting the unpinned id
// used longest ago; if every id is pinned, the new one is
// RESOURCE_EXHAUSTED. So churning fresh ids cannot free (and then steal) an
// id in use. Thread-safe; calls nothing outside.
#ifndef HOSTMESH_HOSTD_SENDER_CLAIMS_H_
#define HOSTMESH_HOSTD_SENDER_CLAIMS_H_

#include <cstddef>
#include <list>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace mesh {

inline constexpr size_t kMaxSenderBytes = 300;

// OK if `id` is "client:<id>" (or, with `host_too`, "host:<host:port>") of
// at most kMaxSenderBytes printable ASCII characters without spaces, with a
// non-empty id; otherwise INVALID_ARGUMENT naming `what` and the forms.
absl::Status ValidateSenderId(absl::string_view id, absl::string_view what,
                              bool host_too);

class SenderClaims {
 public:
  static constexpr size_t kMaxClaims = 65536;

  // `max_claims`: ids remembered at most (tests use a small one).
  explicit SenderClaims(size_t max_claims = kMaxClaims);
  SenderClaims(const SenderClaims&) = delete;
  SenderClaims& operator=(const SenderClaims&) = delete;

  // OK if `id` is unclaimed (it becomes `identity`'s) or already
  // `identity`'s; with `pin`, it is then also pinned once (undo with one
  // Unpin). PERMISSION_DENIED naming `what` (e.g. "relay sender") if it is
  // another identity's; RESOURCE_EXHAUSTED if it is new and every
  // remembered id is pinned.
  absl::Status Claim(const std::string& id, const std::string& identity,
                     absl::string_view what, bool pin = false);
  // Undoes one pin of a Claim(..., pin=true) that returned OK.
  void Unpin(const std::string& id);

  // For tests and logs.
  size_t size();
  bool pinned(const std::string& id);

 private:
  struct Entry {
    std::string identity;
    int pins = 0;
    // Its place in unpinned_ while pins == 0.
    std::list<std::string>::iterator unpinned;
  };

  const size_t max_claims_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> claims_ ABSL_GUARDED_BY(mu_);
  // The unpinned ids, used longest ago first: the ones that may go.
  std::list<std::string> unpinned_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_SENDER_CLAIMS_H_
