// Which process a pid names, beyond the pid: its start time (clock ticks
// after boot, /proc/<pid>/stat field 22) and the boot it belongs to. A pid
// plus its start time names one process of one boot; a pidfd opened and then
// checked against both keeps naming it even if the pid is reused later.
// Used to re-adopt processes of an earlier daemon without being fooled by a
// process that got a dead one's pid. Stateless functions; thread-safe.
#ifndef HOSTMESH_LIB_PROCESS_PROCESS_IDENTITY_H_
#define HOSTMESH_LIB_PROCESS_PROCESS_IDENTITY_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mesh {

// What /proc/<pid>/stat says of a process (the fields this project reads).
struct ProcStat {
  char state = '?';            // field 3: R, S, D, Z (zombie), X (dead), ...
  pid_t ppid = 0;              // field 4
  pid_t pgrp = 0;              // field 5
  pid_t session = 0;           // field 6
  int64_t num_threads = 0;     // field 20
  uint64_t start_time = 0;     // field 22: clock ticks after boot
  uint64_t virtual_bytes = 0;  // field 23 (vsize)
  int64_t resident_pages = 0;  // field 24 (rss), pages of sysconf(_SC_PAGESIZE)
};

// /proc/<pid>/stat, parsed after the last ')' (a command name may hold
// spaces and parentheses). NOT_FOUND "pid N is gone" if there is no such
// process; INTERNAL if the file does not parse. The one reader of that file.
absl::StatusOr<ProcStat> ReadProcStat(pid_t pid);

// The same from the text of a /proc/<pid>/stat (for tests).
absl::StatusOr<ProcStat> ParseProcStat(absl::string_view stat);

// ReadProcStat(pid).start_time.
absl::StatusOr<uint64_t> ProcessStartTime(pid_t pid);

// /proc/sys/kernel/random/boot_id, whitespace trimmed: a record of another
// boot names no live process.
absl::StatusOr<std::string> BootId();

// Opens a pidfd (close-on-exec, owned by the caller) for `pid` if it is the
// process that started at `start_time` and has not exited: pidfd_open, then
// the start time read and compared (so the pidfd is that process, whatever
// happens to the pid later), then not exited (the pidfd not readable and
// the state not 'Z': a zombie is gone, even if no one reaps it).
// NOT_FOUND "pid N is gone" if it exited (or never existed);
// FAILED_PRECONDITION "pid N is another process (started at X, not Y)".
absl::StatusOr<int> OpenPidfdIfSame(pid_t pid, uint64_t start_time);

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_PROCESS_IDENTITY_H_
