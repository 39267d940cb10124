// F5's child: a minimal process that links protobuf (as procd does; no
// gRPC) and ends on SIGTERM. It installs a SIGTERM handler that exits at
// once, touches protobuf (so the library is loaded and initialized, not
// just named), says it runs by writing one byte to fd 3, and waits for
// signals.
#include <google/protobuf/timestamp.pb.h>
#include <signal.h>
#include <unistd.h>

#include <string>

namespace {

void ExitOnTerm(int) { _exit(0); }

}  // namespace

int main() {
  struct sigaction action = {};
  action.sa_handler = ExitOnTerm;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGTERM, &action, nullptr) != 0) return 1;
  google::protobuf::Timestamp stamp;
  stamp.set_seconds(getpid());
  std::string bytes = stamp.SerializeAsString();
  char byte = bytes.empty() ? 0 : 1;
  if (write(3, &byte, 1) != 1) return 1;
  for (;;) pause();
}
