// meshctl version: meshctl's own version (the host's is in host status).
#include "lib/version.h"

#include "meshctl/cli.h"
#include "meshctl/commands.h"

namespace mesh::meshctl {

void AddVersionCommands(Cli& cli) {
  CLI::App* version =
      cli.Verb(&cli.app(), "version",
               "print meshctl's version (the host's: host status)",
               "meshctl version", [&cli] {
                 cli.out() << "meshctl " << kHostmeshVersion << std::endl;
                 return absl::OkStatus();
               });
  cli.NoHosts(version);
}

}  // namespace mesh::meshctl
