// Where a proc's own log lines go. A proc's stdout and stderr are its
// user's: hostd quotes the last stderr lines when the proc fails. So
// procd's glog lines (and those of actors that use glog) go to procd.log in
// the proc's log dir, beside stderr.log; only ERROR and FATAL lines (an
// actor's LOG(ERROR), a CHECK failure with glog's stack trace) also reach
// stderr, as they may explain why the proc ended. INFO and WARNING lines
// are in procd.log alone.
//
// The log dir is where the proc's stderr is: hostd's supervisor makes fd 2
// <log_dir>/stderr.log. When fd 2 is anything else (a pipe, a terminal, a
// file of another name: procd run by hand or by a test's fake host), glog
// keeps writing everything to stderr, as before.
//
// procd.log is bounded: past max_bytes it becomes procd.log.1 (replacing
// the one before) and a new procd.log starts, so at most twice max_bytes
// are kept. (If the new procd.log cannot be created, lines go on to
// procd.log.1, never emptied, and the next rotation point tries again.) It
// gets the mode and group of stderr.log (a group this proc's user is not
// in: the file keeps its own).
#ifndef HOSTMESH_PROCD_PROCD_LOG_H_
#define HOSTMESH_PROCD_PROCD_LOG_H_

#include <glog/logging.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace mesh {

inline constexpr char kProcdLogName[] = "procd.log";
inline constexpr size_t kProcdLogMaxBytes = 8 << 20;

// The directory of the file `fd` is open on if that file is a regular file
// named stderr.log; nullopt otherwise.
std::optional<std::string> LogDirOf(int fd);

// A glog sink appending every line it is sent to one file, rotated to
// "<path>.1" past max_bytes. Each line is written with one write(2) (none is
// lost if the proc crashes just after). Thread-safe: glog calls it from
// whichever thread logs.
class ProcdLogFile : public google::LogSink {
 public:
  // Opens (creating or appending to) `path` with `mode` (e.g. 0600) and,
  // if `group` is set, that group (best effort: see the top of this file).
  static absl::StatusOr<std::unique_ptr<ProcdLogFile>> Open(
      std::string path, size_t max_bytes, mode_t mode,
      std::optional<gid_t> group = std::nullopt);
  ~ProcdLogFile() override;
  ProcdLogFile(const ProcdLogFile&) = delete;
  ProcdLogFile& operator=(const ProcdLogFile&) = delete;

  void send(google::LogSeverity severity, const char* full_filename,
            const char* base_filename, int line,
            const google::LogMessageTime& time, const char* message,
            size_t message_len) override;

  // Appends `text` as it is (rotating first if it would not fit).
  void Append(const std::string& text);

 private:
  ProcdLogFile(std::string path, size_t max_bytes, mode_t mode,
               std::optional<gid_t> group, int fd, uint64_t size);
  void RotateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const size_t max_bytes_;
  const mode_t mode_;
  const std::optional<gid_t> group_;
  absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
  // Bytes written to fd_ since it was opened or since the last rotation
  // point.
  uint64_t size_ ABSL_GUARDED_BY(mu_);
  // fd_ was renamed to "<path>.1" but a new `path` could not be opened:
  // the next rotation point only retries opening it.
  bool rotated_ ABSL_GUARDED_BY(mu_) = false;
};

// Sets glog up for a proc (see the top of this file): initializes it if it
// is not yet, and, if fd 2 is <log_dir>/stderr.log, sends every line to
// <log_dir>/procd.log and only ERROR and FATAL ones to stderr too. Returns
// true if it did (procd's INFO and WARNING lines are out of stderr), false
// if glog writes everything to stderr.
// Call once, before any thread logs.
bool SetUpProcdLogging(const char* argv0, size_t max_bytes = kProcdLogMaxBytes);

}  // namespace mesh

#endif  // HOSTMESH_PROCD_PROCD_LOG_H_
