// The audit trail: one entry per state-changing verb hostd is asked for --
// CreateOrUpdateProc (with its command and args), StopProc, ShutdownHost,
// DrainHost, CreateOrUpdateActor, StopActor, StopAll -- with who asked and
// from where:
//
//   2026-12-03T07:45:47.123456Z identity="ops" role=admin auth="cert"
//   peer="ipv4:10.0.0.7:51234" verb=StopProc proc="p_0" reason="draining"
//
// (one line). Every value a caller chooses is quoted, with `\`, `"` and
// control characters escaped (\n, \r, \t, \xHH) and cut at kMaxValueBytes,
// so a proc name or reason cannot end its field, forge another one, or
// start a line of its own.
//
// The trail is where only Audit() writes (README "Audit"), never grep over
// hostd's general log (which quotes callers' reasons and procs' stderr):
//  - the audit log file (OpenAuditLog; <state-dir>/audit.log by default),
//    each entry one write(2) with O_APPEND, rotated to "<path>.1" past
//    max_bytes, whatever glog's log level;
//  - under systemd ($JOURNAL_STREAM set), also the journal with
//    SYSLOG_IDENTIFIER=hostmesh-audit and HOSTMESH_* fields, stamped by
//    journald with hostd's trusted _PID, _COMM and _EXE.
// The same line, prefixed kAuditPrefix, also goes to glog at INFO, for
// convenience only.
#ifndef HOSTMESH_HOSTD_AUDIT_H_
#define HOSTMESH_HOSTD_AUDIT_H_

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/auth/server_auth.h"

namespace mesh {

inline constexpr char kAuditPrefix[] = "audit: ";
inline constexpr size_t kMaxValueBytes = 512;
// List values (args) show at most this many items.
inline constexpr size_t kMaxListItems = 64;
// The audit log's name in the state dir, and where it is rotated.
inline constexpr char kAuditLogName[] = "audit.log";
inline constexpr size_t kAuditLogMaxBytes = 8 << 20;
// The journal's SYSLOG_IDENTIFIER of audit entries.
inline constexpr char kAuditJournalIdentifier[] = "hostmesh-audit";

// `value` in double quotes, escaped and cut as above.
std::string AuditQuote(absl::string_view value);
// ["a", "b"]: each item quoted; past kMaxListItems, "... (N more)".
template <typename Items>
std::string AuditList(const Items& items) {
  std::string out = "[";
  size_t n = 0;
  for (const auto& item : items) {
    if (n == kMaxListItems) {
      out += ", ... (" + std::to_string(items.size() - n) + " more)";
      break;
    }
    if (n++ > 0) out += ", ";
    out += AuditQuote(item);
  }
  return out + "]";
}

// A field of an audit line: `key` (fixed, from the code) and its value,
// already quoted (AuditQuote, AuditList) unless it is a fixed word.
using AuditFields = std::vector<std::pair<absl::string_view, std::string>>;

// The entry's fields: `identity=... role=... auth=... peer=... verb=...`
// and then `fields`.
std::string AuditRecord(const Principal& caller, absl::string_view peer,
                        absl::string_view verb, const AuditFields& fields);
// kAuditPrefix and AuditRecord: the glog line (without glog's prefix).
std::string AuditLine(const Principal& caller, absl::string_view peer,
                      absl::string_view verb, const AuditFields& fields);
// A line of the audit log: `time` (RFC 3339, UTC, microseconds), a space,
// `record` and a newline.
std::string AuditLogLine(absl::Time time, absl::string_view record);

struct AuditLogOptions {
  // The file; empty: none.
  std::string path;
  // 0600, or 0640 with this group (hostd's --operators-group).
  std::optional<gid_t> group;
  // Past this many bytes the file becomes "<path>.1" (replacing the one
  // before) and a new one starts: at most about twice this is kept.
  size_t max_bytes = kAuditLogMaxBytes;
  // Also send each entry to the journal (sd_journal_send).
  bool journal = false;
};

// --audit-log (hostd/options.h) as a path: "" is <state_dir>/audit.log,
// "none" is no file (""), else the path as given.
std::string AuditLogPath(const std::string& flag, const std::string& state_dir);
// True if stderr goes to the journal ($JOURNAL_STREAM is set).
bool UnderJournal();

// Where Audit() writes from now on (replacing what an earlier call set).
// Call at startup, before any verb is served. Fails (naming the file) if
// the file cannot be opened with its mode and group.
absl::Status OpenAuditLog(const AuditLogOptions& options);
// Stops writing the file and the journal (tests; hostd's exit).
void CloseAuditLog();

// Writes one entry: the audit log and the journal (if open) and glog INFO.
void Audit(const Principal& caller, absl::string_view peer,
           absl::string_view verb, const AuditFields& fields);

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_AUDIT_H_
