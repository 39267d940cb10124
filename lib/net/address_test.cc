#include "lib/net/address.h"

#include <arpa/inet.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "lib/net/host_port.h"

namespace mesh {
namespace {

TEST_CASE("loopback hosts are 127.0.0.0/8, ::1 and localhost") {
  for (const char* host :
       {"127.0.0.1", "127.1.2.3", "127.255.255.255", "::1", "0:0:0:0:0:0:0:1",
        "::ffff:127.0.0.1", "localhost", "LocalHost"}) {
    INFO(host);
    CHECK(IsLoopbackHost(host));
  }
  for (const char* host :
       {"10.0.0.1", "128.0.0.1", "126.255.255.255", "::2", "::", "0.0.0.0",
        "::ffff:10.0.0.1", "localhost.example", "node7", ""}) {
    INFO(host);
    CHECK_FALSE(IsLoopbackHost(host));
  }
}

TEST_CASE("wildcard hosts are 0.0.0.0, :: and the empty host") {
  for (const char* host : {"0.0.0.0", "::", "0:0:0:0:0:0:0:0", ""}) {
    INFO(host);
    CHECK(IsWildcardHost(host));
  }
  for (const char* host : {"127.0.0.1", "::1", "10.0.0.0", "node7"}) {
    INFO(host);
    CHECK_FALSE(IsWildcardHost(host));
  }
}

TEST_CASE("a host is a name or an address, never a host:port") {
  for (const char* host : {"node7", "node-7.example.com", "10.0.0.5", "::1",
                           "2001:db8::5", "fd00::2"}) {
    INFO(host);
    CHECK(ValidateHost(host, "--advertise").ok());
  }
  for (const std::string& host :
       {std::string("node7:7450"), std::string("10.0.0.5:80"),
        std::string("[::1]"), std::string(""), std::string("a b"),
        std::string("h/x"), std::string(60000, 'a')}) {
    INFO(host.substr(0, 20));
    absl::Status status = ValidateHost(host, "--advertise");
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(status.message(), "--advertise"));
    CHECK(status.message().size() < 400);
  }
}

TEST_CASE("loopback literals and localhost resolve to loopback here") {
  auto v4 = ResolveHost("127.0.0.1");
  REQUIRE(v4.ok());
  CHECK(*v4 == std::vector<std::string>{"127.0.0.1"});
  auto v6 = ResolveHost("::1");
  REQUIRE(v6.ok());
  CHECK(*v6 == std::vector<std::string>{"::1"});
  CHECK(ResolvesToLoopback("localhost"));
  CHECK(ResolvesToLoopback("127.0.0.1"));
  CHECK_FALSE(ResolvesToLoopback("10.0.0.1"));
  CHECK(IsAddressOfThisMachine("127.0.0.1"));
  CHECK(IsAddressOfThisMachine("localhost"));
}

TEST_CASE("this machine's addresses include loopback and exclude others") {
  std::vector<std::string> mine = ThisMachineAddresses();
  CHECK(std::find(mine.begin(), mine.end(), "127.0.0.1") != mine.end());
  // An address from a documentation range that this machine does not have.
  std::string foreign;
  for (const char* candidate :
       {"203.0.113.77", "198.51.100.77", "2001:db8::77"}) {
    if (std::find(mine.begin(), mine.end(), candidate) == mine.end()) {
      foreign = candidate;
      break;
    }
  }
  REQUIRE_FALSE(foreign.empty());
  CHECK_FALSE(IsAddressOfThisMachine(foreign));
  for (const std::string& address : mine) {
    INFO(address);
    CHECK(IsAddressOfThisMachine(address));
  }
}

TEST_CASE("a name that does not resolve is UNAVAILABLE, quoting the name") {
  auto resolved = ResolveHost("no-such-host.invalid");
  REQUIRE_FALSE(resolved.ok());
  CHECK(resolved.status().code() == absl::StatusCode::kUnavailable);
  CHECK(absl::StrContains(resolved.status().message(),
                          "\"no-such-host.invalid\""));
  CHECK_FALSE(ResolvesToLoopback("no-such-host.invalid"));
  CHECK_FALSE(IsAddressOfThisMachine("no-such-host.invalid"));
}

// node7: 10.0.0.7 and 2001:db8::7 besides loopback. Names resolve from a
// table; literals to themselves.
MachineView Node7(std::string hostname = "node7") {
  MachineView machine;
  machine.hostname = std::move(hostname);
  machine.addresses = {"127.0.0.1", "::1", "10.0.0.7", "2001:db8::7",
                       "fe80::7"};
  machine.resolve =
      [](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
    static const auto* names =
        new std::map<std::string, std::vector<std::string>>{
            {"node7", {"10.0.0.7", "2001:db8::7"}},
            {"localhost", {"127.0.0.1", "::1"}},
            {"vm", {"127.0.0.1"}},
            {"debian", {"127.0.1.1"}},
            {"mixed", {"127.0.1.1", "10.0.0.7"}},
            {"nat.example", {"203.0.113.5"}},
            {"balanced.example", {"10.0.0.7", "10.0.0.8"}},
            {"node8", {"10.0.0.8"}},
        };
    char buffer[16];
    if (inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
        inet_pton(AF_INET6, host.c_str(), buffer) == 1) {
      return std::vector<std::string>{host};
    }
    auto it = names->find(host);
    if (it == names->end()) {
      return absl::UnavailableError("\"" + host + "\" does not resolve here");
    }
    return it->second;
  };
  return machine;
}

absl::StatusOr<std::string> Choose(const std::string& listen,
                                   const std::string& advertise,
                                   bool unchecked = false,
                                   const MachineView& machine = Node7()) {
  absl::StatusOr<HostPort> parsed = ParseHostPort(listen, "--listen", true);
  REQUIRE(parsed.ok());
  return ChooseAdvertisedHost(*parsed, advertise, unchecked, machine);
}

TEST_CASE("a listen on one address advertises that address") {
  CHECK(Choose("10.0.0.7:7450", "").value() == "10.0.0.7");
  CHECK(Choose("127.0.0.1:0", "").value() == "127.0.0.1");
  CHECK(Choose("localhost:7450", "").value() == "localhost");
  absl::StatusOr<std::string> v6 = Choose("[::1]:7450", "");
  REQUIRE(v6.ok());
  CHECK(*v6 == "::1");
  CHECK(JoinHostPort(*v6, 7450) == "[::1]:7450");
}

TEST_CASE("a wildcard listen advertises a hostname that reaches this machine") {
  CHECK(Choose("0.0.0.0:7450", "").value() == "node7");
  CHECK(Choose("[::]:7450", "").value() == "node7");
  // 127.0.1.1 is this machine's too; other machines resolve it elsewhere.
  CHECK(Choose("0.0.0.0:7450", "", false, Node7("mixed")).value() == "mixed");
}

TEST_CASE(
    "a wildcard listen is refused when the hostname does not reach this "
    "machine, naming --advertise and the addresses to use") {
  for (const char* hostname : {"vm", "debian", "node8", "unknown", ""}) {
    INFO(hostname);
    absl::StatusOr<std::string> chosen =
        Choose("0.0.0.0:7450", "", false, Node7(hostname));
    REQUIRE_FALSE(chosen.ok());
    CHECK(chosen.status().code() == absl::StatusCode::kFailedPrecondition);
    const std::string message(chosen.status().message());
    CHECK(absl::StrContains(message, "--listen 0.0.0.0:7450"));
    CHECK(absl::StrContains(message, "set --advertise"));
    CHECK(absl::StrContains(message, "10.0.0.7, 2001:db8::7)"));
    // Loopback and link-local addresses are no suggestion.
    CHECK_FALSE(absl::StrContains(message, "fe80::7"));
  }
  // --advertise-unchecked is about --advertise; it does not pick a name.
  CHECK_FALSE(Choose("0.0.0.0:7450", "", true, Node7("vm")).ok());
}

TEST_CASE("--advertise may name any address or name of this machine") {
  CHECK(Choose("0.0.0.0:7450", "10.0.0.7").value() == "10.0.0.7");
  CHECK(Choose("0.0.0.0:7450", "node7").value() == "node7");
  absl::StatusOr<std::string> v6 = Choose("[::]:7450", "2001:db8::7");
  REQUIRE(v6.ok());
  CHECK(JoinHostPort(*v6, 7450) == "[2001:db8::7]:7450");
  CHECK(Choose("0.0.0.0:7450", "[2001:db8::7]").value() == "2001:db8::7");
  CHECK(Choose("10.0.0.7:7450", "node7").value() == "node7");
}

TEST_CASE("a loopback listen may advertise loopback, IPv6 bracketed") {
  CHECK(Choose("127.0.0.1:7450", "localhost").value() == "localhost");
  absl::StatusOr<std::string> v6 = Choose("[::1]:0", "::1");
  REQUIRE(v6.ok());
  CHECK(JoinHostPort(*v6, 32847) == "[::1]:32847");
}

TEST_CASE(
    "a listen for other machines that advertises loopback is refused, even "
    "unchecked") {
  for (const auto& [listen, advertise] :
       std::vector<std::pair<std::string, std::string>>{
           {"0.0.0.0:7450", "localhost"},
           {"0.0.0.0:7450", "127.0.0.1"},
           {"[::]:7450", "::1"},
           {"0.0.0.0:7450", "vm"},
           {"10.0.0.7:7450", "127.0.0.1"}}) {
    for (bool unchecked : {false, true}) {
      INFO(listen << " --advertise " << advertise << " unchecked "
                  << unchecked);
      absl::StatusOr<std::string> chosen = Choose(listen, advertise, unchecked);
      REQUIRE_FALSE(chosen.ok());
      CHECK(chosen.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK(absl::StrContains(chosen.status().message(), "loopback"));
    }
  }
}

TEST_CASE(
    "an advertised address that is not this machine's is refused unless "
    "unchecked") {
  for (const char* advertise :
       {"203.0.113.5", "nat.example", "balanced.example", "node8",
        "outside-only.example"}) {
    INFO(advertise);
    absl::StatusOr<std::string> chosen = Choose("0.0.0.0:7450", advertise);
    REQUIRE_FALSE(chosen.ok());
    CHECK(chosen.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(chosen.status().message(), "--advertise"));
    CHECK(
        absl::StrContains(chosen.status().message(), "--advertise-unchecked"));
    CHECK(Choose("0.0.0.0:7450", advertise, true).value() == advertise);
  }
}

TEST_CASE("an advertised address that the listen does not bind is refused") {
  absl::StatusOr<std::string> chosen = Choose("127.0.0.1:7450", "10.0.0.7");
  REQUIRE_FALSE(chosen.ok());
  CHECK(absl::StrContains(chosen.status().message(), "does not bind"));
  CHECK_FALSE(Choose("[::1]:7450", "127.0.0.1").ok());
  CHECK(Choose("127.0.0.1:7450", "10.0.0.7", true).value() == "10.0.0.7");
}

TEST_CASE("--advertise takes a host, not a host:port, quoted bounded") {
  for (const std::string& advertise :
       {std::string("node7:7450"), std::string("[::1]:7450"),
        std::string(20000, 'x') + ":1"}) {
    absl::StatusOr<std::string> chosen = Choose("0.0.0.0:7450", advertise);
    REQUIRE_FALSE(chosen.ok());
    CHECK(chosen.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(chosen.status().message(), "a host has no port"));
    CHECK(chosen.status().message().size() < 400);
  }
}

TEST_CASE("on this machine a loopback listen advertises itself") {
  absl::StatusOr<std::string> v4 =
      ChooseAdvertisedHost({"127.0.0.1", 0}, "", false);
  REQUIRE(v4.ok());
  CHECK(*v4 == "127.0.0.1");
  absl::StatusOr<std::string> v6 =
      ChooseAdvertisedHost({"::1", 0}, "::1", false);
  REQUIRE(v6.ok());
  CHECK(*v6 == "::1");
  // Whatever this machine's hostname resolves to, a wildcard listen either
  // advertises it or says how to set --advertise.
  absl::StatusOr<std::string> any =
      ChooseAdvertisedHost({"0.0.0.0", 0}, "", false);
  if (!any.ok()) {
    CHECK(absl::StrContains(any.status().message(), "set --advertise"));
  } else {
    CHECK_FALSE(ResolvesToLoopback(*any));
  }
}

}  // namespace
}  // namespace mesh
