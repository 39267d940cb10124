// An application built outside Bazel against the installed SDK (README "Use
// it from your own build"): a local host, procs, actors, a cast to a port,
// a gathered call, shutdown. Built either way:
//
//   g++ -std=c++20 app.cc -o app $(pkg-config --cflags --libs hostmesh)
//   cmake -S examples/sdk -B build && cmake --build build   (CMakeLists.txt)
//
// Usage: app [MY_PROCD]. With MY_PROCD (a procd built with my_procd.cc), it
// also spawns procs of that binary and calls their "sdk.shout" actors.
// hostd is found without any environment variable: beside the installed
// libhostmesh.so (PREFIX/bin/hostd), then on the PATH. Exits 0 if every
// step did what it should, else 1 naming the step.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "hostmesh/hostmesh.h"  // also the HOSTMESH_* status macros
#include "proto/actors.pb.h"    // the built-in actors' messages

namespace {

// The binary a process runs (/proc/<pid>/exe), or why not.
std::string ExeOf(int pid) {
  std::error_code error;
  std::filesystem::path exe =
      std::filesystem::read_symlink(absl::StrCat("/proc/", pid, "/exe"), error);
  return error ? absl::StrCat("(pid ", pid, ": ", error.message(), ")")
               : exe.string();
}

absl::Status Run(const std::string& my_procd) {
  mesh::HostMesh::Options options;
  options.keep_logs = false;  // leave nothing in /tmp
  HOSTMESH_ASSIGN_OR_RETURN(mesh::HostMesh hosts,
                            mesh::HostMesh::Local(options));
  std::printf("host up at %s\n", hosts.addresses()[0].c_str());
  // The host's dir (sockets, logs); removed by Shutdown (keep_logs false).
  std::printf("logs in %s\n", hosts.logs_dir().c_str());

  // Two procs of the stock procd, one echo actor in each.
  HOSTMESH_ASSIGN_OR_RETURN(mesh::ProcMesh procs, hosts.Spawn("p0", 2));
  std::vector<int> pids;
  for (const auto& proc : procs.procs()) {
    pids.push_back(proc.pid());
    std::printf("proc %s: pid %d, runs %s\n", proc.name().c_str(), proc.pid(),
                ExeOf(proc.pid()).c_str());
  }
  HOSTMESH_ASSIGN_OR_RETURN(mesh::ActorMesh echo,
                            procs.Spawn("a0", "mesh.echo"));

  // Cast GetActorId to every actor; the replies come to a port.
  auto port = hosts.client()->OpenPort<mesh::v1::ActorIdReply>();
  mesh::v1::GetActorId get_id;
  *get_id.mutable_port() = port.ref();
  HOSTMESH_RETURN_IF_ERROR(echo.Cast(get_id));
  for (size_t i = 0; i < echo.num_ranks(); ++i) {
    HOSTMESH_ASSIGN_OR_RETURN(mesh::v1::ActorIdReply reply,
                              port.Recv(absl::Seconds(10)));
    std::printf("port: %s/%s (rank %lu)\n", reply.id().proc().c_str(),
                reply.id().actor().c_str(),
                static_cast<unsigned long>(reply.rank()));
  }

  // Call: one reply per rank, in rank order.
  mesh::v1::Echo hello;
  hello.set_text("hello");
  for (auto& reply : echo.Call<mesh::v1::Echo>(hello)) {
    HOSTMESH_RETURN_IF_ERROR(reply.status());
    std::printf("echo: %s\n", reply->text().c_str());
  }

  // A procd of the user's own (my_procd.cc), named as the procs' command.
  if (!my_procd.empty()) {
    mesh::v1::ProcSpec spec;
    spec.set_command(my_procd);
    HOSTMESH_ASSIGN_OR_RETURN(mesh::ProcMesh mine, hosts.Spawn("p1", 2, spec));
    for (const auto& proc : mine.procs()) pids.push_back(proc.pid());
    HOSTMESH_ASSIGN_OR_RETURN(mesh::ActorMesh shout,
                              mine.Spawn("s", "sdk.shout"));
    for (auto& reply : shout.Call<mesh::v1::Echo>(hello)) {
      HOSTMESH_RETURN_IF_ERROR(reply.status());
      std::printf("shout: %s\n", reply->text().c_str());
    }
  }

  HOSTMESH_RETURN_IF_ERROR(hosts.Shutdown());
  for (int pid : pids) {
    if (kill(pid, 0) == 0) {
      return absl::InternalError(
          absl::StrCat("proc pid ", pid, " still runs after Shutdown"));
    }
  }
  std::printf("shut down: no proc left\n");
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2) {
    std::fprintf(stderr, "usage: %s [MY_PROCD]\n", argv[0]);
    return 2;
  }
  std::string my_procd = argc == 2 ? argv[1] : "";
  if (!my_procd.empty() && access(my_procd.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "%s: %s is not an executable file\n", argv[0],
                 my_procd.c_str());
    return 2;
  }
  absl::Status status = Run(my_procd);
  if (!status.ok()) {
    std::fprintf(stderr, "sdk example failed: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("sdk example: ok\n");
  return 0;
}
