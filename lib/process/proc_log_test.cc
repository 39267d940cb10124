#include "lib/process/proc_log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/testing/temp_dir.h"

namespace mesh {
namespace {

using mesh::testing::TempDir;

int OpenAppend(const std::string& path) {
  return open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

void Write(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    REQUIRE(n > 0);
    done += static_cast<size_t>(n);
  }
}

// Everything kept, read in chunks of `chunk` from `from` on.
LogRead ReadAll(const std::string& path, uint64_t from, size_t chunk = 1000) {
  LogRead all;
  bool first = true;
  uint64_t at = from;
  for (;;) {
    LogRead read = ReadLog(path, at, chunk);
    if (first) {
      all.offset = read.offset;
      all.skipped = read.skipped;
      first = false;
    } else {
      CHECK(read.skipped == 0);
      CHECK(read.offset == at);
    }
    if (read.data.empty()) break;
    all.data += read.data;
    at = read.offset + read.data.size();
  }
  return all;
}

// Whether this file system collapses (FALLOC_FL_COLLAPSE_RANGE), asked
// once: ext4 and xfs do, tmpfs and btrfs do not. Each test then checks the
// promise that holds where it runs, and says which.
bool CollapseSupported(const std::string& dir) {
  static const bool supported = [&] {
    const std::string probe = dir + "/collapse-probe";
    const int fd = open(probe.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0);
    const size_t block = st.st_blksize > 0 ? st.st_blksize : 4096;
    Write(fd, std::string(2 * block, 'x'));
    const bool ok = fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0,
                              static_cast<off_t>(block)) == 0;
    const int error = errno;
    close(fd);
    unlink(probe.c_str());
    INFO("collapse probe: " << std::strerror(error));
    CHECK((ok || error == EOPNOTSUPP));
    return ok;
  }();
  return supported;
}

std::string Lines(int from, int to) {
  std::string out;
  for (int i = from; i < to; ++i) {
    absl::StrAppend(&out,
                    absl::StrFormat("line %06d ........................\n", i));
  }
  return out;
}

void RotationKeepsOffsets(bool force_truncate) {
  TempDir dir;
  const std::string path = dir.path() + "/stdout.log";
  const int fd = OpenAppend(path);
  std::string written;
  uint64_t last_base = 0;
  RotateOptions options;
  options.keep = 2;
  options.force_truncate = force_truncate;
  for (int round = 0; round < 6; ++round) {
    const std::string text = Lines(round * 300, (round + 1) * 300);
    Write(fd, text);
    written += text;
    absl::StatusOr<RotateResult> rotated = RotateLog(path, options);
    REQUIRE(rotated.ok());
    CHECK(rotated->rotated > 0);
    CHECK(rotated->collapsed ==
          (!force_truncate && CollapseSupported(dir.path())));
    const LogSpan span = LogSpanOf(path);
    INFO("round " << round << " base " << span.base << " start " << span.start
                  << " end " << span.end);
    // Offsets only grow, and the end is every byte ever written.
    CHECK(span.base > last_base);
    last_base = span.base;
    CHECK(span.end == written.size());
    // What is kept reads back exactly, at its offsets.
    const LogRead all = ReadAll(path, span.start, 777);
    CHECK(all.offset == span.start);
    CHECK(all.data == written.substr(span.start));
  }
  // From 0: the bytes rotated beyond `keep` are reported skipped, honestly.
  const LogSpan span = LogSpanOf(path);
  REQUIRE(span.start > 0);
  const LogRead from_zero = ReadAll(path, 0);
  CHECK(from_zero.skipped == span.start);
  CHECK(from_zero.offset == span.start);
  CHECK(from_zero.data == written.substr(span.start));
  // Past the end: nothing, nothing skipped.
  const LogRead past = ReadLog(path, span.end + 10, 100);
  CHECK(past.data.empty());
  CHECK(past.skipped == 0);
  close(fd);
}

TEST_CASE("rotation by collapse keeps every offset and reads back exactly") {
  RotationKeepsOffsets(/*force_truncate=*/false);
}

TEST_CASE("rotation by copy then truncate keeps every offset too") {
  RotationKeepsOffsets(/*force_truncate=*/true);
}

TEST_CASE("a writer that never stops loses nothing to rotations by collapse") {
  TempDir dir;
  const std::string path = dir.path() + "/stderr.log";
  const int fd = OpenAppend(path);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> slowest_ns{0};
  std::atomic<int> lines{0};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      const std::string line = absl::StrFormat("w %08d\n", i);
      const absl::Time t0 = absl::Now();
      if (write(fd, line.data(), line.size()) != 11) break;
      const int64_t ns = absl::ToInt64Nanoseconds(absl::Now() - t0);
      if (ns > slowest_ns.load()) slowest_ns = ns;
      lines = i + 1;
    }
  });
  RotateOptions options;
  options.keep = 1000;
  int rotations = 0;
  absl::Duration longest = absl::ZeroDuration();
  const absl::Time until = absl::Now() + absl::Milliseconds(600);
  while (absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
    absl::StatusOr<RotateResult> rotated = RotateLog(path, options);
    REQUIRE(rotated.ok());
    if (rotated->rotated > 0) {
      ++rotations;
      CHECK(rotated->collapsed == CollapseSupported(dir.path()));
      longest = std::max(longest, rotated->took);
    }
  }
  stop = true;
  writer.join();
  close(fd);
  const LogRead all = ReadAll(path, 0, 1 << 20);
  CHECK(all.skipped == 0);
  std::string expected;
  for (int i = 0; i < lines.load(); ++i) {
    absl::StrAppend(&expected, absl::StrFormat("w %08d\n", i));
  }
  WARN("rotations " << rotations << ", lines " << lines.load()
                    << ", longest rotation " << longest << ", slowest write "
                    << slowest_ns.load() / 1000 << " us");
  CHECK(rotations > 5);
  if (CollapseSupported(dir.path())) {
    CHECK(all.data.size() == expected.size());
    CHECK(all.data == expected);
    return;
  }
  // Copy-then-truncate (no collapse here): what the proc wrote in a window
  // may be lost, nothing else: whole lines, in order, none twice, the last
  // one there.
  WARN(
      "no collapse on this file system: checked the copy-then-truncate "
      "promise (lines lost only in windows)");
  REQUIRE(all.data.size() % 11 == 0);
  int previous = -1;
  for (size_t at = 0; at < all.data.size(); at += 11) {
    int n = -1;
    REQUIRE(std::sscanf(all.data.c_str() + at, "w %08d\n", &n) == 1);
    CHECK(n > previous);
    previous = n;
  }
  CHECK(previous == lines.load() - 1);
}

TEST_CASE("the stderr tail since a spawn reads across a rotation") {
  TempDir dir;
  const std::string path = dir.path() + "/stderr.log";
  const int fd = OpenAppend(path);
  Write(fd, Lines(0, 200));  // An earlier incarnation's.
  const uint64_t spawn = LogSpanOf(path).end;
  Write(fd, "Traceback (most recent call last):\n" + Lines(200, 400));
  REQUIRE(RotateLog(path).ok());
  Write(fd, "ValueError: the cause\n");
  const std::string tail = ReadLogTail(path, spawn, 4096);
  CHECK(tail.size() == 4096);
  CHECK(tail.substr(tail.size() - 22) == "ValueError: the cause\n");
  // A tail bigger than what the spawn wrote starts at the spawn.
  const std::string whole = ReadLogTail(path, spawn, 1 << 20);
  CHECK(whole.rfind("Traceback", 0) == 0);
  // Through the writer's own descriptor of the file, the same.
  const int read_fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  CHECK(ReadLogTail(path, spawn, 4096, read_fd) == tail);
  close(read_fd);
  close(fd);
}

TEST_CASE("the last lines begin where their first line does, across copies") {
  TempDir dir;
  const std::string path = dir.path() + "/stdout.log";
  const int fd = OpenAppend(path);
  const std::string text = Lines(0, 500);
  Write(fd, text);
  REQUIRE(RotateLog(path).ok());
  Write(fd, "partial");
  const std::string all = text + "partial";
  // The partial last line counts as one.
  uint64_t at = TailLinesOffset(path, 3);
  CHECK(all.substr(at) == Lines(498, 500) + "partial");
  at = TailLinesOffset(path, 0);
  CHECK(at == all.size());
  // More lines than kept: from the start.
  CHECK(TailLinesOffset(path, 100000) == LogSpanOf(path).start);
  Write(fd, "\n");
  at = TailLinesOffset(path, 1);
  CHECK(all.substr(at) + "\n" == "partial\n");
  close(fd);
}

// Every byte ever served, by logical offset: a byte served again at the
// same offset must be the same.
class Served {
 public:
  void Check(uint64_t offset, const std::string& data) {
    if (bytes_.size() < offset + data.size()) {
      bytes_.resize(offset + data.size());
      known_.resize(offset + data.size());
    }
    for (size_t i = 0; i < data.size(); ++i) {
      const uint64_t at = offset + i;
      if (known_[at] && bytes_[at] != data[i] && !first_mismatch_) {
        first_mismatch_ = at;
      }
      bytes_[at] = data[i];
      known_[at] = true;
    }
    INFO("first offset that read other bytes than before: "
         << first_mismatch_.value_or(0));
    CHECK(!first_mismatch_.has_value());
  }

 private:
  std::string bytes_;
  std::vector<bool> known_;
  std::optional<uint64_t> first_mismatch_;
};

// A rotation stopped after `step` (its `nth` call), as a crash there would,
// then a fresh rotator and readers on the same files: offsets never go
// back, no offset reads other bytes than it first did, and new bytes keep
// coming at the end.
void CrashAt(RotateStep step, int nth, bool force_truncate) {
  TempDir dir;
  const std::string path = dir.path() + "/stdout.log";
  const int fd = OpenAppend(path);
  RotateOptions options;
  options.keep = 2;
  options.force_truncate = force_truncate;
  Served served;
  LogSpan last;
  std::string written;
  int line = 0;
  auto write_lines = [&](int n) {
    const std::string text = Lines(line, line + n);
    line += n;
    Write(fd, text);
    written += text;
  };
  auto read_all = [&] {
    const LogSpan span = LogSpanOf(path);
    REQUIRE(span.status.ok());
    INFO("base " << span.base << " end " << span.end << ", before " << last.base
                 << " " << last.end);
    CHECK(span.base >= last.base);
    CHECK(span.end >= last.end);
    last = span;
    for (uint64_t at = 0;;) {
      const LogRead read = ReadLog(path, at, 700);
      REQUIRE(read.status.ok());
      CHECK(read.offset >= at);
      if (read.data.empty()) break;
      served.Check(read.offset, read.data);
      at = read.offset + read.data.size();
    }
  };
  for (int round = 0; round < 3; ++round) {
    write_lines(300);
    read_all();
    REQUIRE(RotateLog(path, options).ok());
    read_all();
  }
  write_lines(300);
  read_all();
  int calls = 0;
  options.stop_after = [&](RotateStep at) {
    return at == step && ++calls == nth;
  };
  const absl::StatusOr<RotateResult> stopped = RotateLog(path, options);
  INFO(stopped.status());
  REQUIRE(absl::IsAborted(stopped.status()));
  // "Restarted": no hook, and the proc wrote on meanwhile.
  options.stop_after = nullptr;
  write_lines(100);
  read_all();
  for (int round = 0; round < 2; ++round) {
    REQUIRE(RotateLog(path, options).ok());
    read_all();
    write_lines(300);
    read_all();
  }
  // The newest bytes are where the end says.
  const LogRead tail = ReadLog(path, last.end - 100, 100);
  CHECK(tail.data == written.substr(written.size() - 100));
  close(fd);
}

TEST_CASE("a crash at any step of a rotation never moves an offset back") {
  const std::vector<std::pair<RotateStep, int>> steps = {
      {RotateStep::kCopied, 1},   {RotateStep::kShifting, 1},
      {RotateStep::kShifting, 2}, {RotateStep::kShifted, 1},
      {RotateStep::kRecorded, 1}, {RotateStep::kCut, 1}};
  for (bool force_truncate : {false, true}) {
    for (const auto& [step, nth] : steps) {
      INFO("step " << static_cast<int>(step) << " call " << nth
                   << (force_truncate ? " (truncate)" : " (collapse)"));
      CrashAt(step, nth, force_truncate);
    }
  }
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

TEST_CASE("a corrupt rotation record stops rotation and reads as an error") {
  TempDir dir;
  const std::string path = dir.path() + "/stderr.log";
  const int fd = OpenAppend(path);
  Write(fd, Lines(0, 300));
  REQUIRE(RotateLog(path).ok());
  Write(fd, Lines(300, 600));
  for (const std::string& bad :
       {std::string("garbage\n"), std::string("hostmesh-proc-log 2\nbase 5\n"),
        std::string(""), std::string("hostmesh-proc-log 2\nbase x\nend\n")}) {
    INFO("record \"" << bad << "\"");
    WriteFile(path + ".rotated", bad);
    struct stat before, after;
    REQUIRE(stat(path.c_str(), &before) == 0);
    const absl::StatusOr<RotateResult> rotated = RotateLog(path);
    CHECK(rotated.status().code() == absl::StatusCode::kDataLoss);
    CHECK(absl::StrContains(rotated.status().message(), "stderr.log.rotated"));
    REQUIRE(stat(path.c_str(), &after) == 0);
    CHECK(after.st_size == before.st_size);
    CHECK(LogSpanOf(path).status.code() == absl::StatusCode::kDataLoss);
    const LogRead read = ReadLog(path, 0, 100);
    CHECK(read.status.code() == absl::StatusCode::kDataLoss);
    CHECK(read.data.empty());
    // A failure reason still quotes the file's own tail.
    const std::string all = Lines(0, 600);
    CHECK(ReadLogTail(path, 0, 40) == all.substr(all.size() - 40));
  }
  close(fd);
}

TEST_CASE("a record in the one line format of earlier builds still reads") {
  TempDir dir;
  const std::string path = dir.path() + "/stdout.log";
  WriteFile(path + ".2", "ab");
  WriteFile(path + ".1", "cde");
  WriteFile(path, "fgh");
  WriteFile(path + ".rotated", "5\n");
  const LogSpan span = LogSpanOf(path);
  REQUIRE(span.status.ok());
  CHECK(span.start == 0);
  CHECK(span.base == 5);
  CHECK(span.end == 8);
  CHECK(ReadAll(path, 0).data == "abcdefgh");
}

}  // namespace
}  // namespace mesh
