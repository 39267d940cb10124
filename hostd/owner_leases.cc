#include "hostd/owner_leases.h"

#include <glog/logging.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/names.h"

namespace mesh {
namespace {

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
      absl::ToUnixNanos(time));
}

// The other identity is not named: it is not the caller's business.
absl::Status NotTheirs(const std::string& client, const std::string& identity) {
  return absl::PermissionDeniedError(absl::StrCat(
      "client ", QuoteForError(client), " belongs to another identity than ",
      identity, " (whose lease it holds here)"));
}

}  // namespace

OwnerLeases::OwnerLeases(Options options, StopProc stop)
    : options_(options), stop_(std::move(stop)) {}

OwnerLeases::~OwnerLeases() {
  absl::MutexLock lock(&mu_);
  if (options_.claims == nullptr) return;
  for (const auto& [id, client] : clients_) {
    if (client.pinned) options_.claims->Unpin(id);
  }
}

absl::StatusOr<OwnerLeases::Clients::iterator> OwnerLeases::RecordLocked(
    const std::string& client, const std::string& identity) {
  auto it = clients_.find(client);
  if (it != clients_.end()) {
    if (it->second.identity != identity) {
      return NotTheirs(client, identity);
    }
    return it;
  }
  if (options_.claims != nullptr) {
    absl::Status pinned =
        options_.claims->Claim(client, identity, "client", /*pin=*/true);
    if (!pinned.ok()) return pinned;
  }
  it = clients_.try_emplace(client).first;
  it->second.identity = identity;
  it->second.pinned = options_.claims != nullptr;
  return it;
}

absl::Status OwnerLeases::StreamOpened(const std::string& client,
                                       const std::string& identity) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Clients::iterator> it = RecordLocked(client, identity);
  if (!it.ok()) {
    LOG(WARNING) << "relay stream of " << client
                 << " refused: " << it.status().message();
    return it.status();
  }
  Client& record = (*it)->second;
  ++record.streams;
  record.streamed = true;
  if (record.vanished_at.has_value()) {
    int kept = 0;
    for (const auto& [proc, held] : record.procs) kept += held.asked ? 0 : 1;
    if (kept > 0) {
      LOG(INFO) << "owner " << client << " (" << record.identity
                << ") is back within its lease: its " << kept
                << " procs stay up";
    }
  }
  record.vanished_at.reset();
  return absl::OkStatus();
}

void OwnerLeases::StreamEnded(const std::string& client) {
  {
    absl::MutexLock lock(&mu_);
    auto it = clients_.find(client);
    if (it == clients_.end() || it->second.streams == 0) return;
    Client& record = it->second;
    if (--record.streams == 0) {
      record.vanished_at = options_.clock->Now();
      if (!record.procs.empty()) {
        LOG(INFO) << "owner " << client << " (" << record.identity
                  << ") has no relay stream: its " << record.procs.size()
                  << " procs are stopped in "
                  << absl::FormatDuration(LeaseOf(record))
                  << " unless it comes back";
      }
    }
    ForgetIfEmptyLocked(it);
  }
  Check();
}

absl::Status OwnerLeases::MayHold(const std::string& client,
                                  const std::string& identity) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end() || it->second.identity == identity) {
    return absl::OkStatus();
  }
  return NotTheirs(client, identity);
}

absl::Status OwnerLeases::ProcStarted(const std::string& client,
                                      const std::string& identity,
                                      const std::string& proc,
                                      uint64_t incarnation) {
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Clients::iterator> it = RecordLocked(client, identity);
    if (!it.ok()) return it.status();
    Client& record = (*it)->second;
    auto [held, inserted] = record.procs.try_emplace(proc);
    // A start of an older incarnation than the one held is stale.
    if (inserted || held->second.incarnation < incarnation) {
      held->second = Held{incarnation, /*asked=*/false};
    }
    // Created before any stream: the lease runs from now.
    if (record.streams == 0 && !record.vanished_at.has_value()) {
      record.vanished_at = options_.clock->Now();
    }
  }
  Check();
  return absl::OkStatus();
}

void OwnerLeases::ProcEnded(const std::string& client, const std::string& proc,
                            uint64_t incarnation) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end()) return;
  auto held = it->second.procs.find(proc);
  // Only the incarnation held: a later one started already stays leased.
  if (held == it->second.procs.end() ||
      held->second.incarnation != incarnation) {
    return;
  }
  it->second.procs.erase(held);
  ForgetIfEmptyLocked(it);
}

void OwnerLeases::ForgetIfEmptyLocked(Clients::iterator it) {
  if (it->second.streams != 0 || !it->second.procs.empty()) return;
  if (it->second.pinned) options_.claims->Unpin(it->first);
  clients_.erase(it);
}

absl::Duration OwnerLeases::LeaseOf(const Client& client) const {
  return client.streamed ? options_.lease
                         : std::max(options_.lease, kFirstStreamGrace);
}

std::string OwnerLeases::ReasonLocked(const std::string& id,
                                      const Client& client) const {
  const absl::Duration lease = LeaseOf(client);
  return absl::StrCat(
      "owner ", id, " (", client.identity, ") vanished: no relay stream for ",
      absl::FormatDuration(lease), " (--owner-lease",
      lease == options_.lease
          ? ")"
          : absl::StrCat(" ", absl::FormatDuration(options_.lease),
                         ", at least ", absl::FormatDuration(kFirstStreamGrace),
                         " for a client's first stream)"));
}

void OwnerLeases::Check() {
  // proc, incarnation, reason
  std::vector<std::tuple<std::string, uint64_t, std::string>> stops;
  {
    absl::MutexLock lock(&mu_);
    const absl::Duration now = options_.clock->Now();
    for (auto& [id, client] : clients_) {
      if (!client.vanished_at.has_value() ||
          now - *client.vanished_at < LeaseOf(client)) {
        continue;
      }
      std::vector<std::string> names;
      const std::string reason = ReasonLocked(id, client);
      for (auto& [proc, held] : client.procs) {
        if (held.asked) continue;
        held.asked = true;
        names.push_back(proc);
        stops.emplace_back(proc, held.incarnation, reason);
      }
      if (!names.empty()) {
        LOG(WARNING) << reason << "; stopping its procs "
                     << absl::StrJoin(names, ", ");
      }
    }
  }
  for (const auto& [proc, incarnation, reason] : stops) {
    stop_(proc, incarnation, reason);
  }
}

std::vector<v1::OwnerLease> OwnerLeases::List(
    const std::optional<std::string>& identity) {
  std::vector<v1::OwnerLease> leases;
  const absl::Time wall_now = absl::Now();
  absl::MutexLock lock(&mu_);
  const absl::Duration now = options_.clock->Now();
  for (const auto& [id, client] : clients_) {
    if (identity.has_value() && client.identity != *identity) continue;
    v1::OwnerLease& lease = leases.emplace_back();
    lease.set_client(id);
    lease.set_identity(client.identity);
    lease.set_connected(client.streams > 0);
    for (const auto& [proc, held] : client.procs) lease.add_procs(proc);
    const absl::Duration applies = LeaseOf(client);
    lease.set_lease_ms(
        static_cast<uint32_t>(absl::ToInt64Milliseconds(applies)));
    if (client.vanished_at.has_value()) {
      const absl::Time vanished = wall_now - (now - *client.vanished_at);
      *lease.mutable_vanished_at() = ToTimestamp(vanished);
      *lease.mutable_expires_at() = ToTimestamp(vanished + applies);
    }
  }
  return leases;
}

}  // namespace mesh
