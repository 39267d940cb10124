// A procd for supervision tests: the built-in actor types plus
// "test.trouble" (messages in tests/testdata/trouble.proto), whose handlers
// sleep, write a line to stderr, fail, or end the whole proc (abort, exit
// code, SIGSEGV) on request. Named as a proc spec's bootstrap command.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hostmesh/actor.h"
#include "hostmesh/procd.h"
#include "tests/testdata/trouble.pb.h"

namespace mesh::test {
namespace {

// One line on stderr, written before anything else can happen to the proc.
void SayLine(const std::string& text) {
  std::string line = text + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

[[noreturn]] void Die(const Crash& crash) {
  if (!crash.last_words().empty()) SayLine(crash.last_words());
  // Die by the signal without leaving a core file behind.
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  switch (crash.how()) {
    case Crash::EXIT_CODE:
      _exit(crash.code());
    case Crash::SEGV:
      // The default action (no handler that could turn it into an exit).
      signal(SIGSEGV, SIG_DFL);
      raise(SIGSEGV);
      break;
    case Crash::ABORT:
    default:
      break;
  }
  signal(SIGABRT, SIG_DFL);
  std::abort();
}

class TroubleActor : public Actor {
 public:
  static constexpr char kTypeName[] = "test.trouble";

  TroubleActor() {
    Handle<Sleep, Slept>(
        [](const Sleep& sleep, ActorContext& ctx) -> absl::StatusOr<Slept> {
          absl::SleepFor(absl::Milliseconds(sleep.ms()));
          Slept slept;
          slept.set_ms(sleep.ms());
          slept.set_rank(ctx.rank());
          slept.set_pid(getpid());
          if (sleep.has_notify()) ctx.Send(sleep.notify(), slept);
          return slept;
        });
    Handle<Say, Said>(
        [](const Say& say, ActorContext&) -> absl::StatusOr<Said> {
          SayLine(say.text());
          Said said;
          said.set_pid(getpid());
          return said;
        });
    Handle<Crash, Crashed>(
        [](const Crash& crash, ActorContext&) -> absl::StatusOr<Crashed> {
          Die(crash);
        });
    Handle<FailNow, Failed>(
        [](const FailNow& fail, ActorContext&) -> absl::StatusOr<Failed> {
          return absl::InternalError(
              absl::StrCat("failing as asked: ", fail.why()));
        });
  }
};

}  // namespace
}  // namespace mesh::test

int main(int argc, char** argv) {
  mesh::ActorRegistry registry;
  mesh::RegisterBuiltinActors(registry);
  registry.Register<mesh::test::TroubleActor>();
  return mesh::ProcdMain(argc, argv, std::move(registry));
}
