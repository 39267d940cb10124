#include "hostmesh/actor.h"

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "lib/mailbox/mailbox.h"
#include "lib/names.h"

namespace mesh {

void ActorContext::Send(const v1::PortRef& port,
                        const google::protobuf::Message& message) {
  mailbox_.Send(EnvelopeToPort(port, message));
}

void ActorContext::Send(const v1::ActorRef& actor,
                        const google::protobuf::Message& message) {
  mailbox_.Send(EnvelopeToActor(actor, message));
}

absl::Status Actor::Init(const google::protobuf::Any& /*params*/,
                         ActorContext& /*ctx*/) {
  return absl::OkStatus();
}

void Actor::HandleErased(const std::string& type_name, ErasedParse parse,
                         ErasedRun run) {
  handlers_[type_name] = ErasedHandler{std::move(parse), std::move(run)};
}

void ActorRegistry::Register(std::string type_name, Factory factory) {
  if (factories_.count(type_name) > 0) {
    LOG(WARNING) << "actor type \"" << type_name << "\" registered again";
  }
  factories_[std::move(type_name)] = std::move(factory);
}

bool ActorRegistry::Contains(const std::string& type_name) const {
  return factories_.count(type_name) > 0;
}

std::unique_ptr<Actor> ActorRegistry::Create(
    const std::string& type_name) const {
  auto it = factories_.find(type_name);
  if (it == factories_.end()) return nullptr;
  return it->second();
}

std::vector<std::string> ActorRegistry::TypeNames() const {
  std::vector<std::string> names;
  names.reserve(factories_.size());
  for (const auto& [name, factory] : factories_) names.push_back(name);
  return names;
}

namespace internal {

std::string ActorDispatcher::MessageName(const std::string& type_url) {
  size_t slash = type_url.rfind('/');
  return slash == std::string::npos ? type_url : type_url.substr(slash + 1);
}

absl::StatusOr<std::unique_ptr<google::protobuf::Message>>
ActorDispatcher::Parse(const Actor& actor, const std::string& actor_name,
                       const std::string& actor_type,
                       const google::protobuf::Any& payload) {
  auto it = actor.handlers_.find(MessageName(payload.type_url()));
  if (it == actor.handlers_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("actor \"", actor_name, "\" of type \"", actor_type,
                     "\" has no handler for message type ",
                     QuoteForError(payload.type_url())));
  }
  std::unique_ptr<google::protobuf::Message> request;
  if (!it->second.parse(payload, &request)) {
    return absl::InvalidArgumentError(
        absl::StrCat("actor \"", actor_name, "\": the payload is not a valid ",
                     QuoteForError(MessageName(payload.type_url()))));
  }
  return request;
}

absl::StatusOr<std::unique_ptr<google::protobuf::Message>> ActorDispatcher::Run(
    Actor& actor, const google::protobuf::Message& request, ActorContext& ctx) {
  auto it = actor.handlers_.find(request.GetDescriptor()->full_name());
  if (it == actor.handlers_.end()) {
    return absl::InternalError(
        absl::StrCat("no handler for ", request.GetDescriptor()->full_name()));
  }
  return it->second.run(request, ctx);
}

}  // namespace internal
}  // namespace mesh
