// TempDir: a private temporary directory for one test, removed with all it
// holds when the TempDir goes. Under $TEST_TMPDIR when that is short, else
// /tmp: Unix socket paths inside it must stay under 108 bytes.
#ifndef HOSTMESH_LIB_TESTING_TEMP_DIR_H_
#define HOSTMESH_LIB_TESTING_TEMP_DIR_H_

#include <string>

namespace mesh::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace mesh::testing

#endif  // HOSTMESH_LIB_TESTING_TEMP_DIR_H_
