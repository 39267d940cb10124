#include "hostmesh/actor.h"

#include <glog/logging.h>

#include "lib/mailbox/mailbox.h"

namespace mesh {

void ActorContext::Send(const v1::PortRef& port,
                        const google::protobuf::Message& message) {
  mailbox_.Send(port.address(), EnvelopeToPort(port, message));
}

void ActorContext::Send(const v1::ActorRef& actor,
                        const google::protobuf::Message& message) {
  mailbox_.Send(actor.address(), EnvelopeToActor(actor.actor(), message));
}

absl::Status Actor::Init(const google::protobuf::Any& /*params*/,
                         ActorContext& /*ctx*/) {
  return absl::OkStatus();
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

bool ActorDispatcher::Handles(const Actor& actor,
                              const google::protobuf::Any& payload) {
  return actor.handlers_.contains(MessageName(payload.type_url()));
}

absl::StatusOr<std::unique_ptr<google::protobuf::Message>>
ActorDispatcher::Dispatch(Actor& actor, const google::protobuf::Any& payload,
                          ActorContext& ctx) {
  auto it = actor.handlers_.find(MessageName(payload.type_url()));
  if (it == actor.handlers_.end()) {
    return absl::NotFoundError("no handler for \"" + payload.type_url() + "\"");
  }
  return it->second(payload, ctx);
}

}  // namespace internal
}  // namespace mesh
