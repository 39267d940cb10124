#include "hostd/host_service.h"

#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_format.h"
#include "lib/grpc_status.h"
#include "lib/names.h"
#include "lib/status.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;

constexpr absl::Duration kDefaultWait = absl::Seconds(30);

// Finishes `reactor` with `result`, copying the value into `response`.
template <typename T>
void FinishWith(grpc::ServerUnaryReactor* reactor, T* response,
                absl::StatusOr<T> result) {
  if (result.ok()) *response = *std::move(result);
  reactor->Finish(ToGrpcStatus(result.status()));
}

}  // namespace

HostService::HostService(ProcManager* manager, Info info,
                         std::function<void()> on_shutdown)
    : manager_(manager),
      info_(std::move(info)),
      started_at_(absl::Now()),
      on_shutdown_(std::move(on_shutdown)) {}

void HostService::set_address(const std::string& address) {
  absl::MutexLock lock(&mu_);
  info_.address = address;
}

grpc::ServerUnaryReactor* HostService::CreateOrUpdateProc(
    grpc::CallbackServerContext* context,
    const v1::CreateOrUpdateProcRequest* request, v1::ProcState* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  manager_->CreateOrUpdate(
      *request, [reactor, response](absl::StatusOr<v1::ProcState> r) {
        FinishWith(reactor, response, std::move(r));
      });
  return reactor;
}

grpc::ServerUnaryReactor* HostService::GetProcState(
    grpc::CallbackServerContext* context,
    const v1::GetProcStateRequest* request, v1::ProcState* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  FinishWith(reactor, response, manager_->GetState(request->name()));
  return reactor;
}

grpc::ServerUnaryReactor* HostService::StopProc(
    grpc::CallbackServerContext* context, const v1::StopProcRequest* request,
    v1::ProcState* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  manager_->Stop(*request,
                 [reactor, response](absl::StatusOr<v1::ProcState> r) {
                   FinishWith(reactor, response, std::move(r));
                 });
  return reactor;
}

grpc::ServerUnaryReactor* HostService::ListProcs(
    grpc::CallbackServerContext* context, const v1::ListProcsRequest* request,
    v1::ListProcsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  *response = manager_->List();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* HostService::WaitProcs(
    grpc::CallbackServerContext* context, const v1::WaitProcsRequest* request,
    v1::WaitProcsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  for (const std::string& name : request->names()) {
    absl::Status valid = ValidateName(name, "proc name");
    if (!valid.ok()) {
      reactor->Finish(ToGrpcStatus(valid));
      return reactor;
    }
  }
  absl::Duration timeout = request->timeout_ms() == 0
                               ? kDefaultWait
                               : absl::Milliseconds(request->timeout_ms());
  absl::Time deadline = absl::Now() + timeout;
  // Answer a little before the caller's own deadline, so it gets the states.
  absl::Time call_deadline =
      absl::FromChrono(context->deadline()) - absl::Milliseconds(50);
  if (call_deadline < deadline) deadline = call_deadline;
  manager_->Wait(*request, deadline,
                 [reactor, response](v1::WaitProcsResponse r) {
                   *response = std::move(r);
                   reactor->Finish(grpc::Status::OK);
                 });
  return reactor;
}

grpc::ServerUnaryReactor* HostService::ShutdownHost(
    grpc::CallbackServerContext* context,
    const v1::ShutdownHostRequest* request,
    v1::ShutdownHostResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Duration grace = absl::Milliseconds(request->grace_ms());
  if (request->grace_ms() == 0) {
    absl::MutexLock lock(&mu_);
    grace = info_.stop_grace;
  }
  std::string reason =
      request->reason().empty() ? "host shutdown requested" : request->reason();
  manager_->Shutdown(reason, grace,
                     [this, reactor, response](v1::ShutdownHostResponse r) {
                       *response = std::move(r);
                       reactor->Finish(grpc::Status::OK);
                       on_shutdown_();
                     });
  return reactor;
}

grpc::ServerUnaryReactor* HostService::GetHostInfo(
    grpc::CallbackServerContext* context, const v1::GetHostInfoRequest* request,
    v1::HostInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  absl::MutexLock lock(&mu_);
  response->set_address(info_.address);
  response->set_hostname(hostname);
  response->set_pid(getpid());
  *response->mutable_started_at() =
      TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(started_at_));
  response->set_num_procs(manager_->LiveProcs());
  response->set_max_procs(info_.max_procs);
  response->set_state_dir(info_.state_dir);
  response->set_version("0.1.0");
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace mesh
