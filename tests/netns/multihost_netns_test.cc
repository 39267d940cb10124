// The real multi-host test: hosts in their own network namespaces, joined by
// a bridge, each running an authenticated hostd set up the way the README's
// "Multi-host" section tells an operator to (deploy/make-certs.sh, a config
// file with the documented keys, `hostd --config FILE`); the client runs in
// the root namespace and reaches them over the bridge only.
//
// Needs root and iproute2 (tests/netns/netns_lab.h); outside CI it skips
// with the reason, under CI=true it fails. Every test case makes its own
// namespaces, certificates and hostds and removes them all, even when it
// fails: the hostds are this test's children (reaped by pid through a
// ProcessSupervisor, and started with a parent-death signal so that they die
// with a test that is killed), and whatever is still inside the namespaces
// at the end is killed by pid before they are deleted.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "lib/auth/credentials.h"
#include "lib/launcher/launcher.h"
#include "lib/process/process_identity.h"
#include "lib/process/supervisor.h"
#include "lib/testing/skip.h"
#include "lib/testing/sockets.h"
#include "lib/testing/temp_dir.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "tests/netns/netns_lab.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::NetnsLab;
using testing::NewClient;
using testing::RunCommand;
using testing::WithClient;

// Every hostd listens on this port of its own namespace's address: the
// namespaces are private, so a fixed port is what an operator would use.
constexpr int kPort = 7450;
// For each host mesh attach and spawn barrier.
constexpr absl::Duration kMeshTimeout = absl::Seconds(20);

std::unique_ptr<grpc::ClientContext> Deadline(
    absl::Duration timeout = absl::Seconds(10)) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(timeout));
  return context;
}

std::string Millis(absl::Duration d) {
  return absl::StrCat(absl::ToDoubleMilliseconds(d), " ms");
}

// A file of this test's runfiles (e.g. "deploy/make-certs.sh").
std::string Runfile(const std::string& path) {
  for (const char* root : {"TEST_SRCDIR", "RUNFILES_DIR"}) {
    if (const char* dir = std::getenv(root)) {
      std::string candidate = absl::StrCat(dir, "/hostmesh/", path);
      if (access(candidate.c_str(), R_OK) == 0) return candidate;
    }
  }
  return path;  // from the workspace root (bazel-bin/... run by hand)
}

bool WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  return out.good() && chmod(path.c_str(), mode) == 0;
}

std::string Quoted(const std::string& s) { return absl::StrCat("\"", s, "\""); }

std::string TomlList(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  for (const std::string& item : items) quoted.push_back(Quoted(item));
  return absl::StrCat("[", absl::StrJoin(quoted, ", "), "]");
}

// True if `pid` exists and is not a zombie.
bool IsAlive(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(in, line)) return false;
  size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() &&
         line[close + 2] != 'Z' && line[close + 2] != 'X';
}

// N hosts, each a hostd in its own namespace, and the credentials of the
// identities the tests use:
//   ops    admin (client certificate, listed as `admin`)
//   alice  client (client certificate; also a token)
//   h<i>   peer (host i's certificate, listed as `peer` on every host)
//   old    an expired client certificate of the same CA
//   rogue/alice  a client certificate with alice's CN from another CA
// Destruction order: the hostds (SIGTERM, then the supervisor SIGKILLs and
// reaps what is left), then the files, then the namespaces (killing any
// proc that outlived its hostd).
class Cluster {
 public:
  struct Options {
    size_t hosts = 3;
    // Extra `key = value` lines for every hostd's config.
    std::vector<std::string> config;
  };

  // FAILED_PRECONDITION if this machine cannot run the test (not root, no
  // iproute2, no openssl); any other error is a set-up step that failed.
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(Options options) {
    std::unique_ptr<Cluster> cluster(new Cluster());
    absl::Status started = cluster->StartImpl(options);
    if (!started.ok()) return started;
    return cluster;
  }

  ~Cluster() {
    for (size_t i = 0; i < hostds_.size(); ++i) Stop(i);
    supervisor_.reset();
  }

  NetnsLab& lab() { return *lab_; }
  size_t size() const { return addresses_.size(); }
  const std::vector<std::string>& addresses() const { return addresses_; }
  pid_t hostd_pid(size_t i) const { return hostds_[i]->pid; }
  bool hostd_exited(size_t i) const {
    return hostds_[i]->exited.HasBeenNotified();
  }
  const std::string& dir() const { return dir_.path(); }
  const std::string& alice_token() const { return alice_token_; }
  absl::Duration setup_time() const { return setup_time_; }
  const std::string& setup_detail() const { return setup_detail_; }

  // Credentials from files of this cluster: `cert` names a certificate in
  // certs/ (or "rogue/<name>"), `ca` the CA file the caller trusts.
  ClientCredentials Creds(const std::string& cert, const std::string& token,
                          const std::string& ca = "ca") const {
    ClientCredentials creds;
    if (!ca.empty())
      creds.tls_ca_pem = Read(absl::StrCat(certs_, "/", ca, ".pem"));
    if (!cert.empty()) {
      creds.tls_cert_pem = Read(absl::StrCat(certs_, "/", cert, ".pem"));
      creds.tls_key_pem = Read(absl::StrCat(certs_, "/", cert, ".key"));
    }
    creds.token = token;
    return creds;
  }
  ClientCredentials Admin() const { return Creds("ops", ""); }
  // A file made by deploy/make-certs.sh, e.g. "alice.pem".
  std::string CertFile(const std::string& name) const {
    return absl::StrCat(certs_, "/", name);
  }

  std::unique_ptr<v1::Host::Stub> HostStub(size_t i,
                                           const ClientCredentials& creds) {
    return v1::Host::NewStub(NewAuthedChannel(addresses_[i], creds));
  }

  // SIGTERM to hostd i, then wait for it to exit (it stops its procs first).
  void Stop(size_t i, absl::Duration timeout = absl::Seconds(20)) {
    Hostd& hostd = *hostds_[i];
    if (hostd.exited.HasBeenNotified()) return;
    (void)supervisor_->SignalGroup(hostd.pid, SIGTERM);
    if (!hostd.exited.WaitForNotificationWithTimeout(timeout)) {
      fprintf(stderr, "hostd %zu (pid %d) did not exit within %s of SIGTERM\n",
              i, hostd.pid, absl::FormatDuration(timeout).c_str());
    }
  }

 private:
  struct Hostd {
    pid_t pid = 0;
    absl::Notification exited;
  };

  Cluster() = default;

  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  absl::Status MakeCerts(std::vector<std::string> args) {
    args.insert(args.begin(), {"/bin/bash", Runfile("deploy/make-certs.sh")});
    return RunCommand(args).status();
  }

  absl::Status StartImpl(const Options& options) {
    absl::Time start = absl::Now();
    if (!RunCommand({"openssl", "version"}).ok()) {
      return absl::FailedPreconditionError(
          "openssl is not installed (deploy/make-certs.sh needs it)");
    }
    absl::StatusOr<std::unique_ptr<NetnsLab>> lab =
        NetnsLab::Create(options.hosts);
    if (!lab.ok()) return lab.status();
    lab_ = *std::move(lab);
    absl::Time made_lab = absl::Now();
    absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
        ProcessSupervisor::Create();
    if (!supervisor.ok()) return supervisor.status();
    supervisor_ = *std::move(supervisor);
    absl::StatusOr<std::string> hostd = FindBinary("hostd");
    if (!hostd.ok()) return hostd.status();
    absl::StatusOr<std::string> procd = FindBinary("procd");
    if (!procd.ok()) return procd.status();

    // The operator's steps: a CA, a certificate per host (its address as
    // SAN), one per person; and a second CA nobody trusts.
    certs_ = dir_.path() + "/certs";
    absl::Status status = MakeCerts({certs_, "--ca"});
    std::vector<std::string> peers;
    for (size_t i = 0; status.ok() && i < options.hosts; ++i) {
      peers.push_back(absl::StrCat("h", i));
      status =
          MakeCerts({certs_, "--host", peers.back(), "--ip", lab_->address(i)});
    }
    for (const auto& args : std::vector<std::vector<std::string>>{
             {certs_, "--client", "ops"},
             {certs_, "--client", "alice"},
             {certs_, "--client", "old", "--expired"},
             {certs_ + "/rogue", "--ca"},
             {certs_ + "/rogue", "--client", "alice"}}) {
      if (status.ok()) status = MakeCerts(args);
    }
    if (!status.ok()) return status;
    absl::Time made_certs = absl::Now();

    alice_token_ = NewRandomToken();
    const std::string tokens = dir_.path() + "/tokens";
    if (!WriteFile(tokens,
                   absl::StrCat("# identity role token\nalice client ",
                                alice_token_, "\n"),
                   0600)) {
      return absl::InternalError("cannot write " + tokens);
    }

    for (size_t i = 0; i < options.hosts; ++i) {
      const std::string address = absl::StrCat(lab_->address(i), ":", kPort);
      const std::string base = absl::StrCat(dir_.path(), "/h", i);
      const std::string name = absl::StrCat("h", i);
      std::vector<std::string> config = {
          "listen = " + Quoted(address),
          "state-dir = " + Quoted(base + "/state"),
          "runtime-dir = " + Quoted(base + "/run"),
          "procd = " + Quoted(*procd),
          "stop-grace = \"2s\"",
          "tls-cert = " + Quoted(absl::StrCat(certs_, "/", name, ".pem")),
          "tls-key = " + Quoted(absl::StrCat(certs_, "/", name, ".key")),
          "tls-ca = " + Quoted(certs_ + "/ca.pem"),
          "tokens-file = " + Quoted(tokens),
          "admin = " + TomlList({"ops"}),
          "peer = " + TomlList(peers),
      };
      config.insert(config.end(), options.config.begin(), options.config.end());
      const std::string config_file = base + ".conf";
      if (!WriteFile(config_file, absl::StrJoin(config, "\n") + "\n", 0600)) {
        return absl::InternalError("cannot write " + config_file);
      }
      SpawnOptions spawn;
      std::vector<std::string> argv = lab_->ExecPrefix(i);
      // If this test is killed before ~Cluster, its hostds die with it
      // (ip and hostd keep the parent-death signal across exec).
      if (std::string setpriv = testing::FindExecutable("setpriv");
          !setpriv.empty()) {
        argv.insert(argv.begin(), {setpriv, "--pdeathsig", "KILL"});
      }
      spawn.path = argv[0];
      spawn.args.assign(argv.begin() + 1, argv.end());
      spawn.args.insert(spawn.args.end(), {*hostd, "--config", config_file});
      spawn.log_dir = base + "/log";
      auto entry = std::make_unique<Hostd>();
      Hostd* raw = entry.get();
      absl::StatusOr<pid_t> pid = supervisor_->Spawn(
          spawn, [raw](const ExitInfo&) { raw->exited.Notify(); });
      if (!pid.ok()) return pid.status();
      entry->pid = *pid;
      hostds_.push_back(std::move(entry));
      addresses_.push_back(address);
    }

    // Up once it listens (read from /proc/<pid>/net, which is its own
    // namespace's) and answers an admin over TLS. Waiting for the socket
    // first keeps gRPC's reconnect backoff out of the figure.
    absl::Time spawned = absl::Now();
    for (size_t i = 0; i < options.hosts; ++i) {
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      const Hostd& hostd = *hostds_[i];
      while (testing::ListeningSockets(hostd.pid).empty() &&
             !hostd.exited.HasBeenNotified() && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(10));
      }
      v1::HostInfo info;
      grpc::Status answered =
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "it never listened");
      if (!hostd.exited.HasBeenNotified() && absl::Now() < deadline) {
        auto context = Deadline(absl::Seconds(10));
        context->set_wait_for_ready(true);
        answered = HostStub(i, Admin())->GetHostInfo(context.get(), {}, &info);
      }
      if (!answered.ok()) {
        return absl::InternalError(absl::StrCat(
            "hostd ", i, " at ", addresses_[i], " did not come up (",
            hostd.exited.HasBeenNotified() ? "it exited" : "no answer", ": ",
            answered.error_message(), "); its stderr:\n",
            supervisor_->StderrTail(hostd.pid)));
      }
    }
    setup_time_ = absl::Now() - start;
    setup_detail_ =
        absl::StrCat("namespaces ", Millis(made_lab - start), ", certificates ",
                     Millis(made_certs - made_lab), ", hostds up ",
                     Millis(absl::Now() - spawned));
    return absl::OkStatus();
  }

  // Destroyed last to first: hostds (by ~Cluster and the supervisor), the
  // temp dir, then the namespaces.
  std::unique_ptr<NetnsLab> lab_;
  testing::TempDir dir_;
  std::string certs_;
  std::string alice_token_;
  std::vector<std::string> addresses_;
  std::vector<std::unique_ptr<Hostd>> hostds_;
  std::unique_ptr<ProcessSupervisor> supervisor_;
  absl::Duration setup_time_;
  std::string setup_detail_;
};

// Starts a cluster into `var` (a std::unique_ptr<Cluster>), or skips (fails
// under CI) when this machine cannot.
#define START_CLUSTER(var, ...)                                                \
  absl::StatusOr<std::unique_ptr<Cluster>> var##_or =                          \
      Cluster::Start(__VA_ARGS__);                                             \
  if (var##_or.status().code() == absl::StatusCode::kFailedPrecondition) {     \
    HOSTMESH_SKIP(var##_or.status().message());                                \
  }                                                                            \
  INFO(var##_or.status().ToString());                                          \
  REQUIRE(var##_or.ok());                                                      \
  std::unique_ptr<Cluster> var = *std::move(var##_or);                         \
  fprintf(stderr, "[%s] set-up of %zu hosts: %s (%s)\n",                       \
          Catch::getResultCapture().getCurrentTestName().c_str(), var->size(), \
          Millis(var->setup_time()).c_str(), var->setup_detail().c_str())

// A spawn that would leave a trace if it ever ran.
v1::CreateOrUpdateProcRequest IntruderSpawn(const std::string& marker) {
  v1::CreateOrUpdateProcRequest request;
  request.set_name("intruder");
  request.mutable_spec()->set_command("/bin/sh");
  request.mutable_spec()->add_args("-c");
  request.mutable_spec()->add_args("touch " + marker);
  return request;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_CASE(
    "three hosts in three network namespaces: the canonical flow runs from "
    "the root namespace over mTLS, and the client listens on no port") {
  START_CLUSTER(cluster, Cluster::Options{});
  // Traffic stays on the test's bridge: the root namespace reaches each host
  // through it, and no namespace has a route out.
  for (size_t i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> route =
        RunCommand({cluster->lab().ip_binary(), "route", "get",
                    cluster->lab().address(i)});
    REQUIRE(route.ok());
    CHECK(Contains(*route, "dev " + cluster->lab().bridge() + " "));
    std::vector<std::string> argv = cluster->lab().ExecPrefix(i);
    argv.insert(argv.end(), {cluster->lab().ip_binary(), "-4", "route"});
    absl::StatusOr<std::string> routes = RunCommand(argv);
    REQUIRE(routes.ok());
    INFO(*routes);
    CHECK_FALSE(Contains(*routes, "default"));
  }
  absl::Time start = absl::Now();
  // What HOSTMESH_TLS_CA, HOSTMESH_TLS_CERT and HOSTMESH_TLS_KEY name
  // (README "Multi-host", step 6), read by the library's own loader.
  absl::StatusOr<ClientCredentials> alice = ClientCredentials::FromFiles(
      "", cluster->CertFile("ca.pem"), cluster->CertFile("alice.pem"),
      cluster->CertFile("alice.key"));
  INFO(alice.status().ToString());
  REQUIRE(alice.ok());
  auto client = NewClient(*alice);
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach(cluster->addresses(), WithClient(client, kMeshTimeout));
  INFO(hosts.status().ToString());
  REQUIRE(hosts.ok());
  REQUIRE(hosts->num_hosts() == 3);

  // 3 hosts × 2 procs.
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p", 2);
  INFO(procs.status().ToString());
  REQUIRE(procs.ok());
  CHECK(procs->extent().ToString() == "{hosts: 3, procs: 2}");
  REQUIRE(procs->num_ranks() == 6);
  for (size_t rank = 0; rank < 6; ++rank) {
    CHECK(procs->procs()[rank].host() == cluster->addresses()[rank / 2]);
    CHECK(procs->procs()[rank].owner() == "alice");
  }
  // Each proc runs inside its host's namespace.
  for (size_t i = 0; i < 3; ++i) {
    std::vector<pid_t> inside = cluster->lab().Pids(i);
    std::set<pid_t> in_ns(inside.begin(), inside.end());
    for (size_t local = 0; local < 2; ++local) {
      CHECK(in_ns.count(procs->procs()[i * 2 + local].pid()) == 1);
    }
  }

  // Actors, a cast, a gathered call.
  absl::StatusOr<ActorMesh> counters = procs->Spawn("c", "mesh.counter");
  INFO(counters.status().ToString());
  REQUIRE(counters.ok());
  v1::Increment three;
  three.set_by(3);
  REQUIRE(counters->Cast(three).ok());
  auto counts = counters->Call<v1::Count>(v1::GetCount(), absl::Seconds(20));
  REQUIRE(counts.size() == 6);
  for (const auto& count : counts) {
    INFO(count.status().ToString());
    REQUIRE(count.ok());
    CHECK(count->value() == 3);
  }
  absl::StatusOr<ActorMesh> echo = procs->Spawn("e", "mesh.echo");
  REQUIRE(echo.ok());
  auto ids = echo->Call<v1::ActorIdReply>(v1::GetActorId(), absl::Seconds(20));
  REQUIRE(ids.size() == 6);
  for (size_t rank = 0; rank < 6; ++rank) {
    INFO(ids[rank].status().ToString());
    REQUIRE(ids[rank].ok());
    CHECK(ids[rank]->rank() == rank);
    CHECK(ids[rank]->id().host() == cluster->addresses()[rank / 2]);
  }
  absl::StatusOr<v1::Reduced> alive =
      echo->Reduce(v1::GetActorId(), v1::REDUCE_COUNT, absl::Seconds(20));
  REQUIRE(alive.ok());
  CHECK(alive->value() == 6);

  // Host to host (peer mTLS): rank 0 on host 0 forwards to rank 5 on host 2,
  // whose reply reaches this client's port.
  auto port = client->OpenPort<v1::ActorIdReply>();
  v1::Forward forward;
  *forward.mutable_to() = echo->actor(5);
  forward.mutable_payload()->PackFrom(v1::GetActorId());
  *forward.mutable_reply_to() = port.ref();
  absl::StatusOr<ActorMesh> first = echo->Slice("hosts", 0);
  REQUIRE(first.ok());
  absl::StatusOr<ActorMesh> rank0 = first->Slice("procs", 0);
  REQUIRE(rank0.ok());
  auto forwarded = rank0->Call<v1::Forwarded>(forward, absl::Seconds(20));
  REQUIRE(forwarded.size() == 1);
  INFO(forwarded[0].status().ToString());
  REQUIRE(forwarded[0].ok());
  absl::StatusOr<v1::ActorIdReply> via_peer = port.Recv(absl::Seconds(20));
  INFO(via_peer.status().ToString());
  REQUIRE(via_peer.ok());
  CHECK(via_peer->rank() == 5);
  CHECK(via_peer->id().host() == cluster->addresses()[2]);

  // The client holds no listening socket of any family.
  CHECK(testing::ListeningSockets(getpid()).empty());

  std::vector<pid_t> proc_pids;
  for (const v1::ProcState& proc : procs->procs())
    proc_pids.push_back(proc.pid());
  REQUIRE(hosts->Shutdown().ok());
  absl::Duration flow = absl::Now() - start;
  fprintf(stderr,
          "[flow] attach 3 hosts, spawn 3x2 procs, 2 actor meshes, cast, "
          "call, reduce, host-to-host forward, shutdown: %s\n",
          Millis(flow).c_str());

  // The procs are gone; the attached hostds keep running in their
  // namespaces with nothing but their proc template (a child of hostd
  // that is no proc).
  for (pid_t pid : proc_pids) CHECK_FALSE(IsAlive(pid));
  for (size_t i = 0; i < 3; ++i) {
    CHECK_FALSE(cluster->hostd_exited(i));
    std::vector<pid_t> left = cluster->lab().Pids(i);
    std::erase(left, cluster->hostd_pid(i));
    REQUIRE(left.size() == 1);
    CHECK(ReadProcStat(left[0]).value_or(ProcStat{}).ppid ==
          cluster->hostd_pid(i));
    CHECK(std::find(proc_pids.begin(), proc_pids.end(), left[0]) ==
          proc_pids.end());
  }
}

TEST_CASE(
    "over the network hostd refuses a caller without valid credentials "
    "before any verb runs, and a valid identity with the wrong role gets "
    "PERMISSION_DENIED") {
  START_CLUSTER(cluster, Cluster::Options{.hosts = 1});
  const std::string marker = cluster->dir() + "/intruder-ran";

  // Each caller tries a spawn that would leave a trace and a ShutdownHost,
  // first with raw stubs (gRPC's own status), then through the client
  // library (HostMesh::Attach), whose error must say what went wrong.
  struct Refused {
    std::string who;
    ClientCredentials creds;
    grpc::StatusCode code;
    // A TLS failure: the library's error names the TLS handshake.
    bool tls = false;
  };
  const std::string address = cluster->addresses()[0];
  std::vector<Refused> refused = {
      {"no credentials at all (plain text to a TLS port)",
       {},
       grpc::StatusCode::UNAVAILABLE},
      {"TLS but no identity (no client certificate, no token)",
       cluster->Creds("", ""), grpc::StatusCode::UNAUTHENTICATED},
      {"a wrong token", cluster->Creds("", "not-a-token"),
       grpc::StatusCode::UNAUTHENTICATED},
      {"a wrong token beside a valid certificate",
       cluster->Creds("alice", "not-a-token"),
       grpc::StatusCode::UNAUTHENTICATED},
      {"an expired certificate", cluster->Creds("old", ""),
       grpc::StatusCode::UNAVAILABLE, true},
      {"a certificate of another CA (same CN as a client)",
       cluster->Creds("rogue/alice", ""), grpc::StatusCode::UNAVAILABLE, true},
      {"a client that does not trust the host's CA",
       cluster->Creds("alice", "", "rogue/ca"), grpc::StatusCode::UNAVAILABLE,
       true},
  };
  for (const Refused& caller : refused) {
    INFO(caller.who);
    auto stub = v1::Host::NewStub(NewAuthedChannel(address, caller.creds));
    v1::ProcState state;
    grpc::Status spawn = stub->CreateOrUpdateProc(
        Deadline().get(), IntruderSpawn(marker), &state);
    INFO("spawn: " << spawn.error_code() << " " << spawn.error_message());
    CHECK(spawn.error_code() == caller.code);
    v1::ShutdownHostRequest shutdown_request;
    v1::ShutdownHostResponse shutdown_response;
    grpc::Status shutdown = stub->ShutdownHost(
        Deadline().get(), shutdown_request, &shutdown_response);
    INFO("shutdown: " << shutdown.error_code() << " "
                      << shutdown.error_message());
    CHECK(shutdown.error_code() == caller.code);

    HostMesh::Options options =
        WithClient(NewClient(caller.creds), absl::Seconds(5));
    absl::StatusOr<HostMesh> hosts = HostMesh::Attach({address}, options);
    fprintf(stderr, "[refused] %s: %s\n", caller.who.c_str(),
            hosts.status().ToString().c_str());
    INFO("library: " << hosts.status().ToString());
    CHECK_FALSE(hosts.ok());
    if (caller.code == grpc::StatusCode::UNAUTHENTICATED) {
      CHECK(hosts.status().code() == absl::StatusCode::kUnauthenticated);
    }
    if (caller.tls) {
      CHECK(Contains(absl::AsciiStrToLower(hosts.status().message()),
                     "handshake"));
    }
  }

  // Nothing ran, hostd is up and healthy.
  CHECK(access(marker.c_str(), F_OK) != 0);
  CHECK_FALSE(cluster->hostd_exited(0));
  auto admin = cluster->HostStub(0, cluster->Admin());
  v1::ListProcsResponse listed;
  REQUIRE(admin->ListProcs(Deadline().get(), {}, &listed).ok());
  CHECK(listed.procs().empty());
  v1::HostInfo info;
  REQUIRE(admin->GetHostInfo(Deadline().get(), {}, &info).ok());
  CHECK(info.pid() == cluster->hostd_pid(0));

  // Valid identities, wrong roles.
  v1::ShutdownHostRequest shutdown_request;
  shutdown_request.set_reason("not yours");
  v1::ShutdownHostResponse shutdown_response;
  for (const auto& [who, creds] :
       std::vector<std::pair<std::string, ClientCredentials>>{
           {"alice's certificate", cluster->Creds("alice", "")},
           {"alice's token", cluster->Creds("", cluster->alice_token())}}) {
    INFO(who);
    auto alice = cluster->HostStub(0, creds);
    v1::ListProcsResponse mine;
    grpc::Status list = alice->ListProcs(Deadline().get(), {}, &mine);
    INFO(list.error_message());
    CHECK(list.ok());  // a client may look
    grpc::Status shutdown = alice->ShutdownHost(
        Deadline().get(), shutdown_request, &shutdown_response);
    INFO(shutdown.error_message());
    CHECK(shutdown.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK(Contains(shutdown.error_message(), "admin"));
  }
  // A host's certificate may only relay (the spawn asks for the default
  // procd, which the run policy allows: the role is what refuses it).
  auto peer = cluster->HostStub(0, cluster->Creds("h0", ""));
  v1::ProcState state;
  v1::CreateOrUpdateProcRequest peer_proc;
  peer_proc.set_name("peer_0");
  grpc::Status peer_spawn =
      peer->CreateOrUpdateProc(Deadline().get(), peer_proc, &state);
  INFO(peer_spawn.error_message());
  CHECK(peer_spawn.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(Contains(peer_spawn.error_message(), "h0 has role peer"));
  // A client acts only on the procs it owns: the admin's proc is not alice's.
  v1::CreateOrUpdateProcRequest ops_proc;
  ops_proc.set_name("ops_0");
  REQUIRE(admin
              ->CreateOrUpdateProc(Deadline(absl::Seconds(30)).get(), ops_proc,
                                   &state)
              .ok());
  auto alice = cluster->HostStub(0, cluster->Creds("alice", ""));
  v1::StopProcRequest stop;
  stop.set_name("ops_0");
  grpc::Status alice_stop = alice->StopProc(Deadline().get(), stop, &state);
  INFO(alice_stop.error_message());
  CHECK(alice_stop.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(Contains(alice_stop.error_message(), "does not own it"));

  CHECK(access(marker.c_str(), F_OK) != 0);
  CHECK_FALSE(cluster->hostd_exited(0));
  REQUIRE(admin->GetHostInfo(Deadline().get(), {}, &info).ok());
}

// Restores a cut link when it goes (declared after the HostMesh, so the
// mesh's own shutdown can reach the host again even if the test failed).
class LinkRestorer {
 public:
  LinkRestorer(NetnsLab& lab, size_t i) : lab_(lab), i_(i) {}
  ~LinkRestorer() { (void)lab_.SetLinkUp(i_, true); }

 private:
  NetnsLab& lab_;
  size_t i_;
};

// Host events as they arrive, with when.
class EventLog {
 public:
  void Add(const HostEvent& event) {
    absl::MutexLock lock(&mu_);
    events_.push_back({event, absl::Now()});
  }
  // The first event of `host` into `state`; nullopt after `timeout`.
  std::optional<std::pair<HostEvent, absl::Time>> Await(
      const std::string& host, HostState state, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    std::optional<std::pair<HostEvent, absl::Time>> found;
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& entry : events_) {
        if (entry.first.host == host && entry.first.state == state) {
          found = entry;
          return true;
        }
      }
      return false;
    };
    mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
    return found;
  }
  std::vector<HostEvent> Of(const std::string& host) {
    absl::MutexLock lock(&mu_);
    std::vector<HostEvent> of;
    for (const auto& entry : events_) {
      if (entry.first.host == host) of.push_back(entry.first);
    }
    return of;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<HostEvent, absl::Time>> events_ ABSL_GUARDED_BY(mu_);
};

TEST_CASE(
    "cutting one namespace's link makes its host unreachable within the "
    "bound and lost after the grace, while the other hosts keep answering") {
  // Short bounds; the checks allow a generous multiple (2-core CI machines
  // run tests in parallel).
  const absl::Duration kHeartbeat = absl::Milliseconds(100);
  const absl::Duration kUnreachableAfter = absl::Milliseconds(500);
  const absl::Duration kLostAfter = absl::Seconds(3);
  START_CLUSTER(
      cluster,
      Cluster::Options{.config = {absl::StrCat(
                           "heartbeat-interval = \"",
                           absl::ToInt64Milliseconds(kHeartbeat), "ms\"")}});
  auto events = std::make_shared<EventLog>();
  Client::Options options;
  options.credentials = cluster->Creds("alice", "");
  options.unreachable_after = kUnreachableAfter;
  options.lost_after = kLostAfter;
  options.on_host_event = [events](const HostEvent& event) {
    events->Add(event);
  };
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  REQUIRE(client.ok());
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach(cluster->addresses(), WithClient(*client, kMeshTimeout));
  INFO(hosts.status().ToString());
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p", 1);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> echo = procs->Spawn("e", "mesh.echo");
  REQUIRE(echo.ok());
  for (const auto& reply : echo->Call<v1::ActorIdReply>(v1::GetActorId())) {
    REQUIRE(reply.ok());
  }
  const std::string cut_host = cluster->addresses()[2];
  for (const std::string& host : cluster->addresses()) {
    INFO(host);
    REQUIRE(events->Await(host, HostState::kReachable, absl::Seconds(10)));
  }

  LinkRestorer restore(cluster->lab(), 2);
  const absl::Time cut = absl::Now();
  REQUIRE(cluster->lab().SetLinkUp(2, false).ok());

  // Unreachable: within the silence bound (plus a tick), generously.
  auto unreachable = events->Await(cut_host, HostState::kUnreachable,
                                   kUnreachableAfter * 10 + absl::Seconds(5));
  REQUIRE(unreachable.has_value());
  const absl::Duration to_unreachable = unreachable->second - cut;
  INFO(unreachable->first.reason);
  CHECK(Contains(unreachable->first.reason, cut_host));
  CHECK(to_unreachable >= kUnreachableAfter * 0.9);
  CHECK(to_unreachable <= kUnreachableAfter * 6 + absl::Seconds(2));
  // Calls to it fail at once, naming it; the other hosts answer; nothing is
  // declared lost yet.
  const absl::Time call_start = absl::Now();
  auto replies =
      echo->Call<v1::ActorIdReply>(v1::GetActorId(), absl::Seconds(20));
  const absl::Duration call_time = absl::Now() - call_start;
  REQUIRE(replies.size() == 3);
  CHECK(replies[0].ok());
  CHECK(replies[1].ok());
  REQUIRE_FALSE(replies[2].ok());
  INFO(replies[2].status().ToString());
  CHECK(replies[2].status().code() == absl::StatusCode::kUnavailable);
  CHECK(Contains(std::string(replies[2].status().message()), cut_host));
  CHECK(call_time < absl::Seconds(2));
  CHECK((*client)->HostHealth(cut_host).state == HostState::kUnreachable);
  CHECK((*client)->HostHealth(cluster->addresses()[0]).state ==
        HostState::kReachable);

  // Lost: after the grace, with the procs this client had there.
  auto lost = events->Await(cut_host, HostState::kLost,
                            kLostAfter * 5 + absl::Seconds(5));
  REQUIRE(lost.has_value());
  const absl::Duration unreachable_to_lost = lost->second - unreachable->second;
  INFO(lost->first.reason);
  CHECK(unreachable_to_lost >= kLostAfter * 0.9);
  CHECK(unreachable_to_lost <= kLostAfter * 3 + absl::Seconds(2));
  CHECK(lost->first.procs == std::vector<std::string>{"p_2"});
  CHECK((*client)->HostHealth(cluster->addresses()[0]).state ==
        HostState::kReachable);
  CHECK((*client)->HostHealth(cluster->addresses()[1]).state ==
        HostState::kReachable);
  for (const HostEvent& event : events->Of(cluster->addresses()[0])) {
    CHECK(event.state == HostState::kReachable);
  }
  fprintf(stderr,
          "[detection] link cut -> unreachable %s (bound %s, heartbeat %s); "
          "call with one host unreachable %s; unreachable -> lost %s (grace "
          "%s)\n",
          Millis(to_unreachable).c_str(),
          absl::FormatDuration(kUnreachableAfter).c_str(),
          absl::FormatDuration(kHeartbeat).c_str(), Millis(call_time).c_str(),
          Millis(unreachable_to_lost).c_str(),
          absl::FormatDuration(kLostAfter).c_str());
}

}  // namespace
}  // namespace mesh
