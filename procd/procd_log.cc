#include "procd/procd_log.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/process/log_file.h"

namespace mesh {
namespace {

constexpr char kStderrLogName[] = "stderr.log";

// write(2) of all of `text`, retried on EINTR and short writes.
void WriteAll(int fd, const char* text, size_t size) {
  while (size > 0) {
    const ssize_t wrote = write(fd, text, size);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      return;  // Nowhere to say so: a log line is dropped.
    }
    text += wrote;
    size -= static_cast<size_t>(wrote);
  }
}

}  // namespace

std::optional<std::string> LogDirOf(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  const std::string link = absl::StrCat("/proc/self/fd/", fd);
  char target[PATH_MAX];
  const ssize_t length = readlink(link.c_str(), target, sizeof(target) - 1);
  if (length <= 0) return std::nullopt;
  const std::string path(target, static_cast<size_t>(length));
  if (path.front() != '/' || absl::EndsWith(path, " (deleted)")) {
    return std::nullopt;
  }
  const size_t slash = path.rfind('/');
  if (path.substr(slash + 1) != kStderrLogName) return std::nullopt;
  return slash == 0 ? std::string("/") : path.substr(0, slash);
}

absl::StatusOr<std::unique_ptr<ProcdLogFile>> ProcdLogFile::Open(
    std::string path, size_t max_bytes, mode_t mode,
    std::optional<gid_t> group) {
  absl::StatusOr<int> fd =
      OpenLogFile(path, mode, group, {.best_effort = true});
  if (!fd.ok()) return fd.status();
  struct stat st;
  const uint64_t size =
      fstat(*fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return std::unique_ptr<ProcdLogFile>(
      new ProcdLogFile(std::move(path), max_bytes, mode, group, *fd, size));
}

ProcdLogFile::ProcdLogFile(std::string path, size_t max_bytes, mode_t mode,
                           std::optional<gid_t> group, int fd, uint64_t size)
    : path_(std::move(path)),
      max_bytes_(max_bytes),
      mode_(mode),
      group_(group),
      fd_(fd),
      size_(size) {}

ProcdLogFile::~ProcdLogFile() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

void ProcdLogFile::send(google::LogSeverity severity,
                        const char* /*full_filename*/,
                        const char* base_filename, int line,
                        const google::LogMessageTime& time, const char* message,
                        size_t message_len) {
  std::string text =
      ToString(severity, base_filename, line, time, message, message_len);
  text.push_back('\n');
  Append(text);
}

void ProcdLogFile::Append(const std::string& text) {
  absl::MutexLock lock(&mu_);
  if (size_ > 0 && size_ + text.size() > max_bytes_) RotateLocked();
  if (fd_ < 0) return;
  WriteAll(fd_, text.data(), text.size());
  size_ += text.size();
}

void ProcdLogFile::RotateLocked() {
  if (!rotated_) {
    const std::string old = absl::StrCat(path_, ".1");
    if (rename(path_.c_str(), old.c_str()) != 0) {
      // Cannot rotate: start the same file over rather than grow it.
      if (ftruncate(fd_, 0) == 0) size_ = 0;
      return;
    }
    rotated_ = true;
  }
  // fd_ is on procd.log.1 now: never truncated, it is what was rotated.
  absl::StatusOr<int> fd = OpenLogFile(path_, mode_, group_,
                                       {.truncate = true, .best_effort = true});
  if (!fd.ok()) {
    // Keep appending to procd.log.1 and try again at the next rotation
    // point (max_bytes on).
    size_ = 0;
    return;
  }
  close(fd_);
  fd_ = *fd;
  size_ = 0;
  rotated_ = false;
}

bool SetUpProcdLogging(const char* argv0, size_t max_bytes) {
  // Lives as long as the process: glog may log until exit.
  static ProcdLogFile* sink = nullptr;
  if (sink != nullptr) return true;  // Set up already.
  if (!google::IsGoogleLoggingInitialized()) google::InitGoogleLogging(argv0);
  std::optional<std::string> dir = LogDirOf(STDERR_FILENO);
  if (dir.has_value()) {
    struct stat st;
    absl::StatusOr<std::unique_ptr<ProcdLogFile>> file =
        fstat(STDERR_FILENO, &st) != 0
            ? absl::ErrnoToStatus(errno, "cannot stat stderr")
            : ProcdLogFile::Open(absl::StrCat(*dir, "/", kProcdLogName),
                                 max_bytes, st.st_mode & 0666, st.st_gid);
    if (file.ok()) {
      // No glog log files of its own (glog would make one per severity in
      // /tmp); the sink gets every line, and ERROR and FATAL ones also go
      // to stderr (an actor's LOG(ERROR) may be what explains its end).
      for (google::LogSeverity severity = 0; severity < google::NUM_SEVERITIES;
           ++severity) {
        google::SetLogDestination(severity, "");
      }
      FLAGS_logtostderr = false;
      FLAGS_alsologtostderr = false;
      FLAGS_stderrthreshold = google::GLOG_ERROR;
      sink = file->release();
      google::AddLogSink(sink);
      return true;
    }
    const std::string why = absl::StrCat("procd: ", file.status().message(),
                                         "; logging to stderr\n");
    WriteAll(STDERR_FILENO, why.data(), why.size());
  }
  FLAGS_logtostderr = true;
  return false;
}

}  // namespace mesh
