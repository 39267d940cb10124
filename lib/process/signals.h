// Signals for the daemons and tools: readable names, and the one way hostd
// and procd take SIGTERM/SIGINT.
#ifndef HOSTMESH_LIB_PROCESS_SIGNALS_H_
#define HOSTMESH_LIB_PROCESS_SIGNALS_H_

#include <pthread.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace mesh {

// "SIGTERM", "SIGKILL", ... ("signal 64" for one without a name).
std::string SignalName(int sig);

// StopSignals: SIGTERM and SIGINT taken by one thread with sigwait, never
// by a handler, each handed to `on_signal` (with the signal's name) on that
// thread. Call Block() first thing in main, before any thread starts: the
// mask is inherited, so no other thread ever sees these signals. Also
// ignores SIGPIPE. The destructor ends the signal thread.
class StopSignals {
 public:
  static void Block();

  explicit StopSignals(std::function<void(const std::string& name)> on_signal);
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  std::atomic<bool> exiting_{false};
  std::function<void(const std::string&)> on_signal_;
  std::thread thread_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_SIGNALS_H_
