// A child for launcher_test: registers with its parent over the inherited
// channel the way hostd does, then waits. A stop request prints its reason
// to stderr and exits 0; orphaning exits 3. Exits 1 if registration fails
// and 2 if it was not spawned by a parent.
//
// Usage: registering_child [--stdio] [address]   (default 127.0.0.1:1)
// --stdio: the channel is stdin and stdout (hostd --parent=stdio); then
// "stray output" is printed to stdout before registering (it must land in
// stderr, not in the frames).
#include <cstdio>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "lib/bootstrap/parent_channel.h"

int main(int argc, char** argv) {
  const bool stdio = argc > 1 && std::string(argv[1]) == "--stdio";
  if (stdio) {
    --argc;
    ++argv;
  }
  absl::StatusOr<std::optional<mesh::ParentChannel::Inherited>> inherited =
      stdio ? absl::StatusOr<std::optional<mesh::ParentChannel::Inherited>>(
                  mesh::ParentChannel::ReadFromStdio())
            : mesh::ParentChannel::ReadFromEnv();
  if (!inherited.ok()) {
    std::fprintf(stderr, "registering_child: %s\n",
                 inherited.status().ToString().c_str());
    return 1;
  }
  if (!inherited->has_value()) {
    std::fprintf(stderr, "registering_child: not spawned by a parent\n");
    return 2;
  }
  const std::string address = argc > 1 ? argv[1] : "127.0.0.1:1";
  if (stdio) {
    std::printf("stray output\n");
    std::fflush(stdout);
  }

  absl::Mutex mu;
  bool done = false;
  int exit_code = 0;
  auto finish = [&](int code) {
    absl::MutexLock l(&mu);
    if (done) return;
    done = true;
    exit_code = code;
  };
  mesh::ParentChannel::Callbacks callbacks;
  callbacks.on_stop = [&](const std::string& reason, absl::Duration grace) {
    std::fprintf(stderr, "registering_child: stopping (%s) within %s\n",
                 reason.c_str(), absl::FormatDuration(grace).c_str());
    finish(0);
  };
  callbacks.on_orphaned = [&] {
    std::fprintf(stderr, "registering_child: orphaned\n");
    finish(3);
  };
  absl::StatusOr<std::unique_ptr<mesh::ParentChannel>> channel =
      mesh::ParentChannel::Register(std::move(**inherited), address,
                                    std::move(callbacks));
  if (!channel.ok()) {
    std::fprintf(stderr, "registering_child: %s\n",
                 channel.status().ToString().c_str());
    return 1;
  }
  std::printf("registering_child: registered as %s\n", address.c_str());
  std::fflush(stdout);
  int code;
  {
    absl::MutexLock l(&mu);
    mu.Await(absl::Condition(&done));
    code = exit_code;
  }
  channel->reset();
  return code;
}
