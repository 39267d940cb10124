// The verb groups of meshctl, one file each. Each adds its group and verbs
// to `cli` (Cli::Group, Cli::Verb); meshctl/commands.cc calls them in the
// order `meshctl --help` lists them. See /work/notes/meshctl-layout.md.
#ifndef HOSTMESH_MESHCTL_COMMANDS_H_
#define HOSTMESH_MESHCTL_COMMANDS_H_

#include "meshctl/cli.h"

namespace mesh::meshctl {

void AddHostCommands(Cli& cli);        // meshctl/host.cc
void AddProcCommands(Cli& cli);        // meshctl/proc.cc
void AddOwnerCommands(Cli& cli);       // meshctl/owner.cc
void AddActorCommands(Cli& cli);       // meshctl/actor.cc
void AddLogsCommands(Cli& cli);        // meshctl/logs.cc (logs helper)
void AddWatchCommands(Cli& cli);       // meshctl/watch.cc (watch, host drain)
void AddSlurmCommands(Cli& cli);       // meshctl/slurm.cc (slurm up)
void AddVersionCommands(Cli& cli);     // meshctl/version.cc
void AddCompletionCommands(Cli& cli);  // meshctl/completion.cc

// Every group above that exists, in order.
void AddAllCommands(Cli& cli);

}  // namespace mesh::meshctl

#endif  // HOSTMESH_MESHCTL_COMMANDS_H_
