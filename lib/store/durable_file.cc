#include "lib/store/durable_file.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/status.h"

namespace mesh {
namespace {

constexpr char kMagic[8] = {'H', 'M', 'S', 'T', 'O', 'R', 'E', '1'};
constexpr size_t kVersionOffset = 8;
constexpr size_t kLengthOffset = 16;
constexpr size_t kDigestOffset = 24;
constexpr size_t kDigestBytes = 32;
static_assert(kDigestOffset + kDigestBytes == DurableFile::kHeaderBytes);

void PutLittleEndian(uint64_t value, size_t bytes, char* out) {
  for (size_t i = 0; i < bytes; ++i) {
    out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  }
}

uint64_t GetLittleEndian(const char* in, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) {
    value |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  }
  return value;
}

// SHA-256 of the header's fields before the digest, then the payload.
std::string Digest(absl::string_view header_fields, absl::string_view payload) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  bool ok = context != nullptr &&
            EVP_DigestInit_ex(context, EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(context, header_fields.data(),
                             header_fields.size()) == 1 &&
            EVP_DigestUpdate(context, payload.data(), payload.size()) == 1 &&
            EVP_DigestFinal_ex(context, digest, &length) == 1 &&
            length == kDigestBytes;
  EVP_MD_CTX_free(context);
  if (!ok) std::abort();  // A broken libcrypto is not something to run on.
  return std::string(reinterpret_cast<const char*>(digest), length);
}

// `step` of a write or read of `path` failed with `err`.
absl::Status FileError(int err, absl::string_view step,
                       const std::string& path) {
  return absl::ErrnoToStatus(err, absl::StrCat(step, " \"", path, "\""));
}

absl::Status CorruptError(const std::string& path, absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat("store \"", path, "\" is corrupt: ", what));
}

// The directory holding `path`, for the fsync that makes a rename durable.
std::string DirectoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Closes an fd when it goes out of scope, unless released.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return FileError(errno, "write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadAll(int fd, const std::string& path) {
  struct stat st;
  if (fstat(fd, &st) != 0) return FileError(errno, "stat", path);
  std::string data;
  data.reserve(static_cast<size_t>(st.st_size));
  char buffer[64 * 1024];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FileError(errno, "read", path);
    }
    if (n == 0) return data;
    data.append(buffer, static_cast<size_t>(n));
  }
}

// Writes `contents` to a fresh `temp`, fsynced; unlinks it on failure.
absl::Status WriteTemp(const std::string& temp, absl::string_view contents,
                       const DurableFile::CrashHook& hook) {
  int fd = open(temp.c_str(),
                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return FileError(errno, "create", temp);
  FdCloser closer(fd);
  absl::Status status;
  // O_TRUNC keeps the mode of a stale file from an older build.
  if (fchmod(fd, 0600) != 0) status = FileError(errno, "chmod", temp);
  if (status.ok()) status = WriteAll(fd, contents, temp);
  if (status.ok() && hook) hook(CrashPoint::kAfterTempWrite);
  if (status.ok() && fsync(fd) != 0) status = FileError(errno, "fsync", temp);
  if (status.ok() && hook) hook(CrashPoint::kAfterTempFsync);
  if (status.ok() && close(closer.Release()) != 0) {
    status = FileError(errno, "close", temp);
  }
  if (!status.ok()) unlink(temp.c_str());
  return status;
}

}  // namespace

absl::string_view CrashPointName(CrashPoint point) {
  switch (point) {
    case CrashPoint::kAfterTempWrite:
      return "after-temp-write";
    case CrashPoint::kAfterTempFsync:
      return "after-temp-fsync";
    case CrashPoint::kAfterRename:
      return "after-rename";
    case CrashPoint::kBeforeDirFsync:
      return "before-dir-fsync";
  }
  return "unknown crash point";
}

DurableFile::DurableFile(std::string path, CrashHook crash_hook)
    : path_(std::move(path)), crash_hook_(std::move(crash_hook)) {}

std::string DurableFile::temp_path() const { return path_ + ".tmp"; }

absl::StatusOr<std::string> DurableFile::Load() const {
  int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FileError(errno, "open", path_);
  FdCloser closer(fd);
  ASSIGN_OR_RETURN(std::string data, ReadAll(fd, path_));

  if (data.size() < kHeaderBytes) {
    return CorruptError(path_, absl::StrCat("truncated: ", data.size(),
                                            " bytes, shorter than the ",
                                            kHeaderBytes, "-byte header"));
  }
  if (std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return CorruptError(path_, "bad magic (not a hostmesh store file)");
  }
  uint64_t version = GetLittleEndian(data.data() + kVersionOffset, 4);
  if (version > kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store \"", path_, "\" has format version ", version,
        ", newer than version ", kFormatVersion,
        " this build reads; run a newer build or remove the file"));
  }
  if (version == 0) return CorruptError(path_, "format version 0");
  uint64_t length = GetLittleEndian(data.data() + kLengthOffset, 8);
  uint64_t actual = data.size() - kHeaderBytes;
  if (length != actual) {
    return CorruptError(
        path_, absl::StrCat("header says ", length, " payload bytes, file has ",
                            actual, actual < length ? " (truncated)" : ""));
  }
  absl::string_view view(data);
  absl::string_view payload = view.substr(kHeaderBytes);
  if (Digest(view.substr(0, kDigestOffset), payload) !=
      view.substr(kDigestOffset, kDigestBytes)) {
    return CorruptError(path_, "SHA-256 checksum mismatch");
  }
  return std::string(payload);
}

absl::Status DurableFile::Write(absl::string_view payload) const {
  std::string contents(kHeaderBytes, '\0');
  std::memcpy(contents.data(), kMagic, sizeof(kMagic));
  PutLittleEndian(kFormatVersion, 4, contents.data() + kVersionOffset);
  PutLittleEndian(payload.size(), 8, contents.data() + kLengthOffset);
  std::string digest =
      Digest(absl::string_view(contents).substr(0, kDigestOffset), payload);
  std::memcpy(contents.data() + kDigestOffset, digest.data(), kDigestBytes);
  contents.append(payload.data(), payload.size());

  const std::string temp = temp_path();
  RETURN_IF_ERROR(WriteTemp(temp, contents, crash_hook_));
  if (rename(temp.c_str(), path_.c_str()) != 0) {
    absl::Status status =
        FileError(errno, absl::StrCat("rename \"", temp, "\" over"), path_);
    unlink(temp.c_str());
    return status;
  }
  if (crash_hook_) crash_hook_(CrashPoint::kAfterRename);

  // The rename is done; only its durability is left.
  const std::string dir = DirectoryOf(path_);
  int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return FileError(errno, "open directory", dir);
  FdCloser dir_closer(dir_fd);
  if (crash_hook_) crash_hook_(CrashPoint::kBeforeDirFsync);
  if (fsync(dir_fd) != 0) return FileError(errno, "fsync directory", dir);
  return absl::OkStatus();
}

absl::Status DurableFile::RemoveStaleTemp() const {
  const std::string temp = temp_path();
  if (unlink(temp.c_str()) != 0 && errno != ENOENT) {
    return FileError(errno, "remove stale", temp);
  }
  return absl::OkStatus();
}

DurableFile::Writer::Writer(DurableFile file) : file_(std::move(file)) {
  // Best effort: a write truncates the temp file anyway, and reports what
  // keeps it from doing so.
  file_.RemoveStaleTemp().IgnoreError();
  thread_ = std::thread([this] { Run(); });
}

DurableFile::Writer::~Writer() {
  Flush().IgnoreError();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void DurableFile::Writer::Save(std::string payload, DurableCallback durable) {
  SaveLatest(
      [payload = std::move(payload)]() mutable { return std::move(payload); },
      std::move(durable));
}

void DurableFile::Writer::SaveLatest(Produce produce, DurableCallback durable) {
  absl::MutexLock lock(&mu_);
  pending_ = std::move(produce);
  ++saved_;
  ++stats_.saves;
  if (durable) callbacks_.emplace_back(saved_, std::move(durable));
}

absl::Status DurableFile::Writer::Flush() {
  absl::MutexLock lock(&mu_);
  const int64_t target = saved_;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return written_ >= target;
  };
  mu_.Await(absl::Condition(&done));
  return last_status_;
}

DurableFile::Writer::Stats DurableFile::Writer::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void DurableFile::Writer::Run() {
  auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_.has_value() || stopping_;
  };
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(&has_work));
    if (!pending_.has_value()) return;  // stopping, nothing left to write
    Produce produce = std::move(*pending_);
    pending_.reset();
    // Made after this is read: it holds every change saved up to here.
    const int64_t sequence = saved_;

    mu_.Unlock();
    absl::Status status = file_.Write(produce());
    mu_.Lock();

    written_ = sequence;
    last_status_ = status;
    ++stats_.writes;
    if (!status.ok()) ++stats_.failed_writes;
    // Callbacks are queued in sequence order: those this write covered
    // come first.
    std::vector<DurableCallback> covered;
    auto keep = callbacks_.begin();
    while (keep != callbacks_.end() && keep->first <= sequence) {
      covered.push_back(std::move(keep->second));
      ++keep;
    }
    callbacks_.erase(callbacks_.begin(), keep);
    if (!covered.empty()) {
      mu_.Unlock();
      for (DurableCallback& callback : covered) callback(status);
      mu_.Lock();
    }
  }
}

}  // namespace mesh
