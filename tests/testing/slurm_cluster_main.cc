// slurm_cluster_main: a private one-node Slurm cluster (SlurmCluster) for
// tests that are not C++ (Python, meshctl's end-to-end tests). Starts it,
// prints what its clients need, one "K=V" per line, then "ready":
//   SLURM_CONF=<its slurm.conf>
//   HOSTMESH_SLURM_CLUSTER=<its dir> (the marker its tasks are found by)
//   SLURM_NODE=<the node's name>
// and runs until its stdin closes (the test ended, or died), then stops
// the cluster (every job cancelled, nothing left) and exits 0, or 1 naming
// what was left. Exits 3 with the reason if the cluster does not start.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "tests/testing/slurm_cluster.h"

int main() {
  absl::StatusOr<std::unique_ptr<mesh::testing::SlurmCluster>> cluster =
      mesh::testing::SlurmCluster::Start();
  if (!cluster.ok()) {
    fprintf(stderr, "slurm_cluster_main: %s\n",
            std::string(cluster.status().message()).c_str());
    return 3;
  }
  for (const std::string& entry : (*cluster)->ClientEnvironment()) {
    if (absl::StartsWith(entry, "SLURM_CONF=") ||
        absl::StartsWith(entry, "HOSTMESH_SLURM_CLUSTER=")) {
      printf("%s\n", entry.c_str());
    }
  }
  printf("SLURM_NODE=%s\nready\n", (*cluster)->node_name().c_str());
  fflush(stdout);
  char buffer[256];
  while (read(0, buffer, sizeof(buffer)) > 0) {
  }
  absl::Status stopped = (*cluster)->Stop();
  if (!stopped.ok()) {
    fprintf(stderr, "slurm_cluster_main: %s\n",
            std::string(stopped.message()).c_str());
    return 1;
  }
  return 0;
}
