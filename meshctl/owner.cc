// meshctl owner list: the clients whose leases keep procs of a host alive.
#include "absl/time/clock.h"
#include "meshctl/cli.h"
#include "meshctl/commands.h"

namespace mesh::meshctl {
namespace {

absl::Status OwnerList(Cli& cli) {
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("owner list"));
  v1::ListOwnersResponse response;
  RETURN_IF_ERROR(conn->Call(conn->host(), &v1::Host::Stub::ListOwners,
                             v1::ListOwnersRequest(), &response, cli.timeout(),
                             absl::StrCat("list owners ", conn->OnHost())));
  const absl::Time now = absl::Now();
  return cli.Print(response, FormatOwnerTable(response.owners(), now),
                   FormatOwnerTable(response.owners(), now, /*wide=*/true));
}

}  // namespace

void AddOwnerCommands(Cli& cli) {
  CLI::App* owner =
      cli.Group("owner", "clients whose leases keep procs of the host alive");
  cli.Verb(owner, "list",
           "list the clients holding procs: their identity, whether they are "
           "connected, how many procs, and when a vanished one's procs are "
           "stopped (hostd --owner-lease)",
           "meshctl owner list -o wide", [&cli] { return OwnerList(cli); });
}

}  // namespace mesh::meshctl
