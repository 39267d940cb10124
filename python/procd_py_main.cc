// procd_py: a procd that embeds the Python interpreter and serves Python
// actors (actor type "python", python/python_actor.h) beside the built-in
// ones. A proc runs it as its spec's command (hostmesh's
// spawn_procs(..., python=True)), never forked from hostd's procd template,
// so the proc's env (PYTHONPATH included) is in place before the
// interpreter starts.
//
// Start-up: the interpreter first, with no signal handlers of its own
// (ProcdMain blocks SIGTERM/SIGINT and takes them itself) and unbuffered
// stdout/stderr (what a handler prints reaches the proc's log at once);
// then the GIL is released for the proc's life and ProcdMain serves (see
// hostmesh/procd.h). Actors take the GIL while Python runs. After ProcdMain
// returns (every actor thread joined) the interpreter is finalized.
#include <Python.h>
#include <pybind11/embed.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <utility>

#include "hostmesh/procd.h"
#include "python/python_actor.h"

namespace py = pybind11;

namespace {

// hostd's channel to the proc (procd/host_link.h): ProcdMain takes it from
// the environment and unsets it; Python's os.environ, a copy made as the
// interpreter starts, must not hold it either.
constexpr char kChannelFdEnv[] = "HOSTMESH_CHANNEL_FD";

}  // namespace

// Under --config=asan: what the embedded interpreter and python3-protobuf's
// extension (its message factory and the DynamicMessageFactory under it)
// keep until the process exits is not procd_py's leak; neither frees it at
// finalization.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libpython3\n"
         "leak:_message.cpython\n"
         "leak:DynamicMessageFactory\n";
}

int main(int argc, char** argv) {
  std::optional<std::string> channel_fd;
  if (const char* fd = std::getenv(kChannelFdEnv); fd != nullptr) {
    channel_fd = fd;
    unsetenv(kChannelFdEnv);
  }
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;
  config.buffered_stdio = 0;
  config.parse_argv = 0;
  std::optional<py::scoped_interpreter> interpreter;
  try {
    interpreter.emplace(&config, /*argc=*/1, argv,
                        /*add_program_dir_to_path=*/false);
  } catch (const std::exception& error) {
    std::cerr << "procd: cannot start the Python interpreter: " << error.what()
              << std::endl;
    return 1;
  }
  if (channel_fd.has_value()) setenv(kChannelFdEnv, channel_fd->c_str(), 1);

  mesh::ActorRegistry registry;
  mesh::RegisterBuiltinActors(registry);
  mesh::python::RegisterPythonActor(registry);
  int code;
  {
    py::gil_scoped_release no_gil;
    code = mesh::ProcdMain(argc, argv, std::move(registry));
  }
  return code;
}
