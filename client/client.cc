#include "hostmesh/client.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/internal/output_forwarder.h"
#include "client/internal/supervision.h"
#include "hostmesh/actor_mesh.h"
#include "lib/event/event_loop.h"
#include "lib/mailbox/mailbox.h"
#include "lib/names.h"
#include "lib/net/host_port.h"
#include "lib/relay/host_health.h"
#include "lib/relay/relay_stream.h"
#include "lib/status.h"
#include "lib/time/clock.h"

namespace mesh {
namespace internal {

void PortQueue::Push(v1::Envelope envelope) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(envelope));
}

void PortQueue::Fail(absl::Status error) {
  absl::MutexLock lock(&mu_);
  if (error_.ok()) error_ = std::move(error);
}

absl::StatusOr<v1::Envelope> PortQueue::Pop(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || !error_.ok();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no message arrived within ", absl::FormatDuration(timeout)));
  }
  if (queue_.empty()) return error_;
  v1::Envelope envelope = std::move(queue_.front());
  queue_.pop_front();
  return envelope;
}

absl::Status UnpackEnvelope(const v1::Envelope& envelope,
                            google::protobuf::Message* message) {
  return UnpackPayload(envelope, message);  // the mailbox's own rule
}

}  // namespace internal

namespace {

// "client:" and 16 random hex digits.
std::string NewClientId() {
  absl::BitGen random;
  return absl::StrCat(
      kClientMailboxPrefix,
      absl::Hex(absl::Uniform<uint64_t>(random), absl::kZeroPad16));
}

// How long a closing client lets its streams drain before cancelling them.
constexpr absl::Duration kDrain = absl::Seconds(1);

// Reconnecting to an unreachable host: at once, then after 0.1 s, doubling
// up to 1 s (each wait ±20%).
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(1);

absl::Duration Now() { return MonotonicClock::Real().Now(); }

}  // namespace

Client::Client()
    : id_(NewClientId()), supervised_(std::make_unique<SupervisionIndex>()) {
  mailbox_ = std::make_unique<Mailbox>(
      "", id_, [this](v1::Envelope& envelope) { return Route(envelope); });
}

absl::StatusOr<std::shared_ptr<Client>> Client::Create(Options options) {
  if (!options.credentials.has_value()) {
    absl::StatusOr<ClientCredentials> from_env = ClientCredentials::FromEnv();
    if (!from_env.ok()) return from_env.status();
    options.credentials = *std::move(from_env);
  }
  std::shared_ptr<Client> client(new Client());
  {
    absl::MutexLock lock(&client->mu_);
    client->credentials_ = *std::move(options.credentials);
  }
  if (options.unreachable_after <= absl::ZeroDuration() ||
      options.lost_after < absl::ZeroDuration() ||
      options.heartbeat_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Client::Options: unreachable_after and heartbeat_interval must be > "
        "0 and lost_after >= 0 (got ",
        absl::FormatDuration(options.unreachable_after), ", ",
        absl::FormatDuration(options.heartbeat_interval), " and ",
        absl::FormatDuration(options.lost_after), ")"));
  }
  client->StartHealth(options);
  if (options.forward_proc_output) {
    client->forwarder_ = std::make_unique<internal::OutputForwarder>(
        options.proc_output_buffer_bytes, options.proc_output_sink);
  }
  // A proc's word that an actor ended comes on a host's stream (OnFrame:
  // SupervisionFrom); the port only gives it an address.
  Client* raw = client.get();
  client->supervisor_port_ =
      client->mailbox_->OpenPort([raw](v1::Envelope envelope) {
        LOG_EVERY_N(WARNING, 100)
            << "client " << raw->id_ << ": a supervision event from "
            << QuoteForError(envelope.sender())
            << " that no host stream brought; dropped";
      });
  return client;
}

struct Client::HostRecord {
  HostRecord(const std::string& host, HostHealthTracker::Options options)
      : health(host, options) {}
  HostHealthTracker health;
  // This client's procs there (TrackProc) that have not ended, with their
  // pids.
  std::map<std::string, int32_t> procs;
  // When to try the next reconnect while unreachable, and the wait after
  // it (monotonic clock).
  absl::Duration next_attempt = absl::ZeroDuration();
  absl::Duration backoff = absl::ZeroDuration();
};

Client::HostRecord& Client::RecordLocked(const std::string& host) {
  std::unique_ptr<HostRecord>& record = hosts_[host];
  if (record == nullptr) {
    record = std::make_unique<HostRecord>(
        host,
        HostHealthTracker::Options{.unreachable_after = unreachable_after_,
                                   .lost_after = lost_after_});
  }
  return *record;
}

Client::HostRecord* Client::FindRecordLocked(const std::string& host) const {
  auto it = hosts_.find(host);
  return it != hosts_.end() ? it->second.get() : nullptr;
}

void Client::StartHealth(const Options& options) {
  unreachable_after_ = options.unreachable_after;
  lost_after_ = options.lost_after;
  cast_tree_fanout_ = options.cast_tree_fanout;
  on_host_event_ = options.on_host_event;
  heartbeat_interval_ = options.heartbeat_interval;
  on_unhandled_failure_ = options.on_unhandled_failure;
  health_tick_ =
      std::clamp(std::min(options.unreachable_after, options.lost_after) / 10,
                 absl::Milliseconds(5), absl::Milliseconds(200));
  health_loop_ = std::make_unique<EventLoop>();
  event_loop_ = std::make_unique<EventLoop>();
  absl::MutexLock lock(&streams_mu_);
  health_loop_->PostAfter(health_tick_, [this] { HealthTick(); });
  health_loop_->PostAfter(heartbeat_interval_, [this] { SendHeartbeats(); });
}

namespace {

v1::RelayFrame ClientHeartbeat(absl::Duration interval) {
  v1::RelayFrame frame;
  frame.mutable_heartbeat()->set_interval_ms(static_cast<uint32_t>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(interval), 1, 1 << 30)));
  return frame;
}

}  // namespace

void Client::SendHeartbeats() {
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) return;
  const v1::RelayFrame heartbeat = ClientHeartbeat(heartbeat_interval_);
  for (auto& [host, entry] : streams_) {
    if (entry.stream == nullptr) continue;
    // A full queue misses one: the host hears the frames queued instead.
    v1::RelayFrame frame = heartbeat;
    entry.stream->Write(frame).IgnoreError();
  }
  health_loop_->PostAfter(heartbeat_interval_, [this] { SendHeartbeats(); });
}

std::shared_ptr<MeshSupervision> Client::SuperviseMesh(
    const std::string& name, const std::vector<v1::ActorRef>& actors) {
  auto mesh = std::make_shared<MeshSupervision>(name, actors.size());
  supervised_->Add(mesh, actors);
  return mesh;
}

void Client::OnMeshEnd(const ActorMesh& mesh, std::weak_ptr<void> alive,
                       std::function<void(const absl::Status&)> fail) {
  if (mesh.supervision_ != nullptr) {
    mesh.supervision_->OnEnd(std::move(alive), std::move(fail));
  }
}

void Client::SupervisionFrom(const std::string& host,
                             const v1::Envelope& envelope) {
  absl::StatusOr<v1::SupervisionEvent> event =
      UnpackPayload<v1::SupervisionEvent>(envelope);
  // Hosts stamp the sender of what their procs send: only the actor's own
  // proc speaks for it.
  const std::string& sender = envelope.sender();
  const std::string proc = sender.substr(0, sender.find('@'));
  if (!event.ok() || event->actor().ref().proc() != proc) {
    LOG_EVERY_N(WARNING, 100)
        << "client " << id_ << ": dropped a supervision event from "
        << QuoteForError(sender) << " on host " << host << ": "
        << (event.ok() ? "it is about another proc's actor"
                       : event.status().ToString());
    return;
  }
  if (event->cause() == v1::SupervisionEvent::MESSAGE_REFUSED) {
    // Not an end: a full actor queue dropped a message of ours.
    LOG_EVERY_N(WARNING, 100) << "client " << id_ << ": " << event->message();
    return;
  }
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) return;
  event_loop_->Post([this, host, event = *std::move(event)]() mutable {
    ActorEnded(host, std::move(event));
  });
}

bool Client::StaleLoss(const std::string& host, const v1::MailboxLost& lost) {
  if (!lost.has_exit() || lost.exit().pid() == 0) return false;
  absl::MutexLock lock(&streams_mu_);
  HostRecord* record = FindRecordLocked(host);
  if (record == nullptr) return false;
  auto proc = record->procs.find(lost.mailbox());
  return proc != record->procs.end() && proc->second != 0 &&
         proc->second != lost.exit().pid();
}

void Client::ActorEnded(const std::string& host, v1::SupervisionEvent event) {
  event.set_cause(v1::SupervisionEvent::ACTOR_ENDED);
  event.set_failure(event.actor().status() == v1::FAILED);
  const v1::ActorRef& ref = event.actor().ref();
  std::vector<SupervisionIndex::Member> members =
      supervised_->Find(host, ref.proc(), event.actor().name());
  if (members.empty()) {
    // Not an actor of a mesh this client knows (made by hand): as it is.
    event.set_rank(event.actor().rank());
    Dispatch(nullptr, 0, std::move(event));
    return;
  }
  for (const SupervisionIndex::Member& member : members) {
    Dispatch(member.mesh, member.rank, event);
  }
}

void Client::ProcEnded(const std::string& host, const v1::MailboxLost& lost,
                       const absl::Status& why) {
  v1::SupervisionEvent event;
  event.set_cause(v1::SupervisionEvent::PROC_ENDED);
  // A proc nobody asked to stop failed its actors, whatever its exit code.
  event.set_failure(!lost.has_exit() || !lost.exit().requested());
  if (lost.has_exit()) {
    *event.mutable_proc_exit() = lost.exit();
  } else {
    event.mutable_proc_exit()->set_proc(lost.mailbox());
    event.mutable_proc_exit()->set_host(host);
    event.mutable_proc_exit()->set_reason(std::string(why.message()));
  }
  event.mutable_actor()->set_status(event.failure() ? v1::FAILED : v1::STOPPED);
  event.mutable_actor()->set_reason(event.proc_exit().reason());
  EndActorsOf(host, lost.mailbox(), event);
}

void Client::HostGone(const std::string& host, const std::string& reason) {
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) return;
  HostRecord* record = FindRecordLocked(host);
  if (record == nullptr) return;
  const HostState before = record->health.state();
  HealthChangedLocked(host, *record, before,
                      record->health.Gone(reason, Now()));
}

void Client::HostLost(const HostEvent& lost) {
  v1::SupervisionEvent event;
  event.set_cause(v1::SupervisionEvent::HOST_LOST);
  event.set_failure(true);
  event.set_host_reason(lost.reason);
  event.mutable_actor()->set_status(v1::FAILED);
  event.mutable_actor()->set_reason(
      absl::StrCat("host ", lost.host, " is lost: ", lost.reason));
  for (const std::string& proc : lost.procs) {
    EndActorsOf(lost.host, proc, event);
  }
}

void Client::EndActorsOf(const std::string& host, const std::string& proc,
                         const v1::SupervisionEvent& prototype) {
  for (const SupervisionIndex::Member& member : supervised_->Take(host, proc)) {
    v1::SupervisionEvent event = prototype;
    v1::ActorState* actor = event.mutable_actor();
    actor->set_name(member.ref.actor());
    actor->set_rank(member.ref.rank());
    *actor->mutable_ref() = member.ref;
    Dispatch(member.mesh, member.rank, std::move(event));
  }
}

void Client::Dispatch(const std::shared_ptr<MeshSupervision>& mesh, size_t rank,
                      v1::SupervisionEvent event) {
  if (mesh != nullptr) {
    if (!mesh->MarkEnded(rank)) return;
    event.set_mesh(mesh->name());
    event.set_rank(rank);
  }
  event.set_message(DescribeEvent(event));
  // What waits on the mesh fails first, handled or not, failure or not.
  if (mesh != nullptr) mesh->Ended(event);
  SupervisionHandler handler = mesh != nullptr ? mesh->handler() : nullptr;
  if (!handler) {
    absl::MutexLock lock(&mu_);
    handler = supervision_handler_;
  }
  if (handler) {
    handler(event);
    return;
  }
  if (!event.failure()) {
    VLOG(1) << "client " << id_ << ": " << event.message();
    return;
  }
  if (on_unhandled_failure_ == UnhandledFailure::kExitProcess) {
    LOG(ERROR) << "client " << id_ << ": unhandled failure, exiting "
               << "(ClientOptions::on_unhandled_failure): " << event.message();
    std::fflush(nullptr);
    std::_Exit(1);
  }
  if (mesh == nullptr) {
    LOG(ERROR) << "client " << id_ << ": " << event.message();
  } else if (mesh->Poison(event)) {
    LOG(ERROR) << "client " << id_ << ": actor mesh \"" << mesh->name()
               << "\" is poisoned (no handler took the failure; calls on it "
               << "now fail): " << event.message();
  } else {
    LOG(WARNING) << "client " << id_ << ": " << event.message();
  }
}

HostEvent Client::HostHealth(const std::string& host) const {
  HostEvent event;
  event.host = host;
  absl::MutexLock lock(&streams_mu_);
  const HostRecord* found = FindRecordLocked(host);
  if (found == nullptr) return event;
  const HostRecord& record = *found;
  event.state = record.health.state();
  event.reason = record.health.reason();
  event.incarnation = record.health.incarnation();
  for (const auto& [proc, pid] : record.procs) event.procs.push_back(proc);
  return event;
}

void Client::ForwardProcOutput(const std::string& host,
                               std::vector<std::string> procs) {
  if (forwarder_ != nullptr) {
    forwarder_->Forward(Channel(host), host, std::move(procs));
  }
}

void Client::FlushProcOutput(absl::Duration timeout) {
  if (forwarder_ != nullptr) forwarder_->Flush(timeout);
}

void Client::TrackProc(const std::string& host, const std::string& proc,
                       int32_t pid) {
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) return;
  RecordLocked(host).procs[proc] = pid;
}

void Client::HealthTick() {
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) return;
  const absl::Duration now = Now();
  for (auto& [host, owned] : hosts_) {
    HostRecord& record = *owned;
    auto current = streams_.find(host);
    RelayStream* stream =
        current != streams_.end() ? current->second.stream.get() : nullptr;
    std::optional<absl::Duration> last_frame;
    if (stream != nullptr) last_frame = stream->last_frame_at();
    const HostState before = record.health.state();
    HealthChangedLocked(host, record, before,
                        record.health.Check(now, last_frame));
    const HostState state = record.health.state();
    if (state == HostState::kLost && stream != nullptr &&
        stream->frames_read() == 0 &&
        now - stream->last_frame_at() >= record.health.silence_bound()) {
      // A stream to a lost host (opened by a send) that got no answer: what
      // waits on it fails now rather than at its deadline.
      stream->Cancel();
      continue;
    }
    if (state != HostState::kUnreachable) continue;
    if (before == HostState::kReachable && stream != nullptr) {
      // Silent: cut the stream, so that what waits on it fails now (its
      // on_done reports the host unreachable) and a new one can start.
      stream->Cancel();
      continue;
    }
    if (current == streams_.end() && now >= record.next_attempt) {
      // Dial now: gRPC's own reconnect backoff (up to 2 minutes) would
      // otherwise fail the stream at once without trying.
      grpc::experimental::ChannelResetConnectionBackoff(Channel(host).get());
      StreamLocked(host);
      thread_local absl::BitGen random;
      absl::Duration wait = record.backoff * absl::Uniform(random, 0.8, 1.2);
      record.next_attempt = now + wait;
      record.backoff = std::min(2 * record.backoff, kMaxBackoff);
    }
  }
  health_loop_->PostAfter(health_tick_, [this] { HealthTick(); });
}

void Client::HealthChangedLocked(const std::string& host, HostRecord& record,
                                 HostState previous,
                                 std::vector<HostHealthChange> changes) {
  for (HostHealthChange& change : changes) {
    HostEvent event;
    event.host = host;
    event.state = change.state;
    event.previous = previous;
    event.reason = std::move(change.reason);
    event.incarnation = change.incarnation;
    previous = change.state;
    switch (change.state) {
      case HostState::kUnreachable:
        // Reconnect at once, then back off.
        record.next_attempt = Now();
        record.backoff = kFirstBackoff;
        break;
      case HostState::kLost:
        for (const auto& [proc, pid] : record.procs) {
          event.procs.push_back(proc);
        }
        record.procs.clear();
        break;
      case HostState::kReachable:
      case HostState::kUnknown:
        break;
    }
    event_loop_->Post(
        [this, event = std::move(event)] { DeliverHostEvent(event); });
  }
}

void Client::DeliverHostEvent(const HostEvent& event) {
  if (event.state == HostState::kLost) {
    // Whatever still waits on the host or any proc of it fails now (a
    // host-wide report matches every watch on that host).
    mailbox_->ReportLost(event.host, "",
                         absl::UnavailableError(absl::StrCat(
                             "host ", event.host, " is lost: ", event.reason)));
    HostLost(event);
  }
  if (on_host_event_) {
    on_host_event_(event);
    return;
  }
  switch (event.state) {
    case HostState::kReachable:
      if (event.previous == HostState::kUnknown) {
        VLOG(1) << "client " << id_ << ": " << event.reason;
      } else {
        LOG(INFO) << "client " << id_ << ": " << event.reason;
      }
      break;
    case HostState::kUnreachable:
      LOG(WARNING) << "client " << id_ << ": host " << event.host
                   << " is unreachable: " << event.reason;
      break;
    case HostState::kLost:
      if (event.procs.empty()) {
        LOG(INFO) << "client " << id_ << ": host " << event.host
                  << " is lost: " << event.reason;
      } else {
        LOG(ERROR) << "client " << id_ << ": host " << event.host
                   << " is lost with procs " << absl::StrJoin(event.procs, ", ")
                   << ": " << event.reason;
      }
      break;
    case HostState::kUnknown:
      break;
  }
}

absl::StatusOr<std::shared_ptr<Client>> Client::Default() {
  static absl::Mutex mu(absl::kConstInit);
  // Never destroyed: it may be in use until the process exits.
  static std::shared_ptr<Client>* client = nullptr;
  absl::MutexLock lock(&mu);
  if (client == nullptr) {
    absl::StatusOr<std::shared_ptr<Client>> created = Create();
    if (!created.ok()) return created.status();
    client = new std::shared_ptr<Client>(*std::move(created));
  }
  return *client;
}

Client::~Client() {
  // Forwarded output first: its streams end (or are cancelled) and what
  // they brought is shown.
  forwarder_.reset();
  std::vector<std::unique_ptr<RelayStream>> streams;
  {
    absl::MutexLock lock(&streams_mu_);
    shutting_down_ = true;
    for (auto& [host, entry] : streams_) {
      streams.push_back(std::move(entry.stream));
    }
    streams_.clear();
  }
  // No more health ticks or host events (nothing posts once shutting_down_
  // is set).
  health_loop_.reset();
  event_loop_.reset();
  // No more sends, local deliveries or loss reports.
  mailbox_->Shutdown();
  // Let what is queued go out, then cut what is left; wait for every
  // stream (also those that ended on their own) to be gone: their callbacks
  // use this client.
  for (auto& stream : streams) stream->Close();
  {
    absl::MutexLock lock(&streams_mu_);
    auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
      return live_streams_ == 0;
    };
    if (!streams_mu_.AwaitWithTimeout(absl::Condition(&all_done), kDrain)) {
      for (auto& stream : streams) stream->Cancel();
      while (!streams_mu_.AwaitWithTimeout(absl::Condition(&all_done),
                                           absl::Seconds(10))) {
        LOG(WARNING) << "client " << id_ << " still waiting for "
                     << live_streams_ << " relay streams to end";
      }
    }
  }
  streams.clear();
  mailbox_.reset();
}

const std::string& Client::id() const { return id_; }

absl::Status Client::Connect(const std::string& host) {
  RETURN_IF_ERROR(ParseHostPort(host, "host address").status());
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) {
    return absl::FailedPreconditionError(
        absl::StrCat("client ", id_, " is shutting down"));
  }
  StreamLocked(host);
  return absl::OkStatus();
}

absl::Status Client::SendToHost(v1::Envelope envelope) {
  envelope.set_sender(mailbox_->sender());
  return Route(envelope);
}

absl::Status Client::Route(v1::Envelope& envelope) {
  const std::string& host = envelope.to_host();
  if (host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot send to mailbox \"", envelope.to_mailbox(),
        "\" without a host: a client reaches mailboxes only through hosts"));
  }
  absl::MutexLock lock(&streams_mu_);
  if (shutting_down_) {
    return absl::UnavailableError(
        absl::StrCat("client ", id_, " is shutting down"));
  }
  // An unreachable host fails sends at once; the health loop reconnects.
  if (HostRecord* record = FindRecordLocked(host);
      record != nullptr && record->health.state() == HostState::kUnreachable) {
    return absl::UnavailableError(absl::StrCat(
        "host ", host, " is unreachable: ", record->health.reason()));
  }
  // A stream that broke stays until its on_done (which fails what waited on
  // it) has run; sends meanwhile fail, and the next one reopens it.
  return StreamLocked(host)->Send(envelope);
}

RelayStream* Client::StreamLocked(const std::string& host) {
  HostStream& entry = streams_[host];
  if (entry.stream != nullptr) return entry.stream.get();
  const uint64_t serial = next_serial_++;
  RelayStream::Options options;
  options.sender = id_;
  options.peer = absl::StrCat("host ", host);
  ++live_streams_;
  // The callbacks hold this client by pointer: the destructor waits until
  // every stream's on_done has returned. An on_done that runs at once waits
  // for streams_mu_, so it finds this entry filled in.
  entry.serial = serial;
  v1::RelayFrame heartbeat = ClientHeartbeat(heartbeat_interval_);
  entry.stream = RelayStream::Start(
      Channel(host), std::move(options),
      [this, host, serial](v1::RelayFrame frame) {
        OnFrame(host, serial, std::move(frame));
      },
      [this, host, serial](const absl::Status& status,
                           std::vector<v1::RelayFrame> unsent) {
        OnStreamDone(host, serial, status, std::move(unsent));
      });
  // The host learns this client's heartbeat interval at once.
  entry.stream->Write(heartbeat).IgnoreError();
  return entry.stream.get();
}

void Client::OnFrame(const std::string& host, uint64_t serial,
                     v1::RelayFrame frame) {
  switch (frame.frame_case()) {
    case v1::RelayFrame::kEnvelope:
      if (frame.envelope().dest_case() == v1::Envelope::kPort &&
          frame.envelope().port() == supervisor_port_.port() &&
          frame.envelope().to_mailbox() == id_) {
        SupervisionFrom(host, frame.envelope());
        return;
      }
      if (frame.envelope().to_mailbox() != id_) {
        LOG(WARNING) << "client " << id_ << ": host " << host
                     << " sent an envelope for mailbox \""
                     << frame.envelope().to_mailbox() << "\"; dropped";
        return;
      }
      mailbox_->Deliver(std::move(*frame.mutable_envelope()));
      return;
    case v1::RelayFrame::kLost: {
      const v1::MailboxLost& lost = frame.lost();
      if (StaleLoss(host, lost)) {
        VLOG(1) << "client " << id_ << ": host " << host
                << " reports an earlier incarnation of proc " << lost.mailbox()
                << " ended (pid " << lost.exit().pid() << "); dropped";
        return;
      }
      absl::Status why = ProcEndStatus(
          lost, absl::StrCat(MailboxName(host, lost.mailbox()), " is gone"));
      // Keyed by the address this client knows the host by: pending calls
      // fail now, with the proc's cause.
      mailbox_->ReportLost(host, lost.mailbox(), why);
      absl::MutexLock lock(&streams_mu_);
      if (shutting_down_) return;
      if (HostRecord* record = FindRecordLocked(host); record != nullptr) {
        record->procs.erase(lost.mailbox());
      }
      event_loop_->Post(
          [this, host, lost, why] { ProcEnded(host, lost, why); });
      return;
    }
    case v1::RelayFrame::kHeartbeat: {
      const v1::Heartbeat& heartbeat = frame.heartbeat();
      absl::MutexLock lock(&streams_mu_);
      if (shutting_down_) return;
      // Only the current stream speaks for the host.
      auto current = streams_.find(host);
      if (current == streams_.end() || current->second.serial != serial) {
        return;
      }
      HostRecord& record = RecordLocked(host);
      const HostState before = record.health.state();
      HealthChangedLocked(
          host, record, before,
          heartbeat.closing()
              ? record.health.Closing(Now())
              : record.health.Heartbeat(
                    heartbeat.incarnation(),
                    absl::Milliseconds(heartbeat.interval_ms()), Now()));
      return;
    }
    case v1::RelayFrame::kBatch:  // unpacked by the stream: never here
    case v1::RelayFrame::FRAME_NOT_SET:
      return;
  }
}

void Client::OnStreamDone(const std::string& host, uint64_t serial,
                          const absl::Status& status,
                          std::vector<v1::RelayFrame> unsent) {
  // Heartbeats that did not go out are no loss.
  std::erase_if(unsent, [](const v1::RelayFrame& frame) {
    return !frame.has_envelope();
  });
  bool shutting_down;
  // A host whose health is tracked: the host event tells (and its reason
  // says why better than this stream's end).
  bool tracked = false;
  absl::Status lost = absl::UnavailableError(absl::StrCat(
      "relay stream to host ", host,
      " ended: ", status.ok() ? "the host closed it" : status.ToString()));
  {
    absl::MutexLock lock(&streams_mu_);
    shutting_down = shutting_down_;
    HostRecord* record = FindRecordLocked(host);
    auto current = streams_.find(host);
    if (!shutting_down && record != nullptr) {
      HostHealthTracker& health = record->health;
      const HostState before = health.state();
      if (current != streams_.end() && current->second.serial == serial) {
        HealthChangedLocked(host, *record, before,
                            health.StreamEnded(status, Now()));
      }
      if (health.state() == HostState::kUnreachable ||
          health.state() == HostState::kLost) {
        lost = absl::UnavailableError(
            absl::StrCat("host ", host, " is ", HostStateName(health.state()),
                         ": ", health.reason()));
      }
      tracked = health.state() != HostState::kUnknown;
    }
  }
  if (!shutting_down) {
    // A host going away is news, not trouble, unless messages went with it;
    // CANCELLED is an orderly end (the host shut down).
    if (unsent.empty() &&
        (tracked || status.code() == absl::StatusCode::kCancelled)) {
      VLOG(1) << "client " << id_ << ": " << lost.message();
    } else if (unsent.empty()) {
      LOG(INFO) << "client " << id_ << ": " << lost.message();
    } else {
      LOG(WARNING) << "client " << id_ << ": " << lost.message() << "; "
                   << unsent.size() << " frames not sent";
    }
    // Before the stream leaves the table: a send meanwhile fails on the
    // ended stream instead of opening a new one whose watchers this would
    // fail.
    mailbox_->ReportLost(host, "", lost);
    for (const v1::RelayFrame& frame : unsent) {
      // A cast's ranks are failed by the watchers above; one error reply
      // could only answer one of them.
      if (frame.has_envelope() && frame.envelope().targets_size() == 0) {
        mailbox_->ReplyWithError(frame.envelope(), lost);
      }
    }
  }
  absl::MutexLock lock(&streams_mu_);
  auto it = streams_.find(host);
  if (it != streams_.end() && it->second.serial == serial) {
    // Not dropped here: the handle may hold its channel's last reference
    // (SetHostCredentials drops the cached one), which must not go on a
    // gRPC thread; the health loop drops it.
    std::shared_ptr<RelayStream> ended = std::move(it->second.stream);
    streams_.erase(it);
    if (!shutting_down_ && health_loop_ != nullptr) {
      health_loop_->Post([ended = std::move(ended)] {});
    }
  }
  --live_streams_;
}

void Client::OnSupervisionEvent(
    std::function<void(const v1::SupervisionEvent&)> handler) {
  absl::MutexLock lock(&mu_);
  supervision_handler_ = std::move(handler);
}

std::shared_ptr<grpc::Channel> Client::Channel(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(address);
  if (it != channels_.end()) return it->second;
  auto credentials = host_credentials_.find(address);
  auto channel = NewHostChannel(address, credentials != host_credentials_.end()
                                             ? credentials->second
                                             : credentials_);
  channels_.emplace(address, channel);
  return channel;
}

void Client::SetHostCredentials(const std::string& address,
                                ClientCredentials credentials) {
  absl::MutexLock lock(&mu_);
  host_credentials_[address] = std::move(credentials);
  // A host that used this address before had other credentials.
  channels_.erase(address);
}

ClientCredentials Client::CredentialsFor(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = host_credentials_.find(address);
  return it != host_credentials_.end() ? it->second : credentials_;
}

void Client::OpenQueuePort(const std::shared_ptr<internal::PortQueue>& queue,
                           v1::PortRef* ref) {
  *ref = mailbox_->OpenPort(
      [queue](v1::Envelope envelope) { queue->Push(std::move(envelope)); });
}

v1::PortRef Client::OpenHandlerPort(std::function<void(v1::Envelope)> handler) {
  return mailbox_->OpenPort(std::move(handler));
}

void Client::ClosePort(uint64_t port) { mailbox_->ClosePort(port); }

}  // namespace mesh
