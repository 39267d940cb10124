// Supervision inside the client (see Client::OnSupervisionEvent):
//
//   MeshSupervision   one actor mesh's state, shared by its copies and
//                     slices: its handler, which ranks ended, the failure
//                     that poisoned it, and what waits for its first
//                     failure (watched ports).
//   SupervisionIndex  which mesh and rank each actor of the client is, by
//                     proc: how a proc's end or a host's loss becomes one
//                     event per actor. Holds meshes weakly.
//
// Both are transport-free and thread-safe; the Client makes the events and
// delivers them on its event thread.
#ifndef HOSTMESH_CLIENT_INTERNAL_SUPERVISION_H_
#define HOSTMESH_CLIENT_INTERNAL_SUPERVISION_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "proto/mailbox.pb.h"
#include "proto/proc.pb.h"

namespace mesh {

using SupervisionHandler = std::function<void(const v1::SupervisionEvent&)>;

class MeshSupervision {
 public:
  MeshSupervision(std::string name, size_t num_ranks);

  const std::string& name() const { return name_; }

  void SetHandler(SupervisionHandler handler);
  SupervisionHandler handler() const;

  // Marks rank `rank` ended; false if it had ended already (the event is
  // a duplicate: one event per actor and end).
  bool MarkEnded(size_t rank);

  // Records that an actor ended with `event` (failed or stopped, handled or
  // not): every watcher runs once, with the first end.
  void Ended(const v1::SupervisionEvent& event);
  // Poisons the mesh with `event` (an unhandled failure); true if this is
  // the failure that poisoned it (the first).
  bool Poison(const v1::SupervisionEvent& event);
  // OK, or the poison (FAILED_PRECONDITION, the event as payload).
  absl::Status status() const;
  // `fail` runs once with the first end of an actor of the mesh
  // (UNAVAILABLE, the event as payload): now if there was one, else when it
  // comes -- unless `alive` has expired by then (the port it is for was
  // closed). Watchers whose `alive` expired are dropped as new ones come,
  // so a mesh keeps only live ones.
  void OnEnd(std::weak_ptr<void> alive,
             std::function<void(const absl::Status&)> fail);

 private:
  const std::string name_;
  mutable absl::Mutex mu_;
  SupervisionHandler handler_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> ended_ ABSL_GUARDED_BY(mu_);
  absl::Status first_end_ ABSL_GUARDED_BY(mu_);
  absl::Status poison_ ABSL_GUARDED_BY(mu_);
  struct Watcher {
    std::weak_ptr<void> alive;
    std::function<void(const absl::Status&)> fail;
  };
  std::vector<Watcher> watchers_ ABSL_GUARDED_BY(mu_);
  // Live watchers after the last prune; the next prune comes at twice that.
  size_t pruned_at_ ABSL_GUARDED_BY(mu_) = 0;
};

// An event's status: `code` with event.message(), carrying the event as a
// payload (SupervisionEventOf reads it back).
absl::Status SupervisionStatus(absl::StatusCode code, const std::string& prefix,
                               const v1::SupervisionEvent& event);

// The cause of a proc's end as one status: UNAVAILABLE with exit.reason
// (or `fallback` when the host sent no exit).
absl::Status ProcEndStatus(const v1::MailboxLost& lost,
                           const std::string& fallback);

class SupervisionIndex {
 public:
  // One actor of a registered mesh.
  struct Member {
    std::shared_ptr<MeshSupervision> mesh;
    size_t rank = 0;
    v1::ActorRef ref;
  };

  // Registers every actor of `mesh` (ref by mesh rank).
  void Add(const std::shared_ptr<MeshSupervision>& mesh,
           const std::vector<v1::ActorRef>& actors);
  // The live members on proc `proc` of host `host` (actor name `actor`, or
  // every actor when empty). A host that names itself otherwise than the
  // client does: the proc's members if they are all on one host.
  std::vector<Member> Find(const std::string& host, const std::string& proc,
                           const std::string& actor = "");
  // The live members on proc `proc` of `host` (as Find), dropped from the
  // index: the proc ended.
  std::vector<Member> Take(const std::string& host, const std::string& proc);

 private:
  struct Entry {
    std::weak_ptr<MeshSupervision> mesh;
    size_t rank = 0;
    v1::ActorRef ref;
  };
  // Drops members of meshes that are gone.
  void PruneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The entries of `proc` that are on `host` (see Find).
  std::vector<Entry*> MatchLocked(const std::string& host,
                                  const std::string& proc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<std::string, std::vector<Entry>> by_proc_ ABSL_GUARDED_BY(mu_);
  size_t entries_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pruned_at_ ABSL_GUARDED_BY(mu_) = 0;
};

// Event text: "actor p0_3/a0 (rank 3 of actor mesh a0) failed: <cause>".
std::string DescribeEvent(const v1::SupervisionEvent& event);

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INTERNAL_SUPERVISION_H_
