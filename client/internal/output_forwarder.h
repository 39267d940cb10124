// OutputForwarder: a client's procs' stdout and stderr, shown to the
// application (ClientOptions::forward_proc_output): each line prefixed by
// its proc ("[p0_3] ..."), stdout to the application's stdout, stderr to
// its stderr.
//
// One StreamLogs call per Forward (a host and the procs a spawn created
// there: from where each spawn began, following until they end). Chunks go
// into one bounded buffer (buffer_bytes); a printer thread writes them out.
// A proc never waits for any of this (it writes its own log files), nor
// does the client's other work: if the application's output is slow, a
// stream whose chunk finds the buffer full stops reading (gRPC flow
// control; the host holds the rest in the files) until the printer drained
// half of it. Bytes the host rotated away meanwhile are shown as
// "[p0_3] ... N bytes dropped". A last line without its newline is shown
// once its proc ended; a line is cut (shown as it is, with a newline) every
// kMaxLine bytes, so output without newlines holds no more. A stream the host
// refuses (e.g. its cap on log streams) is shown once as a line on stderr.
// Thread-safe.
#ifndef HOSTMESH_CLIENT_INTERNAL_OUTPUT_FORWARDER_H_
#define HOSTMESH_CLIENT_INTERNAL_OUTPUT_FORWARDER_H_

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/host.grpc.pb.h"

namespace mesh::internal {

class OutputForwarder {
 public:
  static constexpr size_t kMaxLine = 64 << 10;
  using Sink = std::function<void(v1::LogStream, absl::string_view)>;

  // `sink` null: write(2) to fds 1 and 2.
  OutputForwarder(size_t buffer_bytes, Sink sink);
  // Gives streams still following a moment (Flush(500 ms)), cancels the
  // rest, waits for them (10 s at most: a reader still running after that
  // holds the shared state, not the forwarder, and ends on its own), prints
  // what is buffered.
  ~OutputForwarder();
  OutputForwarder(const OutputForwarder&) = delete;
  OutputForwarder& operator=(const OutputForwarder&) = delete;

  // Forwards `procs` of the host behind `channel` (`host` names it in
  // notes).
  void Forward(const std::shared_ptr<grpc::Channel>& channel,
               const std::string& host, std::vector<std::string> procs);
  // Waits until every stream ended (their procs ended and were drained)
  // and everything was printed, at most `timeout`. False if not.
  bool Flush(absl::Duration timeout);

 private:
  class Reader;
  struct Item {
    std::string proc;
    v1::LogStream stream = v1::LOG_STDOUT;
    std::string data;
    uint64_t skipped = 0;
    bool eof = false;
    // A note line as it is (no prefix), on stderr.
    std::string note;
  };

  // What the readers share with the forwarder; each reader holds it, so
  // one that outlives the forwarder touches nothing freed.
  struct Shared {
    explicit Shared(size_t buffer_bytes) : buffer_bytes(buffer_bytes) {}
    // From a Reader: queues `chunk`; false if the buffer is full (the
    // reader parks and is resumed later). Once stopped, drops it.
    bool Push(Reader* reader, const v1::LogChunk& chunk);
    void Note(std::string line);
    // The reader's call ended: forgets and deletes it.
    void Done(Reader* reader);

    const size_t buffer_bytes;
    absl::Mutex mu;
    std::deque<Item> queue ABSL_GUARDED_BY(mu);
    size_t queued_bytes ABSL_GUARDED_BY(mu) = 0;
    // Readers waiting for room (they resume reading once it is there).
    std::vector<Reader*> parked ABSL_GUARDED_BY(mu);
    // Readers whose call has not ended (OnDone).
    std::vector<Reader*> readers ABSL_GUARDED_BY(mu);
    bool printing ABSL_GUARDED_BY(mu) = false;
    bool stop ABSL_GUARDED_BY(mu) = false;
  };

  void PrintLoop();
  void Print(Item& item);
  void Write(v1::LogStream stream, absl::string_view text);

  const std::shared_ptr<Shared> shared_;
  const Sink sink_;
  // Printer thread only: partial lines per (proc, stream).
  std::map<std::pair<std::string, int>, std::string> partial_;
  std::thread printer_;
};

}  // namespace mesh::internal

#endif  // HOSTMESH_CLIENT_INTERNAL_OUTPUT_FORWARDER_H_
