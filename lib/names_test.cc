#include "lib/names.h"

#include <string>

#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("valid names pass validation") {
  CHECK(ValidateName("p0", "proc name").ok());
  CHECK(ValidateName("p0_13", "proc name").ok());
  CHECK(ValidateName("a.b-c_d", "proc name").ok());
  CHECK(ValidateName(std::string(kMaxNameLength, 'a'), "proc name").ok());
}

TEST_CASE("bad names are INVALID_ARGUMENT and name what was wrong") {
  for (std::string bad :
       {std::string(""), std::string("../x"), std::string("a/b"),
        std::string(".."), std::string("Upper"), std::string(300, 'a'),
        std::string("nul\0byte", 8), std::string(".hidden")}) {
    absl::Status status = ValidateName(bad, "proc name");
    INFO("name: " << bad);
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK(status.message().find("proc name") != std::string::npos);
  }
}

TEST_CASE("member names follow mesh_rank") {
  CHECK(MemberName("p0", 0) == "p0_0");
  CHECK(MemberName("p0", 13) == "p0_13");
}

}  // namespace
}  // namespace mesh
