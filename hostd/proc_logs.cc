#include "hostd/proc_logs.h"

#include <glog/logging.h>
#include <google/protobuf/util/time_util.h>
#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lib/process/proc_log.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;

// Ended procs remembered (their time index and spawn offsets) at most.
constexpr size_t kMaxEnded = 4096;
// Time index samples kept per file of an ended proc (evenly thinned, the
// last kept: a `since` between two kept samples starts at the earlier one,
// sending more, never less). Worst case for the ended: kMaxEnded x 2 files
// x 32 x 24 B (a Sample with its deque slot) = 6.3 MB; each live proc adds
// up to 2 x max_samples x 24 B (7200: 346 KB).
constexpr size_t kEndedSamples = 32;

// Drops every other sample (keeping the last) until at most kEndedSamples.
template <typename Samples>
void Thin(Samples& samples) {
  while (samples.size() > kEndedSamples) {
    Samples kept;
    for (size_t i = (samples.size() - 1) % 2; i < samples.size(); i += 2) {
      kept.push_back(samples[i]);
    }
    samples.swap(kept);
  }
  samples.shrink_to_fit();
}
// tail_lines at most.
constexpr uint32_t kMaxTailLines = 1000000;

constexpr const char* kFileNames[2] = {"stdout.log", "stderr.log"};
constexpr v1::LogStream kFileStreams[2] = {v1::LOG_STDOUT, v1::LOG_STDERR};

std::string FilePath(const std::string& dir, int file) {
  return absl::StrCat(dir, "/", kFileNames[file]);
}

}  // namespace

absl::Time ProcLogs::CreatedOf(const v1::ProcState& state) {
  return absl::FromUnixNanos(
      TimeUtil::TimestampToNanoseconds(state.created_at()));
}

ProcLogs::Target ProcLogs::TargetOf(const v1::ProcState& state, bool all) {
  Target target;
  target.name = state.name();
  target.dir = state.log_dir();
  target.live = state.status() != v1::STOPPED && state.status() != v1::FAILED;
  target.created = CreatedOf(state);
  if (!all) {
    target.min_offset[0] = state.stdout_start();
    target.min_offset[1] = state.stderr_start();
  }
  return target;
}

ProcLogs::ProcLogs(Options options) : options_(std::move(options)) {
  thread_ = std::thread([this] { Run(); });
}

ProcLogs::~ProcLogs() {
  Close();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void ProcLogs::Run() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.poll)) return;
    }
    Poll();
  }
}

void ProcLogs::Started(const std::string& name, const std::string& dir,
                       uint64_t incarnation, bool spawning,
                       absl::Time created) {
  // Measured before the lock: a few syscalls per file.
  LogSpan spans[2];
  for (int f = 0; f < 2; ++f) spans[f] = LogSpanOf(FilePath(dir, f));
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  Proc& proc = procs_[name];
  if (proc.live && (incarnation == 0 || proc.incarnation == incarnation)) {
    return;
  }
  if (!spawning && incarnation != 0 && incarnation < proc.incarnation) return;
  proc.dir = dir;
  proc.incarnation = incarnation;
  proc.created = created;
  proc.live = true;
  ++proc.epoch;
  for (int f = 0; f < 2; ++f) {
    File& file = proc.files[f];
    file.path = FilePath(dir, f);
    file.end = spans[f].end;
    file.base = spans[f].base;
    file.base_known = true;
    file.spawn_offset = spawning ? std::optional(spans[f].end) : std::nullopt;
    // Whatever is there was written by now.
    file.samples.push_back({now, spans[f].end});
    file.last_sample = now;
    while (file.samples.size() > options_.max_samples) {
      file.samples.pop_front();
    }
  }
}

void ProcLogs::Ended(const std::string& name, uint64_t incarnation) {
  absl::MutexLock lock(&mu_);
  auto it = procs_.find(name);
  if (it == procs_.end()) {
    // Not watched (started before this hostd knew of it): its streams learn
    // it ended from here on.
    Proc& proc = procs_[name];
    proc.incarnation = incarnation;
    proc.epoch = 1;
    ended_.emplace_back(name, proc.epoch);
  } else {
    Proc& proc = it->second;
    if (proc.incarnation != 0 && incarnation != 0 &&
        incarnation != proc.incarnation) {
      return;  // An older incarnation's end.
    }
    if (!proc.live) return;
    proc.live = false;
    proc.final_check = true;
    ++proc.epoch;
    for (File& file : proc.files) Thin(file.samples);
    ended_.emplace_back(name, proc.epoch);
  }
  while (ended_.size() > kMaxEnded) {
    auto [old, epoch] = ended_.front();
    ended_.pop_front();
    auto found = procs_.find(old);
    if (found != procs_.end() && !found->second.live &&
        found->second.epoch == epoch) {
      procs_.erase(found);
    }
  }
}

void ProcLogs::Poll() {
  absl::MutexLock poll_lock(&poll_mu_);
  struct Measured {
    std::string proc;
    int file = 0;
    std::string path;
    uint64_t base = 0;
    bool base_known = false;
    uint64_t end = 0;
    bool ok = false;
  };
  std::vector<Measured> files;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, proc] : procs_) {
      if (!proc.live && !proc.final_check) continue;
      proc.final_check = false;
      for (int f = 0; f < 2; ++f) {
        files.push_back({name, f, proc.files[f].path, proc.files[f].base,
                         proc.files[f].base_known});
      }
    }
  }
  uint64_t rotated_now = 0;
  for (Measured& m : files) {
    if (!m.base_known) {
      m.base = LogSpanOf(m.path).base;
      m.base_known = true;
    }
    struct stat st;
    if (stat(m.path.c_str(), &st) != 0) continue;
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (options_.max_bytes > 0 && size > options_.max_bytes) {
      RotateOptions rotate;
      rotate.keep = options_.keep;
      rotate.force_truncate = options_.force_truncate;
      absl::StatusOr<RotateResult> rotated = RotateLog(m.path, rotate);
      if (!rotated.ok()) {
        LOG_EVERY_N(WARNING, 100)
            << "cannot rotate " << m.path << ": " << rotated.status().message();
      } else if (rotated->rotated > 0) {
        ++rotated_now;
        VLOG(1) << "rotated " << rotated->rotated << " bytes of " << m.path
                << (rotated->collapsed ? " (collapse)" : " (truncate, window ")
                << (rotated->collapsed
                        ? std::string()
                        : absl::StrCat(absl::FormatDuration(rotated->window),
                                       ")"))
                << " in " << absl::FormatDuration(rotated->took);
        m.base += rotated->rotated;
        if (stat(m.path.c_str(), &st) == 0) {
          size = static_cast<uint64_t>(st.st_size);
        }
      }
    }
    m.end = m.base + size;
    m.ok = true;
  }

  // Write back, sample, and find the waiters to wake.
  const absl::Time now = absl::Now();
  std::vector<std::function<void()>> wakes;
  struct Check {
    uint64_t waiter = 0;
    std::string path;
    uint64_t offset = 0;
  };
  std::vector<Check> checks;
  {
    absl::MutexLock lock(&mu_);
    rotations_ += rotated_now;
    for (const Measured& m : files) {
      auto it = procs_.find(m.proc);
      if (it == procs_.end()) continue;
      File& file = it->second.files[m.file];
      if (file.path != m.path) continue;
      file.base = m.base;
      file.base_known = true;
      if (!m.ok) continue;
      file.end = m.end;
      if ((file.samples.empty() || file.samples.back().end != m.end) &&
          now - file.last_sample >= options_.sample) {
        file.samples.push_back({now, m.end});
        file.last_sample = now;
        while (file.samples.size() > options_.max_samples) {
          file.samples.pop_front();
        }
      }
    }
    for (auto& [id, waiter] : waiters_) {
      bool wake = false;
      for (const auto& [name, epoch] : waiter.epochs) {
        auto it = procs_.find(name);
        if (it != procs_.end() && it->second.epoch != epoch) wake = true;
      }
      for (const Waiter::At& at : waiter.at) {
        if (wake) break;
        auto it = procs_.find(at.proc);
        if (it != procs_.end() && it->second.live &&
            it->second.files[at.file].path == at.path) {
          wake = it->second.files[at.file].end > at.offset;
        } else {
          checks.push_back({id, at.path, at.offset});
        }
      }
      if (wake) {
        wakes.push_back(std::move(waiter.wake));
        waiter.wake = nullptr;
      }
    }
  }
  // Files no live proc writes (a taken-over proc's before this hostd
  // watched it, say): measured here, outside the lock.
  std::vector<uint64_t> grown;
  for (const Check& check : checks) {
    if (LogSpanOf(check.path).end > check.offset) grown.push_back(check.waiter);
  }
  {
    absl::MutexLock lock(&mu_);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      const bool fire =
          it->second.wake == nullptr ||
          std::find(grown.begin(), grown.end(), it->first) != grown.end();
      if (fire) {
        if (it->second.wake != nullptr) {
          wakes.push_back(std::move(it->second.wake));
        }
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& wake : wakes) {
    if (wake) wake();
  }
}

void ProcLogs::PollNow() { Poll(); }

int ProcLogs::OpenStreams() {
  absl::MutexLock lock(&mu_);
  return streams_;
}

uint64_t ProcLogs::Rotations() {
  absl::MutexLock lock(&mu_);
  return rotations_;
}

void ProcLogs::Close() {
  std::vector<std::function<void()>> wakes;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    for (auto& [id, waiter] : waiters_) {
      if (waiter.wake) wakes.push_back(std::move(waiter.wake));
    }
    waiters_.clear();
  }
  for (auto& wake : wakes) wake();
}

uint64_t ProcLogs::StartOffset(const v1::StreamLogsRequest& request,
                               const Target& target, int file) {
  const std::string path = FilePath(target.dir, file);
  switch (request.start_case()) {
    case v1::StreamLogsRequest::kFromOffset:
      return request.from_offset();
    case v1::StreamLogsRequest::kTailLines:
      return TailLinesOffset(path, request.tail_lines());
    case v1::StreamLogsRequest::kFromSpawn: {
      absl::MutexLock lock(&mu_);
      auto it = procs_.find(target.name);
      if (it != procs_.end() && it->second.files[file].path == path &&
          it->second.files[file].spawn_offset.has_value()) {
        return *it->second.files[file].spawn_offset;
      }
      return 0;
    }
    case v1::StreamLogsRequest::kSince: {
      const absl::Time since = absl::FromUnixNanos(
          TimeUtil::TimestampToNanoseconds(request.since()));
      {
        absl::MutexLock lock(&mu_);
        auto it = procs_.find(target.name);
        if (it != procs_.end() && it->second.files[file].path == path &&
            !it->second.files[file].samples.empty()) {
          const std::deque<Sample>& samples = it->second.files[file].samples;
          // The last sample at or before `since`: what came after its end
          // was written after it.
          auto after = std::upper_bound(
              samples.begin(), samples.end(), since,
              [](absl::Time t, const Sample& s) { return t < s.at; });
          if (after == samples.begin()) return 0;
          return std::prev(after)->end;
        }
      }
      // Not watched by this hostd: the file's last write tells.
      struct stat st;
      if (stat(path.c_str(), &st) == 0 &&
          absl::TimeFromTimespec(st.st_mtim) < since) {
        return LogSpanOf(path).end;
      }
      return 0;
    }
    case v1::StreamLogsRequest::START_NOT_SET:
      break;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<LogStream>> ProcLogs::Open(
    const v1::StreamLogsRequest& request, std::vector<Target> targets,
    std::function<void()> wake) {
  if (!v1::LogStream_IsValid(request.stream())) {
    return absl::InvalidArgumentError(
        absl::StrCat("StreamLogsRequest.stream ", request.stream(),
                     " is not LOG_STDOUT, LOG_STDERR or 0 (both)"));
  }
  if (request.start_case() == v1::StreamLogsRequest::kTailLines &&
      request.tail_lines() > kMaxTailLines) {
    return absl::InvalidArgumentError(
        absl::StrCat("StreamLogsRequest.tail_lines ", request.tail_lines(),
                     " is more than ", kMaxTailLines));
  }
  if (request.start_case() == v1::StreamLogsRequest::kSince &&
      (request.since().seconds() < TimeUtil::kTimestampMinSeconds ||
       request.since().seconds() > TimeUtil::kTimestampMaxSeconds ||
       request.since().nanos() < 0 || request.since().nanos() > 999999999)) {
    return absl::InvalidArgumentError(
        "StreamLogsRequest.since is not a valid timestamp");
  }
  const size_t chunk_bytes =
      request.max_chunk_bytes() == 0
          ? options_.default_chunk_bytes
          : std::clamp<size_t>(request.max_chunk_bytes(), 1,
                               options_.max_chunk_bytes);
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    if (closing_) return absl::UnavailableError("hostd is stopping");
    if (streams_ >= options_.max_streams) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "StreamLogs: ", streams_,
          " log streams are open on this host, the "
          "most it serves (--max-log-streams); cancel one or retry later"));
    }
    ++streams_;
    id = next_stream_++;
  }
  std::unique_ptr<LogStream> stream(
      new LogStream(this, id, request.follow(), chunk_bytes));
  stream->wake_ = std::move(wake);
  for (const Target& target : targets) {
    for (int f = 0; f < 2; ++f) {
      if (request.stream() != v1::LOG_STREAM_UNSPECIFIED &&
          request.stream() != kFileStreams[f]) {
        continue;
      }
      LogStream::Cursor cursor;
      cursor.proc = target.name;
      cursor.file = f;
      cursor.path = FilePath(target.dir, f);
      cursor.offset =
          std::max(StartOffset(request, target, f), target.min_offset[f]);
      cursor.live = target.live;
      cursor.created = target.created;
      cursor.limit = request.follow() ? UINT64_MAX : LogSpanOf(cursor.path).end;
      stream->cursors_.push_back(std::move(cursor));
    }
  }
  return stream;
}

bool ProcLogs::ProcEnded(const std::string& name, bool live_when_opened,
                         absl::Time created, uint64_t* epoch) {
  absl::MutexLock lock(&mu_);
  auto it = procs_.find(name);
  *epoch = it == procs_.end() ? 0 : it->second.epoch;
  // Ended when opened: a later creation of the name is not its.
  if (!live_when_opened) return true;
  if (it == procs_.end()) return false;
  const Proc& proc = it->second;
  if (created != absl::InfinitePast() && proc.created != absl::InfinitePast() &&
      proc.created != created) {
    // Another creation: a newer one means ours ended; an older one, that
    // ours' Started has not come yet (its epoch change wakes the waiter).
    return proc.created > created;
  }
  return !proc.live;
}

void ProcLogs::Wait(uint64_t stream_id, Waiter waiter) {
  bool now = false;
  {
    absl::MutexLock lock(&mu_);
    if (closing_) {
      now = true;
    } else {
      waiters_[stream_id] = std::move(waiter);
    }
  }
  if (now) waiter.wake();
}

void ProcLogs::Release(uint64_t stream_id) {
  absl::MutexLock lock(&mu_);
  waiters_.erase(stream_id);
  --streams_;
}

LogStream::~LogStream() { logs_->Release(id_); }

LogStream::Next LogStream::Read(v1::LogChunk* chunk) {
  bool closing;
  {
    absl::MutexLock lock(&logs_->mu_);
    closing = logs_->closing_;
  }
  ProcLogs::Waiter waiter;
  const size_t n = cursors_.size();
  for (size_t i = 0; i < n; ++i) {
    const size_t index = (next_ + i) % n;
    Cursor& c = cursors_[index];
    if (!c.done) {
      // Whether the proc had ended is known before reading: an end after
      // it wakes the waiter (its epoch changed).
      uint64_t epoch = 0;
      // hostd is stopping: what is written is sent, nothing is waited for.
      const bool ended = !follow_ || closing ||
                         logs_->ProcEnded(c.proc, c.live, c.created, &epoch);
      size_t want = chunk_bytes_;
      if (!follow_) {
        want = c.offset >= c.limit ? 0
                                   : static_cast<size_t>(std::min<uint64_t>(
                                         want, c.limit - c.offset));
      }
      LogRead read = want == 0 ? LogRead{c.offset, "", 0}
                               : ReadLog(c.path, c.offset, want);
      if (!follow_ && read.offset >= c.limit) read.data.clear();
      if (!read.data.empty() || read.skipped > 0) {
        if (read.data.size() == chunk_bytes_) {
          const size_t newline = read.data.rfind('\n');
          if (newline != std::string::npos && newline + 1 < read.data.size()) {
            read.data.resize(newline + 1);
          }
        }
        chunk->set_proc(c.proc);
        chunk->set_stream(kFileStreams[c.file]);
        chunk->set_offset(read.offset);
        chunk->set_skipped_bytes(read.skipped);
        c.offset = read.offset + read.data.size();
        chunk->set_data(std::move(read.data));
        next_ = index + 1;
        return Next::kChunk;
      }
      if (ended) {
        c.done = true;
      } else {
        waiter.at.push_back({c.proc, c.file, c.path, c.offset});
        waiter.epochs[c.proc] = epoch;
        continue;
      }
    }
    if (!c.eof_sent) {
      c.eof_sent = true;
      chunk->set_proc(c.proc);
      chunk->set_stream(kFileStreams[c.file]);
      chunk->set_offset(c.offset);
      chunk->set_eof(true);
      next_ = index + 1;
      return Next::kChunk;
    }
  }
  if (waiter.at.empty()) {
    status_ = closing ? absl::UnavailableError(
                            "hostd is stopping (everything written so far "
                            "was sent)")
                      : absl::OkStatus();
    return Next::kEnd;
  }
  waiter.wake = wake_;
  logs_->Wait(id_, std::move(waiter));
  return Next::kWait;
}

}  // namespace mesh
