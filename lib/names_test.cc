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

TEST_CASE("a short client string is quoted whole and escaped") {
  CHECK(QuoteForError("p0") == "\"p0\"");
  CHECK(QuoteForError("") == "\"\"");
  CHECK(QuoteForError(std::string("a\nb\0\"", 5)) == "\"a\\nb\\x00\\\"\"");
  CHECK(QuoteForError(std::string(kMaxEchoBytes, 'a')) ==
        "\"" + std::string(kMaxEchoBytes, 'a') + "\"");
}

TEST_CASE("a long client string is quoted as a prefix with its full length") {
  const std::string quoted = QuoteForError(std::string(60000, 'a'));
  CHECK(quoted ==
        "\"" + std::string(kMaxEchoBytes, 'a') + "...\" (60000 bytes)");
  CHECK(QuoteForError("abcdef", 3) == "\"abc...\" (6 bytes)");
  // Escaping never lets a cut string grow past 4 bytes per byte kept.
  CHECK(QuoteForError(std::string(20000, '\x01')).size() <
        4 * kMaxEchoBytes + 32);
}

TEST_CASE("names that fail validation are echoed bounded") {
  absl::Status status = ValidateName(
      std::string(100, 'a') + std::string(20, '\x01'), "actor name");
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(status.message().size() < 4 * kMaxEchoBytes + 200);
  CHECK(ValidateName(std::string(20000, 'a'), "actor name").message().size() <
        200);
}

TEST_CASE("free text is kept whole when short and cut on a character") {
  CHECK(BoundText("test is done") == "test is done");
  CHECK(BoundText(std::string(5000, 'r')) ==
        std::string(kMaxReasonBytes, 'r') + "... (5000 bytes)");
  // "é" is two bytes: 4 bytes of "aéé" would end in half an "é"; "aé" is kept.
  CHECK(BoundText("a\xc3\xa9\xc3\xa9", 4) == "a\xc3\xa9... (5 bytes)");
  CHECK(BoundText("a\xc3\xa9\xc3\xa9", 2) == "a... (5 bytes)");
}

}  // namespace
}  // namespace mesh
