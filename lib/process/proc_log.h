// A proc's output files (<log_dir>/stdout.log and stderr.log) with a size
// cap: rotation that never blocks the writer, and offsets that stay
// monotonic across rotations and hostd restarts.
//
// Layout, for a log file P (the proc appends to P through its own O_APPEND
// descriptor; nobody else writes it):
//   P             the newest bytes;
//   P.1 ... P.N   rotated copies, P.1 the newest (at most `keep`);
//   P.rotated     the record: the logical offset of P's first byte ("the
//                 base") and, for each kept copy, its logical start, size
//                 and inode (text, see proc_log.cc). Replaced atomically
//                 and durably (tmp, fsync, rename, fsync of the directory).
// A logical offset counts every byte ever written to P: byte x of P is at
// base + x; a copy covers [start, start + size). Readers trust only the
// copies the record names (found by inode at P.k, or P.k+1 after a crash in
// the middle of a shift); a byte in no kept copy reads as skipped.
//
// Promise, also across crashes of hostd (at any step) and power loss:
// offsets never go back (the base and the end only grow), and the bytes at
// an offset are the bytes first served there, or none (skipped). See the
// crash windows at the top of proc_log.cc.
//
// Rotation (RotateLog, run by hostd when P passes its cap): copy P's
// leading whole blocks to P.rotating (copy_file_range), then, under the
// rotation lock, shift the copies (P.1 -> P.2 ...; P.rotating -> P.1),
// record "cut pending", cut those bytes out of P's head with
// fallocate(FALLOC_FL_COLLAPSE_RANGE) (ext4, xfs: atomic against the
// proc's appends, nothing lost, the proc's descriptor stays valid), and
// record the new base. Where collapse is not supported (tmpfs, btrfs...),
// copy-then-truncate: the rest of P is appended to P.1, then P is truncated
// to 0; bytes the proc wrote between the last copy and the truncate are
// lost (the "window", RotateResult::window; microseconds).
//
// A record that cannot be parsed is never read as offset 0: RotateLog
// refuses to rotate (P grows past its cap; logged once per file) and
// readers get DATA_LOSS in LogSpan::status / LogRead::status.
//
// Readers in this process (ReadLog, LogSpanOf) take the rotation lock
// shared, so they never see a half-done rotation. Thread-safe.
#ifndef HOSTMESH_LIB_PROCESS_PROC_LOG_H_
#define HOSTMESH_LIB_PROCESS_PROC_LOG_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mesh {

// What is kept of a log file, in logical offsets: [start, end). Bytes
// before `start` were rotated beyond `keep` (dropped); `end` is where the
// next byte the proc writes will be.
struct LogSpan {
  uint64_t start = 0;
  uint64_t end = 0;
  // Logical offset of P's first byte (bytes rotated out of P so far).
  uint64_t base = 0;
  // DATA_LOSS if P.rotated is corrupt (the offsets above are then 0 and
  // mean nothing), or the error settling a crashed rotation.
  absl::Status status;
};

// P's span now. A missing P is empty at its base.
LogSpan LogSpanOf(const std::string& path);

struct LogRead {
  // Logical offset of data[0].
  uint64_t offset = 0;
  std::string data;
  // Bytes asked for (from `from` on) that are no longer kept: offset - from
  // when `from` was before the kept span or in a gap, else 0.
  uint64_t skipped = 0;
  // Not OK (DATA_LOSS: P.rotated is corrupt): no data, offsets unknown.
  absl::Status status;
};

// At most `max_bytes` from logical offset `from` (from the oldest kept
// byte if `from` is older), out of P's copies and P. Nothing at or past
// the end. `current_fd` >= 0: read P through it (an open descriptor of P)
// rather than by path.
LogRead ReadLog(const std::string& path, uint64_t from, size_t max_bytes,
                int current_fd = -1);

// The last `limit` bytes written at or after logical offset `from` (the
// stderr tail of a failure reason: `from` is where its spawn began),
// across a rotation. If P.rotated is corrupt: P's last `limit` bytes.
std::string ReadLogTail(const std::string& path, uint64_t from, size_t limit,
                        int current_fd = -1);

// Where the last `lines` lines of what is kept begin (a last line without
// its newline counts), scanning back from the end at most `max_scan`
// bytes; not before `not_before`. 0 lines: the end.
uint64_t TailLinesOffset(const std::string& path, size_t lines,
                         uint64_t not_before = 0,
                         uint64_t max_scan = 64ull << 20);

// Steps of a rotation a test can stop after (RotateOptions::stop_after).
enum class RotateStep {
  kCopied,    // P.rotating holds the copy (fsynced); nothing else changed
  kShifting,  // one rename of the shift done (called after each)
  kShifted,   // every copy renamed, P.rotating is P.1; record not written
  kRecorded,  // record with the new copy and "cut pending" durable; P uncut
  kCut,       // P collapsed or truncated; the new base not yet recorded
};

struct RotateOptions {
  // Rotated copies kept (P.1 .. P.keep); 0: rotated bytes are dropped.
  int keep = 3;
  // Tests: copy-then-truncate even where the file system could collapse.
  bool force_truncate = false;
  // Tests: called after each step; true stops the rotation right there
  // (RotateLog returns ABORTED), leaving the files as a crash would.
  std::function<bool(RotateStep)> stop_after;
};

struct RotateResult {
  // Bytes cut out of P (the base grew by this much); 0: nothing to do.
  uint64_t rotated = 0;
  // Cut with FALLOC_FL_COLLAPSE_RANGE (nothing lost) or truncated.
  bool collapsed = false;
  // Truncation only: from the last size check to the truncate, the time
  // in which what the proc wrote was lost.
  absl::Duration window = absl::ZeroDuration();
  // Whole rotation, copy included.
  absl::Duration took = absl::ZeroDuration();
};

// Rotates P now (the caller checks the cap): see the file comment. P's
// copies and P.rotated get P's mode and group. A P shorter than one block
// (collapse) is left alone. Errors name the file and step; DATA_LOSS if
// P.rotated is corrupt (nothing is changed).
absl::StatusOr<RotateResult> RotateLog(const std::string& path,
                                       const RotateOptions& options = {});

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_PROC_LOG_H_
