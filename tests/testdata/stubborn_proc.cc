// A proc for tests that says Hello over its channel and then ignores every
// request to stop: hostd's StopProc and SIGTERM. Only SIGKILL ends it (or
// its channel gone past the orphan timeout). It runs no actors: a relayed
// verb is answered UNIMPLEMENTED, an envelope is dropped.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "lib/status.h"
#include "procd/host_link.h"

int main() {
  signal(SIGTERM, SIG_IGN);
  absl::StatusOr<std::optional<int>> fd = mesh::HostLink::ChannelFdFromEnv();
  if (!fd.ok() || !fd->has_value()) {
    std::fprintf(stderr, "stubborn_proc: no %s\n", mesh::kChannelFdEnv);
    return 1;
  }
  absl::StatusOr<std::unique_ptr<mesh::HostLink>> link =
      mesh::HostLink::Connect(**fd, absl::Seconds(10));
  if (!link.ok()) {
    std::fprintf(stderr, "stubborn_proc: %s\n",
                 link.status().ToString().c_str());
    return 1;
  }
  mesh::HostLink* raw = link->get();
  mesh::HostLink::Callbacks callbacks;
  callbacks.on_request = [raw](mesh::v1::ProcRequest request) {
    mesh::v1::ProcResponse response;
    response.set_id(request.id());
    *response.mutable_error() = mesh::ToErrorProto(
        absl::UnimplementedError("stubborn_proc runs no actors"));
    (void)raw->SendResponse(std::move(response));
  };
  callbacks.on_stop = [](const std::string& reason, absl::Duration) {
    std::fprintf(stderr, "stubborn_proc: ignoring stop (%s)\n", reason.c_str());
  };
  callbacks.on_refused = [](const std::string& reason) {
    std::fprintf(stderr, "stubborn_proc: refused (%s)\n", reason.c_str());
    _exit(1);
  };
  callbacks.on_orphaned = [] { _exit(0); };
  (*link)->Start(std::move(callbacks), {});
  while (true) pause();
}
