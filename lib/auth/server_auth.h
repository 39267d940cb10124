// ServerAuth: who is calling a hostd, and may they do this.
//
// Authentication happens twice over the same rules, both through gRPC's own
// machinery: an AuthMetadataProcessor on the server credentials refuses a
// call that proves no identity before any handler runs (UNAUTHENTICATED),
// and each handler asks Authenticate() for the caller's Principal (an auth
// context is per connection, so the per-call identity is derived from the
// call itself, never cached on the connection).
//
// Identities:
//   token  "authorization: Bearer <token>" matching a token this hostd knows
//          (--tokens-file lines "<identity> <role> <token>", and the tokens
//          added in code: the runtime dir's admin token, a parent's token);
//          compared in constant time. A token that matches nothing is
//          refused even if a certificate is presented too.
//   cert   no token, and a client certificate verified against --tls-ca:
//          its CN is the identity; its role is admin or peer if listed
//          (--admin, --peer), client otherwise.
//
// Roles (Authorize): admin may do everything; client may act on the procs
// it owns (and open a relay stream as a client); peer may only relay.
// Server credentials: TLS (--tls-cert/--tls-key, client certs requested and
// verified against --tls-ca, or required) or, on a loopback listen without
// TLS, gRPC's local credentials (which refuse non-loopback peers).
// Tokens may change while serving (AddToken, ReloadTokens: SIGHUP); the
// rest is immutable after Create. Thread-safe.
#ifndef HOSTMESH_LIB_AUTH_SERVER_AUTH_H_
#define HOSTMESH_LIB_AUTH_SERVER_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "lib/auth/credentials.h"

namespace mesh {

enum class Role { kClient, kPeer, kAdmin };

// Identities hostd gives itself; "hostd:" is reserved (no tokens-file
// line, --admin, --peer or certificate CN may use it).
inline constexpr char kReservedIdentityPrefix[] = "hostd:";
inline constexpr char kLocalIdentity[] = "hostd:local";    // admin.token
inline constexpr char kParentIdentity[] = "hostd:parent";  // the launcher
inline constexpr char kPeerIdentity[] = "hostd:peer";      // shared peers

// "client", "peer", "admin".
absl::string_view RoleName(Role role);
absl::StatusOr<Role> ParseRole(absl::string_view name);

struct Principal {
  std::string identity;
  Role role = Role::kClient;
  // "token" or "cert": how the identity was proven (for audit logs).
  std::string method;

  // "ops (admin, cert)".
  std::string ToString() const;
};

struct ServerAuthOptions {
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  // Refuse TLS handshakes without a client certificate.
  bool tls_require_client_cert = false;
  std::string tokens_file;
  // The token this hostd presents to peer hosts it dials.
  std::string peer_token_file;
  std::vector<std::string> admins;
  std::vector<std::string> peers;
};

class ServerAuth {
 public:
  // Reads every file named (errors name the flag and the file). A listen
  // host that is not loopback needs TLS with a CA (the message names the
  // flags); a loopback one may go without.
  static absl::StatusOr<std::unique_ptr<ServerAuth>> Create(
      ServerAuthOptions options, bool listen_is_loopback);

  // Accepts `token` as `identity` with `role` from now on: a built-in token
  // (the runtime dir's admin token, a parent's), kept across ReloadTokens.
  void AddToken(const std::string& identity, Role role,
                const std::string& token);
  // Reads the --tokens-file given to Create again, with the same checks:
  // its tokens replace the ones read from it before, at once for every
  // later call (calls authenticating meanwhile see the old set or the new
  // one, never a mix); built-in tokens stay. On an error (unreadable file,
  // wrong mode, a bad line) nothing changes and the error names the file
  // and line. The number of tokens the file holds now; 0 without a tokens
  // file.
  absl::StatusOr<size_t> ReloadTokens();
  // Shares `token` among the hosts of one mesh: accepted as identity "peer"
  // (role peer) and presented when this hostd dials its peers. Before the
  // server starts.
  void SetPeerToken(const std::string& token);

  // Credentials for the listening port, with the metadata processor.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials();
  // How this hostd dials its peers: its own cert and the CA, and the peer
  // token if one is configured.
  const ClientCredentials& peer_credentials() const { return peer_; }
  bool tls() const { return !tls_cert_pem_.empty(); }
  // Whether callers other than hostd's own user may get in (TLS client
  // certificates or a tokens file).
  bool admits_others() const { return tls() || !options_.tokens_file.empty(); }

  // The caller of one call, or UNAUTHENTICATED saying what was missing.
  absl::StatusOr<Principal> Authenticate(
      const grpc::ServerContextBase& context) const;
  // The same, from a call's raw parts (the metadata processor's view).
  absl::StatusOr<Principal> Authenticate(
      const std::vector<std::string>& bearer_values,
      const grpc::AuthContext& auth_context) const;

 private:
  struct Token {
    std::string identity;
    Role role;
    // SHA-256 of the token: the token itself is not kept.
    std::string digest;
  };
  class Processor;

  ServerAuth() = default;
  // The tokens of a tokens file, or why it is refused.
  static absl::StatusOr<std::vector<Token>> ReadTokensFile(
      const std::string& path);
  Role RoleOfCert(const std::string& identity) const;

  ServerAuthOptions options_;
  std::string tls_cert_pem_;
  std::string tls_key_pem_;
  std::string tls_ca_pem_;
  mutable absl::Mutex tokens_mu_;
  // AddToken's and SetPeerToken's: kept across ReloadTokens.
  std::vector<Token> builtin_tokens_ ABSL_GUARDED_BY(tokens_mu_);
  // The tokens file's, as last read.
  std::vector<Token> file_tokens_ ABSL_GUARDED_BY(tokens_mu_);
  std::set<std::string> admins_;
  std::set<std::string> peers_;
  ClientCredentials peer_;
};

// OK if `caller` may run `verb`, which needs one of `allowed` roles (admin
// always may); otherwise PERMISSION_DENIED naming the verb, the roles it
// needs and the caller.
absl::Status Authorize(const Principal& caller, absl::string_view verb,
                       std::initializer_list<Role> allowed);

// OK if `caller` may act on a proc owned by `owner`: its owner, or an admin.
absl::Status AuthorizeOwner(const Principal& caller, absl::string_view verb,
                            absl::string_view proc, absl::string_view owner);

}  // namespace mesh

#endif  // HOSTMESH_LIB_AUTH_SERVER_AUTH_H_
