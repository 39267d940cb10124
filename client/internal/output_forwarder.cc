#include "client/internal/output_forwarder.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mesh::internal {

// One StreamLogs call. A hold keeps OnDone away until the last read came
// back (a parked reader has none outstanding); deleted by Done in OnDone.
// It holds the shared state, never the forwarder (which may be gone).
class OutputForwarder::Reader final
    : public grpc::ClientReadReactor<v1::LogChunk> {
 public:
  Reader(std::shared_ptr<Shared> shared,
         const std::shared_ptr<grpc::Channel>& channel, std::string host,
         v1::StreamLogsRequest request)
      : shared_(std::move(shared)),
        stub_(v1::Host::NewStub(channel)),
        host_(std::move(host)),
        request_(std::move(request)) {}

  void Start() {
    stub_->async()->StreamLogs(&context_, &request_, this);
    AddHold();
    StartRead(&chunk_);
    StartCall();
  }
  void Resume() { StartRead(&chunk_); }
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      RemoveHold();
      return;
    }
    if (shared_->Push(this, chunk_)) StartRead(&chunk_);
  }

  void OnDone(const grpc::Status& status) override {
    // Cancelled: by this client; unavailable: the host went (its loss is
    // told through the client's host events).
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED &&
        status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      shared_->Note(absl::StrCat(
          "[hostmesh] output of ", absl::StrJoin(request_.names(), ", "),
          " on host ", host_, " is not forwarded: ", status.error_message(),
          "\n"));
    }
    // The last use of this reader: Done deletes it (holding its own
    // reference to the shared state meanwhile).
    std::shared_ptr<Shared> shared = shared_;
    shared->Done(this);
  }

 private:
  const std::shared_ptr<Shared> shared_;
  std::unique_ptr<v1::Host::Stub> stub_;
  const std::string host_;
  const v1::StreamLogsRequest request_;
  grpc::ClientContext context_;
  v1::LogChunk chunk_;
};

OutputForwarder::OutputForwarder(size_t buffer_bytes, Sink sink)
    : shared_(std::make_shared<Shared>(std::max<size_t>(buffer_bytes, 1))),
      sink_(std::move(sink)) {
  printer_ = std::thread([this] { PrintLoop(); });
}

OutputForwarder::~OutputForwarder() {
  Flush(absl::Milliseconds(500));
  Shared& shared = *shared_;
  std::vector<Reader*> parked;
  {
    absl::MutexLock lock(&shared.mu);
    for (Reader* reader : shared.readers) reader->Cancel();
    parked.swap(shared.parked);
  }
  // A parked reader's next read fails at once (cancelled) and lets it end.
  for (Reader* reader : parked) reader->Resume();
  {
    absl::MutexLock lock(&shared.mu);
    auto gone = [&shared]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared.mu) {
      return shared.readers.empty();
    };
    shared.mu.AwaitWithTimeout(absl::Condition(&gone), absl::Seconds(10));
    // Readers still running drop what they read from now on (and are
    // never parked), then delete themselves; the last frees `shared`.
    shared.stop = true;
  }
  printer_.join();
  // Lines whose end never came.
  for (auto& [key, partial] : partial_) {
    if (!partial.empty()) {
      Write(static_cast<v1::LogStream>(key.second),
            absl::StrCat("[", key.first, "] ", partial, "\n"));
    }
  }
}

void OutputForwarder::Forward(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& host,
                              std::vector<std::string> procs) {
  if (procs.empty()) return;
  v1::StreamLogsRequest request;
  for (std::string& proc : procs) request.add_names(std::move(proc));
  request.set_from_spawn(true);
  request.set_follow(true);
  auto* reader = new Reader(shared_, channel, host, std::move(request));
  {
    absl::MutexLock lock(&shared_->mu);
    if (shared_->stop) {
      delete reader;
      return;
    }
    shared_->readers.push_back(reader);
  }
  reader->Start();
}

bool OutputForwarder::Flush(absl::Duration timeout) {
  Shared& shared = *shared_;
  absl::MutexLock lock(&shared.mu);
  auto idle = [&shared]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared.mu) {
    return shared.readers.empty() && shared.queue.empty() && !shared.printing;
  };
  return shared.mu.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

bool OutputForwarder::Shared::Push(Reader* reader, const v1::LogChunk& chunk) {
  Item item;
  item.proc = chunk.proc();
  item.stream = chunk.stream();
  item.data = chunk.data();
  item.skipped = chunk.skipped_bytes();
  item.eof = chunk.eof();
  absl::MutexLock lock(&mu);
  if (stop) return true;  // No printer any more (its call was cancelled).
  queued_bytes += item.data.size();
  queue.push_back(std::move(item));
  if (queued_bytes < buffer_bytes) return true;
  parked.push_back(reader);
  return false;
}

void OutputForwarder::Shared::Note(std::string line) {
  Item item;
  item.note = std::move(line);
  absl::MutexLock lock(&mu);
  if (stop) return;
  queue.push_back(std::move(item));
}

void OutputForwarder::Shared::Done(Reader* reader) {
  {
    absl::MutexLock lock(&mu);
    readers.erase(std::remove(readers.begin(), readers.end(), reader),
                  readers.end());
    parked.erase(std::remove(parked.begin(), parked.end(), reader),
                 parked.end());
  }
  delete reader;
}

void OutputForwarder::PrintLoop() {
  Shared& shared = *shared_;
  for (;;) {
    Item item;
    {
      absl::MutexLock lock(&shared.mu);
      auto ready = [&shared]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared.mu) {
        return !shared.queue.empty() || shared.stop;
      };
      shared.mu.Await(absl::Condition(&ready));
      if (shared.queue.empty()) return;  // stop, and nothing left.
      item = std::move(shared.queue.front());
      shared.queue.pop_front();
      shared.printing = true;
    }
    Print(item);
    std::vector<Reader*> resume;
    {
      absl::MutexLock lock(&shared.mu);
      shared.printing = false;
      shared.queued_bytes -= item.data.size();
      if (shared.queued_bytes <= shared.buffer_bytes / 2) {
        resume.swap(shared.parked);
      }
    }
    for (Reader* reader : resume) reader->Resume();
  }
}

void OutputForwarder::Print(Item& item) {
  if (!item.note.empty()) {
    Write(v1::LOG_STDERR, item.note);
    return;
  }
  const std::string tag = absl::StrCat("[", item.proc, "] ");
  std::string out;
  if (item.skipped > 0) {
    absl::StrAppend(&out, tag, "... ", item.skipped, " bytes dropped\n");
  }
  std::string& partial = partial_[{item.proc, item.stream}];
  partial += item.data;
  size_t start = 0;
  for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos;
       start = nl + 1) {
    absl::StrAppend(&out, tag,
                    absl::string_view(partial).substr(start, nl + 1 - start));
  }
  partial.erase(0, start);
  // No newline for kMaxLine bytes: shown cut, so no line grows unbounded.
  while (partial.size() >= kMaxLine) {
    absl::StrAppend(&out, tag, absl::string_view(partial).substr(0, kMaxLine),
                    "\n");
    partial.erase(0, kMaxLine);
  }
  if (item.eof && !partial.empty()) {
    absl::StrAppend(&out, tag, partial, "\n");
    partial.clear();
  }
  if (!out.empty()) Write(item.stream, out);
}

void OutputForwarder::Write(v1::LogStream stream, absl::string_view text) {
  if (sink_) {
    sink_(stream, text);
    return;
  }
  const int fd = stream == v1::LOG_STDERR ? 2 : 1;
  while (!text.empty()) {
    ssize_t n = write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // Output closed: drop it.
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace mesh::internal
