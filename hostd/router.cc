#include "hostd/router.h"

#include <glog/logging.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/mailbox/reduce.h"
#include "lib/names.h"
#include "lib/net/host_port.h"
#include "lib/status.h"

namespace mesh {

// A reduced cast in progress: the replies of this host's targets, folded
// into one reply to `reply_to`. Owned by the callbacks that can finish it
// (the port handler, the deadline, the proc watches); the first to finish it
// sends the result.
struct Router::Fold {
  // The answer of one host below (a tree cast): one Reduced for its
  // subtree's ranks, or its error.
  struct Child {
    std::string host;
    std::vector<uint64_t> ranks;
    std::optional<absl::StatusOr<v1::Reduced>> answer;
  };

  absl::Mutex mu;
  // This host's own targets.
  ReplyFold fold ABSL_GUARDED_BY(mu);
  // By the correlation of the copy forwarded to each.
  std::map<uint64_t, Child> children ABSL_GUARDED_BY(mu);
  size_t children_pending ABSL_GUARDED_BY(mu) = 0;
  bool finished ABSL_GUARDED_BY(mu) = false;
  v1::PortRef reply_to;
  uint64_t correlation = 0;
  uint64_t port = 0;
  EventLoop::TimerId timer = 0;
  std::vector<uint64_t> watches;
  // Cast ranks of each target proc.
  std::map<std::string, std::vector<uint64_t>> ranks_by_proc;

  Fold(v1::Reduce reduce, std::string field, std::vector<uint64_t> ranks)
      : fold(reduce, std::move(field), std::move(ranks)) {}

  // Every own target and every host below has answered.
  bool Complete() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return fold.done() && children_pending == 0;
  }
};

Router::Router(ProcChannels* procs, PeerSender peers, size_t max_envelope_bytes,
               OwnerLookup owner_of, EndLookup end_of)
    : procs_(procs),
      peers_(std::move(peers)),
      max_envelope_bytes_(max_envelope_bytes),
      owner_of_(std::move(owner_of)),
      end_of_(std::move(end_of)) {}

namespace {

bool IsRelaySender(const std::string& from) {
  return absl::StartsWith(from, kClientMailboxPrefix) ||
         absl::StartsWith(from, "host:");
}

// OK if `mailbox` names a proc (not a client, a host or the host itself).
absl::Status CheckProcMailbox(const std::string& mailbox,
                              absl::string_view what) {
  return ValidateName(mailbox, what);
}

bool IsCast(const v1::Envelope& envelope) {
  return envelope.targets_size() > 0 || envelope.forward_size() > 0;
}

// The cast ranks of `node`'s targets and of every host below it.
void SubtreeRanks(const v1::CastHost& node, std::vector<uint64_t>* ranks) {
  for (const v1::CastTarget& target : node.targets()) {
    ranks->push_back(target.cast_rank());
  }
  for (const v1::CastHost& child : node.children()) {
    SubtreeRanks(child, ranks);
  }
}

}  // namespace

absl::Status Router::CheckOwner(const std::string& proc,
                                const std::string& owner) const {
  if (!owner_of_) return absl::OkStatus();
  absl::StatusOr<std::string> owned_by = owner_of_(proc);
  if (!owned_by.ok() || *owned_by == owner) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("proc ", QuoteForError(proc), " is not owned by ", owner,
                   ": a client reaches only the procs it created"));
}

absl::Status Router::CheckSender(const v1::Envelope& envelope,
                                 const std::string& from, bool local,
                                 const std::optional<std::string>& owner,
                                 const std::string& self) const {
  if (!IsRelaySender(from)) return absl::OkStatus();  // a proc or the host
  // Each proc the envelope names is valid and, for a client, its own.
  auto check_proc = [&](const std::string& proc,
                        absl::string_view what) -> absl::Status {
    RETURN_IF_ERROR(CheckProcMailbox(proc, what));
    return owner.has_value() ? CheckOwner(proc, *owner) : absl::OkStatus();
  };
  if (!local) {
    return absl::InvalidArgumentError(absl::StrCat(
        "envelope.to_host \"", envelope.to_host().substr(0, 300),
        "\" is not this host: ", from,
        " reaches another host through its own stream to it (a host "
        "forwards only its own procs' messages)"));
  }
  const bool from_client = absl::StartsWith(from, kClientMailboxPrefix);
  if (IsCast(envelope)) {
    // The hosts below check their own targets.
    for (const v1::CastTarget& target : envelope.targets()) {
      RETURN_IF_ERROR(check_proc(target.proc(), "cast target proc"));
    }
  } else if (!from_client && envelope.to_mailbox().empty() &&
             envelope.dest_case() == v1::Envelope::kPort) {
    // A peer's answer to one of this host's tree folds.
  } else {
    RETURN_IF_ERROR(check_proc(envelope.to_mailbox(),
                               "envelope.to_mailbox (a proc of this host)"));
  }
  // A client's replies go to itself or a proc. A peer host forwards its
  // procs' messages, whose replies may go to a client's port, and tree
  // casts, whose answers go to its own folds (never to this host's).
  const bool reply_here =
      envelope.reply_to().host().empty() || envelope.reply_to().host() == self;
  if (envelope.has_reply_to() && envelope.reply_to().mailbox() != from &&
      (from_client || (envelope.reply_to().mailbox().empty() && reply_here))) {
    RETURN_IF_ERROR(check_proc(
        envelope.reply_to().mailbox(),
        absl::StrCat("envelope.reply_to.mailbox (", from, " or a proc)")));
  }
  return absl::OkStatus();
}

Router::~Router() { Shutdown(); }

void Router::Start(const std::string& host_address) {
  absl::MutexLock lock(&mu_);
  host_address_ = host_address;
  loop_ = std::make_unique<EventLoop>();
  mailbox_ = std::make_unique<Mailbox>(host_address, "",
                                       [this](v1::Envelope& envelope) {
                                         Route(std::move(envelope), "host");
                                         return absl::OkStatus();
                                       });
  started_ = true;
}

void Router::Shutdown() {
  std::unique_ptr<EventLoop> loop;
  std::unique_ptr<Mailbox> mailbox;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    streams_.clear();
    by_sender_.clear();
    loop = std::move(loop_);
  }
  // Pending folds are dropped with their timers; their senders' own
  // deadlines answer them.
  loop.reset();
  if (mailbox_ != nullptr) mailbox_->Shutdown();
}

bool Router::IsLocalHost(const std::string& host) const {
  return host.empty() || host == host_address_;
}

void Router::Route(v1::Envelope envelope, const std::string& from) {
  bool local;
  std::optional<std::string> owner;  // Of a client's stream (not an admin's).
  std::string self;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (!started_ || shut_down_) {
      VLOG(1) << "host is not routing; dropping an envelope from " << from;
      return;
    }
    local = IsLocalHost(envelope.to_host());
    self = host_address_;
    if (auto sender = by_sender_.find(from); sender != by_sender_.end()) {
      owner = streams_.at(sender->second).owner;
    }
    // Whose word a tree cast carries to the hosts below: a client's stream's
    // owner; a peer's own word for the client it forwards for; nobody's for
    // a proc (its host's peers trust its messages as they are).
    if (absl::StartsWith(from, kClientMailboxPrefix)) {
      if (envelope.forward_size() > 0) {
        envelope.set_forward_owner(owner.value_or(""));
      } else {
        envelope.clear_forward_owner();
      }
    } else if (absl::StartsWith(from, "host:")) {
      if (!envelope.forward_owner().empty()) owner = envelope.forward_owner();
    } else {
      envelope.clear_forward_owner();
    }
    // The sender is who sent it, not what it says: a proc's envelopes (and
    // this host's own) are stamped here, a client's with its relay id; a
    // peer host stamped its own procs' before forwarding them. An honest
    // sender already named itself so (its mailbox does): checked in place,
    // rewritten only if it lied.
    if (!IsRelaySender(from)) {
      if (!IsMailboxName(envelope.sender(), host_address_, from)) {
        envelope.set_sender(MailboxName(host_address_, from));
      }
    } else if (absl::StartsWith(from, kClientMailboxPrefix) &&
               envelope.sender() != from) {
      envelope.set_sender(from);
    }
  }
  if (absl::Status allowed = CheckSender(envelope, from, local, owner, self);
      !allowed.ok()) {
    if (envelope.has_reply_to() && envelope.reply_to().mailbox() != from) {
      // Its reply_to is someone else's: tell nobody but the log.
      LOG_EVERY_N(WARNING, 100)
          << "dropping an envelope from " << from << ": " << allowed.message();
      return;
    }
    Bounce(envelope, allowed);
    return;
  }
  if (!local) {
    const std::string host = envelope.to_host();
    absl::Status sent = ParseHostPort(host, "envelope.to_host").status();
    if (sent.ok() && !peers_) {
      sent = absl::UnimplementedError("this host forwards to no other host");
    }
    if (sent.ok()) sent = CheckRelaySize(envelope);
    if (sent.ok()) sent = peers_(host, envelope);
    if (!sent.ok()) {
      Bounce(envelope, Annotate(sent, absl::StrCat("to host ", host)));
    }
    return;
  }
  if (IsCast(envelope)) {
    if (absl::Status fits = CheckCast(envelope, self); !fits.ok()) {
      Bounce(envelope, fits);
      return;
    }
    if (envelope.reduce() != v1::REDUCE_NONE && envelope.has_reply_to()) {
      StartFold(envelope);
    } else {
      FanOut(envelope);
    }
    return;
  }
  RouteLocal(envelope);
}

absl::Status Router::CheckRelaySize(const v1::Envelope& envelope) const {
  const size_t bytes = envelope.ByteSizeLong();
  if (bytes <= max_envelope_bytes_) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat("the envelope is ", bytes,
                   " bytes, over the relay limit of ", max_envelope_bytes_));
}

absl::Status Router::CheckCast(const v1::Envelope& envelope,
                               const std::string& self) const {
  const size_t bytes = envelope.ByteSizeLong();
  size_t copies = static_cast<size_t>(envelope.targets_size());
  if (copies > static_cast<size_t>(kMaxCastTargets) ||
      copies * bytes > kMaxCastBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a cast to ", copies, " targets of ", bytes,
                     " bytes each is over this host's limit (", kMaxCastTargets,
                     " targets, ", kMaxCastBytes, " bytes of copies)"));
  }
  // The tree below: every host once (so no copy comes back around), not
  // this one, within the limits; each host checks its own subtree again.
  absl::flat_hash_set<std::string> hosts = {self};
  std::vector<std::pair<const v1::CastHost*, int>> pending;
  for (const v1::CastHost& child : envelope.forward()) {
    pending.emplace_back(&child, 1);
  }
  while (!pending.empty()) {
    auto [node, depth] = pending.back();
    pending.pop_back();
    if (depth > kMaxTreeDepth || hosts.size() > kMaxTreeHosts) {
      return absl::ResourceExhaustedError(
          absl::StrCat("a tree cast over this host's limit of ", kMaxTreeHosts,
                       " hosts, ", kMaxTreeDepth, " levels"));
    }
    RETURN_IF_ERROR(ParseHostPort(node->host(), "tree cast host").status());
    if (!hosts.insert(node->host()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("a tree cast names host ", QuoteForError(node->host()),
                       " twice (or names the host it is sent to)"));
    }
    for (const v1::CastHost& child : node->children()) {
      pending.emplace_back(&child, depth + 1);
    }
  }
  // Each host below gets one copy of the payload.
  if ((hosts.size() - 1) * bytes > kMaxCastBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a tree cast to ", hosts.size() - 1, " hosts of ", bytes,
                     " bytes each is over this host's limit of ", kMaxCastBytes,
                     " bytes of copies"));
  }
  return absl::OkStatus();
}

void Router::RouteLocal(v1::Envelope& envelope) {
  const std::string& mailbox = envelope.to_mailbox();
  if (mailbox.empty()) {
    mailbox_->Deliver(std::move(envelope));
    return;
  }
  if (absl::StartsWith(mailbox, kClientMailboxPrefix) ||
      absl::StartsWith(mailbox, "host:")) {
    absl::Status sent = CheckRelaySize(envelope);
    if (!sent.ok()) {
      Bounce(envelope, sent);
      return;
    }
    {
      // Under the lock, so a sink is never called after RemoveStream.
      absl::ReaderMutexLock lock(&mu_);
      auto it = by_sender_.find(mailbox);
      if (it == by_sender_.end()) {
        sent = absl::UnavailableError(absl::StrCat(
            mailbox, " has no relay stream to host ", host_address_));
      } else {
        v1::RelayFrame frame;
        *frame.mutable_envelope() = std::move(envelope);
        sent = streams_.at(it->second).sink(std::move(frame));
        if (!sent.ok()) envelope = std::move(*frame.mutable_envelope());
      }
    }
    if (!sent.ok()) Bounce(envelope, sent);
    return;
  }
  SendToProc(mailbox, envelope);
}

void Router::SendToProc(std::string proc, v1::Envelope& envelope) {
  absl::Status sent = procs_->SendEnvelope(proc, envelope);
  if (sent.ok()) return;
  // Only a channel that is gone (NOT_FOUND: closed; UNAVAILABLE: broken) is
  // worth waiting on; a full queue or an oversize frame is answered now.
  const bool gone = sent.code() == absl::StatusCode::kNotFound ||
                    sent.code() == absl::StatusCode::kUnavailable;
  // The proc ended: say how. It lives on the manager's books but its
  // channel is gone: it is dying, wait for its end. Asked outside held_mu_
  // (the manager takes its own lock).
  bool dying = false;
  if (gone && end_of_) {
    absl::StatusOr<std::optional<std::string>> end = end_of_(proc);
    if (end.ok() && end->has_value()) sent = absl::UnavailableError(**end);
    dying = end.ok() && !end->has_value();
  }
  const size_t bytes = envelope.ByteSizeLong();
  bool held = false;
  uint64_t start_timer = 0;
  {
    absl::MutexLock lock(&held_mu_);
    if (dying && num_held_ < kMaxHeld && held_bytes_ + bytes <= kMaxHeldBytes) {
      // Answered by ProcLost, or by the timer.
      auto [it, first] = held_.try_emplace(proc);
      if (first) {
        it->second.error = sent;
        it->second.generation = next_generation_++;
        start_timer = it->second.generation;
      }
      it->second.envelopes.push_back(std::move(envelope));
      it->second.bytes += bytes;
      ++num_held_;
      held_bytes_ += bytes;
      held = true;
    }
  }
  if (!held) {
    Bounce(envelope, sent);
    return;
  }
  if (start_timer != 0) {
    absl::ReaderMutexLock lock(&mu_);
    if (loop_ != nullptr) {
      loop_->PostAfter(kHoldFor, [this, proc, start_timer] {
        ReleaseHeld(proc, absl::Status(), start_timer);
      });
    }
  }
}

void Router::ReleaseHeld(const std::string& proc, const absl::Status& why,
                         uint64_t generation) {
  Held held;
  {
    absl::MutexLock lock(&held_mu_);
    auto it = held_.find(proc);
    if (it == held_.end()) return;
    if (generation != 0 && it->second.generation != generation) return;
    held = std::move(it->second);
    held_.erase(it);
    num_held_ -= held.envelopes.size();
    held_bytes_ -= held.bytes;
  }
  const absl::Status& answer = why.ok() ? held.error : why;
  for (const v1::Envelope& envelope : held.envelopes) Bounce(envelope, answer);
}

void Router::Forward(const v1::Envelope& envelope, const v1::PortRef* fold_port,
                     uint32_t timeout_ms) {
  for (const v1::CastHost& child : envelope.forward()) {
    v1::Envelope copy;
    copy.set_to_host(child.host());
    *copy.mutable_payload() = envelope.payload();
    copy.set_sender(envelope.sender());
    copy.set_correlation(child.correlation());
    *copy.mutable_targets() = child.targets();
    *copy.mutable_forward() = child.children();
    if (envelope.has_forward_owner()) {
      copy.set_forward_owner(envelope.forward_owner());
    }
    if (fold_port != nullptr) {
      *copy.mutable_reply_to() = *fold_port;
      copy.set_reduce(envelope.reduce());
      copy.set_reduce_field(envelope.reduce_field());
      copy.set_reduce_timeout_ms(timeout_ms);
    } else if (envelope.has_reply_to()) {
      *copy.mutable_reply_to() = envelope.reply_to();
    }
    absl::Status sent = absl::OkStatus();
    if (!peers_) {
      sent = absl::UnimplementedError("this host forwards to no other host");
    }
    if (sent.ok()) sent = CheckRelaySize(copy);
    if (sent.ok()) sent = peers_(child.host(), copy);
    if (!sent.ok()) {
      Bounce(copy, Annotate(sent, absl::StrCat("to host ", child.host())));
    }
  }
}

void Router::FanOut(v1::Envelope& envelope) {
  // Down the tree first: the hosts below have further to go.
  if (envelope.forward_size() > 0) {
    Forward(envelope, nullptr, 0);
    envelope.clear_forward();
    envelope.clear_forward_owner();
  }
  // The payload and reply are shared by every copy; only the address and
  // rank differ.
  google::protobuf::RepeatedPtrField<v1::CastTarget> targets;
  targets.Swap(envelope.mutable_targets());
  envelope.clear_reduce();
  envelope.clear_reduce_field();
  envelope.clear_reduce_timeout_ms();
  for (int i = 0; i < targets.size(); ++i) {
    const v1::CastTarget& target = targets[i];
    v1::Envelope copy;
    if (i + 1 == targets.size()) {
      copy = std::move(envelope);
    } else {
      copy = envelope;
    }
    copy.set_to_mailbox(target.proc());
    copy.set_actor(target.actor());
    copy.set_cast_rank(target.cast_rank());
    copy.set_correlation(target.cast_rank());
    RouteLocal(copy);
  }
}

void Router::StartFold(v1::Envelope& envelope) {
  if (absl::Status valid = ValidateReduce(envelope.reduce()); !valid.ok()) {
    Bounce(envelope, valid);
    return;
  }
  std::vector<uint64_t> ranks;
  for (const v1::CastTarget& target : envelope.targets()) {
    ranks.push_back(target.cast_rank());
  }
  auto fold = std::make_shared<Fold>(envelope.reduce(), envelope.reduce_field(),
                                     std::move(ranks));
  fold->reply_to = envelope.reply_to();
  fold->correlation = envelope.correlation();
  for (const v1::CastTarget& target : envelope.targets()) {
    fold->ranks_by_proc[target.proc()].push_back(target.cast_rank());
  }
  {
    absl::MutexLock lock(&fold->mu);
    for (const v1::CastHost& child : envelope.forward()) {
      Fold::Child& entry = fold->children[child.correlation()];
      if (!entry.host.empty()) {
        Bounce(envelope, absl::InvalidArgumentError(absl::StrCat(
                             "a tree cast gives hosts ", entry.host, " and ",
                             child.host(), " the same correlation")));
        return;
      }
      entry.host = child.host();
      SubtreeRanks(child, &entry.ranks);
    }
    fold->children_pending = fold->children.size();
  }
  const absl::Duration timeout =
      std::min(envelope.reduce_timeout_ms() == 0
                   ? absl::Seconds(30)
                   : absl::Milliseconds(envelope.reduce_timeout_ms()),
               kMaxFoldTimeout);
  if (folds_.fetch_add(1) >= kMaxFolds) {
    folds_.fetch_sub(1);
    Bounce(envelope, absl::ResourceExhaustedError(
                         absl::StrCat("this host has ", kMaxFolds,
                                      " reduced casts in flight, its limit")));
    return;
  }

  // Sends the fold once: when every rank is in, at the deadline, or when
  // the host shuts down.
  std::weak_ptr<Fold> weak = fold;
  auto finish = [this, weak](const absl::Status& missing) {
    std::shared_ptr<Fold> fold = weak.lock();
    if (fold == nullptr) return;
    std::vector<v1::Reduced> parts;
    std::vector<uint64_t> watches;
    EventLoop::TimerId timer;
    v1::Reduce reduce;
    {
      absl::MutexLock lock(&fold->mu);
      if (fold->finished) return;
      fold->finished = true;
      reduce = fold->fold.reduce();
      const std::string field = fold->fold.field();
      parts.push_back(std::move(fold->fold).Finish(missing));
      // A host below that gave no answer fails its whole subtree, named.
      for (auto& [correlation, child] : fold->children) {
        absl::StatusOr<v1::Reduced> answer =
            child.answer.has_value() ? *std::move(child.answer)
                                     : absl::StatusOr<v1::Reduced>(missing);
        if (answer.ok()) {
          parts.push_back(*std::move(answer));
          continue;
        }
        const absl::Status why = answer.status();
        const std::string& host = child.host;
        parts.push_back(FailedPart(
            reduce, field, child.ranks, [&why, &host](uint64_t rank) {
              return absl::Status(
                  why.code(), absl::StrCat("rank ", rank, " via host ", host,
                                           ": ", why.message()));
            }));
      }
      watches = fold->watches;
      timer = fold->timer;
    }
    folds_.fetch_sub(1);
    mailbox_->ClosePort(fold->port);
    for (uint64_t watch : watches) mailbox_->UnwatchPeer(watch);
    {
      absl::ReaderMutexLock lock(&mu_);
      if (loop_ != nullptr && timer != 0) loop_->Cancel(timer);
    }
    v1::Reduced reduced =
        parts.size() == 1 ? std::move(parts[0]) : Combine(reduce, parts);
    v1::Envelope reply = EnvelopeToPort(fold->reply_to, reduced);
    reply.set_correlation(fold->correlation);
    mailbox_->Send(std::move(reply));
  };
  // The fold lives as long as its port handler (until finished). Its own
  // targets answer with their cast rank; a host below with the correlation
  // it was sent.
  v1::PortRef port = mailbox_->OpenPort([fold, finish](v1::Envelope reply) {
    bool done;
    {
      absl::MutexLock lock(&fold->mu);
      if (fold->finished) return;
      auto child = fold->children.find(reply.correlation());
      if (child != fold->children.end()) {
        if (child->second.answer.has_value()) return;
        child->second.answer = UnpackPayload<v1::Reduced>(reply);
        --fold->children_pending;
      } else {
        fold->fold.Add(std::move(reply));
      }
      done = fold->Complete();
    }
    if (done) finish(absl::OkStatus());
  });
  fold->port = port.port();
  std::string host;
  {
    absl::ReaderMutexLock lock(&mu_);
    host = host_address_;
  }
  // Watches and the timer may fire (and finish the fold) before they are
  // recorded; whatever is recorded after that is undone here.
  for (const auto& [proc, proc_ranks] : fold->ranks_by_proc) {
    uint64_t watch = mailbox_->WatchPeer(
        host, proc,
        [fold, finish, ranks = proc_ranks](const absl::Status& why) {
          bool done = false;
          {
            absl::MutexLock lock(&fold->mu);
            if (fold->finished) return;
            for (uint64_t rank : ranks) fold->fold.Fail(rank, why);
            done = fold->Complete();
          }
          if (done) finish(absl::OkStatus());
        });
    absl::MutexLock lock(&fold->mu);
    if (fold->finished) {
      mailbox_->UnwatchPeer(watch);
    } else {
      fold->watches.push_back(watch);
    }
  }
  {
    absl::ReaderMutexLock lock(&mu_);
    if (loop_ != nullptr) {
      EventLoop::TimerId timer = loop_->PostAfter(timeout, [finish, timeout] {
        finish(absl::DeadlineExceededError(
            absl::StrCat("no reply within ", absl::FormatDuration(timeout))));
      });
      absl::MutexLock fold_lock(&fold->mu);
      if (fold->finished) {
        loop_->Cancel(timer);
      } else {
        fold->timer = timer;
      }
    }
  }
  // The hosts below answer a little sooner, so that what they have comes
  // in before this host's own deadline.
  if (envelope.forward_size() > 0) {
    const absl::Duration child_timeout = std::max(
        timeout - std::min(timeout / 10, kTreeMargin), absl::Milliseconds(1));
    Forward(envelope, &port,
            static_cast<uint32_t>(absl::ToInt64Milliseconds(child_timeout)));
    envelope.clear_forward();
    envelope.clear_forward_owner();
  }
  *envelope.mutable_reply_to() = port;
  envelope.clear_correlation();
  FanOut(envelope);
}

void Router::Bounce(const v1::Envelope& envelope, const absl::Status& why) {
  VLOG(1) << "host: cannot deliver an envelope from " << envelope.sender()
          << " to " << MailboxName(envelope.to_host(), envelope.to_mailbox())
          << ": " << why;
  Mailbox* mailbox;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (shut_down_) return;
    mailbox = mailbox_.get();
  }
  if (mailbox != nullptr) mailbox->ReplyWithError(envelope, why);
}

absl::StatusOr<uint64_t> Router::AddStream(const std::string& sender,
                                           StreamSink sink,
                                           std::optional<std::string> owner,
                                           std::function<void()> replaced) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::UnavailableError("hostd is shutting down");
  if (auto older = by_sender_.find(sender); older != by_sender_.end()) {
    auto stream = streams_.find(older->second);
    LOG(INFO) << "relay: a new stream of " << sender
              << " replaces its older one";
    if (stream != streams_.end()) {
      if (stream->second.replaced) stream->second.replaced();
      streams_.erase(stream);
    }
  }
  uint64_t id = next_stream_++;
  streams_[id] =
      Stream{sender, std::move(sink), std::move(owner), std::move(replaced)};
  by_sender_[sender] = id;
  return id;
}

void Router::RemoveStream(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  auto current = by_sender_.find(it->second.sender);
  if (current != by_sender_.end() && current->second == id) {
    by_sender_.erase(current);
  }
  streams_.erase(it);
}

v1::RelayFrame LostFrame(const v1::ProcExit& exit) {
  v1::RelayFrame frame;
  v1::MailboxLost* lost = frame.mutable_lost();
  lost->set_host(exit.host());
  lost->set_mailbox(exit.proc());
  *lost->mutable_reason() = ToErrorProto(absl::UnavailableError(exit.reason()));
  *lost->mutable_exit() = exit;
  return frame;
}

void Router::ProcLost(const v1::ProcExit& exit) {
  const std::string& proc = exit.proc();
  std::string owner;
  if (owner_of_) owner = owner_of_(proc).value_or("");
  const v1::RelayFrame frame = LostFrame(exit);
  Mailbox* mailbox;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (shut_down_) return;
    mailbox = mailbox_.get();
    for (auto& [id, stream] : streams_) {
      // A client hears only of its own procs.
      if (stream.owner.has_value() && *stream.owner != owner) continue;
      absl::Status sent = stream.sink(frame);
      if (!sent.ok())
        VLOG(1) << "lost notice to " << stream.sender << ": " << sent;
    }
  }
  if (mailbox != nullptr) {
    mailbox->ReportLost(mailbox->host(), proc,
                        absl::UnavailableError(exit.reason()));
  }
  ReleaseHeld(proc, absl::UnavailableError(exit.reason()));
}

size_t Router::HeldEnvelopes() {
  absl::MutexLock lock(&held_mu_);
  return num_held_;
}

}  // namespace mesh
