// For procd_log_test: sets a proc's logging up as procd does
// (SetUpProcdLogging), logs a line of each severity below FATAL, writes a
// line of its own to stderr (as a user's actor would), then ends as its
// first argument says: "exit" (exit 0) or "check" (a CHECK failure).
#include <glog/logging.h>

#include <cstdio>
#include <cstring>

#include "procd/procd_log.h"

int main(int argc, char** argv) {
  const bool to_file = mesh::SetUpProcdLogging(argv[0]);
  std::printf("procd.log: %s\n", to_file ? "yes" : "no");
  std::fflush(stdout);
  LOG(INFO) << "procd says hello";
  LOG(WARNING) << "procd warns";
  LOG(ERROR) << "procd errs";
  std::fputs("the user's own line\n", stderr);
  std::fflush(stderr);
  if (argc > 1 && std::strcmp(argv[1], "check") == 0) {
    CHECK(argc < 0) << "the model is gone";
  }
  return 0;
}
