// B1b, cold start to first reply: a fresh client process that starts a
// local host (HostMesh::Local), spawns one proc and one echo actor, makes
// one call, prints "ok" (or "error: ...") on stdout, then shuts everything
// down. mesh_bench times it from posix_spawn to the "ok" line.
//
// On stderr it tells where the time went, one line: from its spawn (given
// as --spawned-at NS, CLOCK_MONOTONIC nanoseconds) to main, then each step.
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "bench/util.h"
#include "hostmesh/hostmesh.h"
#include "proto/actors.pb.h"

namespace mesh {
namespace {

int64_t MonotonicNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

// "step 12.3 ms" pieces, each the time since the previous mark.
class Steps {
 public:
  explicit Steps(int64_t start_ns) : last_ns_(start_ns) {}
  void Mark(const char* step) {
    const int64_t now = MonotonicNs();
    absl::StrAppendFormat(&text_, " %s %.1f ms", step,
                          static_cast<double>(now - last_ns_) / 1e6);
    last_ns_ = now;
  }
  const std::string& text() const { return text_; }

 private:
  int64_t last_ns_;
  std::string text_;
};

absl::Status Run(Steps& steps) {
  Client::Options client_options;
  client_options.forward_proc_output = false;
  absl::StatusOr<std::shared_ptr<Client>> client =
      Client::Create(std::move(client_options));
  if (!client.ok()) return client.status();
  steps.Mark("client");
  HostMesh::Options options;
  options.client = *client;
  options.keep_logs = false;
  absl::StatusOr<HostMesh> hosts = HostMesh::Local(options);
  if (!hosts.ok()) return hosts.status();
  steps.Mark("host");
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("cold", 1);
  if (!procs.ok()) return procs.status();
  steps.Mark("proc");
  absl::StatusOr<ActorMesh> echo = procs->Spawn("echo", "mesh.echo");
  if (!echo.ok()) return echo.status();
  steps.Mark("actor");
  v1::Echo hello;
  hello.set_text("hello");
  std::vector<absl::StatusOr<v1::Echo>> replies =
      echo->Call<v1::Echo>(hello, absl::Seconds(10));
  if (replies.size() != 1 || !replies[0].ok()) {
    return replies.empty() ? absl::InternalError("no reply")
                           : replies[0].status();
  }
  steps.Mark("call");
  std::printf("ok\n");
  std::fflush(stdout);
  return hosts->Shutdown();
}

}  // namespace
}  // namespace mesh

int main(int argc, char** argv) {
  const int64_t main_ns = mesh::MonotonicNs();
  int64_t spawned_ns = main_ns;
  if (argc == 3 && std::strcmp(argv[1], "--spawned-at") == 0) {
    spawned_ns = std::stoll(argv[2]);
  }
  mesh::Steps steps(spawned_ns);
  steps.Mark("exec+load");
  mesh::bench::QuietLogging(argv[0]);
  absl::Status status = mesh::Run(steps);
  std::fprintf(stderr, "cold_client:%s\n", steps.text().c_str());
  if (!status.ok()) {
    std::printf("error: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
