#include "lib/bootstrap/parent_channel.h"

#include <errno.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lib/bootstrap/registrar.h"
#include "lib/status.h"
#include "proto/bootstrap.grpc.pb.h"

namespace mesh {
namespace {

// A BootstrapInfo is a few hundred bytes; anything near this is not one.
constexpr size_t kMaxBootstrapInfoBytes = 64 * 1024;

// What the channel's thread shares with its owner. The thread holds a
// reference, so it may outlive the ParentChannel when that is destroyed from
// one of its own callbacks.
struct ChannelState {
  enum class Phase { kRegistering, kAccepted, kFailed };

  ChannelState(v1::BootstrapInfo info, ParentChannel::Callbacks callbacks)
      : info(std::move(info)), callbacks(std::move(callbacks)) {}

  static bool Answered(ChannelState* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) {
    return s->phase != Phase::kRegistering;
  }
  bool IsClosing() {
    absl::MutexLock l(&mu);
    return closing;
  }
  void Fail(absl::Status status) {
    absl::MutexLock l(&mu);
    phase = Phase::kFailed;
    result = std::move(status);
  }
  std::string Target() const {
    return absl::StrCat("unix:", info.registry_socket());
  }

  const v1::BootstrapInfo info;
  const ParentChannel::Callbacks callbacks;
  std::unique_ptr<v1::Bootstrap::Stub> stub;
  grpc::ClientContext context;  // TryCancel is thread-safe.

  absl::Mutex mu;
  Phase phase ABSL_GUARDED_BY(mu) = Phase::kRegistering;
  absl::Status result ABSL_GUARDED_BY(mu);
  // Set by the owner when it gives up (timeout) or closes the channel; no
  // callback starts after the thread sees it.
  bool closing ABSL_GUARDED_BY(mu) = false;
};

// The channel's thread: registers, then delivers parent events until the
// stream ends, then waits out the orphan timeout.
void RunChannel(std::shared_ptr<ChannelState> state,
                v1::RegisterRequest request) {
  std::unique_ptr<grpc::ClientReader<v1::ParentEvent>> reader =
      state->stub->Register(&state->context, request);
  v1::ParentEvent event;
  if (!reader->Read(&event)) {
    grpc::Status status = reader->Finish();
    state->Fail(status.ok() ? absl::UnavailableError(
                                  "parent closed the channel without accepting")
                            : FromGrpcStatus(status));
    return;
  }
  if (!event.has_accepted()) {
    state->context.TryCancel();
    reader->Finish();
    state->Fail(absl::InternalError(
        "parent's first event on the channel is not Accepted"));
    return;
  }
  bool gave_up;
  {
    absl::MutexLock l(&state->mu);
    gave_up = state->closing;
    if (!gave_up) state->phase = ChannelState::Phase::kAccepted;
  }
  if (gave_up) {  // The owner timed out meanwhile.
    state->context.TryCancel();
    reader->Finish();
    return;
  }

  while (reader->Read(&event)) {
    if (event.has_stop()) {
      if (state->IsClosing()) break;
      LOG(INFO) << "parent asked \"" << state->info.name()
                << "\" to stop: " << event.stop().reason();
      if (state->callbacks.on_stop) {
        state->callbacks.on_stop(event.stop().reason(),
                                 absl::Milliseconds(event.stop().grace_ms()));
      }
    } else {
      LOG(WARNING) << "ignoring unexpected parent event: "
                   << event.ShortDebugString();
    }
  }
  grpc::Status status = reader->Finish();
  if (state->IsClosing()) return;

  const absl::Duration orphan_timeout =
      absl::Milliseconds(state->info.orphan_timeout_ms());
  LOG(WARNING) << "channel of \"" << state->info.name() << "\" to parent at "
               << state->Target() << " broke (" << status.error_message()
               << "); orphaned in " << orphan_timeout;
  // TODO(bootstrap): let a restarted parent take this child back within the
  // orphan timeout (re-registration needs a credential other than the
  // one-time secret, e.g. one handed out in Accepted).
  {
    absl::MutexLock l(&state->mu);
    if (state->mu.AwaitWithTimeout(absl::Condition(&state->closing),
                                   orphan_timeout)) {
      return;
    }
  }
  LOG(WARNING) << "\"" << state->info.name() << "\" is orphaned";
  if (state->callbacks.on_orphaned) state->callbacks.on_orphaned();
}

}  // namespace

class ParentChannel::Impl {
 public:
  Impl(std::shared_ptr<ChannelState> state, std::thread thread)
      : state_(std::move(state)), thread_(std::move(thread)) {}

  // Waits for a running callback, unless called from one: then the thread
  // is detached and ends when that callback returns.
  ~Impl() {
    {
      absl::MutexLock l(&state_->mu);
      state_->closing = true;
    }
    state_->context.TryCancel();
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }

 private:
  std::shared_ptr<ChannelState> state_;
  std::thread thread_;
};

absl::StatusOr<v1::BootstrapInfo> ParentChannel::ReadFromFd(int fd) {
  std::string data;
  char buf[4096];
  absl::Status status;
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      status = absl::InvalidArgumentError(absl::StrCat(
          "cannot read bootstrap fd ", fd, ": ", std::strerror(errno)));
      break;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxBootstrapInfoBytes) {
      status = absl::InvalidArgumentError(
          absl::StrCat("bootstrap fd ", fd, " holds more than ",
                       kMaxBootstrapInfoBytes, " bytes"));
      break;
    }
  }
  close(fd);
  RETURN_IF_ERROR(status);
  v1::BootstrapInfo info;
  if (!info.ParseFromString(data)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bootstrap fd ", fd, " does not hold a BootstrapInfo"));
  }
  if (info.registry_socket().empty() || info.name().empty() ||
      info.secret().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bootstrap info from fd ", fd, " lacks socket, name or secret"));
  }
  return info;
}

absl::StatusOr<std::optional<v1::BootstrapInfo>> ParentChannel::ReadFromEnv() {
  const char* value = getenv(kBootstrapFdEnv);
  if (value == nullptr) return std::optional<v1::BootstrapInfo>();
  const std::string fd_string = value;
  unsetenv(kBootstrapFdEnv);
  int fd = -1;
  if (!absl::SimpleAtoi(fd_string, &fd) || fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        kBootstrapFdEnv, "=\"", fd_string, "\" is not an fd number"));
  }
  ASSIGN_OR_RETURN(v1::BootstrapInfo info, ReadFromFd(fd));
  return std::optional<v1::BootstrapInfo>(std::move(info));
}

absl::StatusOr<std::unique_ptr<ParentChannel>> ParentChannel::Register(
    const v1::BootstrapInfo& info, const std::string& address,
    Callbacks callbacks, absl::Duration timeout) {
  if (info.registry_socket().empty() || info.name().empty() ||
      info.secret().empty()) {
    return absl::InvalidArgumentError(
        "bootstrap info lacks socket, name or secret");
  }
  auto state = std::make_shared<ChannelState>(info, std::move(callbacks));
  // No deadline on the call: the stream lives as long as the child. The
  // wait for Accepted below is bounded by `timeout` instead.
  state->stub = v1::Bootstrap::NewStub(
      grpc::CreateChannel(state->Target(), grpc::InsecureChannelCredentials()));
  v1::RegisterRequest request;
  request.set_name(info.name());
  request.set_secret(info.secret());
  request.set_address(address);
  request.set_pid(static_cast<int32_t>(getpid()));
  std::thread thread(RunChannel, state, std::move(request));

  bool answered;
  absl::Status result;
  {
    absl::MutexLock l(&state->mu);
    answered = state->mu.AwaitWithTimeout(
        absl::Condition(&ChannelState::Answered, state.get()), timeout);
    if (!answered) {
      state->closing = true;
    } else if (state->phase == ChannelState::Phase::kFailed) {
      result = state->result;
    }
  }
  if (!answered) {
    state->context.TryCancel();
    thread.join();
    return absl::DeadlineExceededError(
        absl::StrCat("parent at ", state->Target(), " did not accept \"",
                     info.name(), "\" within ", absl::FormatDuration(timeout)));
  }
  if (!result.ok()) {
    thread.join();
    return Annotate(result,
                    absl::StrCat("register with parent at ", state->Target()));
  }
  return std::unique_ptr<ParentChannel>(new ParentChannel(
      std::make_unique<Impl>(std::move(state), std::move(thread))));
}

ParentChannel::ParentChannel(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

ParentChannel::~ParentChannel() = default;

}  // namespace mesh
