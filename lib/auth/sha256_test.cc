#include "lib/auth/sha256.h"

#include <string>

#include "absl/strings/escaping.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("Sha256 gives the raw 32-byte digest of the FIPS 180-2 vectors") {
  CHECK(absl::BytesToHexString(Sha256("abc")) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(absl::BytesToHexString(Sha256("")) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  // Bytes, not a C string: an embedded NUL counts.
  CHECK(Sha256(std::string("a\0b", 3)) != Sha256("a"));
  CHECK(Sha256("abc").size() == 32);
}

}  // namespace
}  // namespace mesh
