// The audit trail (README "Audit"), read from a real hostd's
// <state-dir>/audit.log, the file only Audit() writes: every
// state-changing verb is one line with the caller's identity and peer
// address; nothing a caller or a proc chooses (a reason, an argument, a
// proc's stderr quoted in a failure reason) forges a field or a line; the
// log level does not drop it; the file is bounded.
#include "hostd/audit.h"

#include <glog/logging.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/testing/temp_dir.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;
using testing::TempDir;
using testing::TestHost;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The entries of an audit log file: each line must be an RFC 3339 UTC time,
// a space and the record; the records are returned.
std::vector<std::string> Records(const std::string& path) {
  static const std::regex kTime(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z $)");
  const std::string text = ReadFile(path);
  std::vector<std::string> records;
  if (text.empty()) return records;
  CHECK(text.back() == '\n');
  for (absl::string_view line : absl::StrSplit(
           absl::string_view(text).substr(0, text.size() - 1), '\n')) {
    INFO("audit.log line: " << line);
    REQUIRE(line.size() > 28);
    CHECK(std::regex_match(std::string(line.substr(0, 28)), kTime));
    records.emplace_back(line.substr(28));
  }
  return records;
}

std::vector<std::string> AuditLog(const TestHost& host) {
  return Records(host.state_dir() + "/" + kAuditLogName);
}

// A record's fields in order, read as a quote-aware parser would:
// key=value, where a value is a quoted string (escapes kept), a [list] of
// them, or a bare word.
std::vector<std::pair<std::string, std::string>> Fields(
    absl::string_view line) {
  std::vector<std::pair<std::string, std::string>> fields;
  size_t i = 0;
  while (i < line.size()) {
    const size_t equals = line.find('=', i);
    REQUIRE(equals != absl::string_view::npos);
    size_t j = equals + 1;
    bool quoted = false;
    int depth = 0;
    for (; j < line.size(); ++j) {
      const char c = line[j];
      if (quoted) {
        if (c == '\\') {
          ++j;
        } else if (c == '"') {
          quoted = false;
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == '[') {
        ++depth;
      } else if (c == ']') {
        --depth;
      } else if (c == ' ' && depth == 0) {
        break;
      }
    }
    fields.emplace_back(std::string(line.substr(i, equals - i)),
                        std::string(line.substr(equals + 1, j - equals - 1)));
    i = j + 1;
  }
  return fields;
}

// A quoted value as it was before AuditQuote.
std::string Unquote(absl::string_view quoted) {
  REQUIRE(quoted.size() >= 2);
  REQUIRE(quoted.front() == '"');
  REQUIRE(quoted.back() == '"');
  std::string out;
  for (size_t i = 1; i + 1 < quoted.size(); ++i) {
    if (quoted[i] != '\\') {
      out += quoted[i];
      continue;
    }
    const char next = quoted[++i];
    out += next == 'n' ? '\n' : next == 'r' ? '\r' : next == 't' ? '\t' : next;
  }
  return out;
}

std::vector<std::string> Keys(absl::string_view line) {
  std::vector<std::string> keys;
  for (const auto& field : Fields(line)) keys.push_back(field.first);
  return keys;
}

std::string FieldOf(absl::string_view line, const std::string& key) {
  for (const auto& [k, value] : Fields(line)) {
    if (k == key) return value;
  }
  return "";
}

// The one record of `verb` (by its parsed verb field).
std::string RecordOf(const std::vector<std::string>& records,
                     const std::string& verb) {
  std::vector<std::string> found;
  for (const std::string& record : records) {
    if (FieldOf(record, "verb") == verb) found.push_back(record);
  }
  INFO("audit records of " << verb << ": " << found.size());
  REQUIRE(found.size() == 1);
  return found[0];
}

// Waits until hostd's general log has `text` (or 20 s pass).
bool WaitForHostdLog(const TestHost& host, const std::string& text) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!absl::StrContains(host.HostdLog(), text)) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

TEST_CASE(
    "every state-changing verb leaves one line in audit.log with the "
    "caller's identity and peer") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("p0", 0, v1::ProcSpec(), &state).ok());
  REQUIRE(host->Wait({"p0"}, v1::RUNNING).procs(0).status() == v1::RUNNING);
  auto proc = v1::Proc::NewStub(host->channel());
  v1::CreateOrUpdateActorRequest create;
  create.set_proc("p0");
  create.set_name("echo");
  create.set_type("mesh.echo");
  v1::ActorState actor;
  REQUIRE(proc->CreateOrUpdateActor(Context().get(), create, &actor).ok());
  v1::StopActorRequest stop_actor;
  stop_actor.set_proc("p0");
  stop_actor.set_name("echo");
  stop_actor.set_reason("done");
  REQUIRE(proc->StopActor(Context().get(), stop_actor, &actor).ok());
  v1::StopAllRequest stop_all;
  stop_all.set_proc("p0");
  stop_all.set_reason("tidy");
  v1::StopAllResponse stopped_all;
  REQUIRE(proc->StopAll(Context().get(), stop_all, &stopped_all).ok());
  // Reads are not audited.
  REQUIRE(host->Get("p0", &state).ok());
  v1::StopProcRequest stop;
  stop.set_name("p0");
  stop.set_reason("maintenance");
  REQUIRE(host->stub().StopProc(Context().get(), stop, &state).ok());
  v1::DrainHostRequest drain;
  drain.set_reason("maint");
  v1::DrainHostResponse drained;
  REQUIRE(host->stub().DrainHost(Context().get(), drain, &drained).ok());
  v1::ShutdownHostRequest shutdown;
  shutdown.set_reason("bye");
  shutdown.set_stay_down(true);
  v1::ShutdownHostResponse shut;
  REQUIRE(host->stub().ShutdownHost(Context().get(), shutdown, &shut).ok());
  REQUIRE(host->WaitExit().ok());

  const std::string path = host->state_dir() + "/" + kAuditLogName;
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  const std::vector<std::string> records = AuditLog(*host);
  INFO(absl::StrJoin(records, "\n"));
  CHECK(records.size() == 7);
  // The test is the host's parent: identity hostd:parent, an admin by token.
  const std::string who =
      "identity=\"hostd:parent\" role=admin auth=\"token\" "
      "peer=\"ipv4:127.0.0.1:";
  for (const std::string& record : records) {
    CHECK(absl::StartsWith(record, who));
    CHECK(FieldOf(record, "verb") != "GetProcState");
  }
  CHECK(absl::StrContains(RecordOf(records, "CreateOrUpdateProc"),
                          " proc=\"p0\" rank=0 command=\"\" args=[]"));
  CHECK(absl::StrContains(RecordOf(records, "CreateOrUpdateActor"),
                          " proc=\"p0\" actor=\"echo\" type=\"mesh.echo\""));
  CHECK(absl::StrContains(RecordOf(records, "StopActor"),
                          " proc=\"p0\" actor=\"echo\" reason=\"done\""));
  CHECK(absl::StrContains(RecordOf(records, "StopAll"),
                          " proc=\"p0\" reason=\"tidy\" exit_proc=false"));
  CHECK(absl::StrContains(RecordOf(records, "StopProc"),
                          " verb=StopProc proc=\"p0\" reason=\"maintenance\""));
  CHECK(absl::StrContains(RecordOf(records, "DrainHost"),
                          " verb=DrainHost reason=\"maint\" stop=false"));
  CHECK(absl::StrContains(RecordOf(records, "ShutdownHost"),
                          " verb=ShutdownHost reason=\"bye\""));
  // glog still has the same line, for convenience.
  CHECK(absl::StrContains(host->HostdLog(),
                          "] audit: " + RecordOf(records, "StopProc")));
}

TEST_CASE(
    "a forged audit line in a stop reason or a proc's stderr never becomes "
    "a line of audit.log") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  const std::string forged =
      "\nI1203 08:00:00.000000 1 audit.cc:57] audit: identity=\"root\" "
      "verb=ShutdownHost\n2026-12-03T08:00:00.000000Z identity=\"root\" "
      "role=admin auth=\"cert\" peer=\"x\" verb=ShutdownHost\n";
  // A proc that fails with the forgery on its stderr: hostd quotes it in
  // the failure reason it logs.
  const std::string script =
      "printf '%s' '" + forged + "' >&2; sleep 0.2; exit 3";
  v1::ProcState state;
  REQUIRE(host->Create("loud", 0, testing::Shell(script), &state).ok());
  REQUIRE(host->Wait({"loud"}, v1::FAILED).procs(0).status() == v1::FAILED);
  // A stop reason with the forgery (and a quote to end its field early).
  REQUIRE(host->Create("p1", 0, testing::Shell("sleep 30"), &state).ok());
  v1::StopProcRequest stop;
  stop.set_name("p1");
  stop.set_reason("x\" verb=\"ShutdownHost" + forged + "\\");
  REQUIRE(host->stub().StopProc(Context().get(), stop, &state).ok());
  CHECK(WaitForHostdLog(*host, "proc \"p1\" stopped: "));
  // The forgery did reach hostd's general log, where `grep 'audit: '`
  // would take it for an entry: grep over that log is no trail.
  CHECK(absl::StrContains(host->HostdLog(),
                          "audit: identity=\"root\" verb=ShutdownHost"));

  const std::vector<std::string> records = AuditLog(*host);
  INFO(absl::StrJoin(records, "\n---\n"));
  CHECK(records.size() == 3);
  for (const std::string& record : records) {
    CHECK(FieldOf(record, "identity") == "\"hostd:parent\"");
    CHECK(FieldOf(record, "verb") != "ShutdownHost");
  }
  const std::vector<std::string> create_keys = {
      "identity", "role",    "auth", "peer", "verb",  "proc",
      "rank",     "command", "args", "env",  "owner", "client"};
  for (const std::string& record : records) {
    if (FieldOf(record, "verb") == "CreateOrUpdateProc") {
      CHECK(Keys(record) == create_keys);
    }
  }
  const std::string stopped = RecordOf(records, "StopProc");
  CHECK(Keys(stopped) == std::vector<std::string>{"identity", "role", "auth",
                                                  "peer", "verb", "proc",
                                                  "reason", "grace_ms"});
  CHECK(Unquote(FieldOf(stopped, "reason")) == stop.reason());
}

TEST_CASE("audit.log is written when glog logs WARNING and up only") {
  auto host = TestHost::Start({"--log-level=WARNING"});
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("p0", 0, testing::Shell("sleep 30"), &state).ok());
  REQUIRE(host->Stop("p0", &state).ok());
  const std::vector<std::string> records = AuditLog(*host);
  CHECK(records.size() == 2);
  CHECK(FieldOf(RecordOf(records, "StopProc"), "proc") == "\"p0\"");
  // glog's INFO audit line was dropped.
  CHECK_FALSE(absl::StrContains(host->HostdLog(), "] audit: "));
}

TEST_CASE("--audit-log names another file, or none") {
  TempDir dir;
  const std::string path = dir.path() + "/trail.log";
  {
    auto host = TestHost::Start({"--audit-log=" + path});
    REQUIRE(host != nullptr);
    v1::ProcState state;
    REQUIRE(host->Create("p0", 0, testing::Shell("sleep 30"), &state).ok());
    CHECK(Records(path).size() == 1);
    struct stat st;
    CHECK(stat((host->state_dir() + "/" + kAuditLogName).c_str(), &st) != 0);
  }
  auto host = TestHost::Start({"--audit-log=none"});
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("p0", 0, testing::Shell("sleep 30"), &state).ok());
  struct stat st;
  CHECK(stat((host->state_dir() + "/" + kAuditLogName).c_str(), &st) != 0);
  CHECK(absl::StrContains(host->HostdLog(), "] audit: "));
}

TEST_CASE("the audit log is rotated to .1 and stays bounded") {
  // Also: glog at WARNING drops the INFO lines, not the file's.
  const int level = FLAGS_minloglevel;
  FLAGS_minloglevel = google::GLOG_WARNING;
  TempDir dir;
  const std::string path = dir.path() + "/audit.log";
  constexpr size_t kCap = 4096;
  REQUIRE(OpenAuditLog({.path = path, .max_bytes = kCap}).ok());
  Principal caller{"ops", Role::kAdmin, "cert"};
  constexpr int kEntries = 300;
  for (int i = 0; i < kEntries; ++i) {
    Audit(caller, "ipv4:1.2.3.4:5", "StopProc",
          {{"proc", AuditQuote(absl::StrCat("p", i))},
           {"reason", AuditQuote(std::string(60, 'r'))}});
  }
  CloseAuditLog();
  FLAGS_minloglevel = level;
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(static_cast<size_t>(st.st_size) <= kCap);
  const std::string old = path + ".1";
  REQUIRE(stat(old.c_str(), &st) == 0);
  CHECK(static_cast<size_t>(st.st_size) <= kCap);
  CHECK(static_cast<size_t>(st.st_size) > kCap / 2);
  // Whole lines only, the newest last, .1 just before the current file.
  std::vector<std::string> records = Records(old);
  const std::vector<std::string> current = Records(path);
  REQUIRE(!current.empty());
  records.insert(records.end(), current.begin(), current.end());
  const int first = kEntries - static_cast<int>(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    CHECK(FieldOf(records[i], "proc") ==
          absl::StrCat("\"p", first + static_cast<int>(i), "\""));
  }
}

TEST_CASE("audit values are quoted, escaped and cut") {
  CHECK(AuditQuote("a\"b\\c\nd\re\tf\x01") ==
        "\"a\\\"b\\\\c\\nd\\re\\tf\\x01\"");
  const std::string long_value(kMaxValueBytes + 10, 'x');
  CHECK(AuditQuote(long_value) ==
        "\"" + std::string(kMaxValueBytes, 'x') + "...\"");
  std::vector<std::string> many(kMaxListItems + 2, "a");
  CHECK(absl::EndsWith(AuditList(many), ", ... (2 more)]"));
  Principal caller{"ops\nx", Role::kAdmin, "cert"};
  CHECK(AuditLine(caller, "ipv4:1.2.3.4:5", "StopProc",
                  {{"proc", AuditQuote("p")}}) ==
        "audit: identity=\"ops\\nx\" role=admin auth=\"cert\" "
        "peer=\"ipv4:1.2.3.4:5\" verb=StopProc proc=\"p\"");
  CHECK(AuditLogLine(absl::FromUnixMicros(1796256000123456), "verb=X") ==
        "2026-12-03T00:00:00.123456Z verb=X\n");
}

TEST_CASE("--audit-log none and the default path") {
  CHECK(AuditLogPath("", "/var/lib/hostmesh") == "/var/lib/hostmesh/audit.log");
  CHECK(AuditLogPath("none", "/var/lib/hostmesh").empty());
  CHECK(AuditLogPath("/log/a.log", "/var/lib/hostmesh") == "/log/a.log");
}

}  // namespace
}  // namespace mesh
