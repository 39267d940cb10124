// Validation of resource names (procs, actors, meshes), the derived names
// of mesh members, and bounded echoes of what a caller sent.
#ifndef HOSTMESH_LIB_NAMES_H_
#define HOSTMESH_LIB_NAMES_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mesh {

inline constexpr size_t kMaxNameLength = 128;

// OK if `name` is 1..kMaxNameLength characters of [a-z0-9_.-], starts with a
// letter or digit, and is not "." or "..". Otherwise INVALID_ARGUMENT naming
// `what` (e.g. "proc name") and the offending character or length.
absl::Status ValidateName(absl::string_view name, absl::string_view what);

// The name of rank `rank` of mesh `mesh_name`: "p0" + 3 -> "p0_3".
std::string MemberName(absl::string_view mesh_name, uint64_t rank);

// Bounded echoes. An error message, a log line or a kept reason that repeats
// a string a caller sent (a name, a command, an argument, an env key, an
// actor or message type, a reason) shows at most a bounded prefix of it, so
// nothing a daemon answers or logs grows with what a client sends: a 60 KB
// command or a 20 KB actor name comes back as a short quote. Every such echo
// in hostd, procd and lib/ goes through one of these two.
inline constexpr size_t kMaxEchoBytes = 128;
inline constexpr size_t kMaxReasonBytes = 1024;
// The last line of defence: a whole error message leaving a daemon (an
// Error in a message, ToErrorProto; a gRPC status, ToGrpcStatus) is cut to
// this many bytes, so an error never exceeds a peer's metadata limit (which
// would fail the call, or the connection, with an unrelated error).
inline constexpr size_t kMaxErrorMessageBytes = 2000;

// `s` C-escaped (so control and non-ASCII bytes show as \xNN) in double
// quotes, cut to its first `max` bytes; a cut one ends in "..." inside the
// quotes and is followed by its full length: "aaaa..." (60000 bytes).
std::string QuoteForError(absl::string_view s, size_t max = kMaxEchoBytes);

// Free text kept and shown as it is (a stop reason): `s` itself if it has
// at most `max` bytes, else its first `max` bytes (never half a UTF-8
// character), "..." and the full length: "aaaa... (60000 bytes)". Neither
// quoted nor escaped.
std::string BoundText(absl::string_view s, size_t max = kMaxReasonBytes);

}  // namespace mesh

#endif  // HOSTMESH_LIB_NAMES_H_
