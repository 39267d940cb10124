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

}  // namespace
}  // namespace mesh
