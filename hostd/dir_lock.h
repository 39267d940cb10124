// DirLock: one hostd per directory. An exclusive flock on <dir>/hostd.lock,
// held for the life of the object (the kernel drops it when the process
// dies, however it dies); the file names the holder's pid for the error a
// second hostd gets. The descriptor is close-on-exec: procs never hold it.
#ifndef HOSTMESH_HOSTD_DIR_LOCK_H_
#define HOSTMESH_HOSTD_DIR_LOCK_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace mesh {

class DirLock {
 public:
  // FAILED_PRECONDITION naming `what`, the dir and the holder's pid if
  // another process holds it; the errno's status if the file cannot be
  // opened.
  static absl::StatusOr<std::unique_ptr<DirLock>> Acquire(
      const std::string& dir, const std::string& what);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  const int fd_;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_DIR_LOCK_H_
