// Client-side credentials: what a caller (client library, meshctl, a hostd
// dialing its peers) presents to a hostd. Two mechanisms, both gRPC's own:
//
//   TLS     `tls_ca_pem` set: the channel is TLS and the server's cert must
//           chain to that CA; with `tls_cert_pem`/`tls_key_pem` the caller
//           also presents a client certificate (mTLS; its CN is the
//           caller's identity).
//   token   `token` set: sent as "authorization: Bearer <token>" on every
//           call by a client interceptor (gRPC refuses call credentials on a
//           local channel, whose security level is NONE). A token is sent
//           only over TLS or to a loopback address, never in the clear over
//           a network.
//
// Without TLS the channel to a loopback host uses gRPC's local credentials
// (which refuse a non-loopback peer).
#ifndef HOSTMESH_LIB_AUTH_CREDENTIALS_H_
#define HOSTMESH_LIB_AUTH_CREDENTIALS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace mesh {

// The metadata key and scheme a token travels in.
inline constexpr char kAuthorizationMetadata[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

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

// A channel to `address` (host:port) presenting `credentials`.
std::shared_ptr<grpc::Channel> NewAuthedChannel(
    const std::string& address, const ClientCredentials& credentials,
    grpc::ChannelArguments args = {});

// `status` of a call to `address` made with `credentials`, explained where
// gRPC says too little: over TLS a host that refuses the client's
// certificate only closes the connection ("Socket closed"), so an
// UNAVAILABLE that does not name the handshake gets a hint that it may be
// the TLS handshake (an expired certificate, or one of another CA).
absl::Status ExplainCallError(const absl::Status& status,
                              const std::string& address,
                              const ClientCredentials& credentials);

// Reads a whole file that holds a secret: refused if it is readable or
// writable by others (or group-writable). `what` names it in errors.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path,
                                           const std::string& what);
// Reads a whole file (a certificate, a CA); `what` names it in errors.
absl::StatusOr<std::string> ReadPublicFile(const std::string& path,
                                           const std::string& what);

// A fresh random token: 32 bytes from the OS's CSPRNG, hex.
std::string NewRandomToken();

}  // namespace mesh

#endif  // HOSTMESH_LIB_AUTH_CREDENTIALS_H_
