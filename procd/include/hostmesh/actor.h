// The actor API: what a user writes to put their own actor types into a proc.
//
//   class Greeter : public mesh::Actor {
//    public:
//     static constexpr char kTypeName[] = "demo.greeter";
//     Greeter() {
//       Handle<demo::Hello, demo::Greeting>(
//           [this](const demo::Hello& hello, mesh::ActorContext& ctx)
//               -> absl::StatusOr<demo::Greeting> { ... });
//     }
//   };
//
//   int main(int argc, char** argv) {  // the user's own procd
//     mesh::ActorRegistry registry;
//     mesh::RegisterBuiltinActors(registry);
//     registry.Register<Greeter>();
//     return mesh::ProcdMain(argc, argv, std::move(registry));
//   }
//
// (RegisterBuiltinActors and ProcdMain are in "hostmesh/procd.h".)
//
// A proc runs each actor's handlers one message at a time, in arrival order
// (messages from one sender keep the order they were sent in), on a thread of
// its own, so an actor's state needs no locking. A handler may take its time
// but should not wait forever: stopping the actor waits for it to return.
#ifndef HOSTMESH_PROCD_INCLUDE_HOSTMESH_ACTOR_H_
#define HOSTMESH_PROCD_INCLUDE_HOSTMESH_ACTOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/message.h"
#include "proto/mailbox.pb.h"

namespace mesh {

class Mailbox;
class Actor;

namespace internal {
// How the proc runtime calls into an Actor; not for users.
class ActorDispatcher;
}  // namespace internal

// What a handler (or Init) knows about the message it handles and how it
// sends messages. Built by the proc runtime for each call and valid only
// during it. Not thread-safe (used on the actor's thread).
class ActorContext {
 public:
  // `mailbox`, `self` and `sender` must outlive the context.
  ActorContext(Mailbox& mailbox, const v1::ActorRef& self, uint64_t cast_rank,
               const std::string& sender)
      : mailbox_(mailbox),
        self_(self),
        cast_rank_(cast_rank),
        sender_(sender) {}
  ActorContext(const ActorContext&) = delete;
  ActorContext& operator=(const ActorContext&) = delete;

  // This actor: its host (the hostd through which its proc is reached), proc
  // and actor names, and its rank in the mesh it was spawned in.
  const v1::ActorRef& self() const { return self_; }
  uint64_t rank() const { return self_.rank(); }
  // The receiver's rank within the view the message was cast to.
  uint64_t cast_rank() const { return cast_rank_; }
  // The sending mailbox ("<id>@<host>", or "<id>" for a client), for
  // diagnostics; empty in Init.
  const std::string& sender() const { return sender_; }

  // Sends `message` to a port or an actor anywhere (fire and forget; see
  // Mailbox::Send for ordering).
  void Send(const v1::PortRef& port, const google::protobuf::Message& message);
  void Send(const v1::ActorRef& actor,
            const google::protobuf::Message& message);

  // The proc's mailbox, for anything the two Sends do not cover.
  Mailbox& mailbox() const { return mailbox_; }

 private:
  Mailbox& mailbox_;
  const v1::ActorRef& self_;
  const uint64_t cast_rank_;
  const std::string& sender_;
};

// Base class of actor types. An actor declares its handlers (usually in its
// constructor) with Handle<Req, Reply>. The runtime owns each instance and
// calls it from one thread at a time, so subclasses need no locking.
class Actor {
 public:
  Actor() = default;
  virtual ~Actor() = default;
  Actor(const Actor&) = delete;
  Actor& operator=(const Actor&) = delete;

  // Called once, before any message, with CreateOrUpdateActorRequest.params.
  // An error makes the actor FAILED. Default: OK.
  virtual absl::Status Init(const google::protobuf::Any& params,
                            ActorContext& ctx);

 protected:
  // Declares the handler for protobuf request type Req (dispatched on the
  // payload's type URL; a later Handle for the same Req replaces it). Its
  // result goes to the envelope's reply_to port if set (with the
  // correlation copied); an error result is sent as Envelope.error, and it
  // makes the actor FAILED (see hostmesh/procd.h for supervision).
  template <typename Req, typename Reply>
  void Handle(
      std::function<absl::StatusOr<Reply>(const Req&, ActorContext&)> handler);

  // A handler with its request type erased, for actors whose message types
  // are known only at run time (the Python actors of //python:procd_py);
  // Handle<Req, Reply> makes one of these. `parse` turns a payload into the
  // request, a message whose descriptor's full name is `type_name` (false if
  // the payload is not one: the sender's mistake, refused with
  // INVALID_ARGUMENT without failing the actor); `run` handles it, as a
  // Handle's handler does (its reply, or an error that fails the actor).
  // Both run on the actor's thread, `run` right after its `parse`.
  using ErasedParse =
      std::function<bool(const google::protobuf::Any&,
                         std::unique_ptr<google::protobuf::Message>*)>;
  using ErasedRun =
      std::function<absl::StatusOr<std::unique_ptr<google::protobuf::Message>>(
          const google::protobuf::Message&, ActorContext&)>;
  // Declares the handler for messages of full name `type_name` (e.g.
  // "mesh.v1.Echo"); a later one for the same name replaces it. May be
  // called from Init too (before any message).
  void HandleErased(const std::string& type_name, ErasedParse parse,
                    ErasedRun run);

 private:
  friend class internal::ActorDispatcher;
  struct ErasedHandler {
    ErasedParse parse;
    ErasedRun run;
  };
  // By the request's full message name, e.g. "mesh.v1.Echo".
  absl::flat_hash_map<std::string, ErasedHandler> handlers_;
};

// Actor type name -> factory. Filled before the proc starts, then read-only:
// Register is not thread-safe; the const methods are.
class ActorRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Actor>()>;

  // Registers A (default-constructible) under A::kTypeName, a
  // `static constexpr char kTypeName[]`.
  template <typename A>
  void Register() {
    Register(A::kTypeName, [] { return std::unique_ptr<Actor>(new A()); });
  }
  // A later registration of the same name replaces the earlier one.
  void Register(std::string type_name, Factory factory);

  bool Contains(const std::string& type_name) const;
  // A new actor of `type_name`; nullptr if it is not registered.
  std::unique_ptr<Actor> Create(const std::string& type_name) const;
  // Every registered name, sorted.
  std::vector<std::string> TypeNames() const;

 private:
  std::map<std::string, Factory> factories_;
};

namespace internal {

// How the proc runtime calls an actor's handlers.
class ActorDispatcher {
 public:
  // The message name in a type URL ("type.googleapis.com/mesh.v1.Echo" ->
  // "mesh.v1.Echo").
  static std::string MessageName(const std::string& type_url);
  // The request in `payload`, for the handler that takes it:
  // INVALID_ARGUMENT naming the type if the actor has no handler for it or
  // the payload does not parse. Such a message is the sender's mistake.
  static absl::StatusOr<std::unique_ptr<google::protobuf::Message>> Parse(
      const Actor& actor, const std::string& actor_name,
      const std::string& actor_type, const google::protobuf::Any& payload);
  // Runs the handler for a request returned by Parse.
  static absl::StatusOr<std::unique_ptr<google::protobuf::Message>> Run(
      Actor& actor, const google::protobuf::Message& request,
      ActorContext& ctx);
};

}  // namespace internal

template <typename Req, typename Reply>
void Actor::Handle(
    std::function<absl::StatusOr<Reply>(const Req&, ActorContext&)> handler) {
  ErasedHandler erased;
  erased.parse = [](const google::protobuf::Any& payload,
                    std::unique_ptr<google::protobuf::Message>* request) {
    auto typed = std::make_unique<Req>();
    if (!payload.UnpackTo(typed.get())) return false;
    *request = std::move(typed);
    return true;
  };
  erased.run = [handler = std::move(handler)](
                   const google::protobuf::Message& request, ActorContext& ctx)
      -> absl::StatusOr<std::unique_ptr<google::protobuf::Message>> {
    absl::StatusOr<Reply> reply =
        handler(static_cast<const Req&>(request), ctx);
    if (!reply.ok()) return reply.status();
    return std::unique_ptr<google::protobuf::Message>(
        new Reply(std::move(reply).value()));
  };
  HandleErased(Req::descriptor()->full_name(), std::move(erased.parse),
               std::move(erased.run));
}

}  // namespace mesh

#endif  // HOSTMESH_PROCD_INCLUDE_HOSTMESH_ACTOR_H_
