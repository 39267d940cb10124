// Signals for the daemons and tools: readable names, and the one way hostd
// and procd take the signals they act on (SIGTERM/SIGINT; hostd also SIGHUP
// and SIGUSR2).
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

// StopSignals: SIGTERM and SIGINT taken by the thread that calls Wait
// (procd's main thread, which has nothing else to do until a stop: no
// thread of their own), through a signalfd, never by a handler. Call
// Block() first thing in main, before any thread starts: the mask is
// inherited, so no other thread ever sees these signals. Also ignores
// SIGPIPE. (procd's: SIGHUP and SIGUSR2 keep their default action, ending
// the process.) Signals that arrive while nobody waits stay pending until
// the next Wait; after the object is gone they stay blocked and pending.
class StopSignals {
 public:
  static void Block();

  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // Blocks until SIGTERM or SIGINT arrives (returns its name, e.g.
  // "SIGTERM") or Wake() was called since the last Wait (returns "").
  // One waiting thread at a time.
  std::string Wait();
  // Ends a Wait in progress, or the next one. Any thread.
  void Wake();

 private:
  int signal_fd_ = -1;
  int wake_fd_ = -1;
};

// HostSignals: hostd's signals, all taken by one thread with sigwait (never
// by a handler), each handed to its callback on that thread, one at a time
// (a callback that blocks delays the next signal; none is lost, though
// signals of one kind that arrive meanwhile merge into one):
//   SIGTERM, SIGINT  on_stop(name): stop every proc and exit (systemctl stop)
//   SIGUSR2          on_restart(): exit keeping the procs for the next hostd
//                    (the unit's RestartKillSignal: systemctl restart)
//   SIGHUP           on_reload(): reload what can be reloaded; never exits
//                    (the unit's ExecReload: systemctl reload)
// Call Block() first thing, before any thread starts (as for StopSignals;
// it also ignores SIGPIPE). A callback left empty ignores its signal. The
// destructor ends the signal thread; signals arriving after that stay
// blocked and pending (they neither kill nor reach anyone).
class HostSignals {
 public:
  struct Callbacks {
    std::function<void(const std::string& name)> on_stop;
    std::function<void()> on_restart;
    std::function<void()> on_reload;
  };

  static void Block();

  explicit HostSignals(Callbacks callbacks);
  ~HostSignals();
  HostSignals(const HostSignals&) = delete;
  HostSignals& operator=(const HostSignals&) = delete;

 private:
  std::atomic<bool> exiting_{false};
  Callbacks callbacks_;
  std::thread thread_;
};

}  // namespace mesh

#endif  // HOSTMESH_LIB_PROCESS_SIGNALS_H_
