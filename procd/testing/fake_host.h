// FakeHost: plays hostd for one real proc binary in tests. It spawns the
// proc with one end of a socketpair as fd 3 (HOSTMESH_CHANNEL_FD=3), in a
// process group of its own, with stdout and stderr in a file; writes the
// Welcome; accepts the proc's Hello (Accepted, then the proc's Ready) unless
// told not to; and then speaks proc_channel.proto on the other end: requests
// and their responses, envelopes both ways, stop, cancel, refusal. The
// proc's envelopes to the fake client mailbox ("client:fake", host "") are
// collected per port. Test-only.
//
// Thread-safe, except Start, WaitExit, Kill and the destructor, which
// belong to the test's thread. The channel's thread collects what the proc
// sends. The destructor SIGKILLs the proc if it is still running and reaps
// it (by its pidfd and pid, nothing else), then closes the channel.
#ifndef HOSTMESH_PROCD_TESTING_FAKE_HOST_H_
#define HOSTMESH_PROCD_TESTING_FAKE_HOST_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/channel/frame_channel.h"
#include "proto/proc_channel.pb.h"

namespace mesh::testing {

class FakeHost {
 public:
  // Generous: tests assert behaviour, not speed.
  static constexpr absl::Duration kTimeout = absl::Seconds(30);
  // The fake client mailbox whose ports OpenPort hands out.
  static constexpr char kClientMailbox[] = "client:fake";

  // Version CURRENT, name "p0", rank 0, host "fakehost:7450", orphan
  // timeout 30 s.
  static v1::Welcome DefaultWelcome();

  struct Options {
    // The proc binary and its arguments (after argv[0]).
    std::string binary;
    std::vector<std::string> args;
    // Give the proc its channel (fd 3 and HOSTMESH_CHANNEL_FD=3). Without
    // it the proc gets neither (and no Welcome is written).
    bool give_channel = true;
    // The first frame written; nullopt: none.
    std::optional<v1::Welcome> welcome = DefaultWelcome();
    // Answer the proc's Hello with Accepted{kSecret}, as hostd does once it
    // stored the verifier (the proc then answers Ready). Without it the
    // proc is never accepted.
    bool accept = true;
  };

  // The secret the fake host hands out in Accepted.
  static constexpr char kSecret[] = "fake-host-secret-0123456789abcde";

  static absl::StatusOr<std::unique_ptr<FakeHost>> Start(Options options);
  ~FakeHost();
  FakeHost(const FakeHost&) = delete;
  FakeHost& operator=(const FakeHost&) = delete;

  pid_t pid() const { return pid_; }

  // The proc's Hello (the first one), or DEADLINE_EXCEEDED.
  absl::StatusOr<v1::Hello> WaitHello(absl::Duration timeout = kTimeout);

  // Waits for the proc's Ready (it knows it was accepted); false at the
  // timeout or if the channel closed first.
  bool WaitReady(absl::Duration timeout = kTimeout);

  // Sends `request` (an id is assigned if it has none) and waits for the
  // response with its id: DEADLINE_EXCEEDED at the timeout, UNAVAILABLE if
  // the channel closes first. The response's own error stays in it.
  absl::StatusOr<v1::ProcResponse> Request(v1::ProcRequest request,
                                           absl::Duration timeout = kTimeout);
  // The two halves of Request: send (returns the id) and wait.
  absl::StatusOr<uint64_t> SendRequest(v1::ProcRequest request);
  absl::StatusOr<v1::ProcResponse> WaitResponse(
      uint64_t id, absl::Duration timeout = kTimeout);
  // True if a response to `id` arrived (and was not waited for yet).
  bool HasResponse(uint64_t id) const;

  absl::Status SendEnvelope(v1::Envelope envelope);
  absl::Status SendStop(const std::string& reason, absl::Duration grace);
  absl::Status SendCancel(uint64_t id);
  absl::Status SendRefused(const std::string& reason);
  absl::Status SendFrame(const v1::HostFrame& frame);

  // A fresh port of the fake client mailbox (host "", like a client's).
  v1::PortRef OpenPort();
  // The first `n` envelopes the proc sent to `port`, once they arrived;
  // DEADLINE_EXCEEDED (saying how many did) at the timeout.
  absl::StatusOr<std::vector<v1::Envelope>> WaitEnvelopes(
      const v1::PortRef& port, size_t n, absl::Duration timeout = kTimeout);
  // Sends `envelope` with reply_to a fresh port and returns the first
  // envelope to that port.
  absl::StatusOr<v1::Envelope> Ask(v1::Envelope envelope,
                                   absl::Duration timeout = kTimeout);
  // An ActorRef to actor `actor` of the proc (as the Welcome named it).
  v1::ActorRef ActorOfProc(const std::string& actor) const;

  // Closes the host's end of the channel (the proc sees EOF).
  void CloseChannel();
  // True once the proc's end of the channel closed (or CloseChannel).
  bool WaitChannelClosed(absl::Duration timeout = kTimeout);

  // Waits for the proc to exit and reaps it: its wait status (WIFEXITED...),
  // or nullopt at the timeout (or if it was reaped by an earlier call).
  std::optional<int> WaitExit(absl::Duration timeout = kTimeout);
  // Sends `sig` to the proc unless it was reaped.
  void Kill(int sig);

  // What the proc wrote to stdout and stderr so far.
  std::string Output() const;

 private:
  FakeHost() = default;
  void OnFrame(std::string_view bytes);
  void OnClosed(const absl::Status& status);

  // Frames that collect unasked: responses and envelopes, at most.
  static constexpr size_t kMaxCollected = 1 << 20;

  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool reaped_ = false;
  std::string output_path_;
  std::optional<v1::Welcome> welcome_;
  std::unique_ptr<FrameChannel> channel_;

  mutable absl::Mutex mu_;
  bool accept_ = true;
  std::optional<v1::Hello> hello_ ABSL_GUARDED_BY(mu_);
  bool ready_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint64_t, v1::ProcResponse> responses_ ABSL_GUARDED_BY(mu_);
  // Envelopes to the fake client mailbox, by port.
  std::map<uint64_t, std::vector<v1::Envelope>> envelopes_ ABSL_GUARDED_BY(mu_);
  size_t collected_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_request_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_port_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace mesh::testing

#endif  // HOSTMESH_PROCD_TESTING_FAKE_HOST_H_
