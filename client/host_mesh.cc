#include "hostmesh/host_mesh.h"

#include <glog/logging.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "client/internal/parallel.h"
#include "client/internal/stop_procs.h"
#include "lib/auth/credentials.h"
#include "lib/launcher/launcher.h"
#include "lib/names.h"
#include "lib/status.h"
#include "proto/host.grpc.pb.h"

namespace mesh {

class HostMesh::Impl {
 public:
  // `names` are the launcher's names of the hosts it started (one per
  // address); empty for attached hosts.
  Impl(Options options, std::vector<std::string> addresses,
       std::vector<std::string> names, std::unique_ptr<Launcher> launcher,
       std::string dir)
      : options_(std::move(options)),
        addresses_(std::move(addresses)),
        names_(std::move(names)),
        launcher_(std::move(launcher)),
        dir_(std::move(dir)) {}

  ~Impl() {
    absl::Status status = Shutdown(absl::Seconds(5));
    if (!status.ok()) LOG(WARNING) << "host mesh shutdown: " << status;
  }

  const Options& options() const { return options_; }
  const std::vector<std::string>& addresses() const { return addresses_; }
  const std::string& dir() const { return dir_; }

  void RecordSpawned(size_t host, const std::string& proc) {
    absl::MutexLock lock(&mu_);
    spawned_.emplace_back(host, proc);
  }

  absl::Status Shutdown(absl::Duration grace);

 private:
  absl::Status ShutdownOwnedHosts(absl::Duration grace);
  absl::Status StopSpawnedProcs(absl::Duration grace);

  const Options options_;
  const std::vector<std::string> addresses_;
  const std::vector<std::string> names_;
  // Set when this mesh started the hosts (Local, Process).
  std::unique_ptr<Launcher> launcher_;
  std::string dir_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::pair<size_t, std::string>> spawned_ ABSL_GUARDED_BY(mu_);
};

namespace {

absl::StatusOr<HostMesh::Options> WithDefaults(HostMesh::Options options) {
  if (options.client == nullptr) {
    ASSIGN_OR_RETURN(options.client, Client::Default());
  }
  return options;
}

// Opens the client's relay stream to every host, so that their procs can
// reach the client's ports (e.g. its supervisor port) before it sends them
// anything.
absl::Status ConnectAll(Client& client,
                        const std::vector<std::string>& addresses) {
  for (const std::string& address : addresses) {
    RETURN_IF_ERROR(client.Connect(address));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status HostMesh::Impl::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::OkStatus();
    shut_down_ = true;
  }
  absl::Status status = launcher_ != nullptr ? ShutdownOwnedHosts(grace)
                                             : StopSpawnedProcs(grace);
  // The procs' last output is shown before this returns.
  options_.client->FlushProcOutput(absl::Seconds(2));
  if (!dir_.empty()) {
    std::error_code error;
    const bool keep =
        options_.keep_logs.value_or(std::getenv("TEST_TMPDIR") == nullptr);
    if (keep) {
      // The logs stay; the hosts' runtime dirs (sockets, tokens) go.
      for (size_t i = 0; i < names_.size(); ++i) {
        std::filesystem::remove_all(
            std::filesystem::path(dir_) / names_[i] / "run", error);
      }
    } else {
      std::filesystem::remove_all(dir_, error);
    }
  }
  return status;
}

absl::Status HostMesh::Impl::ShutdownOwnedHosts(absl::Duration grace) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<v1::ShutdownHostRequest> requests(addresses_.size());
  for (size_t i = 0; i < addresses_.size(); ++i) {
    channels.push_back(options_.client->Channel(addresses_[i]));
    requests[i].set_reason("host mesh shutdown");
    requests[i].set_grace_ms(absl::ToInt64Milliseconds(grace));
    // Hosts this mesh started end with it (exit 0), not as a shutdown a
    // service manager should undo.
    requests[i].set_stay_down(true);
  }
  auto acks = internal::ParallelUnary<v1::Host, v1::ShutdownHostResponse>(
      channels, requests, grace * 3 + absl::Seconds(10),
      [](auto* stub, auto* context, auto* request, auto* response, auto done) {
        stub->async()->ShutdownHost(context, request, response,
                                    std::move(done));
      });
  std::vector<std::string> problems;
  for (size_t i = 0; i < addresses_.size(); ++i) {
    const std::string& name = names_[i];
    if (!acks[i].ok()) {
      problems.push_back(absl::StrFormat("%s at %s: %s", name, addresses_[i],
                                         acks[i].status().message()));
    }
    absl::StatusOr<ExitInfo> exit =
        launcher_->WaitExit(name, absl::Seconds(10));
    if (exit.ok() && exit->exit_code != std::optional<int>(0)) {
      problems.push_back(
          absl::StrFormat("%s exited abnormally: %s", name, exit->stderr_tail));
    }
  }
  // Whatever did not go by itself is stopped, and everything is reaped.
  launcher_->StopAll(absl::Seconds(1));
  if (problems.empty()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("host mesh shutdown: ", absl::StrJoin(problems, "; ")));
}

absl::Status HostMesh::Impl::StopSpawnedProcs(absl::Duration grace) {
  std::vector<std::pair<size_t, std::string>> spawned;
  {
    absl::MutexLock lock(&mu_);
    spawned.swap(spawned_);
  }
  std::vector<internal::ProcOnHost> procs;
  for (const auto& [host, proc] : spawned) {
    procs.push_back({addresses_[host], proc});
  }
  return internal::StopProcs(*options_.client, procs, "host mesh shutdown",
                             grace);
}

HostMesh::HostMesh(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HostMesh::HostMesh(HostMesh&&) noexcept = default;
HostMesh& HostMesh::operator=(HostMesh&&) noexcept = default;
HostMesh::~HostMesh() = default;

absl::StatusOr<HostMesh> HostMesh::Local(Options options) {
  return Process(1, std::move(options));
}

absl::StatusOr<HostMesh> HostMesh::Process(size_t num_hosts, Options options) {
  if (num_hosts == 0) {
    return absl::InvalidArgumentError("a host mesh needs at least one host");
  }
  ASSIGN_OR_RETURN(options, WithDefaults(std::move(options)));
  if (options.hostd_path.empty()) {
    ASSIGN_OR_RETURN(options.hostd_path, FindBinary("hostd"));
  }
  // Everything the hosts keep (sockets, logs) lives in one private dir.
  char pattern[] = "/tmp/hostmesh-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create a temporary dir: ", strerror(errno)));
  }
  std::string dir = pattern;
  Launcher::Options launcher_options;
  launcher_options.log_root = dir + "/hosts";
  absl::StatusOr<std::unique_ptr<Launcher>> launcher =
      Launcher::Create(launcher_options);
  if (!launcher.ok()) {
    std::error_code error;
    std::filesystem::remove_all(dir, error);
    return launcher.status();
  }

  // Hosts start in parallel; each answers by registering back.
  std::vector<absl::StatusOr<Launcher::Child>> children(
      num_hosts, absl::UnknownError("not started"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < num_hosts; ++i) {
    threads.emplace_back([&, i] {
      std::string name = absl::StrCat("host_", i);
      SpawnOptions spawn;
      spawn.path = options.hostd_path;
      // A host this client starts for itself, as its own user: it trusts
      // the launcher's token (sent over the bootstrap channel, never on
      // argv) and runs whatever command this client names.
      spawn.args = {"--listen=127.0.0.1:0",
                    absl::StrCat("--state-dir=", dir, "/", name, "/state"),
                    absl::StrCat("--runtime-dir=", dir, "/", name, "/run"),
                    "--allow-any-command"};
      spawn.args.insert(spawn.args.end(), options.hostd_args.begin(),
                        options.hostd_args.end());
      children[i] = (*launcher)->Launch(name, i, spawn, options.timeout);
    });
  }
  for (auto& thread : threads) thread.join();
  std::vector<std::string> addresses;
  std::vector<std::string> names;
  std::vector<std::string> failures;
  ClientCredentials parent;
  parent.token = (*launcher)->admin_token();
  for (size_t i = 0; i < num_hosts; ++i) {
    if (children[i].ok()) {
      options.client->SetHostCredentials(children[i]->address, parent);
      addresses.push_back(children[i]->address);
      names.push_back(children[i]->name);
    } else {
      failures.push_back(std::string(children[i].status().message()));
    }
  }
  auto impl = std::make_unique<Impl>(options, addresses, names,
                                     *std::move(launcher), dir);
  if (!failures.empty()) {
    impl->Shutdown(absl::Seconds(1)).IgnoreError();
    return absl::UnavailableError(
        absl::StrFormat("%d of %d hosts did not start: %s", failures.size(),
                        num_hosts, absl::StrJoin(failures, "; ")));
  }
  if (absl::Status connected = ConnectAll(*options.client, addresses);
      !connected.ok()) {
    impl->Shutdown(absl::Seconds(1)).IgnoreError();
    return connected;
  }
  return HostMesh(std::move(impl));
}

absl::StatusOr<HostMesh> HostMesh::Attach(std::vector<std::string> addresses,
                                          Options options) {
  if (addresses.empty()) {
    return absl::InvalidArgumentError("Attach needs at least one host address");
  }
  ASSIGN_OR_RETURN(options, WithDefaults(std::move(options)));
  // Each host must answer before the mesh is handed out.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (const auto& address : addresses) {
    channels.push_back(options.client->Channel(address));
  }
  auto infos = internal::ParallelUnary<v1::Host, v1::HostInfo>(
      channels, std::vector<v1::GetHostInfoRequest>(addresses.size()),
      options.timeout,
      [](auto* stub, auto* context, auto* request, auto* response, auto done) {
        stub->async()->GetHostInfo(context, request, response, std::move(done));
      });
  std::vector<std::string> failures;
  // The code of the failures if they share one (UNAUTHENTICATED from every
  // host says more than UNAVAILABLE), else UNAVAILABLE.
  std::optional<absl::StatusCode> code;
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (!infos[i].ok()) {
      absl::Status why =
          ExplainCallError(infos[i].status(), addresses[i],
                           options.client->CredentialsFor(addresses[i]));
      failures.push_back(
          absl::StrFormat("%s: %s", addresses[i], why.message()));
      code = !code.has_value() || *code == why.code()
                 ? why.code()
                 : absl::StatusCode::kUnavailable;
    }
  }
  if (!failures.empty()) {
    return absl::Status(*code, absl::StrCat("cannot attach to hosts: ",
                                            absl::StrJoin(failures, "; ")));
  }
  RETURN_IF_ERROR(ConnectAll(*options.client, addresses));
  return HostMesh(std::make_unique<Impl>(
      options, std::move(addresses), std::vector<std::string>(), nullptr, ""));
}

size_t HostMesh::num_hosts() const { return impl_->addresses().size(); }

const std::vector<std::string>& HostMesh::addresses() const {
  return impl_->addresses();
}

Extent HostMesh::extent() const {
  return Extent({{"hosts", impl_->addresses().size()}});
}

const std::shared_ptr<Client>& HostMesh::client() const {
  return impl_->options().client;
}

const std::string& HostMesh::logs_dir() const { return impl_->dir(); }

absl::StatusOr<ProcMesh> HostMesh::Spawn(const std::string& name,
                                         const Extent& per_host,
                                         const v1::ProcSpec& spec,
                                         const ProcMeshOptions& options) {
  return Spawn(name, per_host.num_ranks(), spec, options);
}

absl::StatusOr<ProcMesh> HostMesh::Spawn(const std::string& name,
                                         size_t procs_per_host,
                                         const v1::ProcSpec& spec,
                                         const ProcMeshOptions& options) {
  RETURN_IF_ERROR(ValidateName(name, "proc mesh name"));
  if (procs_per_host == 0) {
    return absl::InvalidArgumentError("procs_per_host must be at least 1");
  }
  const std::vector<std::string>& hosts = impl_->addresses();
  const size_t num_hosts = hosts.size();
  const size_t n = num_hosts * procs_per_host;
  const absl::Duration timeout = impl_->options().timeout;
  Client& client = *impl_->options().client;

  // Every rank is created at once: rank = host × K + local rank.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<v1::CreateOrUpdateProcRequest> creates(n);
  std::vector<std::string> host_of(n);
  for (size_t rank = 0; rank < n; ++rank) {
    size_t host = rank / procs_per_host;
    host_of[rank] = hosts[host];
    channels.push_back(client.Channel(hosts[host]));
    creates[rank].set_name(MemberName(name, rank));
    creates[rank].set_rank(rank);
    *creates[rank].mutable_spec() = spec;
    // The lease holder: the hosts stop the procs once this client is gone.
    if (!options.detached) creates[rank].set_client(client.id());
  }
  auto created = internal::ParallelUnary<v1::Host, v1::ProcState>(
      channels, creates, timeout,
      [](auto* stub, auto* context, auto* request, auto* response, auto done) {
        stub->async()->CreateOrUpdateProc(context, request, response,
                                          std::move(done));
      });
  // Only what this mesh created is its to stop: a refused create (e.g. the
  // name is someone else's proc) is not, nor a detached proc.
  for (size_t rank = 0; rank < n; ++rank) {
    if (created[rank].ok() && !options.detached) {
      impl_->RecordSpawned(rank / procs_per_host, creates[rank].name());
    }
  }
  // Their output is shown here, from where each began (one stream a host).
  for (size_t host = 0; host < num_hosts; ++host) {
    std::vector<std::string> names;
    for (size_t local = 0; local < procs_per_host; ++local) {
      const size_t rank = host * procs_per_host + local;
      if (created[rank].ok()) names.push_back(creates[rank].name());
    }
    client.ForwardProcOutput(hosts[host], std::move(names));
  }

  // One server-side wait per host for all of its ranks.
  std::vector<std::shared_ptr<grpc::Channel>> host_channels;
  std::vector<v1::WaitProcsRequest> waits(num_hosts);
  for (size_t host = 0; host < num_hosts; ++host) {
    host_channels.push_back(client.Channel(hosts[host]));
    for (size_t local = 0; local < procs_per_host; ++local) {
      waits[host].add_names(MemberName(name, host * procs_per_host + local));
    }
    waits[host].set_min_status(v1::RUNNING);
    waits[host].set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  }
  auto waited = internal::ParallelUnary<v1::Host, v1::WaitProcsResponse>(
      host_channels, waits, timeout + absl::Seconds(2),
      [](auto* stub, auto* context, auto* request, auto* response, auto done) {
        stub->async()->WaitProcs(context, request, response, std::move(done));
      });

  std::vector<v1::ProcState> procs(n);
  std::vector<std::string> failures;
  absl::StatusCode code = absl::StatusCode::kOk;
  for (size_t rank = 0; rank < n; ++rank) {
    size_t host = rank / procs_per_host;
    size_t local = rank % procs_per_host;
    absl::Status status = created[rank].status();
    if (status.ok() && !waited[host].ok()) status = waited[host].status();
    if (status.ok()) {
      procs[rank] = waited[host]->procs(local);
      if (procs[rank].status() != v1::RUNNING) {
        status = absl::Status(
            waited[host]->timed_out() ? absl::StatusCode::kDeadlineExceeded
                                      : absl::StatusCode::kAborted,
            absl::StrFormat("%s: %s", v1::Status_Name(procs[rank].status()),
                            procs[rank].reason()));
      }
    }
    if (!status.ok()) {
      if (code == absl::StatusCode::kOk) code = status.code();
      failures.push_back(absl::StrFormat("rank %d (%s on %s): %s", rank,
                                         creates[rank].name(), hosts[host],
                                         status.message()));
    }
  }
  Extent extent({{"hosts", num_hosts}, {"procs", procs_per_host}});
  ProcMesh mesh(impl_->options().client, name, extent, host_of, procs);
  if (!failures.empty()) {
    // Leave nothing half-made behind.
    mesh.Stop(absl::Seconds(1)).IgnoreError();
    return absl::Status(
        code, absl::StrFormat("proc mesh \"%s\": %d of %d ranks did not reach "
                              "RUNNING: %s",
                              name, failures.size(), n,
                              absl::StrJoin(failures, "; ")));
  }
  return mesh;
}

absl::Status HostMesh::Shutdown(absl::Duration grace) {
  return impl_ == nullptr ? absl::OkStatus() : impl_->Shutdown(grace);
}

}  // namespace mesh
