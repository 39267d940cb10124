// HOSTMESH_SKIP(reason): a test case that cannot set up what it needs
// (network namespaces, a second uid, root) says why and stops. Catch2 v2 has
// no SKIP, so:
//   - outside CI it prints the line "HOSTMESH-SKIP: [<test case>] <reason>"
//     on stdout (one line, never wrapped), warns "skipped: <reason>" through
//     Catch2 and returns from the test case; .ci/test-summary.sh counts each
//     test case named in such a line as skipped, not passed;
//   - under CI (the CI environment variable set to anything but "", "0" or
//     "false"; .bazelrc passes it into tests with --test_env=CI) it FAILs with
//     the same reason: CI must run everything.
// `reason` is anything Catch2's WARN takes (`"no uid " << uid`). Use it at the
// top of a TEST_CASE, before any SECTION: a return inside a SECTION hides
// the sections after it from Catch2.
#ifndef HOSTMESH_LIB_TESTING_SKIP_H_
#define HOSTMESH_LIB_TESTING_SKIP_H_

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>

#include "catch2/catch.hpp"

namespace mesh::testing {

// True when the CI environment variable asks for a CI run.
inline bool InCi() {
  const char* ci = std::getenv("CI");
  if (ci == nullptr) return false;
  std::string_view value(ci);
  return !value.empty() && value != "0" && value != "false";
}

// Prints the line .ci/test-summary.sh counts, for the running test case.
inline void PrintSkipLine(const std::string& reason) {
  std::string line = "HOSTMESH-SKIP: [" +
                     Catch::getResultCapture().getCurrentTestName() + "] " +
                     reason;
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::cout << line << std::endl;
}

}  // namespace mesh::testing

#define HOSTMESH_SKIP(reason)                                       \
  do {                                                              \
    std::ostringstream hostmesh_skip_reason;                        \
    hostmesh_skip_reason << reason;                                 \
    if (::mesh::testing::InCi()) {                                  \
      FAIL("cannot skip under CI: " << hostmesh_skip_reason.str()); \
    }                                                               \
    ::mesh::testing::PrintSkipLine(hostmesh_skip_reason.str());     \
    WARN("skipped: " << hostmesh_skip_reason.str());                \
    return;                                                         \
  } while (false)

#endif  // HOSTMESH_LIB_TESTING_SKIP_H_
