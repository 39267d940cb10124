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
#include "hostmesh/credentials.h"

namespace mesh {

// The metadata key and scheme a token travels in.
inline constexpr char kAuthorizationMetadata[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

// ClientCredentials and the HOSTMESH_* variables naming credential files
// are public: hostmesh/credentials.h. FromFiles and FromEnv are defined in
// credentials.cc.

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
