// What a client presents to the hosts it calls (README "Security"): a token
// and/or TLS, set in ClientOptions::credentials or per host in
// HostMesh::Attach. Unset, a client reads the files the HOSTMESH_* variables
// below name.
//
//   TLS     `tls_ca_pem` set: the channel is TLS and the server's cert must
//           chain to that CA; with `tls_cert_pem`/`tls_key_pem` the caller
//           also presents a client certificate (mTLS; its CN is the
//           caller's identity).
//   token   `token` set: sent as "authorization: Bearer <token>" on every
//           call, only over TLS or to a loopback address, never in the
//           clear over a network.
//
// Without TLS the channel to a loopback host uses gRPC's local credentials
// (which refuse a non-loopback peer).
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CREDENTIALS_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CREDENTIALS_H_

#include <string>

#include "absl/status/statusor.h"

namespace mesh {

// Environment variables naming credential files (never the secrets).
inline constexpr char kTokenFileEnv[] = "HOSTMESH_TOKEN_FILE";
inline constexpr char kTlsCaEnv[] = "HOSTMESH_TLS_CA";
inline constexpr char kTlsCertEnv[] = "HOSTMESH_TLS_CERT";
inline constexpr char kTlsKeyEnv[] = "HOSTMESH_TLS_KEY";

struct ClientCredentials {
  std::string token;
  std::string tls_ca_pem;
  std::string tls_cert_pem;
  std::string tls_key_pem;

  bool empty() const { return token.empty() && tls_ca_pem.empty(); }

  // Reads the named files (an empty path is skipped). A token file holds
  // the token on its first line; it must not be readable by others (mode
  // 0600 or 0640), nor a key file. Errors name the file and what is wrong.
  static absl::StatusOr<ClientCredentials> FromFiles(
      const std::string& token_file, const std::string& tls_ca_file,
      const std::string& tls_cert_file, const std::string& tls_key_file);
  // FromFiles with the paths in HOSTMESH_TOKEN_FILE, HOSTMESH_TLS_CA,
  // HOSTMESH_TLS_CERT and HOSTMESH_TLS_KEY (unset: none).
  static absl::StatusOr<ClientCredentials> FromEnv();
};

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_CREDENTIALS_H_
