// Runs meshctl in the test's own process against a TestHost, as the host's
// admin (its token file): what a test of a meshctl verb needs, once.
#ifndef HOSTMESH_TESTS_TESTING_MESHCTL_RUN_H_
#define HOSTMESH_TESTS_TESTING_MESHCTL_RUN_H_

#include <sstream>
#include <string>
#include <vector>

#include "meshctl/meshctl.h"
#include "tests/testing/test_host.h"

namespace mesh::testing {

struct MeshctlResult {
  int code;
  std::string out;
  std::string err;
};

// `meshctl --host <host> --token-file <its token> args...`.
inline MeshctlResult RunMeshctlAs(const TestHost& host,
                                  std::vector<std::string> args) {
  args.insert(args.begin(), {"meshctl", "--host", host.address(),
                             "--token-file", host.token_file()});
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  std::ostringstream out, err;
  const int code =
      RunMeshctl(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

}  // namespace mesh::testing

#endif  // HOSTMESH_TESTS_TESTING_MESHCTL_RUN_H_
