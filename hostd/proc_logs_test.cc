#include "hostd/proc_logs.h"

#include <fcntl.h>
#include <google/protobuf/util/time_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/process/proc_log.h"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;
using mesh::testing::TempDir;

// A proc's log dir with its two files open for appending, as the
// supervisor leaves them to the proc.
class FakeProc {
 public:
  explicit FakeProc(const std::string& dir) : dir_(dir) {
    mkdir(dir.c_str(), 0700);
    out_ = open((dir + "/stdout.log").c_str(),
                O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    err_ = open((dir + "/stderr.log").c_str(),
                O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  }
  ~FakeProc() {
    close(out_);
    close(err_);
  }
  void Out(const std::string& text) {
    REQUIRE(write(out_, text.data(), text.size()) ==
            static_cast<ssize_t>(text.size()));
  }
  void Err(const std::string& text) {
    REQUIRE(write(err_, text.data(), text.size()) ==
            static_cast<ssize_t>(text.size()));
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int out_ = -1;
  int err_ = -1;
};

ProcLogs::Options TestOptions() {
  ProcLogs::Options options;
  // The tests poll by hand.
  options.poll = absl::Hours(1);
  return options;
}

std::string Lines(int from, int to, const std::string& tag = "line") {
  std::string out;
  for (int i = from; i < to; ++i) {
    absl::StrAppend(&out,
                    absl::StrFormat("%s %06d ....................\n", tag, i));
  }
  return out;
}

// Everything a stream sends until it waits or ends.
struct Drained {
  std::vector<v1::LogChunk> chunks;
  LogStream::Next last = LogStream::Next::kChunk;
  std::string Data(v1::LogStream which = v1::LOG_STREAM_UNSPECIFIED) const {
    std::string out;
    for (const auto& c : chunks) {
      if (which == v1::LOG_STREAM_UNSPECIFIED || c.stream() == which) {
        out += c.data();
      }
    }
    return out;
  }
  bool Eof(v1::LogStream which) const {
    for (const auto& c : chunks) {
      if (c.stream() == which && c.eof()) return true;
    }
    return false;
  }
};

Drained Drain(LogStream& stream) {
  Drained out;
  for (int i = 0; i < 100000; ++i) {
    v1::LogChunk chunk;
    out.last = stream.Read(&chunk);
    if (out.last != LogStream::Next::kChunk) break;
    out.chunks.push_back(std::move(chunk));
  }
  return out;
}

TEST_CASE(
    "rotation at a small cap keeps offsets monotonic and a stream "
    "from offset 0 reports the skipped bytes") {
  TempDir dir;
  ProcLogs::Options options = TestOptions();
  options.max_bytes = 8192;
  options.keep = 2;
  ProcLogs logs(options);
  FakeProc proc(dir.path() + "/p0");
  logs.Started("p0", proc.dir(), 1, /*spawning=*/true);
  std::string written;
  uint64_t last_start = 0;
  for (int round = 0; round < 8; ++round) {
    const std::string text = Lines(round * 400, (round + 1) * 400);
    proc.Out(text);
    written += text;
    logs.PollNow();
    const LogSpan span = LogSpanOf(proc.dir() + "/stdout.log");
    CHECK(span.end == written.size());
    CHECK(span.start >= last_start);
    last_start = span.start;
    // Within the cap (plus what one poll lets through) and `keep` copies.
    CHECK(span.end - span.base <= options.max_bytes);
  }
  CHECK(logs.Rotations() >= 8);
  const LogSpan span = LogSpanOf(proc.dir() + "/stdout.log");
  REQUIRE(span.start > 0);

  v1::StreamLogsRequest request;
  request.add_names("p0");
  request.set_stream(v1::LOG_STDOUT);
  request.set_from_offset(0);
  auto stream = logs.Open(request, {{"p0", proc.dir(), true}}, nullptr);
  REQUIRE(stream.ok());
  Drained got = Drain(**stream);
  CHECK(got.last == LogStream::Next::kEnd);
  REQUIRE(!got.chunks.empty());
  CHECK(got.chunks[0].skipped_bytes() == span.start);
  CHECK(got.chunks[0].offset() == span.start);
  uint64_t at = span.start;
  for (const auto& chunk : got.chunks) {
    CHECK(chunk.offset() == at);  // Contiguous, never back.
    at += chunk.data().size();
  }
  CHECK(got.Data() == written.substr(span.start));
  CHECK(got.Eof(v1::LOG_STDOUT));
}

TEST_CASE(
    "a following stream waits, is woken by new lines and ends once "
    "its proc ended and it sent everything") {
  TempDir dir;
  ProcLogs logs(TestOptions());
  FakeProc proc(dir.path() + "/p1");
  proc.Out("before the spawn\n");
  logs.Started("p1", proc.dir(), 7, /*spawning=*/true);
  proc.Out("first\n");
  proc.Err("oops\n");
  std::atomic<int> wakes{0};
  v1::StreamLogsRequest request;
  request.set_from_spawn(true);
  request.set_follow(true);
  auto stream =
      logs.Open(request, {{"p1", proc.dir(), true}}, [&wakes] { ++wakes; });
  REQUIRE(stream.ok());
  Drained got = Drain(**stream);
  CHECK(got.last == LogStream::Next::kWait);
  CHECK(got.Data(v1::LOG_STDOUT) == "first\n");
  CHECK(got.Data(v1::LOG_STDERR) == "oops\n");
  // Nothing new: no wake.
  logs.PollNow();
  CHECK(wakes == 0);
  proc.Out("second\n");
  logs.PollNow();
  CHECK(wakes == 1);
  got = Drain(**stream);
  CHECK(got.last == LogStream::Next::kWait);
  CHECK(got.Data() == "second\n");
  // An older incarnation's end changes nothing.
  logs.Ended("p1", 6);
  logs.PollNow();
  CHECK(wakes == 1);
  proc.Out("last words");
  logs.Ended("p1", 7);
  logs.PollNow();
  CHECK(wakes == 2);
  got = Drain(**stream);
  CHECK(got.last == LogStream::Next::kEnd);
  CHECK((*stream)->status().ok());
  CHECK(got.Data() == "last words");
  CHECK(got.Eof(v1::LOG_STDOUT));
  CHECK(got.Eof(v1::LOG_STDERR));
}

TEST_CASE("a follower of a proc that ends in silence is woken and ends") {
  TempDir dir;
  ProcLogs logs(TestOptions());
  FakeProc proc(dir.path() + "/quiet");
  logs.Started("quiet", proc.dir(), 3, /*spawning=*/true);
  proc.Out("only line\n");
  std::atomic<int> wakes{0};
  v1::StreamLogsRequest request;
  request.set_follow(true);
  auto stream =
      logs.Open(request, {{"quiet", proc.dir(), true}}, [&wakes] { ++wakes; });
  REQUIRE(stream.ok());
  Drained got = Drain(**stream);
  CHECK(got.last == LogStream::Next::kWait);
  CHECK(got.Data() == "only line\n");
  logs.Ended("quiet", 3);
  logs.PollNow();
  CHECK(wakes == 1);
  got = Drain(**stream);
  CHECK(got.last == LogStream::Next::kEnd);
  CHECK(got.Data().empty());
  CHECK(got.Eof(v1::LOG_STDOUT));
}

TEST_CASE("tail N starts at the last N lines of each file") {
  TempDir dir;
  ProcLogs logs(TestOptions());
  FakeProc proc(dir.path() + "/p2");
  proc.Out(Lines(0, 100));
  proc.Err(Lines(0, 10, "err"));
  v1::StreamLogsRequest request;
  request.set_tail_lines(3);
  auto stream = logs.Open(request, {{"p2", proc.dir(), false}}, nullptr);
  REQUIRE(stream.ok());
  Drained got = Drain(**stream);
  CHECK(got.last == LogStream::Next::kEnd);
  CHECK(got.Data(v1::LOG_STDOUT) == Lines(97, 100));
  CHECK(got.Data(v1::LOG_STDERR) == Lines(7, 10, "err"));
  CHECK(got.chunks[0].skipped_bytes() == 0);
}

TEST_CASE("since a time starts at the index sample taken before it") {
  TempDir dir;
  ProcLogs::Options options = TestOptions();
  options.sample = absl::Milliseconds(50);
  ProcLogs logs(options);
  FakeProc proc(dir.path() + "/p3");
  logs.Started("p3", proc.dir(), 1, /*spawning=*/true);
  proc.Out("old\n");
  absl::SleepFor(absl::Milliseconds(60));
  logs.PollNow();
  absl::SleepFor(absl::Milliseconds(60));
  const absl::Time since = absl::Now();
  absl::SleepFor(absl::Milliseconds(60));
  proc.Out("new\n");
  logs.PollNow();
  v1::StreamLogsRequest request;
  *request.mutable_since() =
      TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(since));
  auto stream = logs.Open(request, {{"p3", proc.dir(), true}}, nullptr);
  REQUIRE(stream.ok());
  CHECK(Drain(**stream).Data() == "new\n");
  // Before the first sample: everything kept.
  *request.mutable_since() = TimeUtil::NanosecondsToTimestamp(
      absl::ToUnixNanos(since - absl::Hours(1)));
  stream = logs.Open(request, {{"p3", proc.dir(), true}}, nullptr);
  REQUIRE(stream.ok());
  CHECK(Drain(**stream).Data() == "old\nnew\n");
}

TEST_CASE("streams past the cap are refused until one is freed") {
  TempDir dir;
  ProcLogs::Options options = TestOptions();
  options.max_streams = 2;
  ProcLogs logs(options);
  FakeProc proc(dir.path() + "/p4");
  v1::StreamLogsRequest request;
  request.set_follow(true);
  auto a = logs.Open(request, {{"p4", proc.dir(), true}}, nullptr);
  auto b = logs.Open(request, {{"p4", proc.dir(), true}}, nullptr);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  auto c = logs.Open(request, {{"p4", proc.dir(), true}}, nullptr);
  CHECK(absl::IsResourceExhausted(c.status()));
  CHECK_THAT(std::string(c.status().message()),
             Catch::Contains("--max-log-streams"));
  CHECK(Drain(**a).last == LogStream::Next::kWait);
  a->reset();
  CHECK(logs.OpenStreams() == 1);
  c = logs.Open(request, {{"p4", proc.dir(), true}}, nullptr);
  CHECK(c.ok());
}

TEST_CASE("a bad stream kind or tail count is refused naming the field") {
  ProcLogs logs(TestOptions());
  v1::StreamLogsRequest request;
  request.set_stream(static_cast<v1::LogStream>(9));
  auto bad = logs.Open(request, {}, nullptr);
  CHECK(absl::IsInvalidArgument(bad.status()));
  CHECK_THAT(std::string(bad.status().message()),
             Catch::Contains("StreamLogsRequest.stream"));
  request.set_stream(v1::LOG_STDERR);
  request.set_tail_lines(2000000);
  bad = logs.Open(request, {}, nullptr);
  CHECK_THAT(std::string(bad.status().message()),
             Catch::Contains("tail_lines"));
}

TEST_CASE(
    "closing the logs ends a waiting stream as unavailable after "
    "what was written") {
  TempDir dir;
  ProcLogs logs(TestOptions());
  FakeProc proc(dir.path() + "/p5");
  logs.Started("p5", proc.dir(), 1, true);
  std::atomic<int> wakes{0};
  v1::StreamLogsRequest request;
  request.set_follow(true);
  auto stream =
      logs.Open(request, {{"p5", proc.dir(), true}}, [&wakes] { ++wakes; });
  REQUIRE(stream.ok());
  CHECK(Drain(**stream).last == LogStream::Next::kWait);
  proc.Out("written before the close\n");
  logs.Close();
  CHECK(wakes == 1);
  Drained got = Drain(**stream);
  CHECK(got.last == LogStream::Next::kEnd);
  CHECK(got.Data() == "written before the close\n");
  CHECK(absl::IsUnavailable((*stream)->status()));
  CHECK(absl::IsUnavailable(
      logs.Open(request, {{"p5", proc.dir(), true}}, nullptr).status()));
}

}  // namespace
}  // namespace mesh
