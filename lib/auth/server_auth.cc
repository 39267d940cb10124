#include "lib/auth/server_auth.h"

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/auth/sha256.h"

namespace mesh {
namespace {

constexpr size_t kMinTokenLength = 16;

// 1..256 printable characters, no spaces, not in hostd's own namespace.
bool IsPrintableIdentity(absl::string_view identity) {
  if (identity.empty() || identity.size() > 256) return false;
  if (absl::StartsWith(identity, kReservedIdentityPrefix)) return false;
  for (char c : identity) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kClient:
      return "client";
    case Role::kPeer:
      return "peer";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  for (Role role : {Role::kClient, Role::kPeer, Role::kAdmin}) {
    if (name == RoleName(role)) return role;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown role \"", name.substr(0, 32),
                   "\" (roles: admin, client, peer)"));
}

std::string Principal::ToString() const {
  return absl::StrCat(identity, " (", RoleName(role), ", ", method, ")");
}

// gRPC runs Process for every call before any handler: a call that proves
// no identity ends here with UNAUTHENTICATED.
class ServerAuth::Processor final : public grpc::AuthMetadataProcessor {
 public:
  explicit Processor(const ServerAuth* auth) : auth_(auth) {}
  // Cheap (a few hashes): run inline on the call's thread.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context, OutputMetadata*,
                       OutputMetadata*) override {
    std::vector<std::string> bearers;
    auto [begin, end] = auth_metadata.equal_range(kAuthorizationMetadata);
    for (auto it = begin; it != end; ++it) {
      bearers.emplace_back(it->second.data(), it->second.size());
    }
    absl::StatusOr<Principal> caller = auth_->Authenticate(bearers, *context);
    if (!caller.ok()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          std::string(caller.status().message()));
    }
    return grpc::Status::OK;
  }

 private:
  const ServerAuth* const auth_;
};

absl::StatusOr<std::unique_ptr<ServerAuth>> ServerAuth::Create(
    ServerAuthOptions options, bool listen_is_loopback) {
  auto auth = std::unique_ptr<ServerAuth>(new ServerAuth());
  const bool any_tls = !options.tls_cert_file.empty() ||
                       !options.tls_key_file.empty() ||
                       !options.tls_ca_file.empty();
  if (any_tls &&
      (options.tls_cert_file.empty() || options.tls_key_file.empty() ||
       options.tls_ca_file.empty())) {
    return absl::InvalidArgumentError(
        "TLS needs all three of --tls-cert, --tls-key and --tls-ca");
  }
  if (!any_tls && !listen_is_loopback) {
    return absl::InvalidArgumentError(
        "a listen address that is not loopback needs authentication: set "
        "--tls-cert, --tls-key and --tls-ca (deploy/make-certs.sh makes "
        "them), then let callers in by client certificate (--admin and "
        "--peer give cert names their roles; other certs of the CA are "
        "clients) or by token (--tokens-file); see README \"Security\"");
  }
  if (options.tls_require_client_cert && !any_tls) {
    return absl::InvalidArgumentError(
        "--tls-require-client-cert needs --tls-cert, --tls-key and --tls-ca");
  }
  if (any_tls) {
    absl::StatusOr<std::string> cert =
        ReadPublicFile(options.tls_cert_file, "--tls-cert");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadSecretFile(options.tls_key_file, "--tls-key");
    if (!key.ok()) return key.status();
    absl::StatusOr<std::string> ca =
        ReadPublicFile(options.tls_ca_file, "--tls-ca");
    if (!ca.ok()) return ca.status();
    auth->tls_cert_pem_ = *std::move(cert);
    auth->tls_key_pem_ = *std::move(key);
    auth->tls_ca_pem_ = *std::move(ca);
    auth->peer_.tls_ca_pem = auth->tls_ca_pem_;
    auth->peer_.tls_cert_pem = auth->tls_cert_pem_;
    auth->peer_.tls_key_pem = auth->tls_key_pem_;
  }
  if (!options.tokens_file.empty()) {
    absl::StatusOr<std::vector<Token>> tokens =
        ReadTokensFile(options.tokens_file);
    if (!tokens.ok()) return tokens.status();
    absl::MutexLock lock(&auth->tokens_mu_);
    auth->file_tokens_ = *std::move(tokens);
  }
  if (!options.peer_token_file.empty()) {
    absl::StatusOr<ClientCredentials> peer =
        ClientCredentials::FromFiles(options.peer_token_file, "", "", "");
    if (!peer.ok()) {
      return absl::Status(
          peer.status().code(),
          absl::StrCat("--peer-token-file: ", peer.status().message()));
    }
    auth->peer_.token = peer->token;
  }
  for (const std::string& admin : options.admins) {
    if (!IsPrintableIdentity(admin)) {
      return absl::InvalidArgumentError(
          "--admin: an identity is 1..256 printable characters, no spaces, "
          "not starting with \"hostd:\"");
    }
    auth->admins_.insert(admin);
  }
  for (const std::string& peer : options.peers) {
    if (!IsPrintableIdentity(peer)) {
      return absl::InvalidArgumentError(
          "--peer: an identity is 1..256 printable characters, no spaces, "
          "not starting with \"hostd:\"");
    }
    auth->peers_.insert(peer);
  }
  auth->options_ = std::move(options);
  return auth;
}

absl::StatusOr<std::vector<ServerAuth::Token>> ServerAuth::ReadTokensFile(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadSecretFile(path, "--tokens-file");
  if (!text.ok()) return text.status();
  std::vector<Token> tokens;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokens-file ", path, " line ", line_number, ": ", why,
                       " (each line: <identity> <role> <token>)"));
    };
    if (fields.size() != 3) return bad("expected 3 fields");
    if (!IsPrintableIdentity(fields[0])) {
      return bad("bad identity (printable, no spaces, not \"hostd:...\")");
    }
    // The field is not echoed: a line in the wrong order holds a token here.
    absl::StatusOr<Role> role = ParseRole(fields[1]);
    if (!role.ok()) return bad("unknown role (roles: admin, client, peer)");
    if (fields[2].size() < kMinTokenLength) {
      return bad(absl::StrCat("a token has at least ", kMinTokenLength,
                              " characters"));
    }
    tokens.push_back(Token{std::string(fields[0]), *role, Sha256(fields[2])});
  }
  return tokens;
}

absl::StatusOr<size_t> ServerAuth::ReloadTokens() {
  if (options_.tokens_file.empty()) return 0;
  // Read (and checked) entirely before anything changes.
  absl::StatusOr<std::vector<Token>> tokens =
      ReadTokensFile(options_.tokens_file);
  if (!tokens.ok()) return tokens.status();
  const size_t count = tokens->size();
  absl::MutexLock lock(&tokens_mu_);
  file_tokens_ = *std::move(tokens);
  return count;
}

void ServerAuth::AddToken(const std::string& identity, Role role,
                          const std::string& token) {
  absl::MutexLock lock(&tokens_mu_);
  builtin_tokens_.push_back(Token{identity, role, Sha256(token)});
}

void ServerAuth::SetPeerToken(const std::string& token) {
  AddToken(kPeerIdentity, Role::kPeer, token);
  peer_.token = token;
}

std::shared_ptr<grpc::ServerCredentials> ServerAuth::ServerCredentials() {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (tls()) {
    grpc::SslServerCredentialsOptions ssl(
        options_.tls_require_client_cert
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = tls_ca_pem_;
    ssl.pem_key_cert_pairs.push_back({tls_key_pem_, tls_cert_pem_});
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::experimental::LocalServerCredentials(LOCAL_TCP);
  }
  credentials->SetAuthMetadataProcessor(std::make_shared<Processor>(this));
  return credentials;
}

Role ServerAuth::RoleOfCert(const std::string& identity) const {
  if (admins_.count(identity) > 0) return Role::kAdmin;
  if (peers_.count(identity) > 0) return Role::kPeer;
  return Role::kClient;
}

absl::StatusOr<Principal> ServerAuth::Authenticate(
    const std::vector<std::string>& bearer_values,
    const grpc::AuthContext& auth_context) const {
  if (!bearer_values.empty()) {
    if (bearer_values.size() != 1) {
      return absl::UnauthenticatedError("more than one authorization header");
    }
    absl::string_view value = bearer_values[0];
    if (!absl::ConsumePrefix(&value, kBearerPrefix)) {
      return absl::UnauthenticatedError(
          "the authorization header is not \"Bearer <token>\"");
    }
    const std::string digest = Sha256(value);
    absl::ReaderMutexLock lock(&tokens_mu_);
    const Token* match = nullptr;
    // Every token is compared, in constant time, whatever matched before.
    for (const std::vector<Token>* tokens : {&builtin_tokens_, &file_tokens_}) {
      for (const Token& token : *tokens) {
        if (CRYPTO_memcmp(token.digest.data(), digest.data(), digest.size()) ==
            0) {
          match = &token;
        }
      }
    }
    if (match == nullptr) {
      return absl::UnauthenticatedError("the token is not valid for this host");
    }
    return Principal{match->identity, match->role, "token"};
  }
  std::vector<grpc::string_ref> security =
      auth_context.FindPropertyValues("transport_security_type");
  bool ssl = !security.empty() && security[0] == "ssl";
  std::vector<grpc::string_ref> names =
      auth_context.FindPropertyValues("x509_common_name");
  if (ssl && auth_context.IsPeerAuthenticated() && !names.empty()) {
    std::string identity(names[0].data(), names[0].size());
    if (absl::StartsWith(identity, kReservedIdentityPrefix)) {
      return absl::UnauthenticatedError(
          "certificate names starting with \"hostd:\" are reserved");
    }
    return Principal{identity, RoleOfCert(identity), "cert"};
  }
  return absl::UnauthenticatedError(
      tls() ? "no credentials: present a client certificate signed by this "
              "host's CA (--tls-cert/--tls-key) or a token (--token-file)"
            : "no credentials: present a token (--token-file; the same user "
              "as hostd may use its runtime dir's admin.token)");
}

absl::StatusOr<Principal> ServerAuth::Authenticate(
    const grpc::ServerContextBase& context) const {
  std::vector<std::string> bearers;
  const auto& metadata = context.client_metadata();
  auto [begin, end] = metadata.equal_range(kAuthorizationMetadata);
  for (auto it = begin; it != end; ++it) {
    bearers.emplace_back(it->second.data(), it->second.size());
  }
  std::shared_ptr<const grpc::AuthContext> auth_context =
      context.auth_context();
  if (auth_context == nullptr) {
    return absl::UnauthenticatedError("the call has no security context");
  }
  return Authenticate(bearers, *auth_context);
}

absl::Status Authorize(const Principal& caller, absl::string_view verb,
                       std::initializer_list<Role> allowed) {
  if (caller.role == Role::kAdmin) return absl::OkStatus();
  std::vector<std::string> names;
  for (Role role : allowed) {
    if (role == caller.role) return absl::OkStatus();
    names.emplace_back(RoleName(role));
  }
  names.emplace_back("admin");
  return absl::PermissionDeniedError(
      absl::StrCat(verb, " needs role ", absl::StrJoin(names, " or "), "; ",
                   caller.identity, " has role ", RoleName(caller.role)));
}

absl::Status AuthorizeOwner(const Principal& caller, absl::string_view verb,
                            absl::string_view proc, absl::string_view owner) {
  if (caller.role == Role::kAdmin || caller.identity == owner) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      verb, " on proc ", proc, " needs its owner or role admin; ",
      caller.identity, " (role ", RoleName(caller.role), ") does not own it"));
}

}  // namespace mesh
