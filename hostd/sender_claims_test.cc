// SenderClaims: who a relay id belongs to, and that ids in use (pinned) are
// never forgotten to make room, so they cannot be churned out and stolen.
#include "hostd/sender_claims.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("an id belongs to the first identity that claimed it") {
  SenderClaims claims;
  CHECK(claims.Claim("client:a", "alice", "relay sender").ok());
  CHECK(claims.Claim("client:a", "alice", "client").ok());
  absl::Status taken = claims.Claim("client:a", "mallory", "relay sender");
  CHECK(taken.code() == absl::StatusCode::kPermissionDenied);
  CHECK(taken.message() ==
        "relay sender \"client:a\" belongs to another identity than mallory "
        "(the first that used it)");
}

TEST_CASE(
    "churning fresh ids forgets only unpinned ones, and once every id is "
    "pinned new ones are RESOURCE_EXHAUSTED") {
  SenderClaims claims(/*max_claims=*/4);
  REQUIRE(claims
              .Claim("client:victim", "alice", "relay sender",
                     /*pin=*/true)
              .ok());
  REQUIRE(claims.Claim("client:idle", "alice", "client").ok());
  // Mallory churns fresh ids (refused creates, short streams).
  for (int i = 0; i < 100; ++i) {
    REQUIRE(
        claims.Claim(absl::StrCat("client:m", i), "mallory", "client").ok());
  }
  CHECK(claims.size() == 4);
  // The pinned id is still alice's; the unpinned one went.
  CHECK(claims.Claim("client:victim", "mallory", "relay sender").code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK(claims.Claim("client:idle", "mallory", "client").ok());

  // Pinned by two (a stream and a lease): it stays until both let go.
  REQUIRE(claims.Claim("client:victim", "alice", "client", /*pin=*/true).ok());
  for (const char* id : {"client:p1", "client:p2"}) {
    REQUIRE(claims.Claim(id, "mallory", "relay sender", /*pin=*/true).ok());
  }
  REQUIRE(claims.Claim("client:p3", "mallory", "relay sender", true).ok());
  absl::Status full = claims.Claim("client:p4", "mallory", "relay sender");
  CHECK(full.code() == absl::StatusCode::kResourceExhausted);
  CHECK(full.message() ==
        "hostd remembers 4 relay ids, each in use by a live relay stream or "
        "procs; relay sender \"client:p4\" not claimed (try again later)");
  claims.Unpin("client:victim");
  CHECK(claims.pinned("client:victim"));
  CHECK_FALSE(claims.Claim("client:p4", "mallory", "relay sender").ok());
  claims.Unpin("client:victim");
  CHECK_FALSE(claims.pinned("client:victim"));
  // Now it may go, to make room (it holds nothing any more).
  CHECK(claims.Claim("client:p4", "mallory", "relay sender").ok());
  CHECK(claims.Claim("client:victim", "mallory", "relay sender").ok());
}

TEST_CASE("an unpinned id used again is the last of the unpinned to go") {
  SenderClaims claims(/*max_claims=*/2);
  REQUIRE(claims.Claim("client:old", "alice", "client").ok());
  REQUIRE(claims.Claim("client:new", "bob", "client").ok());
  REQUIRE(claims.Claim("client:old", "alice", "client").ok());  // used again
  REQUIRE(claims.Claim("client:third", "carol", "client").ok());
  CHECK(claims.Claim("client:old", "mallory", "client").code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK(claims.Claim("client:new", "mallory", "client").ok());
}

}  // namespace
}  // namespace mesh
