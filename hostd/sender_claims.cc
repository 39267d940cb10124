#include "hostd/sender_claims.h"

#include <glog/logging.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/mailbox/mailbox.h"
#include "lib/names.h"

namespace mesh {

absl::Status ValidateSenderId(absl::string_view id, absl::string_view what,
                              bool host_too) {
  const bool known = absl::StartsWith(id, kClientMailboxPrefix) ||
                     (host_too && absl::StartsWith(id, "host:"));
  const size_t colon = id.find(':');
  if (!known || id.size() > kMaxSenderBytes || colon + 1 >= id.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be \"client:<id>\"",
                     host_too ? " or \"host:<host:port>\"" : "", " (at most ",
                     kMaxSenderBytes, " characters), not ", QuoteForError(id)));
  }
  for (char c : id) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must be printable ASCII without spaces, not ",
                       QuoteForError(id)));
    }
  }
  return absl::OkStatus();
}

SenderClaims::SenderClaims(size_t max_claims) : max_claims_(max_claims) {}

absl::Status SenderClaims::Claim(const std::string& id,
                                 const std::string& identity,
                                 absl::string_view what, bool pin) {
  absl::MutexLock lock(&mu_);
  auto it = claims_.find(id);
  if (it != claims_.end()) {
    Entry& entry = it->second;
    if (entry.identity != identity) {
      return absl::PermissionDeniedError(absl::StrCat(
          what, " ", QuoteForError(id), " belongs to another identity than ",
          identity, " (the first that used it)"));
    }
    if (entry.pins == 0) {
      // Used again: the last of the unpinned ones to go.
      unpinned_.splice(unpinned_.end(), unpinned_, entry.unpinned);
    }
  } else {
    if (claims_.size() >= max_claims_) {
      if (unpinned_.empty()) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "hostd remembers ", claims_.size(),
            " relay ids, each in use by a live relay stream or procs; ", what,
            " ", QuoteForError(id), " not claimed (try again later)"));
      }
      claims_.erase(unpinned_.front());
      unpinned_.pop_front();
    }
    it = claims_.try_emplace(id, Entry{identity}).first;
    it->second.unpinned = unpinned_.insert(unpinned_.end(), id);
  }
  if (pin && it->second.pins++ == 0) unpinned_.erase(it->second.unpinned);
  return absl::OkStatus();
}

void SenderClaims::Unpin(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = claims_.find(id);
  if (it == claims_.end() || it->second.pins == 0) {
    LOG(DFATAL) << "Unpin of " << QuoteForError(id) << ", which is not pinned";
    return;
  }
  if (--it->second.pins == 0) {
    it->second.unpinned = unpinned_.insert(unpinned_.end(), id);
  }
}

size_t SenderClaims::size() {
  absl::MutexLock lock(&mu_);
  return claims_.size();
}

bool SenderClaims::pinned(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = claims_.find(id);
  return it != claims_.end() && it->second.pins > 0;
}

}  // namespace mesh
