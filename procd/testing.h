// For procd's tests that run a ProcRuntime (and ProcVerbs) with a Mailbox
// in one process, without a transport: a gate that holds an actor inside
// its handler, and a fake client whose ports collect what the proc sends.
#ifndef HOSTMESH_PROCD_TESTING_H_
#define HOSTMESH_PROCD_TESTING_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "hostmesh/actor.h"
#include "proto/mailbox.pb.h"

namespace mesh::testing {

// Lets a test hold an actor inside its handler: `entered` is notified when
// the first Echo arrives; every Echo waits for `open` (at most `timeout`).
struct Gate {
  explicit Gate(absl::Duration timeout) : timeout(timeout) {}
  // Opens the gate (again: nothing).
  void Open() {
    if (!open.HasBeenNotified()) open.Notify();
  }
  const absl::Duration timeout;
  absl::Notification entered;
  absl::Notification open;
};

// "test.gate": echoes once its gate opens.
class GateActor : public Actor {
 public:
  static constexpr char kTypeName[] = "test.gate";
  explicit GateActor(std::shared_ptr<Gate> gate);

 private:
  std::shared_ptr<Gate> gate_;
};

// The client side of a proc under test: mailbox `mailbox` (host "", as a
// client's is). Outbound is the proc's Mailbox outbound function: it keeps
// what is sent to this client's ports and refuses anything else.
class FakeClient {
 public:
  FakeClient(std::string mailbox, absl::Duration timeout)
      : mailbox_(std::move(mailbox)), timeout_(timeout) {}

  absl::Status Outbound(v1::Envelope& envelope);
  // A fresh port.
  v1::PortRef OpenPort();
  // The first `n` envelopes sent to `port` (a test failure if they do not
  // come within the timeout).
  std::vector<v1::Envelope> WaitEnvelopes(const v1::PortRef& port, size_t n);
  // What was sent to `port` so far.
  std::vector<v1::Envelope> Sent(const v1::PortRef& port);

 private:
  const std::string mailbox_;
  const absl::Duration timeout_;
  absl::Mutex mu_;
  std::map<uint64_t, std::vector<v1::Envelope>> sent_ ABSL_GUARDED_BY(mu_);
  uint64_t next_port_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace mesh::testing

#endif  // HOSTMESH_PROCD_TESTING_H_
