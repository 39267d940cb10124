// MetricsHttpServer: the thin HTTP adapter that serves a MetricsRegistry's
// text (hostd/metrics.h) at GET /metrics, with GNU libmicrohttpd (an
// embedded HTTP server; TLS through GnuTLS). Not civetweb: Debian 12's
// libcivetweb crashes on every TLS connection under OpenSSL 3.
//
// Security (README "Metrics"): a loopback --metrics-listen serves plain
// HTTP, to callers on this machine; with --metrics-token-file it also
// requires "Authorization: Bearer <token>". Any other address is refused
// at start unless TLS (hostd's --tls-cert and --tls-key) and a token are
// both configured; then it serves HTTPS only (TLS 1.2 or later) and every
// scrape must present the token (401 otherwise). The token is compared in
// constant time, by its SHA-256.
#ifndef HOSTMESH_HOSTD_METRICS_HTTP_H_
#define HOSTMESH_HOSTD_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct MHD_Daemon;
struct MHD_Connection;

namespace mesh {

struct MetricsHttpOptions {
  // host:port (an IP address or "localhost"; port 0 picks a free one).
  std::string listen;
  // TLS: hostd's certificate (chain) and key, PEM. Used, and needed, for an
  // address that is not loopback.
  std::string tls_cert_file;
  std::string tls_key_file;
  // The scrapers' token, one line (mode 0600 or 0640); empty: none.
  std::string token_file;
};

class MetricsHttpServer {
 public:
  // Checks the options (errors name the flag), reads the files, and serves
  // `render()` (called once per scrape, on one of the server's 2 threads;
  // at most 16 connections, each idle at most 10 s) until destroyed.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const MetricsHttpOptions& options, std::function<std::string()> render);
  // Stops serving; waits for scrapes under way.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // "http://127.0.0.1:9464/metrics" (the bound port).
  const std::string& url() const { return url_; }

  // For libmicrohttpd's handler (metrics_http.cc): answers one request;
  // MHD_YES (1) or MHD_NO (0).
  int Serve(MHD_Connection* connection, const char* url,
            const char* method) const;

 private:
  MetricsHttpServer() = default;
  bool Authorized(MHD_Connection* connection) const;

  std::function<std::string()> render_;
  // SHA-256 of the token; empty: no token needed.
  std::string token_digest_;
  std::string url_;
  MHD_Daemon* daemon_ = nullptr;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_METRICS_HTTP_H_
