#include "lib/process/exit_cause.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace mesh {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// glog's INFO prefix: "I" MMDD (or YYYYMMDD) " " HH:MM:SS.uuuuuu, spaces,
// the thread id, " " file ":" line "]".
bool IsGlogInfoLine(std::string_view line) {
  if (line.empty() || line[0] != 'I') return false;
  size_t i = 1;
  auto skip = [&](auto predicate) {
    const size_t start = i;
    while (i < line.size() && predicate(line[i])) ++i;
    return i - start;
  };
  const size_t date = skip(IsDigit);
  if ((date != 4 && date != 8) || skip([](char c) { return c == ' '; }) != 1) {
    return false;
  }
  if (skip([](char c) { return IsDigit(c) || c == ':' || c == '.'; }) < 8 ||
      skip([](char c) { return c == ' '; }) == 0 ||
      skip([](char c) { return absl::ascii_isalnum(c); }) == 0 ||
      skip([](char c) { return c == ' '; }) != 1) {
    return false;
  }
  const size_t close = line.find(']', i);
  if (close == std::string_view::npos) return false;
  std::string_view where = line.substr(i, close - i);
  const size_t colon = where.rfind(':');
  if (colon == std::string_view::npos || colon == 0 ||
      colon + 1 == where.size() || where.find(' ') != std::string_view::npos) {
    return false;
  }
  return std::all_of(where.begin() + colon + 1, where.end(), IsDigit);
}

// A line of the stack traces glog writes to stderr after a FATAL line (a
// CHECK failure) or from its failure signal handler: the header, a frame
// ("@     0x7f3c2d1a2b3c  google::LogMessage::Fail()"), the fault's "PC: @".
// (`line` is stripped.)
bool IsGlogStackLine(std::string_view line) {
  if (line == "*** Check failure stack trace: ***") return true;
  if (line.starts_with("PC: @")) return true;
  if (line.empty() || line[0] != '@') return false;
  line.remove_prefix(1);
  const size_t start = line.find_first_not_of(' ');
  if (start == 0 || start == std::string_view::npos) return false;
  line.remove_prefix(start);
  // The address: "0x" and hex digits, or "(nil)"; then the end or a space.
  size_t end = 0;
  if (line.starts_with("(nil)")) {
    end = 5;
  } else if (line.starts_with("0x")) {
    end = 2;
    while (end < line.size() && absl::ascii_isxdigit(line[end])) ++end;
    if (end == 2) return false;
  } else {
    return false;
  }
  return end == line.size() || line[end] == ' ';
}

bool IsTracebackStart(std::string_view line) {
  return line == "Traceback (most recent call last):";
}

// Length of the valid UTF-8 character at the start of `s` (RFC 3629: no
// overlong forms, surrogates or code points past U+10FFFF); 0 if invalid.
size_t Utf8CharLength(std::string_view s) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto continuation = [&](size_t i, unsigned char low = 0x80,
                          unsigned char high = 0xBF) {
    return i < s.size() && byte(i) >= low && byte(i) <= high;
  };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return continuation(1) ? 2 : 0;
  if (lead >= 0xE0 && lead <= 0xEF) {
    const unsigned char low = lead == 0xE0 ? 0xA0 : 0x80;
    const unsigned char high = lead == 0xED ? 0x9F : 0xBF;
    return continuation(1, low, high) && continuation(2) ? 3 : 0;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    const unsigned char low = lead == 0xF0 ? 0x90 : 0x80;
    const unsigned char high = lead == 0xF4 ? 0x8F : 0xBF;
    return continuation(1, low, high) && continuation(2) && continuation(3) ? 4
                                                                            : 0;
  }
  return 0;
}

// `line` as valid UTF-8 without control characters, cut to `max` bytes.
std::string Printable(std::string_view line, size_t max) {
  std::string text;
  while (!line.empty()) {
    const size_t length = Utf8CharLength(line);
    const bool control =
        length == 1 &&
        (static_cast<unsigned char>(line[0]) < 0x20 || line[0] == 0x7F);
    if (length == 0 || control) {
      text.push_back('?');
      line.remove_prefix(1);
    } else {
      text.append(line.substr(0, length));
      line.remove_prefix(length);
    }
  }
  if (text.size() <= max) return text;
  size_t cut = max - 3;
  // Back to the start of a character (continuation bytes are 10xxxxxx).
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  text.resize(cut);
  return text + "...";
}

}  // namespace

std::vector<std::string> ExplainingStderrLines(std::string_view tail) {
  // This Abseil's string_view is its own type, not std::string_view.
  std::vector<absl::string_view> all =
      absl::StrSplit(absl::string_view(tail.data(), tail.size()), '\n');
  // The lines that may explain, stripped, oldest first.
  std::vector<std::string_view> kept;
  for (absl::string_view line : all) {
    absl::string_view stripped = absl::StripAsciiWhitespace(line);
    std::string_view text(stripped.data(), stripped.size());
    if (text.empty() || IsGlogInfoLine(text) || IsGlogStackLine(text)) {
      continue;
    }
    kept.push_back(text);
  }
  size_t first =
      kept.size() > kMaxExplainingLines ? kept.size() - kMaxExplainingLines : 0;
  // The last traceback, whole, if it starts before those.
  size_t traceback = kept.size();
  for (size_t i = kept.size(); i > 0; --i) {
    if (IsTracebackStart(kept[i - 1])) {
      traceback = i - 1;
      break;
    }
  }
  std::vector<std::string> lines;
  if (traceback < first) {
    first = traceback;
    if (kept.size() - first > kMaxTracebackLines) {
      // Its first line, then its last ones.
      lines.push_back(Printable(kept[first], kMaxExplainingLineBytes));
      const size_t last = kMaxTracebackLines - 2;
      const size_t left_out = kept.size() - first - 1 - last;
      lines.push_back(absl::StrCat("... (", left_out, " lines left out)"));
      first = kept.size() - last;
    }
  }
  for (size_t i = first; i < kept.size(); ++i) {
    lines.push_back(Printable(kept[i], kMaxExplainingLineBytes));
  }
  return lines;
}

std::string QuoteStderrLines(const std::vector<std::string>& lines,
                             size_t max_bytes) {
  constexpr absl::string_view kSeparator = " | ";
  constexpr absl::string_view kLeftOut = "...";
  std::vector<std::string> quoted;
  size_t bytes = 0;
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    std::string quote = absl::StrCat("\"", *it, "\"");
    const size_t more = quote.size() + (quoted.empty() ? 0 : kSeparator.size());
    // Room is kept for the "... | " of the lines left out.
    const size_t reserve =
        it + 1 == lines.rend() ? 0 : kLeftOut.size() + kSeparator.size();
    if (bytes + more + reserve > max_bytes && !quoted.empty()) {
      quoted.push_back(std::string(kLeftOut));
      break;
    }
    bytes += more;
    quoted.push_back(std::move(quote));
  }
  std::reverse(quoted.begin(), quoted.end());
  return absl::StrJoin(quoted, kSeparator);
}

}  // namespace mesh
