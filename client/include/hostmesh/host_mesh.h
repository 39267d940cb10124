// HostMesh: the hosts this client can ask to start procs.
//
//   HostMesh::Local()       one host on this machine: a private hostd child
//                           on loopback; nothing installed, nothing public.
//   HostMesh::Process(n)    n hostd children that register back with their
//                           address (the process allocator).
//   HostMesh::Attach(addrs) hostds already running (e.g. under systemd).
//   HostMesh::Slurm(opts)   one hostd per task of a Slurm allocation (made
//                           here or this process's own), each started
//                           with srun and registering back over srun's
//                           stdout; its credentials go in over srun's
//                           stdin (nothing on argv or in the environment).
//
// Once the hosts answer, the client opens its relay stream to each
// (Client::Connect): everything the client exchanges with procs goes
// through their host, and the client listens on nothing.
//
// Spawn("p0", K) creates procs p0_0 … p0_{HK-1} across the H hosts and
// waits server-side until all are RUNNING. Shutdown() leaves nothing
// running: hosts this mesh started are shut down (every proc stopped and
// reaped, each hostd exited; their logs stay in logs_dir()); on attached
// hosts, the procs this mesh spawned are stopped and the daemons keep
// running. The destructor calls
// Shutdown() if it was not called: the mesh is its own scope guard.
// Move-only; thread-safe for concurrent calls.
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOST_MESH_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOST_MESH_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hostmesh/client.h"
#include "hostmesh/extent.h"
#include "hostmesh/proc_mesh.h"
#include "proto/host.pb.h"

namespace mesh {

struct HostMeshOptions {
  // Default: Client::Default().
  std::shared_ptr<Client> client;
  // hostd binary for Local/Process; default: FindBinary("hostd").
  std::string hostd_path;
  // Extra hostd flags for Local/Process (e.g. "--procd=/path/my_procd").
  std::vector<std::string> hostd_args;
  // For each host to start and register, and for each spawn barrier.
  absl::Duration timeout = absl::Seconds(30);
  // Local/Process: keep the hosts' logs (procs' stdout/stderr/procd.log,
  // hostd's own) in logs_dir() after Shutdown; false: remove everything.
  // Unset: kept, except under a test runner ($TEST_TMPDIR set), so tests
  // leave nothing in /tmp.
  std::optional<bool> keep_logs;
};

// HostMesh::Slurm: one hostd per Slurm task, started with srun (README
// "Running on Slurm").
struct SlurmOptions {
  // The allocation to use: a job id. Empty: $SLURM_JOB_ID (this process
  // runs inside salloc or sbatch), else a new allocation made with
  // `salloc --no-shell` from the fields below and released (scancel) by
  // Shutdown().
  std::string job_id;
  // A new allocation: this many nodes.
  int nodes = 1;
  // Hostds per node (Slurm tasks), for a new allocation or an existing one.
  int tasks_per_node = 1;
  // A new allocation: partition (empty: the default), time limit (zero: the
  // partition's; Slurm counts whole minutes, rounded up), job name and
  // further salloc flags as given (e.g. "--account=ml").
  std::string partition;
  absl::Duration time_limit = absl::ZeroDuration();
  std::string job_name = "hostmesh";
  std::vector<std::string> salloc_args;
  // Added to this process's environment for salloc, srun, squeue, scontrol
  // and scancel (e.g. SLURM_CONF), and so for the hostds srun starts.
  std::map<std::string, std::string> env;
  // Each hostd's --listen. The default serves only clients on its own
  // node (a one-node cluster); across nodes give an address the client
  // can reach ("0.0.0.0:7450") and TLS flags in HostMeshOptions::hostd_args
  // (off loopback a hostd requires TLS).
  std::string listen = "127.0.0.1:0";
  // Where each hostd keeps its state and its procs' logs on its node:
  // <node_dir>/hostmesh-<job>-<id>/host_<rank>/{state,run}, where <id> is
  // that of this mesh's local logs_dir() (/tmp/hostmesh-<id>, which holds
  // each srun's output: hostd's stderr). They stay after Shutdown.
  std::string node_dir = "/tmp";
};

struct ProcMeshOptions {
  // Detached procs are the host's, not this client's: they hold no lease
  // (they outlive this client) and Shutdown() of an attached mesh leaves
  // them running. Stop them with ProcMesh::Stop or meshctl. Default: the
  // procs are this client's, stopped by their hosts once the client has
  // been gone for the host's --owner-lease.
  bool detached = false;
};

class HostMesh {
 public:
  using Options = HostMeshOptions;

  static absl::StatusOr<HostMesh> Local(Options options = {});
  static absl::StatusOr<HostMesh> Process(size_t num_hosts,
                                          Options options = {});
  static absl::StatusOr<HostMesh> Attach(std::vector<std::string> addresses,
                                         Options options = {});
  // Hosts in rank order: node by node of the allocation, tasks_per_node on
  // each. A host that does not start fails the whole call naming its node
  // and why; what did start is shut down and an allocation made here is
  // released. The srun of a host ending (the job cancelled or out of
  // time) makes that host lost at once (Client's on_host_event, and
  // HOST_LOST for its procs' actors). Shutdown(): every proc, then the
  // hostds, then the allocation if this call made it.
  static absl::StatusOr<HostMesh> Slurm(SlurmOptions slurm,
                                        Options options = {});

  HostMesh(HostMesh&&) noexcept;
  HostMesh& operator=(HostMesh&&) noexcept;
  ~HostMesh();

  size_t num_hosts() const;
  const std::vector<std::string>& addresses() const;
  // {hosts: H}.
  Extent extent() const;
  const std::shared_ptr<Client>& client() const;
  // Slurm: the job id, and each host's node (empty otherwise).
  const std::string& slurm_job() const;
  const std::vector<std::string>& nodes() const;
  // Local/Process: the dir this mesh's hosts keep everything in; each
  // proc's logs are in <logs_dir>/host_<i>/state/procs/<proc>/ (stdout.log,
  // stderr.log, procd.log), hostd's own in <logs_dir>/hosts/. Kept after
  // Shutdown (Options::keep_logs). Empty for attached hosts.
  const std::string& logs_dir() const;

  // Spawns proc mesh `name` with `procs_per_host` procs on every host.
  // If it fails, the error names every rank that did not start and why,
  // and the procs that did start are stopped.
  absl::StatusOr<ProcMesh> Spawn(const std::string& name,
                                 size_t procs_per_host = 1,
                                 const v1::ProcSpec& spec = {},
                                 const ProcMeshOptions& options = {});
  // The same with the per-host extent (unity = 1 proc per host).
  absl::StatusOr<ProcMesh> Spawn(const std::string& name,
                                 const Extent& per_host,
                                 const v1::ProcSpec& spec = {},
                                 const ProcMeshOptions& options = {});

  // See the class comment. Idempotent.
  absl::Status Shutdown(absl::Duration grace = absl::Seconds(5));

  class Impl;

 private:
  explicit HostMesh(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOST_MESH_H_
