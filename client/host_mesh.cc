#include "hostmesh/host_mesh.h"

#include <glog/logging.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "client/internal/parallel.h"
#include "client/internal/stop_procs.h"
#include "lib/auth/credentials.h"
#include "lib/launcher/launcher.h"
#include "lib/names.h"
#include "lib/net/address.h"
#include "lib/net/host_port.h"
#include "lib/process/exit_cause.h"
#include "lib/process/run_command.h"
#include "lib/slurm/slurm.h"
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

  // Slurm: the job, each host's node, and what releases the allocation
  // (unset: it is not this mesh's to release). Set before the mesh is
  // handed out.
  void SetSlurm(std::string job, std::vector<std::string> nodes,
                std::function<absl::Status()> release) {
    job_ = std::move(job);
    nodes_ = std::move(nodes);
    release_ = std::move(release);
  }
  const std::string& job() const { return job_; }
  const std::vector<std::string>& nodes() const { return nodes_; }

  ~Impl() {
    absl::Status status = Shutdown(absl::Seconds(5));
    if (!status.ok()) LOG(WARNING) << "host mesh shutdown: " << status;
  }

  const Options& options() const { return options_; }
  const std::vector<std::string>& addresses() const { return addresses_; }
  const std::vector<std::string>& names() const { return names_; }
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
  std::string job_;
  std::vector<std::string> nodes_;
  std::function<absl::Status()> release_;
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
  // The allocation goes last, once its hostds are down.
  if (release_) {
    absl::Status released = release_();
    if (!released.ok()) {
      status.Update(
          Annotate(released, absl::StrCat("releasing Slurm job ", job_)));
    }
  }
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
  // A host the client knew was lost before this shutdown (it said it shut
  // down, or its launcher saw it end: e.g. its Slurm job was cancelled) was
  // reported as such already; that it does not answer now is no news.
  std::vector<bool> lost_before(addresses_.size());
  for (size_t i = 0; i < addresses_.size(); ++i) {
    lost_before[i] =
        options_.client->HostHealth(addresses_[i]).state == HostState::kLost;
  }
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
    const bool lost = lost_before[i];
    if (!acks[i].ok() && !lost) {
      problems.push_back(absl::StrFormat("%s at %s: %s", name, addresses_[i],
                                         acks[i].status().message()));
    }
    absl::StatusOr<ExitInfo> exit =
        launcher_->WaitExit(name, absl::Seconds(10));
    if (exit.ok() && exit->exit_code != std::optional<int>(0) && !lost) {
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

namespace {

// Everything hosts a mesh starts keep on this machine (sockets and logs
// for Process; srun's logs, which carry hostd's stderr, for Slurm) lives
// in one private dir.
absl::StatusOr<std::string> MakeHostsDir() {
  char pattern[] = "/tmp/hostmesh-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create a temporary dir: ", strerror(errno)));
  }
  return std::string(pattern);
}

// One host for StartHosts: its launcher name, where it runs (for errors:
// "" for this machine, else "on node X"), and what to spawn.
struct HostToStart {
  std::string name;
  std::string where;
  SpawnOptions spawn;
};

// Starts `hosts` in parallel through `launcher` (each answers by
// registering back over a channel of kind `channel`), trusts each with
// the launcher's token and opens the client's stream to it. The mesh's
// Impl, or, if any host did not start, the error naming each that did
// not (what did start is shut down, after `prepare` ran on the Impl).
absl::StatusOr<std::unique_ptr<HostMesh::Impl>> StartHosts(
    HostMesh::Options options, std::unique_ptr<Launcher> launcher,
    std::string dir, std::vector<HostToStart> hosts,
    Launcher::ChannelKind channel,
    const std::function<void(HostMesh::Impl&)>& prepare) {
  const size_t num_hosts = hosts.size();
  std::vector<absl::StatusOr<Launcher::Child>> children(
      num_hosts, absl::UnknownError("not started"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < num_hosts; ++i) {
    threads.emplace_back([&, i] {
      children[i] = launcher->Launch(hosts[i].name, i, hosts[i].spawn,
                                     options.timeout, channel);
    });
  }
  for (auto& thread : threads) thread.join();
  std::vector<std::string> addresses;
  std::vector<std::string> names;
  std::vector<std::string> failures;
  ClientCredentials parent;
  parent.token = launcher->admin_token();
  for (size_t i = 0; i < num_hosts; ++i) {
    if (children[i].ok()) {
      options.client->SetHostCredentials(children[i]->address, parent);
      addresses.push_back(children[i]->address);
      names.push_back(children[i]->name);
    } else {
      failures.push_back(hosts[i].where.empty()
                             ? std::string(children[i].status().message())
                             : absl::StrCat(hosts[i].where, ": ",
                                            children[i].status().message()));
    }
  }
  auto impl = std::make_unique<HostMesh::Impl>(options, addresses, names,
                                               std::move(launcher), dir);
  if (prepare) prepare(*impl);
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
  return impl;
}

// hostd's flags for a host this client starts for itself, as its own
// user: it trusts the launcher's token (sent over the bootstrap channel,
// never on argv) and runs whatever command this client names.
std::vector<std::string> OwnHostArgs(const std::string& listen,
                                     const std::string& host_dir) {
  return {absl::StrCat("--listen=", listen),
          absl::StrCat("--state-dir=", host_dir, "/state"),
          absl::StrCat("--runtime-dir=", host_dir, "/run"),
          "--allow-any-command"};
}

absl::StatusOr<std::unique_ptr<Launcher>> NewLauncher(
    const std::string& dir, Launcher::Options launcher_options = {}) {
  launcher_options.log_root = dir + "/hosts";
  absl::StatusOr<std::unique_ptr<Launcher>> launcher =
      Launcher::Create(std::move(launcher_options));
  if (!launcher.ok()) {
    std::error_code error;
    std::filesystem::remove_all(dir, error);
  }
  return launcher;
}

}  // namespace

absl::StatusOr<HostMesh> HostMesh::Process(size_t num_hosts, Options options) {
  if (num_hosts == 0) {
    return absl::InvalidArgumentError("a host mesh needs at least one host");
  }
  ASSIGN_OR_RETURN(options, WithDefaults(std::move(options)));
  if (options.hostd_path.empty()) {
    ASSIGN_OR_RETURN(options.hostd_path, FindBinary("hostd"));
  }
  ASSIGN_OR_RETURN(std::string dir, MakeHostsDir());
  ASSIGN_OR_RETURN(std::unique_ptr<Launcher> launcher, NewLauncher(dir));
  std::vector<HostToStart> hosts(num_hosts);
  for (size_t i = 0; i < num_hosts; ++i) {
    hosts[i].name = absl::StrCat("host_", i);
    SpawnOptions& spawn = hosts[i].spawn;
    spawn.path = options.hostd_path;
    spawn.args =
        OwnHostArgs("127.0.0.1:0", absl::StrCat(dir, "/", hosts[i].name));
    spawn.args.insert(spawn.args.end(), options.hostd_args.begin(),
                      options.hostd_args.end());
  }
  ASSIGN_OR_RETURN(
      std::unique_ptr<Impl> impl,
      StartHosts(options, std::move(launcher), dir, std::move(hosts),
                 Launcher::ChannelKind::kInheritedFd, nullptr));
  return HostMesh(std::move(impl));
}

namespace {

// Tells `client` that the host at `address` (launcher name `name`, on Slurm
// node `node`) is gone: its srun ended, with `exit`. On the launcher's
// reaping thread.
void ReportSrunEnd(const std::weak_ptr<Client>& weak_client,
                   const std::string& node, const std::string& name,
                   const std::string& address, const ExitInfo& exit) {
  std::shared_ptr<Client> client = weak_client.lock();
  if (client == nullptr) return;
  client->HostGone(
      address,
      absl::StrFormat(
          "the srun of host %s (%s on Slurm node %s) %s: %s", address, name,
          node,
          exit.exit_code ? absl::StrCat("exited with code ", *exit.exit_code)
                         : absl::StrCat("was killed by signal ",
                                        exit.term_signal.value_or(0)),
          QuoteStderrLines(ExplainingStderrLines(exit.stderr_tail), 600)));
}

// Variables of a caller's own Slurm job or step (SLURM_*, SALLOC_*,
// SBATCH_*, SRUN_*, except SLURM_CONF): salloc and srun would take them as
// input and shape this mesh's job by them. Everything they need is passed
// explicitly.
bool IsSlurmJobInput(absl::string_view name) {
  if (name == "SLURM_CONF") return false;
  for (absl::string_view prefix : {"SLURM_", "SALLOC_", "SBATCH_", "SRUN_"}) {
    if (absl::StartsWith(name, prefix)) return true;
  }
  return false;
}

// This machine's short host name ("" if unknown).
std::string ShortHostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  std::string host = name;
  return host.substr(0, host.find('.'));
}

}  // namespace

absl::StatusOr<HostMesh> HostMesh::Slurm(SlurmOptions slurm, Options options) {
  if (slurm.nodes < 1 || slurm.tasks_per_node < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a Slurm host mesh needs at least one node and one task per node "
        "(asked: ",
        slurm.nodes, " nodes, ", slurm.tasks_per_node, " tasks per node)"));
  }
  ASSIGN_OR_RETURN(options, WithDefaults(std::move(options)));
  if (options.hostd_path.empty()) {
    ASSIGN_OR_RETURN(options.hostd_path, FindBinary("hostd"));
  }
  // Slurm's commands get this process's environment, without its own
  // job's, and `slurm.env`.
  std::vector<std::string> env = CurrentEnvironment(&IsSlurmJobInput);
  for (const auto& [key, value] : slurm.env) {
    std::erase_if(env, [&key = key](const std::string& entry) {
      return absl::StartsWith(entry, key + "=");
    });
    env.push_back(absl::StrCat(key, "=", value));
  }
  const SlurmCommands commands(env, options.timeout);

  // The allocation: given, this process's own, or made here (then held by
  // a salloc child until Shutdown, or until this process ends).
  std::string job = slurm.job_id;
  if (job.empty()) {
    if (const char* own = std::getenv("SLURM_JOB_ID")) job = own;
  }
  std::shared_ptr<SlurmAllocation> allocation;
  if (job.empty()) {
    SlurmJobRequest request;
    request.nodes = slurm.nodes;
    request.tasks_per_node = slurm.tasks_per_node;
    request.partition = slurm.partition;
    request.time_limit = slurm.time_limit;
    request.job_name = slurm.job_name;
    request.extra_args = slurm.salloc_args;
    ASSIGN_OR_RETURN(allocation, commands.Allocate(request));
    job = allocation->job();
    LOG(INFO) << "Slurm granted job " << job << " for the host mesh";
  }
  std::function<absl::Status()> release;
  if (allocation != nullptr) {
    release = [allocation] { return allocation->Release(); };
  }
  // An error, and what releasing the allocation said if that failed too.
  auto release_on_error = [&release, &job](absl::Status status) {
    if (!release) return status;
    absl::Status released = release();
    if (released.ok()) return status;
    LOG(ERROR) << "releasing Slurm job " << job << ": " << released;
    return absl::Status(
        status.code(),
        absl::StrCat(status.message(), "; and releasing Slurm job ", job,
                     " failed: ", released.message()));
  };
  absl::StatusOr<std::vector<std::string>> job_nodes = commands.Nodes(job);
  if (!job_nodes.ok()) return release_on_error(job_nodes.status());
  // A loopback address serves only clients on the host's own node.
  absl::StatusOr<HostPort> listen =
      ParseHostPort(slurm.listen, "SlurmOptions::listen",
                    /*allow_port_zero=*/true);
  if (!listen.ok()) return release_on_error(listen.status());
  const std::string here = ShortHostName();
  if (IsLoopbackHost(listen->host)) {
    for (const std::string& node : *job_nodes) {
      if (node != here) {
        return release_on_error(absl::InvalidArgumentError(absl::StrCat(
            "SlurmOptions::listen ", slurm.listen,
            " is loopback, which serves only clients on the host's own node, "
            "and Slurm node ",
            node, " is not this machine (", here,
            "): give an address this client can reach, with TLS in "
            "hostd_args")));
      }
    }
  }
  absl::StatusOr<std::string> dir = MakeHostsDir();
  if (!dir.ok()) return release_on_error(dir.status());

  // Each host's dir on its node is its own: made there, mode 0700, by a
  // mkdir that fails if the path exists (so nobody can have prepared it in
  // a shared /tmp, and no other mesh's state is re-adopted), named after
  // the job, this mesh's local dir (/tmp/hostmesh-XXXXXX, which holds
  // srun's logs) and the host.
  const std::string node_dir_prefix = absl::StrCat(
      slurm.node_dir, "/hostmesh-", job, "-",
      absl::StripPrefix(std::filesystem::path(*dir).filename().string(),
                        "hostmesh-"));
  // Host rank r runs on node r / tasks_per_node.
  std::vector<std::string> nodes;
  std::vector<HostToStart> hosts;
  for (const std::string& node : *job_nodes) {
    for (int task = 0; task < slurm.tasks_per_node; ++task) {
      HostToStart host;
      host.name = absl::StrCat("host_", hosts.size());
      host.where = absl::StrCat(host.name, " on Slurm node ", node);
      const std::string host_dir =
          absl::StrCat(node_dir_prefix, "-", host.name);
      std::vector<std::string> hostd = {
          "/bin/sh",
          "-c",
          "mkdir -m 0700 -- \"$0\" && exec \"$@\"",
          host_dir,
          options.hostd_path,
          "--parent=stdio"};
      for (std::string& arg : OwnHostArgs(slurm.listen, host_dir)) {
        hostd.push_back(std::move(arg));
      }
      // Under slurmstepd, whose cgroup is Slurm's: process groups only,
      // unless the caller says otherwise.
      if (std::none_of(options.hostd_args.begin(), options.hostd_args.end(),
                       [](const std::string& arg) {
                         return absl::StartsWith(arg, "--cgroup");
                       })) {
        hostd.push_back("--cgroup=none");
      }
      hostd.insert(hostd.end(), options.hostd_args.begin(),
                   options.hostd_args.end());
      absl::StatusOr<std::vector<std::string>> argv =
          commands.SrunArgv(job, node, hostd);
      if (!argv.ok()) {
        std::error_code error;
        std::filesystem::remove_all(*dir, error);
        return release_on_error(argv.status());
      }
      host.spawn.path = (*argv)[0];
      host.spawn.args.assign(argv->begin() + 1, argv->end());
      host.spawn.env = slurm.env;
      hosts.push_back(std::move(host));
      nodes.push_back(node);
    }
  }
  // A host's srun ending is that host's loss, at once.
  Launcher::Options launcher_options;
  launcher_options.on_exit = [client = std::weak_ptr<Client>(options.client),
                              nodes](const std::string& name,
                                     const std::string& address,
                                     const ExitInfo& exit) {
    size_t rank = 0;
    if (!absl::SimpleAtoi(absl::StripPrefix(name, "host_"), &rank)) {
      rank = nodes.size();  // not a host of ours: no node to name
    }
    ReportSrunEnd(client, rank < nodes.size() ? nodes[rank] : "?", name,
                  address, exit);
  };
  absl::StatusOr<std::unique_ptr<Launcher>> launcher =
      NewLauncher(*dir, std::move(launcher_options));
  if (!launcher.ok()) return release_on_error(launcher.status());
  // Released once with the mesh (or by StartHosts' shutdown on failure).
  ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl,
                   StartHosts(options, *std::move(launcher), *dir,
                              std::move(hosts), Launcher::ChannelKind::kStdio,
                              [&job, &nodes, &release](Impl& made) {
                                made.SetSlurm(job, nodes, std::move(release));
                              }));
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

const std::string& HostMesh::slurm_job() const { return impl_->job(); }

const std::vector<std::string>& HostMesh::nodes() const {
  return impl_->nodes();
}

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
