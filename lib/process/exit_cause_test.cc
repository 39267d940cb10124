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

TEST_CASE(
    "a CHECK failure is explained by its F line, not by glog's stack frames") {
  const std::string tail =
      "the user's last words\n"
      "F1202 16:05:21.500000  1234 proc_runtime.cc:409] Check failed: "
      "thread.get_id() != std::this_thread::get_id()\n"
      "*** Check failure stack trace: ***\n"
      "    @     0x7f3c2d1a2b3c  google::LogMessage::Fail()\n"
      "    @     0x7f3c2d1a4d5e  google::LogMessage::SendToLog()\n"
      "    @     0x7f3c2d1a2f60  google::LogMessage::Flush()\n"
      "    @     0x55d5e1f0a1b2  mesh::ProcRuntime::Shutdown()\n"
      "    @     0x55d5e1f0a3c4  (unknown)\n"
      "    @     0x55d5e1f0a5d6  (unknown)\n"
      "    @     0x7f3c2cd6ad90  __libc_start_main\n"
      "    @     0x55d5e1f0a7e8  _start\n"
      "    @              (nil)  (unknown)\n"
      "PC: @ 0x0 (unknown)\n";
  Lines lines = ExplainingStderrLines(tail);
  INFO(::Catch::Detail::stringify(lines));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "the user's last words");
  CHECK(lines[1].find("Check failed: thread.get_id()") != std::string::npos);
  // A line that only starts with '@' is the user's.
  CHECK(ExplainingStderrLines("@channel: down\n@ 0xyz\n@ 0x12ab: moved") ==
        Lines{"@channel: down", "@ 0xyz", "@ 0x12ab: moved"});
}

TEST_CASE(
    "a Python traceback above the last lines is kept whole, up to a bound") {
  const std::string traceback =
      "I1202 16:05:19.123456  1234 proc_runtime.cc:12] actor a0 started\n"
      "loading the model\n"
      "Traceback (most recent call last):\n"
      "  File \"/app/train.py\", line 40, in <module>\n"
      "    main()\n"
      "  File \"/app/train.py\", line 31, in main\n"
      "    model = load(args.model)\n"
      "  File \"/app/model.py\", line 12, in load\n"
      "    with open(path, \"rb\") as f:\n"
      "         ^^^^^^^^^^^^^^^\n"
      "FileNotFoundError: [Errno 2] No such file or directory: "
      "'/data/model.bin'\n";
  Lines lines = ExplainingStderrLines(traceback);
  REQUIRE(lines.size() == 9);
  CHECK(lines.front() == "Traceback (most recent call last):");
  CHECK(lines[1] == "File \"/app/train.py\", line 40, in <module>");
  CHECK(lines.back() ==
        "FileNotFoundError: [Errno 2] No such file or directory: "
        "'/data/model.bin'");

  // A short one within the last lines: the usual 8, context included.
  Lines short_one = ExplainingStderrLines(
      "a\nb\nc\nd\nTraceback (most recent call last):\n  File \"x.py\", "
      "line 1, in <module>\nValueError: bad\n");
  CHECK(short_one ==
        Lines{"a", "b", "c", "d", "Traceback (most recent call last):",
              "File \"x.py\", line 1, in <module>", "ValueError: bad"});

  // A deep one: its first line, how many were left out, its last lines.
  std::string deep = "Traceback (most recent call last):\n";
  for (int i = 0; i < 100; ++i) {
    absl::StrAppend(&deep, "  File \"r.py\", line ", i, ", in f\n    f()\n");
  }
  absl::StrAppend(&deep, "RecursionError: maximum recursion depth exceeded\n");
  lines = ExplainingStderrLines(deep);
  REQUIRE(lines.size() == kMaxTracebackLines);
  CHECK(lines[0] == "Traceback (most recent call last):");
  CHECK(lines[1] == absl::StrCat("... (", 201 - (kMaxTracebackLines - 2),
                                 " lines left out)"));
  CHECK(lines[2] == "f()");
  CHECK(lines[3] == "File \"r.py\", line 90, in f");
  CHECK(lines.back() == "RecursionError: maximum recursion depth exceeded");

  // Only the last of several (chained exceptions) is kept whole.
  std::string chained = "Traceback (most recent call last):\n";
  for (int i = 0; i < 10; ++i) absl::StrAppend(&chained, "  first ", i, "\n");
  absl::StrAppend(&chained,
                  "KeyError: 'model'\n\nDuring handling of the above "
                  "exception, another exception occurred:\n\n",
                  traceback);
  lines = ExplainingStderrLines(chained);
  REQUIRE(lines.size() == 9);
  CHECK(lines.front() == "Traceback (most recent call last):");
  CHECK(lines[1] == "File \"/app/train.py\", line 40, in <module>");

  // Quoted for a reason, it stays bounded and ends with the exception.
  std::string quoted = QuoteStderrLines(ExplainingStderrLines(deep));
  CHECK(quoted.size() <= 1200);
  CHECK(quoted.find("RecursionError") != std::string::npos);
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
