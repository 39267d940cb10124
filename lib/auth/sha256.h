// The project's one SHA-256: token digests (ServerAuth), secret verifiers
// (a proc's rejoin secret is stored only as its digest), file checksums.
#ifndef HOSTMESH_LIB_AUTH_SHA256_H_
#define HOSTMESH_LIB_AUTH_SHA256_H_

#include <string>

#include "absl/strings/string_view.h"

namespace mesh {

// The raw 32-byte SHA-256 digest of `data` (not hex). Thread-safe. Aborts
// the process if libcrypto cannot compute it (nothing to run on then).
std::string Sha256(absl::string_view data);

}  // namespace mesh

#endif  // HOSTMESH_LIB_AUTH_SHA256_H_
