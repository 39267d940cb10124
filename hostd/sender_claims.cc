#include "hostd/sender_claims.h"

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

absl::Status SenderClaims::Claim(const std::string& id,
                                 const std::string& identity,
                                 absl::string_view what) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = claims_.try_emplace(id, identity);
  if (!inserted) {
    if (it->second == identity) return absl::OkStatus();
    return absl::PermissionDeniedError(absl::StrCat(
        what, " ", QuoteForError(id), " belongs to another identity than ",
        identity, " (the first that used it)"));
  }
  order_.push_back(id);
  if (order_.size() > kMaxClaims) {
    claims_.erase(order_.front());
    order_.pop_front();
  }
  return absl::OkStatus();
}

}  // namespace mesh
