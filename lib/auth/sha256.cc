#include "lib/auth/sha256.h"

#include <openssl/evp.h>

#include <cstdlib>

namespace mesh {

std::string Sha256(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(),
                 nullptr) != 1 ||
      length != 32) {
    std::abort();  // A broken libcrypto is not something to run on.
  }
  return std::string(reinterpret_cast<const char*>(digest), length);
}

}  // namespace mesh
