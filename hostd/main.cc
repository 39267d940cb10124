// hostd: flags (or a config file) → HostdOptions → RunHostd. See hostd.h.
#include <glog/logging.h>

#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "hostd/hostd.h"

namespace {

// Parses a flag's duration ("500ms", "10s"); false with a message if bad.
bool ParseFlagDuration(const std::string& flag, const std::string& text,
                       absl::Duration* out) {
  if (absl::ParseDuration(text, out) && *out > absl::ZeroDuration())
    return true;
  std::fprintf(
      stderr,
      "hostd: --%s: \"%s\" is not a positive duration (e.g. 10s, 500ms)\n",
      flag.c_str(), text.c_str());
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  mesh::HostdOptions options;
  std::string registration_timeout = "10s";
  std::string stop_grace = "5s";
  std::string orphan_timeout = "30s";
  CLI::App app{"hostd: the hostmesh host daemon. Spawns and supervises procs."};
  app.set_config("--config", "", "Config file (key = value lines, flag names)");
  app.add_option("--listen", options.listen,
                 "host:port to serve the Host API on (port 0: any)")
      ->capture_default_str();
  app.add_option("--advertise", options.advertise,
                 "Host name or IP to advertise (default: the listen host)");
  app.add_option("--state-dir", options.state_dir, "Proc logs and state")
      ->capture_default_str();
  app.add_option("--runtime-dir", options.runtime_dir,
                 "Private (0700) dir for the register-back socket")
      ->capture_default_str();
  app.add_option(
      "--procd", options.procd_path,
      "Default proc bootstrap command (default: procd beside hostd)");
  app.add_option("--registration-timeout", registration_timeout,
                 "How long a proc has to register back")
      ->capture_default_str();
  app.add_option("--stop-grace", stop_grace,
                 "Grace before SIGTERM, and again before SIGKILL")
      ->capture_default_str();
  app.add_option("--orphan-timeout", orphan_timeout,
                 "How long procs outlive a lost channel to this hostd")
      ->capture_default_str();
  app.add_option("--max-procs", options.max_procs, "Live procs at most")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-message-bytes", options.max_message_bytes,
                 "Largest gRPC message accepted")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!ParseFlagDuration("registration-timeout", registration_timeout,
                         &options.registration_timeout) ||
      !ParseFlagDuration("stop-grace", stop_grace, &options.stop_grace) ||
      !ParseFlagDuration("orphan-timeout", orphan_timeout,
                         &options.orphan_timeout)) {
    return 2;
  }
  return mesh::RunHostd(options);
}
