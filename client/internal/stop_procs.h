// Stopping procs through their hosts, shared by ProcMesh::Stop and
// HostMesh::Shutdown on attached hosts. Internal.
#ifndef HOSTMESH_CLIENT_INTERNAL_STOP_PROCS_H_
#define HOSTMESH_CLIENT_INTERNAL_STOP_PROCS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "hostmesh/client.h"

namespace mesh::internal {

struct ProcOnHost {
  std::string host_address;
  std::string proc;
};

// Stops every proc in parallel (each host asks, then signals after `grace`)
// and returns once all are stopped. A proc its host no longer knows counts
// as stopped. UNAVAILABLE names every proc that could not be stopped.
absl::Status StopProcs(Client& client, const std::vector<ProcOnHost>& procs,
                       const std::string& reason, absl::Duration grace);

}  // namespace mesh::internal

#endif  // HOSTMESH_CLIENT_INTERNAL_STOP_PROCS_H_
