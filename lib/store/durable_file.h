// DurableFile: one file holding one serialized message (hostd's proc table),
// replaced whole and crash-consistently: after a crash at any point a Load
// returns exactly the previous payload or the new one, never a mix, a torn
// file or nothing (issue 9, item 1).
//
// On disk (little-endian; magic and version stay where they are in every
// future format, so any build can tell a newer file from a corrupt one):
//
//   offset  size  field
//        0     8  magic "HMSTORE1"
//        8     4  format version (kFormatVersion)
//       12     4  reserved, 0
//       16     8  payload length in bytes
//       24    32  SHA-256 of bytes 0..23 followed by the payload
//       56     n  payload
//
// A write goes to <path>.tmp (created 0600), is fsynced, renamed over <path>,
// and the directory is fsynced: the rename is the commit point, the
// directory fsync makes it survive a power loss. Transport-free, and knows
// nothing of what the payload means.
#ifndef HOSTMESH_LIB_STORE_DURABLE_FILE_H_
#define HOSTMESH_LIB_STORE_DURABLE_FILE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace mesh {

// The steps of a write a test can stop at (DurableFile::CrashHook).
enum class CrashPoint {
  kAfterTempWrite,  // <path>.tmp written, not yet fsynced
  kAfterTempFsync,  // <path>.tmp durable, not yet renamed
  kAfterRename,     // renamed over <path>, directory not yet opened
  kBeforeDirFsync,  // directory open, not yet fsynced
};

// Every CrashPoint, in the order a write reaches them.
inline constexpr CrashPoint kCrashPoints[] = {
    CrashPoint::kAfterTempWrite, CrashPoint::kAfterTempFsync,
    CrashPoint::kAfterRename, CrashPoint::kBeforeDirFsync};

// "after-temp-write", "after-temp-fsync", "after-rename", "before-dir-fsync"
// (as hostd's --test-crash-at names them).
absl::string_view CrashPointName(CrashPoint point);

class DurableFile {
 public:
  // The format this build writes, and the newest it reads.
  static constexpr uint32_t kFormatVersion = 1;
  static constexpr size_t kHeaderBytes = 56;

  // Called at each CrashPoint of every write, on the writing thread. Tests
  // only: a hook that ends the process (_exit, SIGKILL) leaves the file as
  // a crash at that step would. Production code passes none.
  using CrashHook = std::function<void(CrashPoint)>;

  explicit DurableFile(std::string path, CrashHook crash_hook = nullptr);

  const std::string& path() const { return path_; }
  // <path>.tmp, where writes are staged.
  std::string temp_path() const;

  // The payload last written. NOT_FOUND if there is no file (a first
  // start); DATA_LOSS naming the path and what is wrong if the file is torn
  // or corrupt; FAILED_PRECONDITION naming both versions if a newer build
  // wrote it. Read-only: ignores a <path>.tmp, and is safe while a write is
  // in progress (it sees the old or the new file).
  absl::StatusOr<std::string> Load() const;

  // Replaces the file's payload durably (see the file comment); returns once
  // the new payload survives a power loss. Errors name the path and the
  // step. Callers serialize writes to one path (DurableFile::Writer does).
  absl::Status Write(absl::string_view payload) const;

  // Removes a <path>.tmp that a write interrupted by a crash left behind.
  // Absent is fine. Not while a write to this path may be in progress.
  absl::Status RemoveStaleTemp() const;

  class Writer;

 private:
  std::string path_;
  CrashHook crash_hook_;
};

// Grouped, asynchronous writes of one DurableFile.
//
// Threads: Save, Flush and stats may be called from any thread. Writes run
// on one thread the Writer owns, one at a time. While a write is in flight
// later payloads replace each other: only the newest is written next, so a
// burst of Saves costs about two writes, not one per Save. With SaveLatest
// the payload is not even made per change: the writer asks for it once,
// when the write starts.
//
// Owner: one Writer per path (in hostd, the proc table's owner), which has
// it write nothing else. Construction removes a stale <path>.tmp, so Load
// the file first and create the Writer after.
//
// Shutdown: stop every thread that may call Save, then destroy the Writer.
// The destructor flushes (the last payload saved is written before it
// returns; its status is dropped, so call Flush first to see it) and joins
// the thread.
class DurableFile::Writer {
 public:
  struct Stats {
    int64_t saves = 0;          // Save calls
    int64_t writes = 0;         // writes started and finished (each: 2 fsyncs)
    int64_t failed_writes = 0;  // of those, writes that returned an error
  };

  explicit Writer(DurableFile file);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  const DurableFile& file() const { return file_; }

  // Runs once a saved payload is durable, with the status of the write that
  // covered it (that payload's, or a newer one's).
  using DurableCallback = std::function<void(const absl::Status&)>;

  // Queues `payload` to replace the file's content and returns at once.
  // `durable` (optional) runs on the writer's thread once the payload (or a
  // newer one) was written, without the writer's lock held; it must not
  // call Flush or destroy the Writer. Callbacks still queued when the
  // Writer is destroyed run from the destructor (after its final write).
  void Save(std::string payload, DurableCallback durable = nullptr);

  // Makes the payload at once.
  using Produce = std::function<std::string()>;
  // Like Save, but the payload is made by `produce` on the writer's thread
  // when the next write starts (without the writer's lock held): it must
  // return the content as of then, so a burst of changes costs one
  // serialization per write, not one per change. `produce` must stay
  // callable until the Writer is destroyed (the destructor's last write may
  // call it).
  void SaveLatest(Produce produce, DurableCallback durable = nullptr);

  // Waits until everything saved before the call is durable (written, or
  // replaced by a newer payload that was written) and returns the status
  // of the last write that finished: OK, or the error that left the file
  // behind what was saved. OK at once if nothing was ever saved.
  absl::Status Flush();

  Stats stats() const;

 private:
  void Run();

  const DurableFile file_;

  mutable absl::Mutex mu_;
  // The newest payload not yet taken by the writing thread.
  std::optional<Produce> pending_ ABSL_GUARDED_BY(mu_);
  // Save calls so far; the sequence number of the newest payload.
  int64_t saved_ ABSL_GUARDED_BY(mu_) = 0;
  // The sequence number of the payload of the last write that finished.
  int64_t written_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status last_status_ ABSL_GUARDED_BY(mu_);
  // Callbacks of saved payloads not yet written, by sequence number.
  std::vector<std::pair<int64_t, DurableCallback>> callbacks_
      ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_STORE_DURABLE_FILE_H_
