#include "lib/process/env.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "lib/process/process_identity.h"

namespace mesh {

absl::StatusOr<std::optional<std::string>> TakeEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::optional<std::string>();
  absl::StatusOr<ProcStat> self = ReadProcStat(getpid());
  if (!self.ok()) return self.status();
  if (self->num_threads != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot take ", name, " from the environment with ", self->num_threads,
        " threads running: it must be taken before any thread starts"));
  }
  std::string taken = value;
  unsetenv(name);
  return std::optional<std::string>(std::move(taken));
}

}  // namespace mesh
