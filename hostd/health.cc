#include "hostd/health.h"

#include <glog/logging.h>
#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/grpc_status.h"

namespace mesh {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch call: at most one write in flight; the latest state is written
// once the one before it is done (states in between are skipped, as the
// health protocol allows), then the call ends if asked to.
class HealthService::Watcher final
    : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* service, std::string name, ServingStatus status)
      : service_(service), name_(std::move(name)), wanted_(status) {}

  // The service watched ("" : the whole host).
  const std::string& name() const { return name_; }

  // Sends `status` unless it was the last one sent; `end`: then finishes.
  // Under the service's mutex (which keeps this watcher alive: OnDone waits
  // for it); gRPC runs no reaction inline in StartWrite or Finish.
  void Update(ServingStatus status, bool end) {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      wanted_ = status;
      end_ = end_ || end;
      step = NextLocked();
    }
    Run(step);
  }

  void OnWriteDone(bool ok) override {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      // The client is gone (or the server is stopping): nothing more to say.
      if (!ok) gone_ = true;
      step = NextLocked();
    }
    Run(step);
  }

  void OnCancel() override {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      gone_ = true;
      step = NextLocked();
    }
    Run(step);
  }

  void OnDone() override {
    service_->Forget(this);
    delete this;
  }

 private:
  enum class Step { kNone, kWrite, kFinish };

  Step NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finishing_) return Step::kNone;
    if (!gone_ && (!sent_.has_value() || *sent_ != wanted_)) {
      // Only this step touches response_ until OnWriteDone.
      response_.set_status(wanted_);
      sent_ = wanted_;
      writing_ = true;
      return Step::kWrite;
    }
    if (end_ || gone_) {
      finishing_ = true;
      return Step::kFinish;
    }
    return Step::kNone;
  }

  void Run(Step step) {
    if (step == Step::kWrite) StartWrite(&response_);
    if (step == Step::kFinish) Finish(grpc::Status::OK);
  }

  HealthService* const service_;
  const std::string name_;
  absl::Mutex mu_;
  ServingStatus wanted_ ABSL_GUARDED_BY(mu_);
  std::optional<ServingStatus> sent_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool end_ ABSL_GUARDED_BY(mu_) = false;
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  HealthCheckResponse response_;
};

namespace {

// A Watch refused before it starts.
class RefusedWatch final
    : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  explicit RefusedWatch(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

HealthService::HealthService(const ServerAuth* auth,
                             std::vector<std::string> services)
    : auth_(auth), services_(services.begin(), services.end()) {}

HealthService::~HealthService() {
  absl::MutexLock lock(&mu_);
  LOG_IF(ERROR, !watchers_.empty())
      << watchers_.size() << " health watches outlive the health service";
}

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || serving_ == serving) return;
  serving_ = serving;
  LOG(INFO) << "health: " << (serving ? "SERVING" : "NOT_SERVING");
  NotifyLocked(/*end=*/false);
}

void HealthService::SetDraining(bool draining) {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || draining_ == draining) return;
  draining_ = draining;
  LOG(INFO) << "health: "
            << (draining   ? "NOT_SERVING (drained)"
                : serving_ ? "SERVING (undrained)"
                           : "undrained");
  NotifyLocked(/*end=*/false);
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  shut_down_ = true;
  LOG_IF(INFO, serving_) << "health: NOT_SERVING (shutting down)";
  serving_ = false;
  NotifyLocked(/*end=*/true);
}

HealthService::ServingStatus HealthService::StatusOfLocked(
    const std::string& service) const {
  if (!service.empty() && services_.count(service) == 0) {
    return HealthCheckResponse::SERVICE_UNKNOWN;
  }
  return serving_ && !draining_ ? HealthCheckResponse::SERVING
                                : HealthCheckResponse::NOT_SERVING;
}

void HealthService::NotifyLocked(bool end) {
  for (Watcher* watcher : watchers_) {
    watcher->Update(StatusOfLocked(watcher->name()), end);
  }
}

void HealthService::Forget(Watcher* watcher) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(watcher);
}

grpc::ServerUnaryReactor* HealthService::Check(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request,
    HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
  if (!caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  ServingStatus status;
  {
    absl::MutexLock lock(&mu_);
    status = StatusOfLocked(request->service());
  }
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("this host serves no service \"", request->service(),
                     "\"; it answers for \"\" (the whole host) and ",
                     absl::StrJoin(services_, ", "))));
    return reactor;
  }
  response->set_status(status);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
  if (!caller.ok()) return new RefusedWatch(ToGrpcStatus(caller.status()));
  absl::MutexLock lock(&mu_);
  if (watchers_.size() >= kMaxWatches) {
    return new RefusedWatch(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("this host has ", watchers_.size(),
                     " open health watches, its limit; use Check")));
  }
  const ServingStatus status = StatusOfLocked(request->service());
  // A name this host does not serve stays SERVICE_UNKNOWN (the protocol's
  // answer; the names never change while hostd runs) until the end.
  auto* watcher = new Watcher(this, request->service(), status);
  watchers_.insert(watcher);
  watcher->Update(status, /*end=*/shut_down_);
  return watcher;
}

namespace {

class ReflectionPluginOption final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->push_back(
        std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
  }
};

constexpr char kReflectionPrefix[] = "/grpc.reflection.";

class ReflectionGate final : public grpc::experimental::Interceptor {
 public:
  ReflectionGate(const ServerAuth* auth,
                 grpc::experimental::ServerRpcInfo* info)
      : auth_(auth), info_(info) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                POST_RECV_INITIAL_METADATA)) {
      grpc::ServerContextBase* context = info_->server_context();
      absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
      if (!caller.ok()) {
        LOG(WARNING) << info_->method()
                     << " refused: " << caller.status().message();
        // Ends the call with this status at once (trailers to the client);
        // the reflection service's first Read then fails and it answers
        // nothing.
        const std::string why(caller.status().message());
        grpc_call_cancel_with_status(context->c_call(),
                                     GRPC_STATUS_UNAUTHENTICATED, why.c_str(),
                                     nullptr);
      }
    }
    methods->Proceed();
  }

 private:
  const ServerAuth* const auth_;
  grpc::experimental::ServerRpcInfo* const info_;
};

class ReflectionGateFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ReflectionGateFactory(const ServerAuth* auth) : auth_(auth) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (info->method() == nullptr ||
        !absl::StartsWith(info->method(), kReflectionPrefix)) {
      return nullptr;
    }
    return new ReflectionGate(auth_, info);
  }

 private:
  const ServerAuth* const auth_;
};

}  // namespace

std::unique_ptr<grpc::ServerBuilderOption> ReflectionOption() {
  return std::make_unique<ReflectionPluginOption>();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewReflectionGate(const ServerAuth* auth) {
  return std::make_unique<ReflectionGateFactory>(auth);
}

}  // namespace mesh
