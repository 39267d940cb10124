#include "lib/auth/credentials.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/net/address.h"
#include "lib/net/host_port.h"

namespace mesh {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     const std::string& what, bool secret) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, " is not a regular file"));
  }
  if (secret && (st.st_mode & 0027) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s %s has mode %04o: a secret must not be readable by others nor "
        "writable by its group (chmod 0600, or 0640 for a group)",
        what, path, st.st_mode & 07777));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": cannot be read"));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Adds the bearer token to every call's initial metadata.
class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kAuthorizationMetadata,
                                                 *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class TokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat(kBearerPrefix, token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  // Lives as long as the channel, which owns this factory.
  const std::string header_;
};

}  // namespace

absl::StatusOr<std::string> ReadSecretFile(const std::string& path,
                                           const std::string& what) {
  return ReadFile(path, what, /*secret=*/true);
}

absl::StatusOr<std::string> ReadPublicFile(const std::string& path,
                                           const std::string& what) {
  return ReadFile(path, what, /*secret=*/false);
}

absl::StatusOr<ClientCredentials> ClientCredentials::FromFiles(
    const std::string& token_file, const std::string& tls_ca_file,
    const std::string& tls_cert_file, const std::string& tls_key_file) {
  ClientCredentials credentials;
  if (!token_file.empty()) {
    absl::StatusOr<std::string> text = ReadSecretFile(token_file, "token file");
    if (!text.ok()) return text.status();
    std::string token(absl::StripAsciiWhitespace(
        absl::string_view(*text).substr(0, text->find('\n'))));
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file ", token_file, " is empty"));
    }
    credentials.token = std::move(token);
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs both its cert and its key file");
  }
  if (!tls_cert_file.empty() && tls_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs the CA file that signed the hosts' "
        "certificates (HOSTMESH_TLS_CA or --tls-ca)");
  }
  if (!tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPublicFile(tls_ca_file, "TLS CA file");
    if (!ca.ok()) return ca.status();
    credentials.tls_ca_pem = *std::move(ca);
  }
  if (!tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPublicFile(tls_cert_file, "TLS certificate file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadSecretFile(tls_key_file, "TLS key file");
    if (!key.ok()) return key.status();
    credentials.tls_cert_pem = *std::move(cert);
    credentials.tls_key_pem = *std::move(key);
  }
  return credentials;
}

absl::StatusOr<ClientCredentials> ClientCredentials::FromEnv() {
  auto env = [](const char* name) {
    const char* value = std::getenv(name);
    return std::string(value == nullptr ? "" : value);
  };
  return FromFiles(env(kTokenFileEnv), env(kTlsCaEnv), env(kTlsCertEnv),
                   env(kTlsKeyEnv));
}

std::shared_ptr<grpc::Channel> NewAuthedChannel(
    const std::string& address, const ClientCredentials& credentials,
    grpc::ChannelArguments args) {
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials;
  bool may_send_token = true;
  if (!credentials.tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = credentials.tls_ca_pem;
    ssl.pem_cert_chain = credentials.tls_cert_pem;
    ssl.pem_private_key = credentials.tls_key_pem;
    channel_credentials = grpc::SslCredentials(ssl);
  } else {
    absl::StatusOr<HostPort> host_port = ParseHostPort(address, "address");
    if (host_port.ok() && (IsLoopbackHost(host_port->host) ||
                           ResolvesToLoopback(host_port->host))) {
      channel_credentials = grpc::experimental::LocalCredentials(LOCAL_TCP);
    } else {
      // Plain text to a network address: the call fails at the server
      // (which serves TLS off loopback), and no token goes out in the clear.
      channel_credentials = grpc::InsecureChannelCredentials();
      may_send_token = false;
    }
  }
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (!credentials.token.empty() && may_send_token) {
    interceptors.push_back(
        std::make_unique<TokenInterceptorFactory>(credentials.token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, channel_credentials, args, std::move(interceptors));
}

absl::Status ExplainCallError(const absl::Status& status,
                              const std::string& address,
                              const ClientCredentials& credentials) {
  if (status.code() != absl::StatusCode::kUnavailable ||
      credentials.tls_ca_pem.empty() ||
      absl::StrContains(absl::AsciiStrToLower(status.message()), "handshake")) {
    return status;
  }
  return absl::Status(
      status.code(),
      absl::StrCat(status.message(), " (the TLS handshake with ", address,
                   " failed or the host closed the connection: it may have "
                   "refused this client's certificate: expired, or signed by "
                   "another CA?)"));
}

std::string NewRandomToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    // The CSPRNG failing is not something to run on.
    std::abort();
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

}  // namespace mesh
