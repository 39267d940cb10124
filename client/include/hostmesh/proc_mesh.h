// ProcMesh: procs spawned by a HostMesh, H hosts × K procs per host, with
// extent {hosts: H, procs: K}; proc rank = host_rank × K + local_rank and
// proc names are <mesh>_<rank>. Spawning an actor mesh on it creates one
// actor per proc, through each proc's host (a proc serves no port of its
// own). A value type; thread-safe for concurrent calls.
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_PROC_MESH_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_PROC_MESH_H_

#include <google/protobuf/message.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hostmesh/actor_mesh.h"
#include "hostmesh/client.h"
#include "hostmesh/extent.h"
#include "proto/host.pb.h"

namespace mesh {

class ProcMesh {
 public:
  ProcMesh(std::shared_ptr<Client> client, std::string name, Extent extent,
           std::vector<std::string> host_addresses,
           std::vector<v1::ProcState> procs);

  const std::string& name() const { return name_; }
  const Extent& extent() const { return extent_; }
  size_t num_ranks() const { return procs_.size(); }
  // States as of spawn, by rank.
  const std::vector<v1::ProcState>& procs() const { return procs_; }
  // The host serving rank `rank`.
  const std::string& host_of(size_t rank) const {
    return host_addresses_[rank];
  }

  // Spawns actor mesh `name` of a registered actor type, one actor per proc
  // (actor rank = proc rank), and waits until every one is RUNNING; an
  // error names the ranks that did not get there (proc and host) and why; a
  // proc that has ended is FAILED_PRECONDITION naming its status. `params`
  // reach each actor's Init.
  absl::StatusOr<ActorMesh> Spawn(
      const std::string& name, const std::string& type,
      const google::protobuf::Message* params = nullptr,
      absl::Duration timeout = absl::Seconds(30)) const;
  // The same, with the type named by A::kTypeName.
  template <typename A>
  absl::StatusOr<ActorMesh> Spawn(
      const std::string& name,
      const google::protobuf::Message* params = nullptr) const {
    return Spawn(name, A::kTypeName, params);
  }

  // Stops every proc of the mesh through its host (graceful, then signals).
  absl::Status Stop(absl::Duration grace = absl::Seconds(5)) const;

 private:
  std::shared_ptr<Client> client_;
  std::string name_;
  Extent extent_;
  std::vector<std::string> host_addresses_;  // by rank
  std::vector<v1::ProcState> procs_;         // by rank
};

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_PROC_MESH_H_
