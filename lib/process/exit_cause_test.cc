#include "lib/process/exit_cause.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

using Lines = std::vector<std::string>;

TEST_CASE("the explaining lines are the last non-blank ones, oldest first") {
  CHECK(ExplainingStderrLines("").empty());
  CHECK(ExplainingStderrLines("\n  \n\t\n").empty());
  CHECK(ExplainingStderrLines("one\n\n  two  \r\nthree") ==
        Lines{"one", "two", "three"});
  std::string many;
  for (int i = 0; i < 20; ++i) absl::StrAppend(&many, "line ", i, "\n");
  Lines last = ExplainingStderrLines(many);
  REQUIRE(last.size() == kMaxExplainingLines);
  CHECK(last.front() == "line 12");
  CHECK(last.back() == "line 19");
}

TEST_CASE("glog INFO lines are left out; warnings, errors and others stay") {
  const std::string tail =
      "I1202 16:05:19.123456  1234 proc_runtime.cc:12] actor a0 started\n"
      "W1202 16:05:19.223456  1234 host_link.cc:40] channel slow\n"
      "I20251202 16:05:20.000001 77 main.cc:7] with the year\n"
      "fatal: the flux capacitor is gone\n"
      "I1202 16:05:21.123456  1234 proc_runtime.cc:99] shutting down\n"
      "I am not a log line: just text]\n"
      "F1202 16:05:21.5  1234 x.cc:1] Check failed: ok\n";
  CHECK(ExplainingStderrLines(tail) ==
        Lines{"W1202 16:05:19.223456  1234 host_link.cc:40] channel slow",
              "fatal: the flux capacitor is gone",
              "I am not a log line: just text]",
              "F1202 16:05:21.5  1234 x.cc:1] Check failed: ok"});
}

TEST_CASE("a long line is cut to 300 bytes, never inside a character") {
  Lines lines = ExplainingStderrLines(std::string(1000, 'x'));
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].size() == kMaxExplainingLineBytes);
  CHECK(lines[0].substr(lines[0].size() - 3) == "...");

  std::string accents;
  for (int i = 0; i < 400; ++i) accents += "\xc3\xa9";  // é
  lines = ExplainingStderrLines(accents);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].size() <= kMaxExplainingLineBytes);
  // Whole characters, then the ellipsis.
  CHECK((lines[0].size() - 3) % 2 == 0);
}

TEST_CASE("control characters and invalid UTF-8 become '?'") {
  CHECK(ExplainingStderrLines("\x1b[31mred\x1b[0m") == Lines{"?[31mred?[0m"});
  CHECK(ExplainingStderrLines("bad \xff\xfe byte") == Lines{"bad ?? byte"});
  CHECK(ExplainingStderrLines("cut \xe2\x82") == Lines{"cut ??"});
  CHECK(ExplainingStderrLines("surrogate \xed\xa0\x80") ==
        Lines{"surrogate ???"});
  CHECK(ExplainingStderrLines("euro \xe2\x82\xac ok") ==
        Lines{"euro \xe2\x82\xac ok"});
}

TEST_CASE("quoted lines keep the last ones that fit and say some were left") {
  CHECK(QuoteStderrLines({}).empty());
  CHECK(QuoteStderrLines({"a", "b"}) == "\"a\" | \"b\"");
  Lines long_lines(8, std::string(300, 'y'));
  long_lines.back() = "the cause";
  std::string quoted = QuoteStderrLines(long_lines);
  CHECK(quoted.size() <= 1200);
  CHECK(quoted.substr(0, 6) == "... | ");
  CHECK(quoted.substr(quoted.size() - 11) == "\"the cause\"");
}

}  // namespace
}  // namespace mesh
