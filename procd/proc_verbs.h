// ProcVerbs: the proc-level actor verbs (proc_channel.proto's ProcRequest),
// served from a ProcRuntime without any transport. procd feeds it the
// requests hostd relays over the proc's channel and sends back its answers.
#ifndef HOSTMESH_PROCD_PROC_VERBS_H_
#define HOSTMESH_PROCD_PROC_VERBS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "procd/proc_runtime.h"
#include "proto/proc_channel.pb.h"

namespace mesh {

// Answers each ProcRequest with one ProcResponse (same id; a failed verb
// has `error` set and no response). Verbs that wait (WaitActors, CallActor,
// and StopActor/StopAll, which answer once the actors reached STOPPED or
// `stop_wait` passed) wait without blocking the caller: their answer comes
// later from an actor thread, the runtime's timer thread or the mailbox.
//
// Thread-safe. `done` runs exactly once per request (unless Cancel drops
// it), on any thread, possibly before Handle returns, and never under a
// lock of ProcVerbs. The runtime (not owned) must outlive ProcVerbs; its
// Shutdown answers every pending request (UNAVAILABLE, or the states as
// they are for the stop verbs). Destroying ProcVerbs drops what is still
// pending unanswered.
class ProcVerbs {
 public:
  struct Options {
    // How long StopActor/StopAll wait for actors to finish stopping before
    // answering with their current (possibly STOPPING) states.
    absl::Duration stop_wait = absl::Seconds(10);
    // Called (must not block) once the answer to a StopAll with exit_proc
    // has been handed to `done`, or once that request was cancelled.
    std::function<void()> on_exit_requested;
    // Requests waiting at once, at most; more are RESOURCE_EXHAUSTED.
    size_t max_pending = 4096;
  };
  using Done = std::function<void(v1::ProcResponse response)>;

  ProcVerbs(ProcRuntime* runtime, Options options);
  // Drops every pending request without answering it.
  ~ProcVerbs();
  ProcVerbs(const ProcVerbs&) = delete;
  ProcVerbs& operator=(const ProcVerbs&) = delete;

  // Serves `request` and hands its answer to `done`. INVALID_ARGUMENT for a
  // request without a verb, a bad actor name or a CallActor without a
  // payload; ALREADY_EXISTS if a waiting request with the same id is still
  // pending.
  void Handle(v1::ProcRequest request, Done done);

  // The caller of request `id` is gone: drops its wait (WaitActors,
  // CallActor, the stop wait of StopActor/StopAll) without answering it.
  // Nothing if `id` is not pending (answered already, or never waited).
  void Cancel(uint64_t id);

  // Requests waiting for their answer.
  size_t pending() const;

 private:
  class Pending;
  struct Table;

  using WaitResult = absl::StatusOr<v1::WaitActorsResponse>;
  using Fill = std::function<void(WaitResult, v1::ProcResponse*)>;

  // Registers a waiting request. If its id is pending already or the table
  // is full, answers it with the error and returns nullptr.
  std::shared_ptr<Pending> Register(uint64_t id, Done& done,
                                    std::function<void()> after_answer);
  // Answers `pending` when the runtime's wait ends, through `fill`.
  void StartWait(const std::shared_ptr<Pending>& pending,
                 std::vector<std::string> names, v1::Status min_status,
                 absl::Duration timeout, Fill fill);
  void StopActor(uint64_t id, const v1::StopActorRequest& request, Done done);
  void StopAll(uint64_t id, const v1::StopAllRequest& request, Done done);
  void WaitActors(uint64_t id, const v1::WaitActorsRequest& request, Done done);
  void CallActor(uint64_t id, const v1::CallActorRequest& request, Done done);

  ProcRuntime* const runtime_;
  const Options options_;
  // Shared with the pending requests' callbacks, which may outlive a call.
  const std::shared_ptr<Table> table_;
};

}  // namespace mesh

#endif  // HOSTMESH_PROCD_PROC_VERBS_H_
