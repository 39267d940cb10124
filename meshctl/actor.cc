// meshctl actor spawn | list | get | stop | send: the actors of one proc,
// through its host's Proc service (a proc serves no port of its own).
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshctl/cli.h"
#include "meshctl/commands.h"
#include "meshctl/message_types.h"
#include "meshctl/wait.h"

namespace mesh::meshctl {
namespace {

constexpr char kDefaultStopReason[] = "stopped by meshctl";
constexpr size_t kParallelCalls = 16;

struct ActorFlags {
  std::string proc;
  std::string name;
  std::vector<std::string> names;
  // spawn
  std::string type;
  uint64_t rank = 0;
  SpawnWait wait;
  // stop
  std::string reason;
};

struct SendFlags {
  std::string proc;
  std::string name;
  std::string type;
  std::string json;
  std::vector<std::string> protos;
  std::vector<std::string> import_paths;
  std::vector<std::string> descriptor_sets;
};

void AddProcArg(CLI::App* verb, std::string& proc) {
  verb->add_option("proc", proc, "proc name")
      ->required()
      ->check(NameValidator("proc name"));
}

absl::Status ActorSpawn(Cli& cli, const ActorFlags& flags) {
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("actor spawn"));
  v1::CreateOrUpdateActorRequest request;
  request.set_proc(flags.proc);
  request.set_name(flags.name);
  request.set_type(flags.type);
  request.set_rank(flags.rank);
  v1::ListActorsResponse spawned;
  RETURN_IF_ERROR(conn->Call(conn->proc(), &v1::Proc::Stub::CreateOrUpdateActor,
                             request, spawned.add_actors(), cli.timeout(),
                             absl::StrCat("spawn actor \"", flags.name, "\" ",
                                          conn->OnProc(flags.proc))));
  if (flags.wait.no_wait) {
    return cli.Print(spawned, FormatActorTable(spawned.actors()),
                     FormatActorTable(spawned.actors(), /*wide=*/true));
  }
  ASSIGN_OR_RETURN(absl::Duration wait_for,
                   ParseDuration(flags.wait.wait_timeout));
  v1::WaitActorsRequest wait;
  wait.set_proc(flags.proc);
  wait.add_names(flags.name);
  wait.set_min_status(v1::RUNNING);
  wait.set_timeout_ms(Millis(wait_for));
  v1::WaitActorsResponse response;
  RETURN_IF_ERROR(
      conn->Call(conn->proc(), &v1::Proc::Stub::WaitActors, wait, &response,
                 wait_for + cli.timeout(),
                 absl::StrCat("wait for RUNNING ", conn->OnProc(flags.proc))));
  RETURN_IF_ERROR(cli.Print(response, FormatActorTable(response.actors()),
                            FormatActorTable(response.actors(), true)));
  return CheckWait({flags.name}, response.actors(), v1::RUNNING, wait_for,
                   [&](const std::string& name) {
                     return absl::StrCat("actor \"", name, "\" ",
                                         conn->OnProc(flags.proc));
                   });
}

absl::Status ActorList(Cli& cli, const ActorFlags& flags) {
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("actor list"));
  v1::ListActorsRequest request;
  request.set_proc(flags.proc);
  v1::ListActorsResponse response;
  RETURN_IF_ERROR(conn->Call(
      conn->proc(), &v1::Proc::Stub::ListActors, request, &response,
      cli.timeout(), absl::StrCat("list actors ", conn->OnProc(flags.proc))));
  return cli.Print(response, FormatActorTable(response.actors()),
                   FormatActorTable(response.actors(), /*wide=*/true));
}

// `actor get PROC A B...` and `actor stop PROC A B...`: one call per name,
// in parallel; a failed name is reported, the others shown.
absl::Status ForEachActor(
    Cli& cli, const ActorFlags& flags, bool detail,
    const std::function<absl::Status(HostConn&, const std::string&,
                                     v1::ActorState*)>& call) {
  ASSIGN_OR_RETURN(HostConn * conn,
                   cli.OneHost(detail ? "actor get" : "actor stop"));
  const std::vector<std::string>& names = flags.names;
  std::vector<v1::ActorState> states(names.size());
  std::vector<absl::Status> results(names.size());
  ParallelFor(names.size(), kParallelCalls, [&](size_t i) {
    results[i] = call(*conn, names[i], &states[i]);
  });
  v1::ListActorsResponse ok;
  std::string text;
  std::vector<const google::protobuf::Message*> messages;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!results[i].ok()) {
      cli.Fail(results[i]);
      continue;
    }
    if (detail) {
      if (!messages.empty()) text += "\n";
      text += FormatActorDetail(states[i]);
    }
    *ok.add_actors() = states[i];
    messages.push_back(&states[i]);
  }
  if (messages.empty()) return absl::OkStatus();
  if (!detail) text = FormatActorTable(ok.actors());
  const std::string wide =
      detail ? text : FormatActorTable(ok.actors(), /*wide=*/true);
  if (names.size() == 1) return cli.Print(*messages[0], text, wide);
  return cli.PrintList(messages, text, wide);
}

absl::Status ActorGet(Cli& cli, const ActorFlags& flags) {
  return ForEachActor(
      cli, flags, /*detail=*/true,
      [&](HostConn& conn, const std::string& name, v1::ActorState* state) {
        v1::GetActorStateRequest request;
        request.set_proc(flags.proc);
        request.set_name(name);
        return conn.Call(
            conn.proc(), &v1::Proc::Stub::GetActorState, request, state,
            cli.timeout(),
            absl::StrCat("get actor \"", name, "\" ", conn.OnProc(flags.proc)));
      });
}

absl::Status ActorStop(Cli& cli, const ActorFlags& flags) {
  return ForEachActor(
      cli, flags, /*detail=*/false,
      [&](HostConn& conn, const std::string& name, v1::ActorState* state) {
        v1::StopActorRequest request;
        request.set_proc(flags.proc);
        request.set_name(name);
        request.set_reason(flags.reason.empty() ? kDefaultStopReason
                                                : flags.reason);
        return conn.Call(conn.proc(), &v1::Proc::Stub::StopActor, request,
                         state, cli.timeout(),
                         absl::StrCat("stop actor \"", name, "\" ",
                                      conn.OnProc(flags.proc)));
      });
}

absl::Status ActorSend(Cli& cli, const SendFlags& flags) {
  // The message is built before any call: a bad type or JSON is a usage
  // error.
  MessageTypes types;
  absl::Status loaded =
      types.Load(flags.protos, flags.import_paths, flags.descriptor_sets);
  if (!loaded.ok()) return UsageError(loaded);
  absl::StatusOr<google::protobuf::Any> message =
      types.Build(flags.type, flags.json);
  if (!message.ok()) return UsageError(message.status());
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("actor send"));
  v1::CallActorRequest request;
  request.set_proc(flags.proc);
  request.set_actor(flags.name);
  *request.mutable_payload() = *message;
  // The proc gives up on the reply at --timeout and says which actor did not
  // answer; the call's own deadline is a little later so that answer arrives.
  request.set_timeout_ms(Millis(cli.timeout()));
  v1::CallActorResponse response;
  RETURN_IF_ERROR(
      conn->Call(conn->proc(), &v1::Proc::Stub::CallActor, request, &response,
                 cli.timeout() + absl::Seconds(1),
                 absl::StrCat("send ", flags.type, " to actor \"", flags.name,
                              "\" ", conn->OnProc(flags.proc))));
  ASSIGN_OR_RETURN(std::string text,
                   FormatReply(response.reply(), cli.output(), types.pool(),
                               types.factory()));
  cli.out() << text << std::flush;
  return absl::OkStatus();
}

}  // namespace

void AddActorCommands(Cli& cli) {
  CLI::App* actor = cli.Group("actor", "actors of one proc");

  auto spawn_flags = std::make_shared<ActorFlags>();
  CLI::App* spawn = cli.Verb(
      actor, "spawn",
      "spawn actor NAME of a registered type on PROC, then wait until RUNNING",
      "meshctl actor spawn trainer_0 echo0 --type mesh.echo",
      [&cli, spawn_flags] { return ActorSpawn(cli, *spawn_flags); });
  AddProcArg(spawn, spawn_flags->proc);
  spawn->add_option("name", spawn_flags->name, "actor name")
      ->required()
      ->check(NameValidator("actor name"));
  spawn
      ->add_option("--type", spawn_flags->type,
                   "registered actor type, e.g. mesh.echo")
      ->required();
  spawn->add_option("--rank", spawn_flags->rank, "rank of the actor")
      ->type_name("R");
  AddSpawnWaitFlags(spawn, &spawn_flags->wait);

  auto list_flags = std::make_shared<ActorFlags>();
  AddProcArg(
      cli.Verb(actor, "list", "list the actors of PROC",
               "meshctl actor list trainer_0 -o wide",
               [&cli, list_flags] { return ActorList(cli, *list_flags); }),
      list_flags->proc);

  auto get_flags = std::make_shared<ActorFlags>();
  CLI::App* get =
      cli.Verb(actor, "get", "show actors of PROC in full; exit 1 if one fails",
               "meshctl actor get trainer_0 echo0 echo1",
               [&cli, get_flags] { return ActorGet(cli, *get_flags); });
  AddProcArg(get, get_flags->proc);
  get->add_option("names", get_flags->names, "actor names")
      ->required()
      ->check(NameValidator("actor name"));

  auto stop_flags = std::make_shared<ActorFlags>();
  CLI::App* stop =
      cli.Verb(actor, "stop", "stop actors of PROC; exit 1 if one fails",
               "meshctl actor stop trainer_0 echo0 --reason done",
               [&cli, stop_flags] { return ActorStop(cli, *stop_flags); });
  AddProcArg(stop, stop_flags->proc);
  stop->add_option("names", stop_flags->names, "actor names")
      ->required()
      ->check(NameValidator("actor name"));
  stop->add_option("--reason", stop_flags->reason, "recorded on each actor");

  auto send_flags = std::make_shared<SendFlags>();
  CLI::App* send = cli.Verb(
      actor, "send",
      "send a message to actor NAME of PROC through the proc's mailbox and "
      "print the actor's reply (waits --timeout). The message is any type: "
      "a built-in one (proto/actors.proto), or one of your own from --proto "
      "or --descriptor-set, sent as google.protobuf.Any",
      "meshctl actor send trainer_0 echo0 --type mesh.v1.Echo --json "
      "'{\"text\":\"hi\"}'\n"
      "meshctl actor send trainer_0 model0 --proto api/model.proto "
      "--import-path ./protos --type demo.Predict --json '{\"x\":[1,2]}'\n"
      "meshctl actor send trainer_0 model0 --descriptor-set api.pb "
      "--type demo.Predict",
      [&cli, send_flags] { return ActorSend(cli, *send_flags); });
  AddProcArg(send, send_flags->proc);
  send->add_option("name", send_flags->name, "actor name")
      ->required()
      ->check(NameValidator("actor name"));
  send->add_option("--type", send_flags->type,
                   "message type's full name, e.g. mesh.v1.Echo")
      ->required();
  send->add_option("--json", send_flags->json,
                   "the message's fields as protobuf JSON, e.g. "
                   "'{\"text\":\"hi\"}' (default: none set)");
  send->add_option("--proto", send_flags->protos,
                   ".proto file defining --type (repeatable); relative to an "
                   "--import-path, or a path")
      ->allow_extra_args(false)
      ->type_name("FILE");
  send->add_option("--import-path", send_flags->import_paths,
                   "directory imports of --proto files resolve in "
                   "(repeatable; default: the current directory)")
      ->allow_extra_args(false)
      ->type_name("DIR");
  send->add_option("--descriptor-set", send_flags->descriptor_sets,
                   "FileDescriptorSet defining --type (repeatable; protoc "
                   "--include_imports --descriptor_set_out=FILE)")
      ->allow_extra_args(false)
      ->type_name("FILE.pb");
}

}  // namespace mesh::meshctl
