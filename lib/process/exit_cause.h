// Why a child process ended, in its own words: the lines of its stderr that
// explain an exit, picked out of the supervisor's stderr tail, and their
// quotation in a one-line reason. Pure functions; thread-safe.
#ifndef HOSTMESH_LIB_PROCESS_EXIT_CAUSE_H_
#define HOSTMESH_LIB_PROCESS_EXIT_CAUSE_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace mesh {

inline constexpr size_t kMaxExplainingLines = 8;
inline constexpr size_t kMaxExplainingLineBytes = 300;
// A Python traceback is kept whole up to this many lines (its first line,
// a line saying how many were left out, and its last lines).
inline constexpr size_t kMaxTracebackLines = 24;

// The lines of `tail` that explain why the process ended, oldest first:
//  - its last (at most kMaxExplainingLines) non-blank lines, leaving out
//    glog INFO lines ("I1202 16:05:19.123456  1234 file.cc:12] ...") and
//    the frames of glog's stack traces ("*** Check failure stack trace:
//    ***", "@ 0x7f...", "PC: @ 0x..."), so a CHECK failure's "F... Check
//    failed" line stays in;
//  - extended back to the start of the last Python traceback ("Traceback
//    (most recent call last):") if it began earlier, so it is kept whole:
//    up to kMaxTracebackLines, else its first line, "... (N lines left
//    out)" and its last lines.
// Each is stripped of surrounding whitespace, made valid printable UTF-8
// (control characters and invalid bytes become '?') and cut to at most
// kMaxExplainingLineBytes (a cut line ends in "...").
std::vector<std::string> ExplainingStderrLines(std::string_view tail);

// `lines` quoted for a reason, `"line a" | "line b"`: the last ones that fit
// in `max_bytes` (earlier ones left out are shown as a leading `... | `);
// empty if `lines` is.
std::string QuoteStderrLines(const std::vector<std::string>& lines,
                             size_t max_bytes = 1200);

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_EXIT_CAUSE_H_
