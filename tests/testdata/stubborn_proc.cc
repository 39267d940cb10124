// A proc for tests that registers back and then ignores every request to
// stop: the stop request over its channel and SIGTERM. Only SIGKILL ends it.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "lib/bootstrap/parent_channel.h"

int main() {
  signal(SIGTERM, SIG_IGN);
  auto info = mesh::ParentChannel::ReadFromEnv();
  if (!info.ok() || !info->has_value()) {
    std::fprintf(stderr, "stubborn_proc: no bootstrap info\n");
    return 1;
  }
  mesh::ParentChannel::Callbacks callbacks;
  callbacks.on_stop = [](const std::string& reason, absl::Duration) {
    std::fprintf(stderr, "stubborn_proc: ignoring stop (%s)\n", reason.c_str());
  };
  callbacks.on_orphaned = [] { _exit(0); };
  auto channel = mesh::ParentChannel::Register(**info, "127.0.0.1:1",
                                               std::move(callbacks));
  if (!channel.ok()) return 1;
  while (true) pause();
}
