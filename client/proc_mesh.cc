#include "hostmesh/proc_mesh.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/internal/parallel.h"
#include "client/internal/stop_procs.h"
#include "lib/mailbox/mailbox.h"
#include "lib/names.h"
#include "lib/status.h"
#include "proto/host.grpc.pb.h"

namespace mesh {

ProcMesh::ProcMesh(std::shared_ptr<Client> client, std::string name,
                   Extent extent, std::vector<std::string> host_addresses,
                   std::vector<v1::ProcState> procs)
    : client_(std::move(client)),
      name_(std::move(name)),
      extent_(std::move(extent)),
      host_addresses_(std::move(host_addresses)),
      procs_(std::move(procs)) {
  // Reported to this client if their host is lost.
  if (client_ == nullptr) return;
  const size_t n = std::min(procs_.size(), host_addresses_.size());
  for (size_t rank = 0; rank < n; ++rank) {
    client_->TrackProc(host_addresses_[rank], procs_[rank].name(),
                       procs_[rank].pid());
  }
}

absl::StatusOr<ActorMesh> ProcMesh::Spawn(
    const std::string& name, const std::string& type,
    const google::protobuf::Message* params, absl::Duration timeout) const {
  absl::Status valid = ValidateName(name, "actor mesh name");
  if (!valid.ok()) return valid;
  const size_t n = procs_.size();
  // Actor verbs go to each proc's host (its Proc service), naming the proc.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<v1::CreateOrUpdateActorRequest> creates(n);
  for (size_t rank = 0; rank < n; ++rank) {
    channels.push_back(client_->Channel(host_addresses_[rank]));
    v1::CreateOrUpdateActorRequest& create = creates[rank];
    create.set_proc(procs_[rank].name());
    create.set_name(name);
    create.set_type(type);
    create.set_rank(rank);
    if (params != nullptr) create.mutable_params()->PackFrom(*params);
    *create.mutable_supervisor() = client_->supervisor_port();
  }
  auto created = internal::ParallelUnary<v1::Proc, v1::ActorState>(
      channels, creates, timeout,
      [](auto* stub, auto* context, auto* request, auto* response, auto done) {
        stub->async()->CreateOrUpdateActor(context, request, response,
                                           std::move(done));
      });
  // Then wait, server-side, until each created actor is RUNNING.
  std::vector<size_t> waiting;  // ranks whose create succeeded
  std::vector<std::shared_ptr<grpc::Channel>> wait_channels;
  std::vector<v1::WaitActorsRequest> waits;
  for (size_t rank = 0; rank < n; ++rank) {
    if (!created[rank].ok()) continue;
    waiting.push_back(rank);
    wait_channels.push_back(channels[rank]);
    v1::WaitActorsRequest& wait = waits.emplace_back();
    wait.set_proc(procs_[rank].name());
    wait.add_names(name);
    wait.set_min_status(v1::RUNNING);
    wait.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  }
  auto waited_created =
      internal::ParallelUnary<v1::Proc, v1::WaitActorsResponse>(
          wait_channels, waits, timeout + absl::Seconds(1),
          [](auto* stub, auto* context, auto* request, auto* response,
             auto done) {
            stub->async()->WaitActors(context, request, response,
                                      std::move(done));
          });
  std::vector<absl::StatusOr<v1::WaitActorsResponse>> waited(
      n, absl::UnknownError("not created"));
  for (size_t i = 0; i < waiting.size(); ++i) {
    waited[waiting[i]] = std::move(waited_created[i]);
  }

  std::vector<v1::ActorRef> refs(n);
  std::vector<std::string> failures;
  absl::StatusCode code = absl::StatusCode::kOk;
  for (size_t rank = 0; rank < n; ++rank) {
    const v1::ProcState& proc = procs_[rank];
    absl::Status status = created[rank].status();
    if (status.code() == absl::StatusCode::kUnavailable) {
      // Is the proc itself gone? Ask its host, which knows for sure.
      auto host = v1::Host::NewStub(client_->Channel(host_addresses_[rank]));
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(10));
      v1::GetProcStateRequest request;
      request.set_name(proc.name());
      v1::ProcState state;
      if (host->GetProcState(&context, request, &state).ok() &&
          state.status() >= v1::STOPPING) {
        status = absl::FailedPreconditionError(absl::StrFormat(
            "proc %s on host %s is %s: %s", proc.name(), host_addresses_[rank],
            v1::Status_Name(state.status()), state.reason()));
      }
    }
    if (status.ok() && !waited[rank].ok()) status = waited[rank].status();
    if (status.ok()) {
      const v1::ActorState& actor = waited[rank]->actors(0);
      if (actor.status() != v1::RUNNING) {
        status = absl::AbortedError(
            absl::StrFormat("actor is %s: %s", v1::Status_Name(actor.status()),
                            actor.reason()));
      } else {
        refs[rank] = actor.ref();
        // A proc names its host as the host advertises itself; fill in what
        // it left out from what this mesh knows.
        if (refs[rank].host().empty()) {
          refs[rank].set_host(host_addresses_[rank]);
        }
        if (refs[rank].proc().empty()) refs[rank].set_proc(proc.name());
        if (refs[rank].actor().empty()) refs[rank].set_actor(name);
      }
    }
    if (!status.ok()) {
      if (code == absl::StatusCode::kOk) code = status.code();
      failures.push_back(
          absl::StrFormat("rank %d (proc %s on host %s): %s", rank, proc.name(),
                          host_addresses_[rank], status.message()));
    }
  }
  if (!failures.empty()) {
    return absl::Status(
        code, absl::StrFormat("actor mesh \"%s\" of type \"%s\": %d of %d "
                              "ranks did not start: %s",
                              name, type, failures.size(), n,
                              absl::StrJoin(failures, "; ")));
  }
  return ActorMesh(client_, name, type, extent_, std::move(refs));
}

absl::Status ProcMesh::Stop(absl::Duration grace) const {
  std::vector<internal::ProcOnHost> procs;
  for (size_t rank = 0; rank < procs_.size(); ++rank) {
    procs.push_back({host_addresses_[rank], procs_[rank].name()});
  }
  return Annotate(
      internal::StopProcs(*client_, procs,
                          absl::StrCat("proc mesh ", name_, " stopped"), grace),
      absl::StrFormat("proc mesh \"%s\"", name_));
}

}  // namespace mesh
