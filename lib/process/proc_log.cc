// Crash windows of a rotation (RotateLog), in order, and what a fresh
// reader or rotator makes of the files after a crash in each:
//   1. P.rotating written and fsynced. The record does not name it: it is
//      ignored, and the next rotation overwrites it.
//   2. The shift (P.k -> P.k+1, P.rotating -> P.1). The record names each
//      copy by inode, so a renamed copy is found at P.k+1; the new P.1 is
//      named by nobody and ignored.
//   3. The record with the new copy and "pending <E>" written durably (E:
//      the end of P when the lock was taken, past every offset served so
//      far). From here P may or may not be cut, which nothing on disk can
//      tell reliably. So whoever next takes the lock and finds a pending
//      cut settles it: the base becomes E. Cut or not, P's bytes then sit
//      at offsets never served (P's old bytes come again at fresh offsets;
//      offsets between the new copy's end and E read as skipped): offsets
//      never go back and no offset reads other bytes than it first did.
//   4. P cut (collapse: fdatasync'd; truncate: the copy fsynced). As 3.
//   5. The record with the new base, no pending cut, durable: done. Copies
//      beyond `keep` are unlinked after it (a crash leaves them unnamed).
// Power loss: every record write is tmp, fsync, rename, fsync of the
// directory, and what a record names (the copy, the cut) is made durable
// before the record is written, so the record on disk never runs ahead.
// In this process the rotation holds the lock exclusive from step 2 to 5
// and readers take it shared, so they only see a settled record.
#include "lib/process/proc_log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>
#include <vector>

#include "absl/base/const_init.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "lib/process/log_file.h"

namespace mesh {
namespace {

// Rotations (exclusive) against reads (shared), in this process. Guards
// the files, not fields.
absl::Mutex rotation_mu(absl::kConstInit);

// File systems (by device) where FALLOC_FL_COLLAPSE_RANGE is unsupported.
absl::Mutex no_collapse_mu(absl::kConstInit);
std::set<dev_t>& NoCollapse() ABSL_EXCLUSIVE_LOCKS_REQUIRED(no_collapse_mu) {
  static auto* devices = new std::set<dev_t>();
  return *devices;
}

// Records found corrupt, logged once each.
absl::Mutex corrupt_mu(absl::kConstInit);
std::set<std::string>& LoggedCorrupt()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(corrupt_mu) {
  static auto* paths = new std::set<std::string>();
  return *paths;
}

// Rotated copies looked for at most (P.1 .. P.kMaxCopies).
constexpr int kMaxCopies = 1000;

constexpr absl::string_view kRecordHeader = "hostmesh-proc-log 2";

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int OpenRead(const std::string& path) {
  return open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
}

std::string CopyPath(const std::string& path, int k) {
  return absl::StrCat(path, ".", k);
}

std::string BasePath(const std::string& path) {
  return absl::StrCat(path, ".rotated");
}

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// A kept copy as the record names it.
struct CopyRecord {
  int k = 0;  // P.k (or P.k+1 after a crash in the middle of a shift)
  uint64_t start = 0;
  uint64_t size = 0;
  uint64_t ino = 0;
};

// P.rotated. On disk (text, one item a line):
//   hostmesh-proc-log 2
//   base <logical offset of P's first byte>
//   copy <k> <start> <size> <inode>     (newest first, any number)
//   pending <E>                         (optional: a cut may have happened)
//   end
// The legacy format (one decimal line: the base; copies P.1.. end at the
// base, each where the newer one begins) is read too.
struct Record {
  uint64_t base = 0;
  std::vector<CopyRecord> copies;
  std::optional<uint64_t> pending;
};

std::string FormatRecord(const Record& record) {
  std::string out = absl::StrCat(kRecordHeader, "\nbase ", record.base, "\n");
  for (const CopyRecord& c : record.copies) {
    absl::StrAppend(&out, "copy ", c.k, " ", c.start, " ", c.size, " ", c.ino,
                    "\n");
  }
  if (record.pending.has_value()) {
    absl::StrAppend(&out, "pending ", *record.pending, "\n");
  }
  absl::StrAppend(&out, "end\n");
  return out;
}

absl::Status Corrupt(const std::string& path, absl::string_view why) {
  return absl::DataLossError(
      absl::StrCat("corrupt \"", BasePath(path), "\": ", why,
                   " (offsets unknown; not rotated until it is fixed)"));
}

// The legacy chain: P.1 ends at the base, each older copy where the newer
// one begins.
Record LegacyRecord(const std::string& path, uint64_t base) {
  Record record;
  record.base = base;
  uint64_t end = base;
  for (int k = 1; k <= kMaxCopies; ++k) {
    struct stat st;
    if (stat(CopyPath(path, k).c_str(), &st) != 0) break;
    const uint64_t size = std::min<uint64_t>(end, st.st_size);
    record.copies.push_back(
        {k, end - size, size, static_cast<uint64_t>(st.st_ino)});
    end -= size;
  }
  return record;
}

// Parses P.rotated; absent: base 0, no copies.
absl::StatusOr<Record> LoadRecord(const std::string& path) {
  Fd fd(OpenRead(BasePath(path)));
  if (fd.get() < 0) {
    if (errno == ENOENT) return Record{};
    return Errno(absl::StrCat("cannot read \"", BasePath(path), "\""));
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return Errno(absl::StrCat("cannot read \"", BasePath(path), "\""));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (1 << 20)) return Corrupt(path, "larger than 1 MiB");
  }
  uint64_t legacy = 0;
  if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &legacy)) {
    return LegacyRecord(path, legacy);
  }
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (lines.empty() || lines[0] != kRecordHeader) {
    return Corrupt(
        path, absl::StrCat("the first line is not \"", kRecordHeader, "\""));
  }
  Record record;
  bool have_base = false, ended = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    const absl::string_view line = lines[i];
    if (ended) {
      if (!line.empty()) return Corrupt(path, "text after \"end\"");
      continue;
    }
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    const std::string where = absl::StrCat("line ", i + 1, " \"", line, "\"");
    uint64_t v[4];
    auto numbers = [&](size_t n) {
      if (f.size() != n + 1) return false;
      for (size_t j = 0; j < n; ++j) {
        if (!absl::SimpleAtoi(f[j + 1], &v[j])) return false;
      }
      return true;
    };
    if (f[0] == "base" && numbers(1) && !have_base) {
      record.base = v[0];
      have_base = true;
    } else if (f[0] == "copy" && numbers(4) && v[0] >= 1 &&
               v[0] <= kMaxCopies && v[1] + v[2] >= v[1]) {
      record.copies.push_back({static_cast<int>(v[0]), v[1], v[2], v[3]});
    } else if (f[0] == "pending" && numbers(1) && !record.pending &&
               v[0] >= record.base) {
      record.pending = v[0];
    } else if (line == "end" && have_base) {
      ended = true;
    } else {
      return Corrupt(path, where);
    }
  }
  if (!ended) return Corrupt(path, "no \"end\" line (torn)");
  const uint64_t limit = record.pending.value_or(record.base);
  for (const CopyRecord& c : record.copies) {
    if (c.start + c.size > limit) {
      return Corrupt(path, absl::StrCat("copy ", c.k, " ends past ", limit));
    }
  }
  return record;
}

// Replaces P.rotated durably (see the file comment).
absl::Status WriteRecord(const std::string& path, const Record& record,
                         mode_t mode, gid_t group) {
  const std::string final_path = BasePath(path);
  const std::string tmp = final_path + ".tmp";
  Fd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
             mode));
  if (fd.get() < 0) return Errno(absl::StrCat("cannot write \"", tmp, "\""));
  SetModeAndGroup(tmp, fd.get(), mode, group).IgnoreError();
  const std::string text = FormatRecord(record);
  if (write(fd.get(), text.data(), text.size()) !=
      static_cast<ssize_t>(text.size())) {
    return Errno(absl::StrCat("cannot write \"", tmp, "\""));
  }
  if (fsync(fd.get()) != 0) {
    return Errno(absl::StrCat("cannot fsync \"", tmp, "\""));
  }
  if (rename(tmp.c_str(), final_path.c_str()) != 0) {
    return Errno(absl::StrCat("cannot rename \"", tmp, "\""));
  }
  std::string dir_buf = final_path;
  const std::string dir = dirname(dir_buf.data());
  Fd dir_fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0 || fsync(dir_fd.get()) != 0) {
    return Errno(absl::StrCat("cannot fsync directory \"", dir, "\""));
  }
  return absl::OkStatus();
}

uint64_t CurrentSize(const std::string& path, int fd) {
  struct stat st;
  if ((fd >= 0 ? fstat(fd, &st) : stat(path.c_str(), &st)) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

// Loads the record and, if a crash left a cut pending, settles it (crash
// window 3 in the file comment). Rotation lock held exclusive.
absl::StatusOr<Record> SettledRecordLocked(const std::string& path) {
  absl::StatusOr<Record> record = LoadRecord(path);
  if (!record.ok() || !record->pending.has_value()) return record;
  struct stat st;
  mode_t mode = 0600;
  gid_t group = static_cast<gid_t>(-1);
  if (stat(path.c_str(), &st) == 0) {
    mode = st.st_mode & 07777;
    group = st.st_gid;
  }
  record->base = *record->pending;
  record->pending.reset();
  if (absl::Status written = WriteRecord(path, *record, mode, group);
      !written.ok()) {
    return absl::Status(written.code(),
                        absl::StrCat("settling an interrupted rotation of \"",
                                     path, "\": ", written.message()));
  }
  return record;
}

// Runs fn(record) under the shared rotation lock once the record is
// settled (settling first under the exclusive lock if needed).
template <typename Fn>
absl::Status WithSettledRecord(const std::string& path, Fn fn) {
  for (;;) {
    {
      absl::ReaderMutexLock lock(&rotation_mu);
      absl::StatusOr<Record> record = LoadRecord(path);
      if (!record.ok()) return record.status();
      if (!record->pending.has_value()) {
        fn(*record);
        return absl::OkStatus();
      }
    }
    absl::MutexLock lock(&rotation_mu);
    absl::StatusOr<Record> settled = SettledRecordLocked(path);
    if (!settled.ok()) return settled.status();
  }
}

// Where a named copy is now: P.k, or P.k+1 (a crash mid-shift); nullopt
// if neither is it (dropped).
std::optional<std::string> FindCopy(const std::string& path,
                                    const CopyRecord& copy) {
  for (int k : {copy.k, copy.k + 1}) {
    const std::string file = CopyPath(path, k);
    struct stat st;
    if (stat(file.c_str(), &st) == 0 &&
        static_cast<uint64_t>(st.st_ino) == copy.ino &&
        static_cast<uint64_t>(st.st_size) >= copy.size) {
      return file;
    }
  }
  return std::nullopt;
}

// A readable range of logical offsets: a kept copy, or P itself.
struct Kept {
  uint64_t start = 0;
  uint64_t size = 0;
  std::string file;  // empty: P
};

// The copies that are there, oldest first, then P.
std::vector<Kept> KeptOf(const std::string& path, const Record& record,
                         int current_fd) {
  std::vector<Kept> kept;
  for (const CopyRecord& copy : record.copies) {
    if (copy.size == 0) continue;
    if (std::optional<std::string> file = FindCopy(path, copy)) {
      kept.push_back({copy.start, copy.size, *file});
    }
  }
  std::sort(kept.begin(), kept.end(),
            [](const Kept& a, const Kept& b) { return a.start < b.start; });
  kept.push_back({record.base, CurrentSize(path, current_fd), ""});
  return kept;
}

LogSpan SpanOf(const std::vector<Kept>& kept) {
  LogSpan span;
  span.base = kept.back().start;
  span.end = kept.back().start + kept.back().size;
  span.start = kept.front().start;
  return span;
}

// Reads up to `n` bytes at `offset` of `fd` (short at its end).
std::string PRead(int fd, uint64_t offset, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r =
        pread(fd, out.data() + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

// Copies [from, from + n) of `in` to `out` at `to` (less if `in` is
// shorter).
absl::Status CopyRange(int in, uint64_t from, uint64_t n, int out,
                       uint64_t to) {
  loff_t in_off = static_cast<loff_t>(from);
  loff_t out_off = static_cast<loff_t>(to);
  uint64_t left = n;
  bool plain = false;
  while (left > 0 && !plain) {
    ssize_t r = copy_file_range(in, &in_off, out, &out_off, left, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
                  errno == EOPNOTSUPP)) {
      plain = true;
      break;
    }
    if (r < 0) return Errno("copy_file_range");
    if (r == 0) return absl::OkStatus();  // The source is shorter.
    left -= static_cast<uint64_t>(r);
  }
  std::string buf;
  while (left > 0) {
    buf = PRead(in, static_cast<uint64_t>(in_off),
                static_cast<size_t>(std::min<uint64_t>(left, 1 << 20)));
    if (buf.empty()) return absl::OkStatus();
    size_t done = 0;
    while (done < buf.size()) {
      ssize_t w = pwrite(out, buf.data() + done, buf.size() - done,
                         static_cast<off_t>(out_off) + done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return Errno("write of a rotated copy");
      done += static_cast<size_t>(w);
    }
    in_off += static_cast<loff_t>(buf.size());
    out_off += static_cast<loff_t>(buf.size());
    left -= buf.size();
  }
  return absl::OkStatus();
}

}  // namespace

LogSpan LogSpanOf(const std::string& path) {
  LogSpan span;
  absl::Status status = WithSettledRecord(path, [&](const Record& record) {
    span = SpanOf(KeptOf(path, record, -1));
  });
  if (!status.ok()) span = LogSpan{0, 0, 0, status};
  return span;
}

LogRead ReadLog(const std::string& path, uint64_t from, size_t max_bytes,
                int current_fd) {
  LogRead out;
  out.offset = from;
  absl::Status status = WithSettledRecord(path, [&](const Record& record) {
    const std::vector<Kept> kept = KeptOf(path, record, current_fd);
    // The first range not wholly before `from`; bytes before it that were
    // asked for are no longer kept.
    for (const Kept& range : kept) {
      if (range.start + range.size <= from) continue;
      if (range.start > from) {
        out.skipped = range.start - from;
        out.offset = range.start;
      }
      if (max_bytes == 0) return;
      const uint64_t at = out.offset - range.start;
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(max_bytes, range.size - at));
      if (range.file.empty() && current_fd >= 0) {
        out.data = PRead(current_fd, at, n);
      } else {
        Fd fd(OpenRead(range.file.empty() ? path : range.file));
        if (fd.get() >= 0) out.data = PRead(fd.get(), at, n);
      }
      return;
    }
  });
  if (!status.ok()) {
    out = LogRead{};
    out.offset = from;
    out.status = status;
  }
  return out;
}

std::string ReadLogTail(const std::string& path, uint64_t from, size_t limit,
                        int current_fd) {
  if (limit == 0) return "";
  const LogSpan span = LogSpanOf(path);
  if (!span.status.ok()) {
    // Offsets unknown: P's own tail is still the best failure reason.
    Fd own(current_fd >= 0 ? -1 : OpenRead(path));
    const int fd = current_fd >= 0 ? current_fd : own.get();
    if (fd < 0) return "";
    const uint64_t size = CurrentSize(path, fd);
    return PRead(fd, size > limit ? size - limit : 0, limit);
  }
  uint64_t at = std::max(from, span.start);
  // A `from` past the end (the file was replaced): its whole tail.
  if (at > span.end) at = span.start;
  if (span.end - at > limit) at = span.end - limit;
  std::string out;
  while (out.size() < limit) {
    LogRead read = ReadLog(path, at, limit - out.size(), current_fd);
    if (read.data.empty()) break;
    at = read.offset + read.data.size();
    out += read.data;
  }
  return out;
}

uint64_t TailLinesOffset(const std::string& path, size_t lines,
                         uint64_t not_before, uint64_t max_scan) {
  const LogSpan span = LogSpanOf(path);
  if (lines == 0) return span.end;
  const uint64_t floor = std::max(
      {span.start, not_before, span.end > max_scan ? span.end - max_scan : 0});
  if (span.end <= floor) return span.end;
  uint64_t pos = span.end;
  size_t found = 0;
  bool last_byte = true;
  constexpr size_t kBlock = 64 << 10;
  while (pos > floor) {
    const uint64_t lo = pos - std::min<uint64_t>(pos - floor, kBlock);
    // A block may span a copy and the next file: read on until whole.
    LogRead read = ReadLog(path, lo, static_cast<size_t>(pos - lo));
    while (read.offset == lo && read.data.size() < pos - lo) {
      LogRead more = ReadLog(path, lo + read.data.size(),
                             static_cast<size_t>(pos - lo - read.data.size()));
      if (more.data.empty()) break;
      read.data += more.data;
    }
    if (read.offset != lo || read.data.size() != pos - lo) return pos;
    for (size_t i = read.data.size(); i-- > 0;) {
      if (read.data[i] != '\n') {
        last_byte = false;
        continue;
      }
      // The newline that ends the last line does not start one.
      if (last_byte) {
        last_byte = false;
        continue;
      }
      if (++found == lines) return lo + i + 1;
    }
    pos = lo;
  }
  return floor;
}

namespace {

// A corrupt record: logged once per file, returned every time.
absl::Status Refuse(const std::string& path, absl::Status status) {
  if (status.code() == absl::StatusCode::kDataLoss) {
    absl::MutexLock lock(&corrupt_mu);
    if (LoggedCorrupt().insert(path).second) {
      LOG(ERROR) << status.message() << "; \"" << path
                 << "\" grows past its cap until then";
    }
  }
  return status;
}

}  // namespace

absl::StatusOr<RotateResult> RotateLog(const std::string& path,
                                       const RotateOptions& options) {
  const absl::Time started = absl::Now();
  RotateResult result;
  auto stop = [&](RotateStep step) {
    return options.stop_after && options.stop_after(step);
  };
  auto stopped = [&](RotateStep step) {
    return absl::AbortedError(absl::StrCat(
        "rotation of \"", path, "\" stopped by the test hook after step ",
        static_cast<int>(step)));
  };
  Fd fd(open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY));
  if (fd.get() < 0) {
    if (errno == ENOENT) return result;
    return Errno(absl::StrCat("cannot open \"", path, "\" to rotate it"));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return Errno(absl::StrCat("cannot stat \"", path, "\""));
  }
  const mode_t mode = st.st_mode & 07777;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t block = st.st_blksize > 0 ? st.st_blksize : 4096;
  bool collapse = !options.force_truncate;
  if (collapse) {
    absl::MutexLock lock(&no_collapse_mu);
    collapse = NoCollapse().count(st.st_dev) == 0;
  }
  // Collapse whole blocks, leaving at least one byte (the range must end
  // before the end of the file).
  uint64_t cut = collapse ? (size > 0 ? (size - 1) / block * block : 0) : size;
  if (cut == 0 && collapse && size > 0) collapse = false, cut = size;
  if (cut == 0) return result;
  // A corrupt record: nothing is touched (checked again under the lock).
  {
    absl::ReaderMutexLock lock(&rotation_mu);
    absl::StatusOr<Record> record = LoadRecord(path);
    if (!record.ok()) return Refuse(path, record.status());
  }
  // The collapse flushes P's dirty pages from the cut on under the inode
  // lock, which the proc's appends wait for: flush them first, without it.
  if (collapse) fdatasync(fd.get());

  // The copy of what goes, made and made durable before the lock (readers
  // and other rotations go on meanwhile).
  const std::string rotating = absl::StrCat(path, ".rotating");
  std::optional<Fd> copy;
  uint64_t copy_ino = 0;
  if (options.keep > 0) {
    copy.emplace(open(rotating.c_str(),
                      O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                      mode));
    if (copy->get() < 0) {
      return Errno(absl::StrCat("cannot create \"", rotating, "\""));
    }
    SetModeAndGroup(rotating, copy->get(), mode, st.st_gid).IgnoreError();
    absl::Status copied = CopyRange(fd.get(), 0, cut, copy->get(), 0);
    if (copied.ok() && fsync(copy->get()) != 0) copied = Errno("fsync");
    struct stat copy_st;
    if (copied.ok() && fstat(copy->get(), &copy_st) != 0)
      copied = Errno("stat");
    if (!copied.ok()) {
      unlink(rotating.c_str());
      return absl::Status(
          copied.code(),
          absl::StrCat("rotating \"", path, "\": ", copied.message()));
    }
    copy_ino = static_cast<uint64_t>(copy_st.st_ino);
  }
  if (stop(RotateStep::kCopied)) return stopped(RotateStep::kCopied);

  absl::MutexLock lock(&rotation_mu);
  absl::StatusOr<Record> settled = SettledRecordLocked(path);
  if (!settled.ok()) return Refuse(path, settled.status());
  Record record = *std::move(settled);
  const uint64_t base = record.base;
  const uint64_t locked_size = CurrentSize(path, fd.get());
  if (locked_size < cut) {
    // Cut meanwhile by another rotation: this copy is stale.
    if (copy.has_value()) unlink(rotating.c_str());
    return result;
  }

  // The shift, oldest first. Named copies beyond `keep` are dropped.
  std::vector<CopyRecord> next;  // oldest first while built
  if (options.keep > 0) {
    for (auto it = record.copies.rbegin(); it != record.copies.rend(); ++it) {
      int at = 0;
      for (int k : {it->k, it->k + 1}) {
        struct stat cst;
        if (at == 0 && stat(CopyPath(path, k).c_str(), &cst) == 0 &&
            static_cast<uint64_t>(cst.st_ino) == it->ino &&
            static_cast<uint64_t>(cst.st_size) >= it->size) {
          at = k;
        }
      }
      if (at == 0 || at + 1 > options.keep) continue;
      if (rename(CopyPath(path, at).c_str(), CopyPath(path, at + 1).c_str()) !=
          0) {
        return Errno(
            absl::StrCat("cannot rename \"", CopyPath(path, at), "\""));
      }
      next.push_back({at + 1, it->start, it->size, it->ino});
      if (stop(RotateStep::kShifting)) return stopped(RotateStep::kShifting);
    }
    if (rename(rotating.c_str(), CopyPath(path, 1).c_str()) != 0) {
      return Errno(absl::StrCat("cannot rename \"", rotating, "\""));
    }
    next.push_back({1, base, cut, copy_ino});
    std::reverse(next.begin(), next.end());
    if (stop(RotateStep::kShifting)) return stopped(RotateStep::kShifting);
  }
  if (stop(RotateStep::kShifted)) return stopped(RotateStep::kShifted);

  // Cut pending: past the end of P now, every offset a reader may have
  // been served (readers wait for the lock from here on).
  record.copies = next;
  record.pending = base + locked_size;
  if (absl::Status written = WriteRecord(path, record, mode, st.st_gid);
      !written.ok()) {
    return written;
  }
  if (stop(RotateStep::kRecorded)) return stopped(RotateStep::kRecorded);

  uint64_t rotated = 0;
  if (collapse) {
    if (fallocate(fd.get(), FALLOC_FL_COLLAPSE_RANGE, 0,
                  static_cast<off_t>(cut)) == 0) {
      // Durable before the record says so.
      fdatasync(fd.get());
      rotated = cut;
      result.collapsed = true;
    } else if (errno == EOPNOTSUPP) {
      absl::MutexLock no(&no_collapse_mu);
      NoCollapse().insert(st.st_dev);
    }
  }
  if (!result.collapsed) {
    // Copy-then-truncate: the rest of P goes to P.1 as well (until it stops
    // growing), then P is emptied.
    uint64_t copied = cut;
    for (int round = 0;; ++round) {
      const uint64_t now_size = CurrentSize(path, fd.get());
      // A proc that outwrites the copy loses what it wrote since the last
      // round (at most 8 rounds).
      if (now_size <= copied || round == 8) {
        const absl::Time checked = absl::Now();
        if (ftruncate(fd.get(), 0) != 0) {
          return Errno(absl::StrCat("cannot truncate \"", path, "\""));
        }
        result.window = absl::Now() - checked;
        break;
      }
      if (copy.has_value()) {
        absl::Status more =
            CopyRange(fd.get(), copied, now_size - copied, copy->get(), copied);
        if (!more.ok()) return more;
      }
      copied = now_size;
    }
    if (copy.has_value() && fsync(copy->get()) != 0) {
      return Errno(absl::StrCat("cannot fsync \"", CopyPath(path, 1), "\""));
    }
    rotated = copied;
  }
  if (stop(RotateStep::kCut)) return stopped(RotateStep::kCut);

  // The new base, written once, after the cut.
  record.base = base + rotated;
  record.pending.reset();
  if (!record.copies.empty()) record.copies.front().size = rotated;
  if (absl::Status written = WriteRecord(path, record, mode, st.st_gid);
      !written.ok()) {
    return written;
  }
  // Copies no longer named (beyond `keep`, or left by a crash) go.
  for (int k = std::max(options.keep, 0) + 1, missing = 0;
       k <= kMaxCopies && missing < 2; ++k) {
    missing = unlink(CopyPath(path, k).c_str()) != 0 && errno == ENOENT
                  ? missing + 1
                  : 0;
  }
  result.rotated = rotated;
  result.took = absl::Now() - started;
  return result;
}

}  // namespace mesh
