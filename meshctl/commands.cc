#include "meshctl/commands.h"

namespace mesh::meshctl {

// One line per verb group file; a new group adds its line here.
void AddAllCommands(Cli& cli) {
  AddHostCommands(cli);
  AddProcCommands(cli);
  AddOwnerCommands(cli);
  AddActorCommands(cli);
  AddLogsCommands(cli);
  AddWatchCommands(cli);
  AddSlurmCommands(cli);
  AddVersionCommands(cli);
  AddCompletionCommands(cli);  // Last: it completes every verb above.
}

}  // namespace mesh::meshctl
