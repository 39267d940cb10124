// Text renderings of hostmesh resource states for meshctl: aligned tables,
// key/value detail views, and JSON through protobuf's JSON printer. Pure
// functions, no I/O; thread-safe.
#ifndef HOSTMESH_MESHCTL_FORMAT_H_
#define HOSTMESH_MESHCTL_FORMAT_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/host.pb.h"
#include "proto/proc.pb.h"

namespace mesh::meshctl {

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
std::string FormatProcTable(
    const google::protobuf::RepeatedPtrField<v1::ProcState>& procs);
// Every field of one proc, then its stderr tail as an indented block.
std::string FormatProcDetail(const v1::ProcState& proc);

// NAME TYPE RANK STATUS MESSAGES REASON, one row per actor.
std::string FormatActorTable(
    const google::protobuf::RepeatedPtrField<v1::ActorState>& actors);
std::string FormatActorDetail(const v1::ActorState& actor);

std::string FormatHostInfo(const v1::HostInfo& info);

// CLIENT IDENTITY STATE PROCS EXPIRES, one row per lease holder: STATE is
// "connected", "vanished" (its lease runs) or "expired" (its procs are
// being stopped); EXPIRES is when a vanished client's procs are stopped,
// relative to `now` ("in 41.2s", "3s ago").
std::string FormatOwnerTable(
    const google::protobuf::RepeatedPtrField<v1::OwnerLease>& owners,
    absl::Time now);

// Pretty-printed JSON with proto field names, every primitive field printed
// (zeros included) and enums as names. Ends with a newline.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);
// The same on one line, without whitespace or a trailing newline.
absl::StatusOr<std::string> ToOneLineJson(
    const google::protobuf::Message& message);

// The message packed in `any`, as a message of its generated type (found in
// the generated descriptor pool by the type URL's last segment); nullptr if
// this binary does not know the type or the bytes do not parse as it.
std::unique_ptr<google::protobuf::Message> UnpackGenerated(
    const google::protobuf::Any& any);

// An actor's reply. Table: "<type>: <one-line JSON>\n". JSON: ToJson of the
// unpacked message. A type this binary does not know prints as
// {"@type": "<type URL>", "value": "<bytes in base64>"}.
absl::StatusOr<std::string> FormatReply(const google::protobuf::Any& reply,
                                        bool json);

}  // namespace mesh::meshctl

#endif  // HOSTMESH_MESHCTL_FORMAT_H_
