// hostd: flags (or a config file) → HostdOptions → RunHostd. See hostd.h;
// the flags are in hostd/flags.h.
#include <glog/logging.h>

#include <optional>

#include "hostd/flags.h"
#include "hostd/hostd.h"

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  mesh::HostdOptions options;
  if (std::optional<int> exit_code =
          mesh::ParseHostdCommandLine(argc, argv, &options)) {
    return *exit_code;
  }
  mesh::ApplyLogLevels(options.v, options.log_level);
  return mesh::RunHostd(options);
}
