#include "hostd/audit.h"

#include <glog/logging.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "absl/base/attributes.h"
#include "absl/base/const_init.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "procd/procd_log.h"

namespace mesh {
namespace {

// Where Audit() writes (OpenAuditLog). The file rotates itself
// (ProcdLogFile, procd/procd_log.h: one write(2) per line, "<path>.1").
ABSL_CONST_INIT absl::Mutex audit_mu(absl::kConstInit);
ProcdLogFile* audit_file ABSL_GUARDED_BY(audit_mu) = nullptr;
bool audit_journal ABSL_GUARDED_BY(audit_mu) = false;

// One entry to the journal: MESSAGE (the record), SYSLOG_IDENTIFIER
// hostmesh-audit and a HOSTMESH_<KEY> field each. Values are sent as bytes
// (sd_journal_sendv serializes newlines safely), unquoted where hostd has
// them raw; journald adds the trusted _PID, _UID, _COMM, _EXE.
void SendToJournal(const Principal& caller, absl::string_view peer,
                   absl::string_view verb, const AuditFields& fields,
                   absl::string_view record) {
  std::vector<std::string> items = {
      absl::StrCat("MESSAGE=", record),
      absl::StrCat("SYSLOG_IDENTIFIER=", kAuditJournalIdentifier),
      "PRIORITY=5",  // notice
      absl::StrCat("HOSTMESH_VERB=", verb),
      absl::StrCat("HOSTMESH_IDENTITY=", caller.identity),
      absl::StrCat("HOSTMESH_ROLE=", RoleName(caller.role)),
      absl::StrCat("HOSTMESH_AUTH=", caller.method),
      absl::StrCat("HOSTMESH_PEER=", peer),
  };
  for (const auto& [key, value] : fields) {
    items.push_back(
        absl::StrCat("HOSTMESH_", absl::AsciiStrToUpper(key), "=", value));
  }
  std::vector<iovec> vectors;
  vectors.reserve(items.size());
  for (std::string& item : items) {
    vectors.push_back({item.data(), item.size()});
  }
  const int sent =
      sd_journal_sendv(vectors.data(), static_cast<int>(vectors.size()));
  LOG_IF(WARNING, sent < 0) << "cannot send an audit entry to the journal: "
                            << absl::StrFormat("errno %d", -sent);
}

}  // namespace

std::string AuditQuote(absl::string_view value) {
  const bool cut = value.size() > kMaxValueBytes;
  if (cut) value = value.substr(0, kMaxValueBytes);
  std::string out = "\"";
  for (unsigned char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += cut ? "...\"" : "\"";
  return out;
}

std::string AuditRecord(const Principal& caller, absl::string_view peer,
                        absl::string_view verb, const AuditFields& fields) {
  std::string line = absl::StrCat("identity=", AuditQuote(caller.identity),
                                  " role=", RoleName(caller.role),
                                  " auth=", AuditQuote(caller.method),
                                  " peer=", AuditQuote(peer), " verb=", verb);
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&line, " ", key, "=", value);
  }
  return line;
}

std::string AuditLine(const Principal& caller, absl::string_view peer,
                      absl::string_view verb, const AuditFields& fields) {
  return absl::StrCat(kAuditPrefix, AuditRecord(caller, peer, verb, fields));
}

std::string AuditLogLine(absl::Time time, absl::string_view record) {
  return absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", time, absl::UTCTimeZone()), " ",
      record, "\n");
}

std::string AuditLogPath(const std::string& flag,
                         const std::string& state_dir) {
  if (flag == "none") return "";
  if (!flag.empty()) return flag;
  return (std::filesystem::path(state_dir) / kAuditLogName).string();
}

bool UnderJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  return stream != nullptr && *stream != '\0';
}

absl::Status OpenAuditLog(const AuditLogOptions& options) {
  std::unique_ptr<ProcdLogFile> file;
  if (!options.path.empty()) {
    absl::StatusOr<std::unique_ptr<ProcdLogFile>> opened = ProcdLogFile::Open(
        options.path, options.max_bytes,
        options.group.has_value() ? 0640 : 0600, options.group);
    if (!opened.ok()) {
      return absl::Status(
          opened.status().code(),
          absl::StrCat("audit log: ", opened.status().message()));
    }
    file = *std::move(opened);
  }
  absl::MutexLock lock(&audit_mu);
  delete audit_file;
  audit_file = file.release();
  audit_journal = options.journal;
  return absl::OkStatus();
}

void CloseAuditLog() {
  absl::MutexLock lock(&audit_mu);
  delete audit_file;
  audit_file = nullptr;
  audit_journal = false;
}

void Audit(const Principal& caller, absl::string_view peer,
           absl::string_view verb, const AuditFields& fields) {
  const std::string record = AuditRecord(caller, peer, verb, fields);
  {
    // Shared: ProcdLogFile serializes its own writes.
    absl::ReaderMutexLock lock(&audit_mu);
    if (audit_file != nullptr) {
      audit_file->Append(AuditLogLine(absl::Now(), record));
    }
    if (audit_journal) SendToJournal(caller, peer, verb, fields, record);
  }
  LOG(INFO) << kAuditPrefix << record;
}

}  // namespace mesh
