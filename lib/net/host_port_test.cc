#include "lib/net/host_port.h"

#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("host:port parses names, IPv4 and bracketed IPv6") {
  auto v4 = ParseHostPort("127.0.0.1:7450", "address");
  REQUIRE(v4.ok());
  CHECK(v4->host == "127.0.0.1");
  CHECK(v4->port == 7450);
  auto v6 = ParseHostPort("[::1]:80", "address");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  CHECK(JoinHostPort(v6->host, v6->port) == "[::1]:80");
  CHECK(JoinHostPort("node7", 1) == "node7:1");
  CHECK(ParseHostPort("node:0", "listen", true)->port == 0);
}

TEST_CASE("what is not host:port is INVALID_ARGUMENT naming the field") {
  for (const char* bad : {"", ":80", "host", "host:", "host:0", "host:65536",
                          "::1:80", "[::1:80", "a b:80", "host:8x", "h/x:80"}) {
    INFO(bad);
    auto parsed = ParseHostPort(bad, "envelope.to_host");
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(parsed.status().message().find("envelope.to_host") !=
          std::string::npos);
  }
}

TEST_CASE("ports run from 1 to 65535, and 0 where a listener picks one") {
  CHECK(ParseHostPort("node7:1", "address")->port == 1);
  CHECK(ParseHostPort("node7:65535", "address")->port == 65535);
  CHECK_FALSE(ParseHostPort("node7:0", "address").ok());
  CHECK(ParseHostPort("[::]:0", "--listen", true)->host == "::");
  CHECK(ParseHostPort("0.0.0.0:0", "--listen", true)->port == 0);
  CHECK_FALSE(ParseHostPort("node7:-1", "address", true).ok());
  CHECK_FALSE(ParseHostPort("node7:007450", "address").ok());
}

TEST_CASE("IPv6 hosts round-trip through join and parse, bracketed") {
  for (const char* host : {"::1", "2001:db8::5", "fd00::2", "::"}) {
    INFO(host);
    const std::string joined = JoinHostPort(host, 7450);
    CHECK(joined == std::string("[") + host + "]:7450");
    auto parsed = ParseHostPort(joined, "address");
    REQUIRE(parsed.ok());
    CHECK(parsed->host == host);
    CHECK(parsed->port == 7450);
  }
  CHECK(JoinHostPort("10.0.0.5", 80) == "10.0.0.5:80");
  CHECK(JoinHostPort("node-7.example.com", 80) == "node-7.example.com:80");
}

TEST_CASE("a long address is echoed as a bounded quote") {
  auto parsed = ParseHostPort(std::string(60000, 'a'), "envelope.to_host");
  REQUIRE_FALSE(parsed.ok());
  CHECK(parsed.status().message().size() < 300);
  CHECK(parsed.status().message().find("(60000 bytes)") != std::string::npos);
}

}  // namespace
}  // namespace mesh
