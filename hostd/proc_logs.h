// ProcLogs: hostd's side of its procs' output files, transport-free.
//
//  - Cap and rotation: one poller thread (never one per stream or proc)
//    looks at every live proc's stdout.log and stderr.log each `poll`
//    (100 ms) and rotates a file past `max_bytes` (RotateLog,
//    lib/process/proc_log.h: collapse, else copy-then-truncate), keeping
//    `keep` copies. A file may pass the cap by what its proc writes within
//    one poll. The proc writes its own descriptors: rotation never blocks
//    it, and its output still lands while no hostd runs.
//  - Time index: every `sample` (1 s) the poller records (wall time, end
//    offset) of each live file that grew, at most `max_samples` per file,
//    in memory (a restarted hostd starts a new index; before its first
//    sample a `since` reads from the start of what is kept, and a file not
//    watched since uses its mtime).
//  - Streams (StreamLogs): Open gives a LogStream over some procs' files
//    that hands out one chunk at a time (Read); when it has nothing to
//    send while following, the poller calls its wake function once new
//    bytes are there or a followed proc ended. At most `max_streams` are
//    open (RESOURCE_EXHAUSTED past that); each holds one chunk at most.
//
// The manager's hooks tell it of procs: Started before each spawn (the
// files' ends then are where the spawn's output begins: from_spawn) and for
// every proc taken over after a restart, Ended when one ends. Thread-safe.
#ifndef HOSTMESH_HOSTD_PROC_LOGS_H_
#define HOSTMESH_HOSTD_PROC_LOGS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/host.pb.h"

namespace mesh {

class LogStream;

class ProcLogs {
 public:
  struct Options {
    // A live proc's file is rotated once it passes this (0: never).
    uint64_t max_bytes = 64ull << 20;
    // Rotated copies kept per file (0: rotated bytes are dropped).
    int keep = 3;
    // How often the poller looks (rotation, wakes of following streams).
    absl::Duration poll = absl::Milliseconds(100);
    // Time index granularity, and samples kept per file.
    absl::Duration sample = absl::Seconds(1);
    size_t max_samples = 7200;
    // Open streams at most.
    int max_streams = 64;
    // Chunk data bytes: the default and the most a request may ask.
    size_t default_chunk_bytes = 64 << 10;
    size_t max_chunk_bytes = 1 << 20;
    // Tests: rotate by copy-then-truncate.
    bool force_truncate = false;
  };

  // A proc a stream reads (the caller checked the caller may see it).
  struct Target {
    std::string name;
    // Its log dir (ProcState.log_dir).
    std::string dir;
    // Not STOPPED or FAILED when the caller looked.
    bool live = false;
    // Its creation (ProcState.created_at; InfinitePast: unknown). A
    // following stream ends once the name is another creation's.
    absl::Time created = absl::InfinitePast();
    // Where the caller may start reading stdout, stderr (ProcState.
    // stdout_start, stderr_start for a client: the files outlive a name's
    // procs, and earlier ones may have been another owner's). Every
    // start (from_offset, tail, since, from_spawn) is raised to it.
    uint64_t min_offset[2] = {0, 0};
  };

  // The Target for proc `state`; `all` (an admin) may read what the
  // name's earlier procs wrote too.
  static Target TargetOf(const v1::ProcState& state, bool all);
  // Its ProcState.created_at (Started's `created`).
  static absl::Time CreatedOf(const v1::ProcState& state);

  explicit ProcLogs(Options options);
  // Ends every stream still open first (their next Read ends them).
  ~ProcLogs();
  ProcLogs(const ProcLogs&) = delete;
  ProcLogs& operator=(const ProcLogs&) = delete;

  // Proc `name` (logs in `dir`) is about to spawn incarnation
  // `incarnation` (`spawning`: its files' ends now are where it begins) or
  // is live already (taken over after a restart: 0 if unknown). Its files
  // are watched from now on. Another Started for a live one of the same
  // incarnation (or 0) changes nothing. `created`: its ProcState.created_at
  // (see Target::created).
  void Started(const std::string& name, const std::string& dir,
               uint64_t incarnation, bool spawning,
               absl::Time created = absl::InfinitePast());
  // Its incarnation `incarnation` ended (an older one's end is ignored):
  // its files get a last check (cap), streams following it end once they
  // sent everything, and its time index is thinned (kEndedSamples).
  void Ended(const std::string& name, uint64_t incarnation);

  // A stream over `targets` as `request` asks (checked here: INVALID_-
  // ARGUMENT naming the field). `wake` is called (from the poller thread,
  // at most once per Read that answered kWait) when the stream may have
  // more. RESOURCE_EXHAUSTED past max_streams; UNAVAILABLE once closing.
  absl::StatusOr<std::unique_ptr<LogStream>> Open(
      const v1::StreamLogsRequest& request, std::vector<Target> targets,
      std::function<void()> wake);

  // hostd is stopping: no new stream; open ones send what is written and
  // end (UNAVAILABLE) without waiting for more; waiting ones are woken now.
  void Close();

  int OpenStreams();
  // Rotations done (tests, the README's figures).
  uint64_t Rotations();
  // Tests: runs one poll now (rotation, index, wakes) on the caller's
  // thread.
  void PollNow();

 private:
  friend class LogStream;
  struct Sample {
    absl::Time at;
    uint64_t end = 0;
  };
  struct File {
    std::string path;
    // Logical end when last polled, and the rotated bytes (base).
    uint64_t end = 0;
    uint64_t base = 0;
    bool base_known = false;
    // Where the current incarnation began writing (from_spawn).
    std::optional<uint64_t> spawn_offset;
    std::deque<Sample> samples;
    absl::Time last_sample = absl::InfinitePast();
  };
  struct Proc {
    std::string dir;
    uint64_t incarnation = 0;
    absl::Time created = absl::InfinitePast();
    bool live = false;
    // Rises with each Started and Ended (streams tell a change by it).
    uint64_t epoch = 0;
    // Ended since the last poll: its files get one more look (the cap).
    bool final_check = false;
    File files[2];  // stdout, stderr
  };
  // A stream waiting for more: where it stands in each of its files.
  struct Waiter {
    struct At {
      std::string proc;
      int file = 0;  // 0 stdout, 1 stderr
      std::string path;
      uint64_t offset = 0;
    };
    std::vector<At> at;
    // Procs it follows that were live, and their epochs, when it waited.
    std::map<std::string, uint64_t> epochs;
    std::function<void()> wake;
  };

  void Run();
  // One poll: measures, rotates and samples the live files; wakes waiters
  // whose files grew or whose procs changed. Serialized by poll_mu_.
  void Poll();
  // Where `start` puts a stream in file `file` of proc `target`.
  uint64_t StartOffset(const v1::StreamLogsRequest& request,
                       const Target& target, int file);
  // A stream ended (its destructor).
  void Release(uint64_t stream_id);
  // A stream has nothing now: the poller wakes it (see Waiter).
  void Wait(uint64_t stream_id, Waiter waiter);
  // Whether a cursor's proc (live or not at the Open, of creation
  // `created`) has ended: it ended, or the name is a newer creation's.
  bool ProcEnded(const std::string& name, bool live_when_opened,
                 absl::Time created, uint64_t* epoch);

  const Options options_;
  absl::Mutex poll_mu_;  // One Poll at a time (thread or PollNow).
  absl::Mutex mu_;
  std::map<std::string, Proc> procs_ ABSL_GUARDED_BY(mu_);
  // Ended procs in the order they ended; the earliest are forgotten past
  // kMaxEnded.
  std::deque<std::pair<std::string, uint64_t>> ended_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_stream_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t rotations_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// One StreamLogs call's reading position: chunks in turn from each of its
// files (round robin), each file from its start offset to its end (as of
// the Open) or, following, on as it grows until its proc ended and it is
// drained. Not thread-safe (one caller at a time); the wake function may
// run on the poller thread meanwhile.
class LogStream {
 public:
  enum class Next {
    // `chunk` is filled: send it, then Read again.
    kChunk,
    // Nothing now: the wake function runs when there may be more.
    kWait,
    // Done: finish with status().
    kEnd,
  };
  ~LogStream();
  LogStream(const LogStream&) = delete;
  LogStream& operator=(const LogStream&) = delete;

  Next Read(v1::LogChunk* chunk);
  // OK once every file is done; UNAVAILABLE if hostd closed it (after
  // sending what was written).
  const absl::Status& status() const { return status_; }

 private:
  friend class ProcLogs;
  struct Cursor {
    std::string proc;
    int file = 0;
    std::string path;
    uint64_t offset = 0;
    // Not following: the end as of the Open.
    uint64_t limit = 0;
    bool live = false;
    absl::Time created = absl::InfinitePast();
    bool done = false;
    bool eof_sent = false;
  };
  LogStream(ProcLogs* logs, uint64_t id, bool follow, size_t chunk_bytes)
      : logs_(logs), id_(id), follow_(follow), chunk_bytes_(chunk_bytes) {}

  ProcLogs* const logs_;
  const uint64_t id_;
  const bool follow_;
  const size_t chunk_bytes_;
  std::vector<Cursor> cursors_;
  size_t next_ = 0;
  std::function<void()> wake_;
  absl::Status status_;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_PROC_LOGS_H_
