// A client in a process of its own, for tests that kill, stop or watch it:
// attaches to hostd --host (credentials from HOSTMESH_TOKEN_FILE etc.),
// spawns proc mesh --name with --procs procs and actor mesh "a" of type
// mesh.echo on it, prints
//   client <client id>
//   spawned <pid of rank 0> <pid of rank 1> ...
// on stdout (each line flushed) and then sleeps until killed. Options:
//   --detached          the procs hold no lease (ProcMeshOptions::detached)
//   --exit-on-failure   on_unhandled_failure = kExitProcess (else: poison)
//   --fail WHY          once spawned, cast mesh.v1.Fail{why} to the actors
//   --lease-probe       keep calling the actors (GetActorId, 1 s timeout, 50
//                       ms apart) and print "probe ok <n>" or "probe failed
//                       <n>: <status>" for each call
//   --procd PATH        the procs' bootstrap command (default: hostd's)
//   --heartbeat-interval DURATION   the client's heartbeats (default 100ms)
// Exits 2 if it cannot attach or spawn (the error on stderr).
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hostmesh/hostmesh.h"
#include "proto/actors.pb.h"

namespace {

void PrintLine(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

int Fatal(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "spawn_client: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host;
  std::string name = "sc";
  size_t procs = 1;
  bool detached = false;
  bool exit_on_failure = false;
  bool lease_probe = false;
  std::string fail;
  std::string procd;
  std::string heartbeat = "100ms";
  CLI::App app{"spawn_client: a hostmesh client in a process of its own"};
  app.add_option("--host", host, "hostd address")->required();
  app.add_option("--name", name, "proc mesh name");
  app.add_option("--procs", procs, "procs to spawn");
  app.add_flag("--detached", detached, "spawn detached procs");
  app.add_flag("--exit-on-failure", exit_on_failure,
               "exit 1 on an unhandled failure");
  app.add_flag("--lease-probe", lease_probe, "keep calling the actors");
  app.add_option("--fail", fail, "once spawned, fail the actors' handler");
  app.add_option("--procd", procd, "the procs' bootstrap command");
  app.add_option("--heartbeat-interval", heartbeat, "client heartbeats");
  CLI11_PARSE(app, argc, argv);

  mesh::Client::Options options;
  if (!absl::ParseDuration(heartbeat, &options.heartbeat_interval)) {
    std::fprintf(stderr, "spawn_client: bad --heartbeat-interval %s\n",
                 heartbeat.c_str());
    return 2;
  }
  if (exit_on_failure) {
    options.on_unhandled_failure = mesh::UnhandledFailure::kExitProcess;
  }
  absl::StatusOr<std::shared_ptr<mesh::Client>> client =
      mesh::Client::Create(std::move(options));
  if (!client.ok()) return Fatal("client", client.status());
  PrintLine(absl::StrCat("client ", (*client)->id()));

  mesh::HostMesh::Options host_options;
  host_options.client = *client;
  absl::StatusOr<mesh::HostMesh> hosts =
      mesh::HostMesh::Attach({host}, host_options);
  if (!hosts.ok()) return Fatal("attach", hosts.status());
  mesh::v1::ProcSpec spec;
  spec.set_command(procd);
  mesh::ProcMeshOptions mesh_options;
  mesh_options.detached = detached;
  absl::StatusOr<mesh::ProcMesh> proc_mesh =
      hosts->Spawn(name, procs, spec, mesh_options);
  if (!proc_mesh.ok()) return Fatal("spawn procs", proc_mesh.status());
  absl::StatusOr<mesh::ActorMesh> actors = proc_mesh->Spawn("a", "mesh.echo");
  if (!actors.ok()) return Fatal("spawn actors", actors.status());
  std::string spawned = "spawned";
  for (const mesh::v1::ProcState& proc : proc_mesh->procs()) {
    absl::StrAppend(&spawned, " ", proc.pid());
  }
  PrintLine(spawned);

  if (!fail.empty()) {
    mesh::v1::Fail request;
    request.set_why(fail);
    absl::Status cast = actors->Cast(request);
    if (!cast.ok()) return Fatal("cast", cast);
  }
  for (uint64_t n = 1; lease_probe; ++n) {
    std::string line = absl::StrCat("probe ok ", n);
    for (const auto& reply : actors->Call<mesh::v1::ActorIdReply>(
             mesh::v1::GetActorId(), absl::Seconds(1))) {
      if (!reply.ok()) {
        line =
            absl::StrCat("probe failed ", n, ": ", reply.status().ToString());
        break;
      }
    }
    PrintLine(line);
    absl::SleepFor(absl::Milliseconds(50));
  }
  while (true) pause();
}
