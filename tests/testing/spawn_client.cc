// A client in a process of its own, for tests that kill, stop or watch it:
// attaches to hostd --host (credentials from HOSTMESH_TOKEN_FILE etc.),
// spawns proc mesh --name with --procs procs and actor mesh "a" of type
// mesh.echo on it, prints
//   client <client id>
//   creating                    (just before HostMesh::Spawn)
//   spawned <pid of rank 0> <pid of rank 1> ...   (once it returned)
//   actors ready                (once actor mesh "a" is spawned)
// on stdout (each line flushed) and then sleeps until killed. Options:
//   --detached          the procs hold no lease (ProcMeshOptions::detached)
//   --exit-on-failure   on_unhandled_failure = kExitProcess (else: poison)
//   --fail WHY          once spawned, cast mesh.v1.Fail{why} to the actors
//   --report-events     a client-wide supervision handler that prints
//                       "event failure=<0|1> cause=<CAUSE> proc=<proc>
//                       <message>" for each event
//   --watch             a port watched on "a" (Port::Watch), received from
//                       with a 1 h timeout; prints "watch failed: <status>"
//                       when Recv fails
//   --respawn           once "a" is ready: ProcMesh::Stop the mesh, spawn it
//                       again at once (same name, same proc names) with an
//                       actor mesh "a" with no handler, print "respawned
//                       <pids>", then for 1.5 s call it every 50 ms and
//                       check it is not poisoned and that a port watched on
//                       it has not failed: "respawn ok" or "respawn broken:
//                       <what>" (the later options then apply to the new
//                       mesh)
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
#include <thread>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hostmesh/hostmesh.h"
#include "proto/actors.pb.h"
#include "proto/proc.pb.h"

namespace {

absl::Mutex print_mu;

void PrintLine(const std::string& line) {
  absl::MutexLock lock(&print_mu);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

int Fatal(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "spawn_client: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  return 2;
}

// "CODE: message" on one line (no payloads).
std::string OneLine(const absl::Status& status) {
  return absl::StrReplaceAll(
      absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                   status.message()),
      {{"\n", " "}});
}

std::string Pids(const mesh::ProcMesh& procs) {
  std::string pids;
  for (const mesh::v1::ProcState& proc : procs.procs()) {
    absl::StrAppend(&pids, " ", proc.pid());
  }
  return pids;
}

// Calls `actors` for 1.5 s: what went wrong, or "" if nothing did.
std::string CheckRespawned(const mesh::ActorMesh& actors,
                           mesh::Port<mesh::v1::ActorIdReply>& watched) {
  const absl::Time until = absl::Now() + absl::Milliseconds(1500);
  while (absl::Now() < until) {
    if (!actors.status().ok()) {
      return absl::StrCat("poisoned: ", OneLine(actors.status()));
    }
    for (const auto& reply : actors.Call<mesh::v1::ActorIdReply>(
             mesh::v1::GetActorId(), absl::Seconds(5))) {
      if (!reply.ok()) {
        return absl::StrCat("call failed: ", OneLine(reply.status()));
      }
    }
    absl::StatusOr<mesh::v1::ActorIdReply> got =
        watched.Recv(absl::ZeroDuration());
    if (got.status().code() != absl::StatusCode::kDeadlineExceeded) {
      return absl::StrCat("watched port: ", OneLine(got.status()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  std::string host;
  std::string name = "sc";
  size_t procs = 1;
  bool detached = false;
  bool exit_on_failure = false;
  bool report_events = false;
  bool watch = false;
  bool respawn = false;
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
  app.add_flag("--report-events", report_events,
               "print every supervision event");
  app.add_flag("--watch", watch, "watch a port on the actor mesh");
  app.add_flag("--respawn", respawn,
               "stop the mesh and spawn it again under the same names");
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
  if (report_events) {
    (*client)->OnSupervisionEvent([](const mesh::v1::SupervisionEvent& event) {
      PrintLine(absl::StrReplaceAll(
          absl::StrCat(
              "event failure=", event.failure() ? 1 : 0,
              " cause=", mesh::v1::SupervisionEvent::Cause_Name(event.cause()),
              " proc=", event.actor().ref().proc(), " ", event.message()),
          {{"\n", " "}}));
    });
  }

  mesh::HostMesh::Options host_options;
  host_options.client = *client;
  absl::StatusOr<mesh::HostMesh> hosts =
      mesh::HostMesh::Attach({host}, host_options);
  if (!hosts.ok()) return Fatal("attach", hosts.status());
  mesh::v1::ProcSpec spec;
  spec.set_command(procd);
  mesh::ProcMeshOptions mesh_options;
  mesh_options.detached = detached;
  PrintLine("creating");
  absl::StatusOr<mesh::ProcMesh> proc_mesh =
      hosts->Spawn(name, procs, spec, mesh_options);
  if (!proc_mesh.ok()) return Fatal("spawn procs", proc_mesh.status());
  PrintLine(absl::StrCat("spawned", Pids(*proc_mesh)));
  absl::StatusOr<mesh::ActorMesh> actors = proc_mesh->Spawn("a", "mesh.echo");
  if (!actors.ok()) return Fatal("spawn actors", actors.status());
  PrintLine("actors ready");

  if (respawn) {
    absl::Status stopped = proc_mesh->Stop();
    if (!stopped.ok()) return Fatal("stop", stopped);
    proc_mesh = hosts->Spawn(name, procs, spec, mesh_options);
    if (!proc_mesh.ok()) return Fatal("respawn procs", proc_mesh.status());
    actors = proc_mesh->Spawn("a", "mesh.echo");
    if (!actors.ok()) return Fatal("respawn actors", actors.status());
    PrintLine(absl::StrCat("respawned", Pids(*proc_mesh)));
    mesh::Port<mesh::v1::ActorIdReply> watched =
        (*client)->OpenPort<mesh::v1::ActorIdReply>();
    watched.Watch(*actors);
    const std::string broken = CheckRespawned(*actors, watched);
    PrintLine(broken.empty() ? "respawn ok"
                             : absl::StrCat("respawn broken: ", broken));
  }

  if (watch) {
    mesh::Port<mesh::v1::ActorIdReply> port =
        (*client)->OpenPort<mesh::v1::ActorIdReply>();
    port.Watch(*actors);
    // The client outlives the thread: main never returns.
    std::thread([port = std::move(port)]() mutable {
      while (true) {
        absl::StatusOr<mesh::v1::ActorIdReply> got = port.Recv(absl::Hours(1));
        if (!got.ok() &&
            got.status().code() != absl::StatusCode::kDeadlineExceeded) {
          PrintLine(absl::StrCat("watch failed: ", OneLine(got.status())));
          return;
        }
      }
    }).detach();
  }

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
