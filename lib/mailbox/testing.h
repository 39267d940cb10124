// Test helpers for code that uses a Mailbox: an in-process mailbox server
// and a collector of envelopes. Test-only.
#ifndef HOSTMESH_LIB_MAILBOX_TESTING_H_
#define HOSTMESH_LIB_MAILBOX_TESTING_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/mailbox/mailbox.h"

namespace mesh::testing {

// A Mailbox served by its own in-process gRPC server on 127.0.0.1:0, plus
// any extra services. Not thread-safe (Stop).
class MailboxNode {
 public:
  // `services` (not owned) must outlive the node.
  explicit MailboxNode(const std::string& name,
                       std::vector<grpc::Service*> services = {});
  ~MailboxNode();  // Calls Stop().
  MailboxNode(const MailboxNode&) = delete;
  MailboxNode& operator=(const MailboxNode&) = delete;

  // Stops serving: the mailbox first (ends its streams), then the server.
  // `before_server` runs in between (e.g. a ProcRuntime's Shutdown).
  void Stop(std::function<void()> before_server = nullptr);

  Mailbox& mailbox() { return *mailbox_; }
  std::string address() const { return mailbox_->address(); }
  bool ok() const { return server_ != nullptr; }

 private:
  std::unique_ptr<Mailbox> mailbox_;
  std::unique_ptr<grpc::Server> server_;
};

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

// Sends `envelope` to `address` with reply_to set to a fresh port of
// `mailbox` and returns the first reply (DEADLINE_EXCEEDED at the timeout).
absl::StatusOr<v1::Envelope> Request(
    Mailbox& mailbox, const std::string& address, v1::Envelope envelope,
    absl::Duration timeout = absl::Seconds(30));

}  // namespace mesh::testing

#endif  // HOSTMESH_LIB_MAILBOX_TESTING_H_
