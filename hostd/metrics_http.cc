#include "hostd/metrics_http.h"

#include <arpa/inet.h>
#include <glog/logging.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include <cstdarg>
#include <cstdio>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/auth/credentials.h"
#include "lib/auth/sha256.h"
#include "lib/net/address.h"
#include "lib/net/host_port.h"

namespace mesh {
namespace {

// Tokens shorter than this are refused (a guessable secret on a network).
constexpr size_t kMinTokenBytes = 16;

// libmicrohttpd's error lines, to glog.
void LogMessage(void*, const char* format, va_list args) {
  char line[512];
  std::vsnprintf(line, sizeof(line), format, args);
  LOG(WARNING) << "metrics endpoint: "
               << absl::StripTrailingAsciiWhitespace(line);
}

MHD_Result Reply(MHD_Connection* connection, unsigned status,
                 const std::string& body, const char* content_type,
                 const char* header = nullptr, const char* value = nullptr) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, "Content-Type", content_type);
  MHD_add_response_header(response, "Cache-Control", "no-store");
  if (header != nullptr) MHD_add_response_header(response, header, value);
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

constexpr char kText[] = "text/plain; charset=utf-8";

// libmicrohttpd's access handler: called with the headers first (answered
// on the next call), then with any body (not read), then to answer.
MHD_Result HandleRequest(void* server, MHD_Connection* connection,
                         const char* url, const char* method,
                         const char* /*version*/, const char* /*upload_data*/,
                         size_t* upload_data_size, void** request_state) {
  static int started;
  if (*request_state == nullptr) {
    *request_state = &started;
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    *upload_data_size = 0;
    return MHD_YES;
  }
  return static_cast<const MetricsHttpServer*>(server)->Serve(connection, url,
                                                              method) != 0
             ? MHD_YES
             : MHD_NO;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const MetricsHttpOptions& options, std::function<std::string()> render) {
  absl::StatusOr<HostPort> listen = ParseHostPort(
      options.listen, "--metrics-listen", /*allow_port_zero=*/true);
  if (!listen.ok()) return listen.status();
  std::string host = listen->host;
  if (absl::AsciiStrToLower(host) == "localhost") host = "127.0.0.1";
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  const sockaddr* address = nullptr;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<uint16_t>(listen->port));
    address = reinterpret_cast<const sockaddr*>(&v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<uint16_t>(listen->port));
    address = reinterpret_cast<const sockaddr*>(&v6);
    flags |= MHD_USE_IPv6;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-listen: \"", options.listen,
        "\" needs an IP address (e.g. 127.0.0.1:9464), not a host name"));
  }
  const bool loopback = IsLoopbackHost(host);
  auto server = std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer());
  server->render_ = std::move(render);
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> text =
        ReadSecretFile(options.token_file, "--metrics-token-file");
    if (!text.ok()) return text.status();
    const std::string token(absl::StripAsciiWhitespace(*text));
    if (token.size() < kMinTokenBytes || absl::StrContains(token, '\n') ||
        absl::StrContains(token, ' ')) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metrics-token-file ", options.token_file,
                       ": must hold one token of at least ", kMinTokenBytes,
                       " characters, no spaces (e.g. `openssl rand -hex 32`)"));
    }
    server->token_digest_ = Sha256(token);
  }
  const bool tls = !loopback;
  std::string cert_pem;
  std::string key_pem;
  if (tls) {
    const bool have_tls =
        !options.tls_cert_file.empty() && !options.tls_key_file.empty();
    if (!have_tls || server->token_digest_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--metrics-listen ", options.listen,
          " is not loopback: metrics there need TLS and a token (set "
          "--tls-cert, --tls-key and --metrics-token-file), or listen on "
          "127.0.0.1"));
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--metrics-listen ", options.listen,
          ": this libmicrohttpd has no TLS, which a non-loopback address "
          "needs; listen on 127.0.0.1"));
    }
    absl::StatusOr<std::string> cert =
        ReadPublicFile(options.tls_cert_file, "--tls-cert");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadSecretFile(options.tls_key_file, "--tls-key");
    if (!key.ok()) return key.status();
    cert_pem = *std::move(cert);
    key_pem = *std::move(key);
    flags |= MHD_USE_TLS;
  }
  MHD_OptionItem tls_options[] = {
      {MHD_OPTION_HTTPS_MEM_CERT, 0, cert_pem.data()},
      {MHD_OPTION_HTTPS_MEM_KEY, 0, key_pem.data()},
      // TLS 1.2 or later.
      {MHD_OPTION_HTTPS_PRIORITIES, 0,
       const_cast<char*>("NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2")},
      {MHD_OPTION_END, 0, nullptr}};
  MHD_OptionItem no_options[] = {{MHD_OPTION_END, 0, nullptr}};
  server->daemon_ = MHD_start_daemon(
      flags, static_cast<uint16_t>(listen->port), nullptr, nullptr,
      &HandleRequest, server.get(), MHD_OPTION_SOCK_ADDR, address,
      MHD_OPTION_THREAD_POOL_SIZE, 2u, MHD_OPTION_CONNECTION_LIMIT, 16u,
      MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_EXTERNAL_LOGGER,
      &LogMessage, nullptr, MHD_OPTION_ARRAY, tls ? tls_options : no_options,
      MHD_OPTION_END);
  // The key is in GnuTLS's credentials now (or the start failed).
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  if (server->daemon_ == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "--metrics-listen ", options.listen,
        ": cannot serve there (address in use or not of this machine, or a "
        "bad --tls-cert/--tls-key; the log says more)"));
  }
  const MHD_DaemonInfo* info =
      MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  server->url_ =
      absl::StrCat(tls ? "https://" : "http://",
                   JoinHostPort(host, info ? info->port : 0), "/metrics");
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

bool MetricsHttpServer::Authorized(MHD_Connection* connection) const {
  if (token_digest_.empty()) return true;
  const char* header =
      MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
  if (header == nullptr) return false;
  absl::string_view value = absl::StripAsciiWhitespace(header);
  constexpr absl::string_view kBearer = "Bearer ";
  if (value.size() <= kBearer.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), kBearer)) {
    return false;
  }
  const std::string digest =
      Sha256(absl::StripAsciiWhitespace(value.substr(kBearer.size())));
  return CRYPTO_memcmp(digest.data(), token_digest_.data(), digest.size()) == 0;
}

int MetricsHttpServer::Serve(MHD_Connection* connection, const char* url,
                             const char* method) const {
  const absl::string_view verb = method;
  if (verb != "GET" && verb != "HEAD") {
    return Reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics\n",
                 kText, "Allow", "GET, HEAD");
  }
  if (absl::string_view(url) != "/metrics") {
    return Reply(connection, MHD_HTTP_NOT_FOUND, "only GET /metrics\n", kText);
  }
  if (!Authorized(connection)) {
    return Reply(connection, MHD_HTTP_UNAUTHORIZED,
                 "a valid \"Authorization: Bearer <token>\" header is needed "
                 "(hostd's --metrics-token-file)\n",
                 kText, "WWW-Authenticate", "Bearer");
  }
  return Reply(connection, MHD_HTTP_OK, render_(),
               "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace mesh
