#include "hostd/owner_leases.h"

#include <glog/logging.h>
#include <google/protobuf/util/time_util.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mesh {
namespace {

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
      absl::ToUnixNanos(time));
}

}  // namespace

OwnerLeases::OwnerLeases(Options options, StopProc stop)
    : options_(options), stop_(std::move(stop)) {}

void OwnerLeases::StreamOpened(const std::string& client,
                               const std::string& identity) {
  absl::MutexLock lock(&mu_);
  Client& record = clients_[client];
  if (record.identity.empty()) record.identity = identity;
  ++record.streams;
  if (record.vanished_at.has_value()) {
    int kept = 0;
    for (const auto& [proc, asked] : record.procs) kept += asked ? 0 : 1;
    if (kept > 0) {
      LOG(INFO) << "owner " << client << " (" << record.identity
                << ") is back within its lease: its " << kept
                << " procs stay up";
    }
  }
  record.vanished_at.reset();
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
                  << absl::FormatDuration(options_.lease)
                  << " unless it comes back";
      }
    }
    ForgetIfEmptyLocked(it);
  }
  Check();
}

void OwnerLeases::ProcStarted(const std::string& client,
                              const std::string& identity,
                              const std::string& proc) {
  {
    absl::MutexLock lock(&mu_);
    Client& record = clients_[client];
    if (record.identity.empty()) record.identity = identity;
    record.procs.try_emplace(proc, false);
    // Created before any stream: the lease runs from now.
    if (record.streams == 0 && !record.vanished_at.has_value()) {
      record.vanished_at = options_.clock->Now();
    }
  }
  Check();
}

void OwnerLeases::ProcEnded(const std::string& client,
                            const std::string& proc) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end()) return;
  it->second.procs.erase(proc);
  ForgetIfEmptyLocked(it);
}

void OwnerLeases::ForgetIfEmptyLocked(
    std::map<std::string, Client>::iterator it) {
  if (it->second.streams == 0 && it->second.procs.empty()) clients_.erase(it);
}

std::string OwnerLeases::ReasonLocked(const std::string& id,
                                      const Client& client) const {
  return absl::StrCat("owner ", id, " (", client.identity,
                      ") vanished: no relay stream for ",
                      absl::FormatDuration(options_.lease), " (--owner-lease)");
}

void OwnerLeases::Check() {
  std::vector<std::pair<std::string, std::string>> stops;  // proc, reason
  {
    absl::MutexLock lock(&mu_);
    const absl::Duration now = options_.clock->Now();
    for (auto& [id, client] : clients_) {
      if (!client.vanished_at.has_value() ||
          now - *client.vanished_at < options_.lease) {
        continue;
      }
      std::vector<std::string> names;
      const std::string reason = ReasonLocked(id, client);
      for (auto& [proc, asked] : client.procs) {
        if (asked) continue;
        asked = true;
        names.push_back(proc);
        stops.emplace_back(proc, reason);
      }
      if (!names.empty()) {
        LOG(WARNING) << reason << "; stopping its procs "
                     << absl::StrJoin(names, ", ");
      }
    }
  }
  for (const auto& [proc, reason] : stops) stop_(proc, reason);
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
    for (const auto& [proc, asked] : client.procs) lease.add_procs(proc);
    lease.set_lease_ms(
        static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.lease)));
    if (client.vanished_at.has_value()) {
      const absl::Time vanished = wall_now - (now - *client.vanished_at);
      *lease.mutable_vanished_at() = ToTimestamp(vanished);
      *lease.mutable_expires_at() = ToTimestamp(vanished + options_.lease);
    }
  }
  return leases;
}

}  // namespace mesh
