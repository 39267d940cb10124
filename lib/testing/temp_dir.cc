#include "lib/testing/temp_dir.h"

#include <stdlib.h>
#include <string.h>

#include <cstdio>
#include <filesystem>

namespace mesh::testing {

TempDir::TempDir() {
  const char* test_tmpdir = getenv("TEST_TMPDIR");
  std::string base =
      test_tmpdir != nullptr && strlen(test_tmpdir) < 60 ? test_tmpdir : "/tmp";
  std::string pattern = base + "/hostmesh-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    abort();  // A test without its directory cannot run.
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code error;
  std::filesystem::remove_all(path_, error);
}

}  // namespace mesh::testing
