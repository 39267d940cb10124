#include "procd/builtin_actors.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "hostmesh/procd.h"
#include "lib/mailbox/mailbox.h"

namespace mesh {

EchoActor::EchoActor() {
  Handle<v1::GetActorId, v1::ActorIdReply>(
      [](const v1::GetActorId& request,
         ActorContext& ctx) -> absl::StatusOr<v1::ActorIdReply> {
        v1::ActorIdReply reply;
        *reply.mutable_id() = ctx.self();
        reply.set_rank(ctx.rank());
        reply.set_cast_rank(ctx.cast_rank());
        reply.set_pid(getpid());
        if (IsPortSet(request.port())) {
          ctx.Send(request.port(), reply);
        }
        return reply;
      });
  Handle<v1::Forward, v1::Forwarded>(
      [](const v1::Forward& forward,
         ActorContext& ctx) -> absl::StatusOr<v1::Forwarded> {
        v1::Envelope envelope;
        AddressTo(forward.to(), &envelope);
        *envelope.mutable_payload() = forward.payload();
        if (forward.has_reply_to()) {
          *envelope.mutable_reply_to() = forward.reply_to();
        }
        ctx.mailbox().Send(std::move(envelope));
        return v1::Forwarded();
      });
  Handle<v1::Echo, v1::Echo>(
      [](const v1::Echo& echo, ActorContext&) -> absl::StatusOr<v1::Echo> {
        return echo;
      });
  Handle<v1::Fail, v1::Fail>(
      [](const v1::Fail& fail, ActorContext&) -> absl::StatusOr<v1::Fail> {
        return absl::InternalError(
            absl::StrCat("asked to fail: ",
                         fail.why().empty() ? "no reason given" : fail.why()));
      });
  Handle<v1::Seq, v1::SeqReport>(
      [this](const v1::Seq& seq,
             ActorContext& ctx) -> absl::StatusOr<v1::SeqReport> {
        const std::string& sender =
            seq.sender().empty() ? ctx.sender() : seq.sender();
        auto& last = *report_.mutable_last_by_sender();
        auto it = last.find(sender);
        if (it != last.end() && seq.n() != it->second + 1) {
          report_.set_out_of_order(report_.out_of_order() + 1);
        }
        last[sender] = seq.n();
        report_.set_received(report_.received() + 1);
        return report_;
      });
  Handle<v1::GetSeqReport, v1::SeqReport>(
      [this](const v1::GetSeqReport&,
             ActorContext&) -> absl::StatusOr<v1::SeqReport> {
        return report_;
      });
}

CounterActor::CounterActor() {
  Handle<v1::Increment, v1::Count>(
      [this](const v1::Increment& increment,
             ActorContext& ctx) -> absl::StatusOr<v1::Count> {
        value_ += increment.by() == 0 ? 1 : increment.by();
        v1::Count count;
        count.set_value(value_);
        count.set_rank(ctx.rank());
        return count;
      });
  Handle<v1::GetCount, v1::Count>(
      [this](const v1::GetCount&,
             ActorContext& ctx) -> absl::StatusOr<v1::Count> {
        v1::Count count;
        count.set_value(value_);
        count.set_rank(ctx.rank());
        return count;
      });
}

void RegisterBuiltinActors(ActorRegistry& registry) {
  registry.Register<EchoActor>();
  registry.Register<CounterActor>();
}

}  // namespace mesh
