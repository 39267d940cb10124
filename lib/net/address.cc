#include "lib/net/address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/names.h"

namespace mesh {
namespace {

// inet_ntop of a socket address; an IPv4-mapped IPv6 one as IPv4; "" for
// other families.
std::string AddressString(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    return text;
  }
  if (address->sa_family == AF_INET6) {
    const in6_addr& v6 =
        reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
      inet_ntop(AF_INET, &v6.s6_addr[12], text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &v6, text, sizeof(text));
    }
    return text;
  }
  return "";
}

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// " (this machine's addresses: 10.0.0.5, 2001:db8::5)": what an operator
// could advertise instead.
std::string Suggestions(const MachineView& machine) {
  std::vector<std::string> reachable;
  for (const std::string& address : machine.addresses) {
    // Loopback and IPv6 link-local (fe80::/10) reach no other machine.
    if (IsLoopbackHost(address) || absl::StartsWithIgnoreCase(address, "fe8") ||
        absl::StartsWithIgnoreCase(address, "fe9") ||
        absl::StartsWithIgnoreCase(address, "fea") ||
        absl::StartsWithIgnoreCase(address, "feb")) {
      continue;
    }
    reachable.push_back(address);
    if (reachable.size() == 8) break;
  }
  if (reachable.empty()) return " (this machine has no address but loopback)";
  return absl::StrCat(
      " (this machine's addresses: ", absl::StrJoin(reachable, ", "), ")");
}

}  // namespace

bool IsLoopbackHost(absl::string_view host) {
  if (absl::EqualsIgnoreCase(host, "localhost") ||
      absl::EqualsIgnoreCase(host, "localhost.")) {
    return true;
  }
  const std::string text(host);
  in_addr v4;
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_LOOPBACK(&v6) ||
           (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  }
  return false;
}

bool IsWildcardHost(absl::string_view host) {
  if (host.empty()) return true;
  const std::string text(host);
  in_addr v4;
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return v4.s_addr == htonl(INADDR_ANY);
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_UNSPECIFIED(&v6);
  }
  return false;
}

absl::Status ValidateHost(absl::string_view host, absl::string_view what) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", QuoteForError(host),
                     " is not a host name or address (", why, ")"));
  };
  if (host.empty()) return bad("it is empty");
  if (host.find(':') != absl::string_view::npos) {
    in6_addr v6;
    if (host.size() <= INET6_ADDRSTRLEN &&
        inet_pton(AF_INET6, std::string(host).c_str(), &v6) == 1) {
      return absl::OkStatus();
    }
    return bad(
        "a host has no port; an IPv6 address is written as it is, e.g. "
        "2001:db8::5");
  }
  if (host.size() > 253) return bad("longer than 253 characters");
  for (char c : host) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '.' && c != '_') {
      return bad("it has a character that no host name has");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ResolveHost(const std::string& host) {
  if (host.empty()) return absl::InvalidArgumentError("no host to resolve");
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &results);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat(
        QuoteForError(host), " does not resolve here (",
        rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc), ")"));
  }
  std::vector<std::string> addresses;
  for (const addrinfo* result = results; result != nullptr;
       result = result->ai_next) {
    std::string address = AddressString(result->ai_addr);
    if (!address.empty() && !Contains(addresses, address)) {
      addresses.push_back(std::move(address));
    }
  }
  freeaddrinfo(results);
  if (addresses.empty()) {
    return absl::UnavailableError(
        absl::StrCat(QuoteForError(host), " resolves to no IP address"));
  }
  return addresses;
}

std::vector<std::string> ThisMachineAddresses() {
  std::vector<std::string> addresses;
  ifaddrs* interfaces = nullptr;
  if (getifaddrs(&interfaces) != 0) return addresses;
  for (const ifaddrs* i = interfaces; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    std::string address = AddressString(i->ifa_addr);
    if (!address.empty() && !Contains(addresses, address)) {
      addresses.push_back(std::move(address));
    }
  }
  freeifaddrs(interfaces);
  return addresses;
}

bool ResolvesToLoopback(const std::string& name) {
  absl::StatusOr<std::vector<std::string>> addresses = ResolveHost(name);
  if (!addresses.ok()) return false;
  return std::all_of(addresses->begin(), addresses->end(),
                     [](const std::string& a) { return IsLoopbackHost(a); });
}

bool IsAddressOfThisMachine(const std::string& host) {
  absl::StatusOr<std::vector<std::string>> addresses = ResolveHost(host);
  if (!addresses.ok()) return false;
  const std::vector<std::string> mine = ThisMachineAddresses();
  return std::all_of(addresses->begin(), addresses->end(),
                     [&](const std::string& a) {
                       return IsLoopbackHost(a) || Contains(mine, a);
                     });
}

MachineView ThisMachine() {
  MachineView machine;
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof(name) - 1) == 0) machine.hostname = name;
  machine.addresses = ThisMachineAddresses();
  machine.resolve = ResolveHost;
  return machine;
}

absl::StatusOr<std::string> ChooseAdvertisedHost(
    const HostPort& listen, const std::string& advertise_flag, bool unchecked,
    const MachineView& machine) {
  const std::string listen_text = JoinHostPort(listen.host, listen.port);
  const bool wildcard = IsWildcardHost(listen.host);
  // Loopback addresses are all this machine's (127.0.1.1 is on no interface).
  auto is_mine = [&](const std::string& address) {
    return IsLoopbackHost(address) || Contains(machine.addresses, address);
  };
  auto all_loopback = [](const std::vector<std::string>& addresses) {
    return std::all_of(addresses.begin(), addresses.end(),
                       [](const std::string& a) { return IsLoopbackHost(a); });
  };

  if (advertise_flag.empty()) {
    if (!wildcard) return listen.host;
    // Every interface: other machines need a name of this one.
    const std::string& name = machine.hostname;
    std::string why;
    absl::StatusOr<std::vector<std::string>> addresses =
        name.empty() ? absl::NotFoundError("no hostname")
                     : machine.resolve(name);
    if (name.empty()) {
      why = "this machine has no hostname";
    } else if (!addresses.ok()) {
      why = absl::StrCat("this machine's hostname ",
                         addresses.status().message());
    } else if (all_loopback(*addresses)) {
      why = absl::StrCat("this machine's hostname \"", name,
                         "\" resolves only to loopback (",
                         absl::StrJoin(*addresses, ", "),
                         "), which other machines cannot reach");
    } else {
      for (const std::string& address : *addresses) {
        if (!is_mine(address)) {
          why = absl::StrCat("this machine's hostname \"", name,
                             "\" resolves to ", address,
                             ", which is not an address of this machine");
          break;
        }
      }
      if (why.empty()) return name;
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "--listen ", listen_text, " binds every interface, but ", why,
        ": set --advertise to a name or address of this machine that other "
        "machines reach",
        Suggestions(machine)));
  }

  std::string host = advertise_flag;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (absl::Status valid = ValidateHost(host, "--advertise"); !valid.ok()) {
    return valid;
  }
  absl::StatusOr<std::vector<std::string>> addresses = machine.resolve(host);
  if (!addresses.ok()) {
    if (unchecked) return host;
    return absl::InvalidArgumentError(
        absl::StrCat("--advertise ", addresses.status().message(),
                     "; if it is a name only other machines resolve, add "
                     "--advertise-unchecked"));
  }
  bool loopback_listen = IsLoopbackHost(listen.host);
  absl::StatusOr<std::vector<std::string>> bound;
  if (!wildcard) {
    bound = machine.resolve(listen.host);
    if (!bound.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen ", bound.status().message()));
    }
    loopback_listen = loopback_listen || all_loopback(*bound);
  }
  if (!loopback_listen && all_loopback(*addresses)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen ", listen_text, " is for other machines, but --advertise ",
        QuoteForError(host), " resolves to loopback (",
        absl::StrJoin(*addresses, ", "),
        "), which they cannot reach: advertise a name or address of this "
        "machine that they reach",
        Suggestions(machine)));
  }
  if (unchecked) return host;
  // "--advertise 10.0.0.8 is", "--advertise node8 resolves to 10.0.0.8,
  // which is".
  auto what = [&](const std::string& address) {
    return *addresses == std::vector<std::string>{host}
               ? absl::StrCat("--advertise ", host, " is")
               : absl::StrCat("--advertise ", QuoteForError(host),
                              " resolves to ", address, ", which is");
  };
  bool listened = wildcard;
  for (const std::string& address : *addresses) {
    if (!is_mine(address)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what(address), " not an address of this machine",
          Suggestions(machine),
          "; for an address that reaches this machine from elsewhere (NAT, a "
          "DNS name), add --advertise-unchecked"));
    }
    listened = listened || Contains(*bound, address);
  }
  if (!listened) {
    return absl::InvalidArgumentError(absl::StrCat(
        what(absl::StrJoin(*addresses, ", ")), " an address --listen ",
        listen_text, " does not bind (it binds ", absl::StrJoin(*bound, ", "),
        ")"));
  }
  return host;
}

absl::StatusOr<std::string> ChooseAdvertisedHost(
    const HostPort& listen, const std::string& advertise_flag, bool unchecked) {
  return ChooseAdvertisedHost(listen, advertise_flag, unchecked, ThisMachine());
}

}  // namespace mesh
