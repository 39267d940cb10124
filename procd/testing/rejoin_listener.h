// RejoinListener: plays a (restarted) hostd's rejoin socket in tests. It
// listens on a Unix socket path, accepts every connection a proc dials,
// collects the ProcFrames each one sends, and lets the test answer on a
// connection (Rejoined, Refused, requests...) or close it. Connections are
// numbered from 1 in the order they were accepted. Test-only.
//
// Thread-safe. Its accept thread polls the listening socket; each
// connection's FrameChannel thread collects frames. The destructor stops
// accepting, closes every connection (joining its thread) and unlinks the
// socket.
#ifndef HOSTMESH_PROCD_TESTING_REJOIN_LISTENER_H_
#define HOSTMESH_PROCD_TESTING_REJOIN_LISTENER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/channel/frame_channel.h"
#include "proto/proc_channel.pb.h"

namespace mesh::testing {

class RejoinListener {
 public:
  static constexpr absl::Duration kTimeout = absl::Seconds(30);

  struct Options {
    // Close each connection as soon as its first frame arrived (a hostd
    // that drops the proc without an answer).
    bool hang_up = false;
  };

  // Binds and listens on `path` (which must not exist).
  static absl::StatusOr<std::unique_ptr<RejoinListener>> Listen(
      std::string path, Options options);
  static absl::StatusOr<std::unique_ptr<RejoinListener>> Listen(
      std::string path) {
    return Listen(std::move(path), Options());
  }
  ~RejoinListener();
  RejoinListener(const RejoinListener&) = delete;
  RejoinListener& operator=(const RejoinListener&) = delete;

  const std::string& path() const { return path_; }

  // Connections accepted so far.
  size_t connections() const;
  // Waits until at least `n` connections were accepted.
  bool WaitConnections(size_t n, absl::Duration timeout = kTimeout) const;
  // The `k`th frame (from 1) the proc sent on connection `n` (from 1), once
  // it arrived; DEADLINE_EXCEEDED at the timeout.
  absl::StatusOr<v1::ProcFrame> WaitFrame(size_t n, size_t k,
                                          absl::Duration timeout = kTimeout);
  absl::Status Send(size_t n, const v1::HostFrame& frame);
  // Closes connection `n` (the proc sees EOF).
  void Close(size_t n);
  // True once connection `n` ended (closed by either side).
  bool WaitClosed(size_t n, absl::Duration timeout = kTimeout) const;

 private:
  struct Connection {
    std::unique_ptr<FrameChannel> channel;
    std::vector<v1::ProcFrame> frames;
    bool closed = false;
  };

  RejoinListener() = default;
  void AcceptLoop();

  std::string path_;
  Options options_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;

  mutable absl::Mutex mu_;
  // Never shrinks: the channels' callbacks find their entry by index.
  std::vector<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh::testing

#endif  // HOSTMESH_PROCD_TESTING_REJOIN_LISTENER_H_
