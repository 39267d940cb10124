// SenderClaims: which identity a relay id ("client:<id>", "host:<addr>")
// belongs to. An id belongs to the first identity that used it, to open a
// relay stream (RelayService) or to hold procs (CreateOrUpdateProcRequest
// .client, HostService); another identity using it is PERMISSION_DENIED, so
// no caller takes over a client's replies or its procs' lease while it
// reconnects. The last kMaxClaims ids are remembered (bounded memory).
// Thread-safe.
#ifndef HOSTMESH_HOSTD_SENDER_CLAIMS_H_
#define HOSTMESH_HOSTD_SENDER_CLAIMS_H_

#include <cstddef>
#include <deque>
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

  // OK if `id` is unclaimed (it becomes `identity`'s) or already
  // `identity`'s; PERMISSION_DENIED naming `what` (e.g. "relay sender")
  // otherwise.
  absl::Status Claim(const std::string& id, const std::string& identity,
                     absl::string_view what);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> claims_ ABSL_GUARDED_BY(mu_);
  // Oldest first, for forgetting past kMaxClaims.
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_SENDER_CLAIMS_H_
