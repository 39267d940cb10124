#include "meshctl/cli.h"

#include <unistd.h>

#include <atomic>
#include <iostream>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/names.h"
#include "lib/net/address.h"
#include "lib/net/host_port.h"
#include "lib/version.h"

namespace mesh::meshctl {
namespace {

constexpr absl::Duration kMaxDuration = absl::Hours(24);
constexpr char kUsagePayload[] = "meshctl/usage";

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--hosts-file: cannot read \"", path, "\": ", strerror(errno)));
  }
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    text.append(buffer, n);
    if (text.size() > (1 << 20)) {
      std::fclose(file);
      return absl::InvalidArgumentError(
          absl::StrCat("--hosts-file: \"", path,
                       "\" is larger than 1 MiB; is it a list "
                       "of hosts?"));
    }
  }
  std::fclose(file);
  return text;
}

}  // namespace

// ---- Host lists ----

absl::StatusOr<std::string> NormalizeHost(const std::string& text,
                                          const std::string& what) {
  std::string host(absl::StripAsciiWhitespace(text));
  if (host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": empty host; write host or host:port"));
  }
  std::string address = host;
  if (host.front() == '[') {
    if (!absl::StrContains(host, "]:")) {
      address = absl::StrCat(host, ":", kDefaultPort);
    }
  } else {
    const size_t colons = std::count(host.begin(), host.end(), ':');
    if (colons == 0) {
      address = absl::StrCat(host, ":", kDefaultPort);
    } else if (colons > 1) {  // A bare IPv6 address.
      address = JoinHostPort(host, kDefaultPort);
    }
  }
  absl::StatusOr<HostPort> parsed = ParseHostPort(address, what);
  if (!parsed.ok()) return parsed.status();
  return JoinHostPort(parsed->host, parsed->port);
}

absl::StatusOr<std::vector<std::string>> ParseHostList(
    const std::string& text, const std::string& what) {
  std::vector<std::string> hosts;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    ASSIGN_OR_RETURN(std::string host, NormalizeHost(std::string(entry), what));
    hosts.push_back(std::move(host));
  }
  return hosts;
}

absl::StatusOr<std::vector<std::string>> ParseHostsFile(
    const std::string& text, const std::string& path) {
  std::vector<std::string> hosts;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = line.substr(0, line.find('#'));
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    ASSIGN_OR_RETURN(
        std::string host,
        NormalizeHost(std::string(line), absl::StrCat(path, " line ", number)));
    hosts.push_back(std::move(host));
  }
  if (hosts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--hosts-file: \"", path, "\" names no host"));
  }
  return hosts;
}

absl::StatusOr<std::vector<std::string>> ResolveHosts(
    const std::vector<std::string>& flag_hosts, const std::string& hosts_file,
    const char* env) {
  std::vector<std::string> hosts;
  for (const std::string& flag : flag_hosts) {
    ASSIGN_OR_RETURN(std::vector<std::string> some,
                     ParseHostList(flag, "--host"));
    hosts.insert(hosts.end(), some.begin(), some.end());
  }
  if (!hosts_file.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadTextFile(hosts_file));
    ASSIGN_OR_RETURN(std::vector<std::string> some,
                     ParseHostsFile(text, hosts_file));
    hosts.insert(hosts.end(), some.begin(), some.end());
  }
  if (hosts.empty() && env != nullptr && *env != '\0') {
    ASSIGN_OR_RETURN(hosts, ParseHostList(env, kHostEnv));
  }
  if (hosts.empty()) hosts.push_back(kDefaultHost);
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (std::string& host : hosts) {
    if (seen.insert(host).second) unique.push_back(std::move(host));
  }
  return unique;
}

// ---- Errors ----

absl::Status UsageError(absl::Status status) {
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

// ---- HostConn ----

HostConn::HostConn(std::string address, ClientCredentials credentials)
    : address_(std::move(address)),
      credentials_(std::move(credentials)),
      channel_(NewAuthedChannel(address_, credentials_)),
      host_stub_(v1::Host::NewStub(channel_)),
      proc_stub_(v1::Proc::NewStub(channel_)) {}

std::string HostConn::OnHost() const {
  return absl::StrCat("on host \"", address_, "\"");
}

std::string HostConn::OnProc(const std::string& proc) const {
  return absl::StrCat("on proc \"", proc, "\" (host \"", address_, "\")");
}

// ---- Progress ----

void Progress::Show(const std::string& line) {
  if (!enabled_) return;
  err_ << "\r" << line << "\x1b[K" << std::flush;
  shown_ = true;
}

void Progress::Done() {
  if (!shown_) return;
  err_ << "\r\x1b[K" << std::flush;
  shown_ = false;
}

std::string CountByStatus(
    const std::vector<std::string>& names,
    const google::protobuf::RepeatedPtrField<v1::ProcState>& procs) {
  std::map<std::string, v1::Status> status;
  for (const v1::ProcState& proc : procs) status[proc.name()] = proc.status();
  std::map<v1::Status, int> counts;
  for (const std::string& name : names) {
    auto it = status.find(name);
    counts[it == status.end() ? v1::INITIALIZING : it->second]++;
  }
  if (names.empty()) {
    for (const auto& [name, s] : status) counts[s]++;
  }
  static const std::vector<std::pair<v1::Status, const char*>> kOrder = {
      {v1::RUNNING, "running"},   {v1::INITIALIZING, "starting"},
      {v1::STOPPING, "stopping"}, {v1::STOPPED, "stopped"},
      {v1::FAILED, "failed"},     {v1::NOT_EXIST, "gone"},
  };
  std::vector<std::string> parts;
  for (const auto& [s, word] : kOrder) {
    if (counts[s] > 0) parts.push_back(absl::StrCat(counts[s], " ", word));
  }
  return absl::StrJoin(parts, ", ");
}

ProcPoller::ProcPoller(HostConn& conn, Progress& progress, std::string label,
                       std::vector<std::string> names)
    : conn_(conn),
      progress_(progress),
      label_(std::move(label)),
      names_(std::move(names)) {
  if (progress_.enabled()) thread_ = std::thread([this] { Loop(); });
}

void ProcPoller::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void ProcPoller::Loop() {
  while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(250))) {
    v1::ListProcsResponse list;
    absl::Status status =
        conn_.Call(conn_.host(), &v1::Host::Stub::ListProcs,
                   v1::ListProcsRequest(), &list, absl::Seconds(2), "");
    if (status.ok() && !stop_.HasBeenNotified()) {
      progress_.Show(
          absl::StrCat(label_, ": ", CountByStatus(names_, list.procs())));
    }
  }
}

void ParallelFor(size_t n, size_t width,
                 const std::function<void(size_t)>& fn) {
  if (n <= 1 || width <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  for (size_t t = 0; t < std::min(n, width); ++t) {
    threads.emplace_back([&] {
      for (size_t i = next++; i < n; i = next++) fn(i);
    });
  }
  for (std::thread& thread : threads) thread.join();
}

// ---- Cli ----

Cli::Cli(std::ostream& out, std::ostream& err)
    : out_(out),
      err_(err),
      app_("meshctl: operate hostmesh hosts, their procs and actors",
           "meshctl") {
  // Global flags may follow a verb too (`meshctl proc list -o json`).
  app_.fallthrough();
  app_.require_subcommand(1);
  app_.set_version_flag("--version", absl::StrCat("meshctl ", kHostmeshVersion),
                        "print meshctl's version and exit");
  app_.add_option("--host,--hosts", flag_hosts_,
                  "hostd address host[:port] (default port 7450), or a comma "
                  "list; repeatable (default: $MESH_HOST, one host or a comma "
                  "list, else 127.0.0.1:7450)")
      ->delimiter(',')
      ->type_name("HOST[,HOST...]");
  app_.add_option("--hosts-file", hosts_file_,
                  "file of hosts, one per line, # comments; added to --host")
      ->type_name("FILE");
  auto* auth = app_.add_option_group("Credentials", "README \"Security\"");
  auth->add_option("--token-file", token_file_,
                   "file holding a token (mode 0600/0640); on a loopback "
                   "host, default /run/hostmesh/admin.token if readable")
      ->envname(kTokenFileEnv);
  auth->add_option("--tls-ca", tls_ca_,
                   "PEM CA of the hosts' certificates (turns TLS on)")
      ->envname(kTlsCaEnv);
  auth->add_option("--tls-cert", tls_cert_, "PEM client certificate")
      ->envname(kTlsCertEnv);
  auth->add_option("--tls-key", tls_key_, "PEM key of --tls-cert (mode 0600)")
      ->envname(kTlsKeyEnv);
  app_.add_option("--timeout", timeout_flag_,
                  "deadline of each call, e.g. 500ms, 10s, 2m")
      ->check(DurationValidator())
      ->type_name("DURATION")
      ->capture_default_str();
  app_.add_option("-o,--output", output_flag_, "output format")
      ->check(CLI::IsMember(OutputNames()))
      ->capture_default_str();
  app_.add_option("--progress", progress_flag_,
                  "progress lines for long spawns and stops on stderr: auto "
                  "(when stderr is a terminal), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
}

CLI::App* Cli::Group(const std::string& name, const std::string& description) {
  auto it = groups_.find(name);
  if (it != groups_.end()) return it->second;
  CLI::App* group = app_.add_subcommand(name, description);
  group->require_subcommand(1);
  groups_[name] = group;
  return group;
}

CLI::App* Cli::Verb(CLI::App* parent, const std::string& name,
                    const std::string& description, const std::string& example,
                    std::function<absl::Status()> run) {
  CLI::App* verb = parent->add_subcommand(name, description);
  if (!example.empty()) {
    std::string footer = "Example:";
    for (absl::string_view line : absl::StrSplit(example, '\n')) {
      absl::StrAppend(&footer, "\n  ", line);
    }
    verb->footer(footer);
  }
  verbs_.emplace_back(verb, std::move(run));
  return verb;
}

absl::Status Cli::Setup(bool hosts) {
  ASSIGN_OR_RETURN(timeout_, ParseDuration(timeout_flag_));
  ASSIGN_OR_RETURN(output_, ParseOutput(output_flag_));
  if (hosts) {
    ASSIGN_OR_RETURN(hosts_,
                     ResolveHosts(flag_hosts_, hosts_file_, getenv(kHostEnv)));
  }
  progress_ = progress_flag_ == "always" ||
              (progress_flag_ == "auto" && &err_ == &std::cerr &&
               isatty(STDERR_FILENO));
  return absl::OkStatus();
}

absl::StatusOr<ClientCredentials> Cli::Credentials(
    const std::string& address) const {
  ASSIGN_OR_RETURN(
      ClientCredentials credentials,
      ClientCredentials::FromFiles(token_file_, tls_ca_, tls_cert_, tls_key_));
  absl::StatusOr<HostPort> host = ParseHostPort(address, "--host");
  if (credentials.empty() && host.ok() && IsLoopbackHost(host->host) &&
      access(kLocalAdminTokenFile, R_OK) == 0) {
    return ClientCredentials::FromFiles(kLocalAdminTokenFile, "", "", "");
  }
  return credentials;
}

absl::StatusOr<HostConn*> Cli::Connect(const std::string& address) {
  auto it = conns_.find(address);
  if (it != conns_.end()) return it->second.get();
  ASSIGN_OR_RETURN(ClientCredentials credentials, Credentials(address));
  auto conn = std::make_unique<HostConn>(address, std::move(credentials));
  HostConn* raw = conn.get();
  conns_[address] = std::move(conn);
  return raw;
}

absl::StatusOr<HostConn*> Cli::OneHost(const std::string& verb) {
  if (hosts_.size() != 1) {
    return UsageError(absl::InvalidArgumentError(
        absl::StrCat("'meshctl ", verb, "' works on one host; ", hosts_.size(),
                     " were given (", absl::StrJoin(hosts_, ", "),
                     "): pick one with --host")));
  }
  return Connect(hosts_.front());
}

std::vector<absl::Status> Cli::ForEachHost(
    const std::function<absl::Status(HostConn& conn, size_t i)>& call) {
  std::vector<absl::Status> results(hosts_.size());
  std::vector<HostConn*> conns(hosts_.size(), nullptr);
  for (size_t i = 0; i < hosts_.size(); ++i) {
    absl::StatusOr<HostConn*> conn = Connect(hosts_[i]);
    if (conn.ok()) {
      conns[i] = *conn;
    } else {
      results[i] = conn.status();
    }
  }
  if (hosts_.size() == 1) {
    if (conns[0] != nullptr) results[0] = call(*conns[0], 0);
  } else {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < hosts_.size(); ++i) {
      if (conns[i] == nullptr) continue;
      threads.emplace_back(
          [&call, &results, &conns, i] { results[i] = call(*conns[i], i); });
    }
    for (std::thread& thread : threads) thread.join();
  }
  for (const absl::Status& status : results) {
    if (!status.ok()) Fail(status);
  }
  return results;
}

absl::Status Cli::Print(const google::protobuf::Message& message,
                        const std::string& table, const std::string& wide) {
  ASSIGN_OR_RETURN(std::string text, Render(message, output_, table, wide));
  out_ << text << std::flush;
  return absl::OkStatus();
}

absl::Status Cli::PrintList(
    const std::vector<const google::protobuf::Message*>& messages,
    const std::string& table, const std::string& wide) {
  ASSIGN_OR_RETURN(std::string text,
                   RenderList(messages, output_, table, wide));
  out_ << text << std::flush;
  return absl::OkStatus();
}

void Cli::Fail(const absl::Status& status) {
  ++failures_;
  err_ << "meshctl: " << absl::StatusCodeToString(status.code()) << ": "
       << status.message() << std::endl;
}

std::unique_ptr<Progress> Cli::NewProgress() {
  return std::make_unique<Progress>(err_, progress_);
}

// ---- Helpers ----

absl::StatusOr<absl::Duration> ParseDuration(const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a duration; write e.g. 500ms, 10s, 2m, 1m30s"));
  }
  if (d < absl::Milliseconds(1) || d > kMaxDuration) {
    return absl::InvalidArgumentError(absl::StrCat(
        "duration \"", text, "\" is out of range; it must be from 1ms to ",
        absl::FormatDuration(kMaxDuration)));
  }
  return d;
}

uint32_t Millis(absl::Duration d) {
  return static_cast<uint32_t>(absl::ToInt64Milliseconds(d));
}

void AddSpawnWaitFlags(CLI::App* spawn, SpawnWait* wait) {
  spawn->add_flag("--no-wait", wait->no_wait,
                  "answer once spawned; do not wait for RUNNING");
  spawn
      ->add_option("--wait-timeout", wait->wait_timeout,
                   "how long to wait for RUNNING")
      ->check(DurationValidator())
      ->type_name("DURATION")
      ->capture_default_str();
}

CLI::Validator DurationValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        absl::StatusOr<absl::Duration> d = ParseDuration(value);
        return d.ok() ? "" : std::string(d.status().message());
      },
      "", "DURATION");
}

CLI::Validator NameValidator(std::string what) {
  return CLI::Validator(
      [what](std::string& value) -> std::string {
        absl::Status status = ValidateName(value, what);
        return status.ok() ? "" : std::string(status.message());
      },
      "", "NAME");
}

}  // namespace mesh::meshctl
