// Test helpers for code that uses a Mailbox, without any transport: a
// collector of envelopes, a request/reply helper, and an in-process router
// that connects mailboxes. Test-only.
#ifndef HOSTMESH_LIB_MAILBOX_TESTING_H_
#define HOSTMESH_LIB_MAILBOX_TESTING_H_

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/mailbox/mailbox.h"

namespace mesh::testing {

// Collects the envelopes handed to a port handler. Thread-safe.
class Inbox {
 public:
  // A handler that appends to this inbox (which must outlive the port).
  std::function<void(v1::Envelope)> Handler();
  // True once at least `n` envelopes arrived; false at the timeout.
  bool WaitFor(size_t n, absl::Duration timeout = absl::Seconds(30));
  std::vector<v1::Envelope> envelopes() const;
  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<v1::Envelope> envelopes_ ABSL_GUARDED_BY(mu_);
};

// Sends `envelope` (already addressed) from `mailbox` with reply_to set to a
// fresh port of `mailbox`, and returns the first reply (DEADLINE_EXCEEDED at
// the timeout).
absl::StatusOr<v1::Envelope> Request(
    Mailbox& mailbox, v1::Envelope envelope,
    absl::Duration timeout = absl::Seconds(30));

// Mailboxes in one process, connected: what one sends to another's (host,
// id) is delivered there, in send order, on the router's one thread. Casts
// (envelopes with targets) are refused with UNIMPLEMENTED, envelopes to a
// mailbox it does not own with UNAVAILABLE. Owns its mailboxes; thread-safe.
// The destructor shuts every mailbox down, then stops the thread.
class Router {
 public:
  Router();
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // A new mailbox (host, id) reachable through this router.
  Mailbox& Add(const std::string& host, const std::string& id);

 private:
  absl::Status Route(v1::Envelope& envelope);
  void Loop();

  absl::Mutex mu_;
  std::deque<v1::Envelope> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Mailbox>> mailboxes_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace mesh::testing

#endif  // HOSTMESH_LIB_MAILBOX_TESTING_H_
