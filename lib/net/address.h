// Which hosts are whose: loopback, wildcard, this machine's; and the one
// decision hostd makes with them, the host it advertises
// (ChooseAdvertisedHost). Hosts are as in HostPort: no brackets ("::1",
// "127.0.0.1", "node7"). Addresses compared are numeric strings as inet_ntop
// writes them, an IPv4-mapped IPv6 address ("::ffff:10.0.0.5") as its IPv4
// address.
//
// Resolving (getaddrinfo) may wait on DNS: these are for start-up, not for a
// request path. Thread-safe.
#ifndef HOSTMESH_LIB_NET_ADDRESS_H_
#define HOSTMESH_LIB_NET_ADDRESS_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/net/host_port.h"

namespace mesh {

// Without resolving: "localhost", an IPv4 address in 127.0.0.0/8, "::1" (or
// an IPv4-mapped 127.x.y.z).
bool IsLoopbackHost(absl::string_view host);

// Without resolving: a host that binds every interface: "", "0.0.0.0", "::"
// (any spelling of them).
bool IsWildcardHost(absl::string_view host);

// OK if `host` can be a host: a name or an IPv4 address, or an IPv6 address
// (brackets taken off by the caller); INVALID_ARGUMENT naming `what`
// otherwise, e.g. for "node7:7450" (a host:port where a host belongs).
absl::Status ValidateHost(absl::string_view host, absl::string_view what);

// The numeric addresses `host` (a name or a literal) resolves to, without
// duplicates, in getaddrinfo's order. UNAVAILABLE if it does not resolve.
absl::StatusOr<std::vector<std::string>> ResolveHost(const std::string& host);

// The numeric addresses of this machine's interfaces (getifaddrs), loopback
// included.
std::vector<std::string> ThisMachineAddresses();

// True if `name` resolves and every address it resolves to is loopback.
bool ResolvesToLoopback(const std::string& name);

// True if `host` resolves and every address it resolves to is one of this
// machine's (loopback addresses are).
bool IsAddressOfThisMachine(const std::string& host);

// What ChooseAdvertisedHost knows of the machine it runs on: ThisMachine()
// asks the system; a test describes a made-up machine.
struct MachineView {
  std::string hostname;
  // Every address of the machine's interfaces, numeric, loopback included.
  std::vector<std::string> addresses;
  // The numeric addresses of a name or literal, as ResolveHost.
  std::function<absl::StatusOr<std::vector<std::string>>(const std::string&)>
      resolve;
};
MachineView ThisMachine();

// The host hostd advertises (its address for clients, peers and procs is
// JoinHostPort of it and the bound port), given `--listen` (parsed) and
// `--advertise` (`advertise_flag`, a host; empty if not given; "[::1]" is
// taken as "::1"):
//  - no --advertise: the listen host; for a wildcard listen, this machine's
//    hostname, but only if it resolves to a non-loopback address of this
//    machine (Debian's /etc/hosts maps it to 127.0.1.1): otherwise refused,
//    telling the operator to set --advertise (naming this machine's
//    addresses);
//  - refused: a non-loopback listen whose advertised host resolves to
//    loopback (other machines would be handed an address they cannot reach);
//  - refused unless `unchecked` (--advertise-unchecked, for a NAT address or
//    a DNS name only others resolve): an advertised host that does not
//    resolve here, or resolves to an address that is not this machine's or
//    that --listen does not bind.
// Refusals are INVALID_ARGUMENT (FAILED_PRECONDITION when the machine's own
// hostname does not do) with a message meant for the operator.
absl::StatusOr<std::string> ChooseAdvertisedHost(
    const HostPort& listen, const std::string& advertise_flag, bool unchecked,
    const MachineView& machine);
absl::StatusOr<std::string> ChooseAdvertisedHost(
    const HostPort& listen, const std::string& advertise_flag, bool unchecked);

}  // namespace mesh

#endif  // HOSTMESH_LIB_NET_ADDRESS_H_
