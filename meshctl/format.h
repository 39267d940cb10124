// Text renderings of hostmesh resource states for meshctl, written once for
// every verb: aligned tables (-o table, and -o wide with more columns),
// key/value detail views, JSON through protobuf's JSON printer (-o json) and
// YAML from the message's reflection (-o yaml). Pure functions, no I/O;
// thread-safe.
#ifndef HOSTMESH_MESHCTL_FORMAT_H_
#define HOSTMESH_MESHCTL_FORMAT_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/host.pb.h"
#include "proto/proc.pb.h"

namespace mesh::meshctl {

// The -o formats.
enum class Output { kTable, kWide, kJson, kYaml };
// "table", "wide", "json", "yaml".
std::vector<std::string> OutputNames();
// INVALID_ARGUMENT naming the formats for anything else.
absl::StatusOr<Output> ParseOutput(const std::string& name);
bool IsStructured(Output output);  // json or yaml.

// What a verb prints: `table` (-o table), `wide` (-o wide; `table` if
// empty), `message` as JSON or YAML.
absl::StatusOr<std::string> Render(const google::protobuf::Message& message,
                                   Output output, const std::string& table,
                                   const std::string& wide = "");
// The same for several messages: a JSON array, a YAML sequence.
absl::StatusOr<std::string> RenderList(
    const std::vector<const google::protobuf::Message*>& messages,
    Output output, const std::string& table, const std::string& wide = "");

// Columns padded to their widest cell and separated by two spaces; no
// trailing blanks. Cells are made single-line (newlines become spaces); an
// empty cell prints as "-". Ends with a newline.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);

// "key:  value" lines with the values aligned. Ends with a newline.
std::string FormatFields(
    const std::vector<std::pair<std::string, std::string>>& fields);

// How a proc ended: "0" or "3" (exit code), "SIGKILL" (signal), or "" while
// it has not ended.
std::string ExitText(const v1::ProcState& proc);

// NAME RANK STATUS PID HOST EXIT OWNER LEASE REASON, one row per proc;
// OWNER is the identity that created it, LEASE the client whose lease
// keeps it alive, or "detached".
// Wide adds GENERATION, STOPPED-BY, COMMAND, LOG-DIR, CREATED.
std::string FormatProcTable(
    const google::protobuf::RepeatedPtrField<v1::ProcState>& procs,
    bool wide = false);
// Every field of one proc, then its stderr tail as an indented block.
std::string FormatProcDetail(const v1::ProcState& proc);

// NAME TYPE RANK STATUS MESSAGES REASON, one row per actor.
// Wide adds GENERATION, PROC, HOST, CREATED.
std::string FormatActorTable(
    const google::protobuf::RepeatedPtrField<v1::ActorState>& actors,
    bool wide = false);
std::string FormatActorDetail(const v1::ActorState& actor);

std::string FormatHostInfo(const v1::HostInfo& info);
// One row per host: HOST HOSTNAME VERSION PROCS PID STARTED (wide adds
// STATE-DIR, HELD, HEAP); a host whose answer is absent (`infos[i]` is
// nullptr) shows "unreachable". `hosts` and `infos` are parallel.
std::string FormatHostTable(const std::vector<std::string>& hosts,
                            const std::vector<const v1::HostInfo*>& infos,
                            bool wide = false);

// CLIENT IDENTITY STATE PROCS EXPIRES, one row per lease holder: STATE is
// "connected", "vanished" (its lease runs) or "expired" (its procs are
// being stopped); EXPIRES is when a vanished client's procs are stopped,
// relative to `now` ("in 41.2s", "3s ago").
// Wide adds LEASE and the proc names.
std::string FormatOwnerTable(
    const google::protobuf::RepeatedPtrField<v1::OwnerLease>& owners,
    absl::Time now, bool wide = false);

// Pretty-printed JSON with proto field names, every primitive field printed
// (zeros included) and enums as names. Ends with a newline.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);
// The same on one line, without whitespace or a trailing newline.
absl::StatusOr<std::string> ToOneLineJson(
    const google::protobuf::Message& message);

// YAML (block style) from the message's reflection, with the same content
// as ToJson: proto field names, every singular primitive field (zeros
// included), enums as names, 64-bit integers as numbers, bytes in base64;
// well-known types (Timestamp, Duration, Any, Struct, ...) as their JSON,
// which YAML reads as a quoted or flow scalar. Ends with a newline.
absl::StatusOr<std::string> ToYaml(const google::protobuf::Message& message);

// The message packed in `any`, as a message of its type, found by the type
// URL's last segment in the generated descriptor pool, else in `pool` (if
// given; made by `factory`, which must outlive the result); nullptr if the
// type is unknown or the bytes do not parse as it.
std::unique_ptr<google::protobuf::Message> UnpackAny(
    const google::protobuf::Any& any,
    const google::protobuf::DescriptorPool* pool = nullptr,
    google::protobuf::MessageFactory* factory = nullptr);

// An actor's reply. Table/wide: "<type>: <one-line JSON>\n". JSON/YAML: the
// unpacked message. A type meshctl does not know prints as
// {"@type": "<type URL>", "value": "<bytes in base64>"}.
absl::StatusOr<std::string> FormatReply(
    const google::protobuf::Any& reply, Output output,
    const google::protobuf::DescriptorPool* pool = nullptr,
    google::protobuf::MessageFactory* factory = nullptr);

}  // namespace mesh::meshctl

#endif  // HOSTMESH_MESHCTL_FORMAT_H_
