// hostmesh._hostmesh: the client library (//client) for Python, as a
// pybind11 extension. The Python package (python/hostmesh/) wraps it; users
// never import this module themselves.
//
// Messages cross as bytes: Python hands over a message's full type name and
// its serialization, and gets replies back the same way, so any protobuf
// backend works and no generated C++ code is needed for the user's types.
// On the C++ side such a message is a DynamicMessage of an empty type of
// that name whose fields are all unknown fields: it serializes to the very
// bytes it was parsed from, and Any::PackFrom names it right.
//
// Threads and the GIL: every call that can wait (spawning, calls, port
// receives, shutdown) releases the GIL. On Python's main thread it runs on a
// thread of its own while the main thread waits in 50 ms slices and checks
// for signals between them, so Ctrl-C interrupts it at once (the work itself
// finishes in the background, bounded by its own timeout). C++ objects that
// may wait when destroyed (a HostMesh shuts its hosts down) are destroyed
// with the GIL released.
#include <Python.h>
#include <glog/logging.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <pthread.h>
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hostmesh/hostmesh.h"
#include "lib/mailbox/mailbox.h"
#include "proto/host.pb.h"
#include "proto/mailbox.pb.h"
#include "proto/proc.pb.h"
#include "python/foreign_types.h"

namespace py = pybind11;

namespace mesh::python {
namespace {

// ---------------------------------------------------------------------------
// Errors: an absl::Status becomes a Python exception made by the package's
// error factory (hostmesh/_errors.py), which picks the class by code and
// parses the supervision event the status may carry.

struct StatusError : std::exception {
  explicit StatusError(absl::Status s) : status(std::move(s)) {}
  const char* what() const noexcept override { return "hostmesh status"; }
  absl::Status status;
};

// Set once by the package (set_error_factory); never freed: it must outlive
// every module teardown order.
py::object* error_factory = nullptr;

// The code the factory takes for "interrupted by a signal" (no absl code).
constexpr int kInterrupted = -1;

// A Python exception object for `status` (the GIL held).
py::object MakeError(const absl::Status& status) {
  py::object event = py::none();
  if (std::optional<v1::SupervisionEvent> carried = SupervisionEventOf(status);
      carried.has_value()) {
    event = py::bytes(carried->SerializeAsString());
  }
  if (error_factory == nullptr) {
    return py::reinterpret_steal<py::object>(PyObject_CallFunction(
        PyExc_RuntimeError, "s", status.ToString().c_str()));
  }
  return (*error_factory)(static_cast<int>(status.code()),
                          std::string(status.message()), event);
}

void SetPythonError(const py::object& error) {
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())),
                  error.ptr());
}

void ThrowIfError(const absl::Status& status) {
  if (!status.ok()) throw StatusError(status);
}

template <typename T>
T ValueOrThrow(absl::StatusOr<T> value) {
  if (!value.ok()) throw StatusError(value.status());
  return *std::move(value);
}

bool InterpreterAlive() { return Py_IsInitialized() && !_Py_IsFinalizing(); }

// Destroys what `holder` holds (a mesh, a port: the last reference to a
// Client waits for its threads, which may be waiting for the GIL to call a
// Python handler) with the GIL released if this thread holds it.
template <typename Holder>
void ResetWithoutGil(Holder& holder) {
  if (InterpreterAlive() && PyGILState_Check()) {
    py::gil_scoped_release release;
    holder.reset();
  } else {
    holder.reset();
  }
}

// ---------------------------------------------------------------------------
// Waiting without the GIL, interruptibly.

// Work started by RunBlocking that has not finished: drain() waits for it
// before the interpreter exits, so no detached thread outlives the process's
// static destructors.
absl::Mutex pending_mu;
int pending_work ABSL_GUARDED_BY(pending_mu) = 0;

unsigned long main_thread_id = 0;  // NOLINT(runtime/int): PyThread's type

constexpr absl::Duration kSignalSlice = absl::Milliseconds(50);

// Raises (as a C++ exception pybind11 passes on) what a signal handler
// raised; a KeyboardInterrupt becomes the package's one-line interrupt.
[[noreturn]] void ThrowSignal(const std::string& what) {
  if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) &&
      error_factory != nullptr) {
    PyErr_Clear();
    SetPythonError((*error_factory)(kInterrupted, what, py::none()));
  }
  throw py::error_already_set();
}

// Runs `work` with the GIL released and returns its result. On the main
// thread, `work` runs on a thread of its own (named `thread_name`, at most
// 15 characters: what `top -H` and the tests see) and signals are checked
// every 50 ms: a Ctrl-C raises at once (see ThrowSignal) and leaves `work`
// to finish by itself. `what` names the wait in that message.
template <typename T>
T RunBlocking(const char* thread_name, const std::string& what,
              std::function<T()> work) {
  if (PyThread_get_thread_ident() != main_thread_id) {
    py::gil_scoped_release release;
    return work();
  }
  struct State {
    absl::Mutex mu;
    std::optional<T> result ABSL_GUARDED_BY(mu);
  };
  auto state = std::make_shared<State>();
  {
    absl::MutexLock lock(&pending_mu);
    ++pending_work;
  }
  std::thread([state, thread_name, work = std::move(work)]() mutable {
    pthread_setname_np(pthread_self(), thread_name);
    T result = work();
    {
      absl::MutexLock lock(&state->mu);
      state->result = std::move(result);
    }
    // A result nobody waits for any more (a HostMesh whose start was
    // interrupted: it shuts its hosts down) goes before drain() hears
    // that this work ended.
    work = nullptr;
    state.reset();
    absl::MutexLock lock(&pending_mu);
    --pending_work;
  }).detach();
  while (true) {
    {
      py::gil_scoped_release release;
      absl::MutexLock lock(&state->mu);
      auto done = [&state]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) {
        return state->result.has_value();
      };
      if (state->mu.AwaitWithTimeout(absl::Condition(&done), kSignalSlice)) {
        T result = std::move(*state->result);
        state->result.reset();
        return result;
      }
    }
    if (PyErr_CheckSignals() != 0) ThrowSignal(what);
  }
}

// Waits (GIL released) until no RunBlocking work is left, at most `timeout`
// seconds; returns how many are still running.
int Drain(double timeout) {
  py::gil_scoped_release release;
  absl::MutexLock lock(&pending_mu);
  auto idle = []() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pending_mu) {
    return pending_work == 0;
  };
  pending_mu.AwaitWithTimeout(absl::Condition(&idle), absl::Seconds(timeout));
  return pending_work;
}

absl::Duration Seconds(double seconds) {
  if (!(seconds > 0)) {
    throw StatusError(absl::InvalidArgumentError(
        absl::StrCat("a timeout must be positive, got ", seconds)));
  }
  return absl::Seconds(seconds);
}

// A Python callable that C++ threads may hold and drop without the GIL.
class PyCallback {
 public:
  explicit PyCallback(py::object callable)
      : callable_(new py::object(std::move(callable)), [](py::object* object) {
          if (!InterpreterAlive()) return;  // leaked: nothing to run it with
          py::gil_scoped_acquire gil;
          delete object;
        }) {}

  // Calls it with `arg` (acquiring the GIL); what it raises is reported as
  // unraisable (printed), never passed on into C++.
  void operator()(const std::string& arg) const {
    if (!InterpreterAlive()) return;
    py::gil_scoped_acquire gil;
    try {
      (*callable_)(py::bytes(arg));
    } catch (py::error_already_set& error) {
      error.discard_as_unraisable("hostmesh supervision event handler");
    }
  }

 private:
  std::shared_ptr<py::object> callable_;
};

// ---------------------------------------------------------------------------
// Messages from Python: a type name and bytes.

std::unique_ptr<google::protobuf::Message> FromPython(
    const std::string& type_name, const std::string& bytes) {
  return ValueOrThrow(ParseForeign(type_name, bytes));
}

template <typename Proto>
Proto ParseOwn(const std::string& bytes, const char* what) {
  Proto message;
  if (!message.ParseFromString(bytes)) {
    throw StatusError(absl::InvalidArgumentError(absl::StrCat(
        what, ": not a serialized ", Proto::descriptor()->full_name())));
  }
  return message;
}

// A payload for Python: (full type name, bytes).
py::tuple PayloadToPython(const google::protobuf::Any& payload) {
  const std::string& url = payload.type_url();
  std::string name = url.substr(url.rfind('/') + 1);
  return py::make_tuple(name, py::bytes(payload.value()));
}

// One rank's reply: (type name, bytes), or an exception object.
py::object ReplyToPython(const absl::StatusOr<v1::Envelope>& reply) {
  if (!reply.ok()) return MakeError(reply.status());
  if (reply->has_error() && reply->error().code() != 0) {
    return MakeError(
        absl::Status(static_cast<absl::StatusCode>(reply->error().code()),
                     reply->error().message()));
  }
  if (!reply->has_payload()) {
    return MakeError(absl::InternalError("a reply without a payload"));
  }
  return PayloadToPython(reply->payload());
}

py::list ExtentToPython(const Extent& extent) {
  py::list dims;
  for (const auto& [label, size] : extent.dims()) {
    dims.append(py::make_tuple(label, size));
  }
  return dims;
}

// ---------------------------------------------------------------------------
// The wrapped meshes.

class PyActorMesh {
 public:
  explicit PyActorMesh(ActorMesh mesh) : mesh_(std::move(mesh)) {}
  PyActorMesh(PyActorMesh&&) = default;
  ~PyActorMesh() { ResetWithoutGil(mesh_); }

  std::string name() const { return mesh_->name(); }
  std::string type() const { return mesh_->type(); }
  py::list extent() const { return ExtentToPython(mesh_->extent()); }
  size_t num_ranks() const { return mesh_->num_ranks(); }
  py::bytes actor(size_t rank) const {
    if (rank >= mesh_->num_ranks()) {
      throw py::index_error(absl::StrCat("rank ", rank, " of a mesh of ",
                                         mesh_->num_ranks(), " ranks"));
    }
    return py::bytes(mesh_->actor(rank).SerializeAsString());
  }

  PyActorMesh Slice(const std::string& label, size_t begin, size_t end) const {
    return PyActorMesh(ValueOrThrow(mesh_->Slice(label, begin, end)));
  }

  void Cast(const std::string& type_name, const std::string& bytes) const {
    std::unique_ptr<google::protobuf::Message> message =
        FromPython(type_name, bytes);
    absl::Status cast;
    {
      py::gil_scoped_release release;
      cast = mesh_->Cast(*message);
    }
    ThrowIfError(cast);
  }

  // One entry per view rank: (type name, bytes) or an exception object.
  py::list Call(const std::string& type_name, const std::string& bytes,
                double timeout) const {
    std::shared_ptr<google::protobuf::Message> message =
        FromPython(type_name, bytes);
    absl::Duration wait = Seconds(timeout);
    ActorMesh mesh = *mesh_;
    using Replies = std::vector<absl::StatusOr<v1::Envelope>>;
    Replies replies = RunBlocking<Replies>(
        "hm-call", absl::StrCat("call to actor mesh \"", mesh_->name(), "\""),
        [mesh, message, wait] { return mesh.CallRaw(*message, wait); });
    py::list out;
    for (const auto& reply : replies) out.append(ReplyToPython(reply));
    return out;
  }

  // The serialized mesh.v1.Reduced.
  py::bytes Reduce(const std::string& type_name, const std::string& bytes,
                   int reduce, double timeout, const std::string& field) const {
    if (!v1::Reduce_IsValid(reduce)) {
      throw StatusError(absl::InvalidArgumentError(
          absl::StrCat("no such reducer: ", reduce)));
    }
    std::shared_ptr<google::protobuf::Message> message =
        FromPython(type_name, bytes);
    absl::Duration wait = Seconds(timeout);
    ActorMesh mesh = *mesh_;
    auto kind = static_cast<v1::Reduce>(reduce);
    absl::StatusOr<v1::Reduced> reduced =
        RunBlocking<absl::StatusOr<v1::Reduced>>(
            "hm-reduce",
            absl::StrCat("reduce over actor mesh \"", mesh_->name(), "\""),
            [mesh, message, kind, wait, field] {
              return mesh.Reduce(*message, kind, wait, field);
            });
    return py::bytes(ValueOrThrow(std::move(reduced)).SerializeAsString());
  }

  // None, or the exception of the failure that poisoned the mesh.
  py::object Status() const {
    absl::Status status = mesh_->status();
    if (status.ok()) return py::none();
    return MakeError(status);
  }

  // `handler(event_bytes)` for every supervision event of the mesh (None:
  // none; failures then poison the mesh again).
  void OnSupervisionEvent(py::object handler) const {
    if (handler.is_none()) {
      mesh_->OnSupervisionEvent(nullptr);
      return;
    }
    PyCallback callback(std::move(handler));
    mesh_->OnSupervisionEvent([callback](const v1::SupervisionEvent& event) {
      callback(event.SerializeAsString());
    });
  }

  const ActorMesh& mesh() const { return *mesh_; }

 private:
  // Engaged but for a moved-from object.
  std::optional<ActorMesh> mesh_;
};

class PyProcMesh {
 public:
  explicit PyProcMesh(ProcMesh mesh) : mesh_(std::move(mesh)) {}
  PyProcMesh(PyProcMesh&&) = default;
  ~PyProcMesh() { ResetWithoutGil(mesh_); }

  std::string name() const { return mesh_->name(); }
  py::list extent() const { return ExtentToPython(mesh_->extent()); }
  size_t num_ranks() const { return mesh_->num_ranks(); }
  // Serialized mesh.v1.ProcState, by rank, as of spawn.
  py::list procs() const {
    py::list out;
    for (const v1::ProcState& proc : mesh_->procs()) {
      out.append(py::bytes(proc.SerializeAsString()));
    }
    return out;
  }

  PyActorMesh Spawn(const std::string& name, const std::string& type,
                    const std::optional<std::string>& params_type,
                    const std::string& params_bytes, double timeout) const {
    std::shared_ptr<google::protobuf::Message> params;
    if (params_type.has_value())
      params = FromPython(*params_type, params_bytes);
    absl::Duration wait = Seconds(timeout);
    ProcMesh mesh = *mesh_;
    return PyActorMesh(ValueOrThrow(RunBlocking<absl::StatusOr<ActorMesh>>(
        "hm-spawn", absl::StrCat("spawn of actor mesh \"", name, "\""),
        [mesh, name, type, params, wait] {
          return mesh.Spawn(name, type, params.get(), wait);
        })));
  }

  void Stop(double grace) const {
    absl::Duration wait = Seconds(grace);
    ProcMesh mesh = *mesh_;
    ThrowIfError(RunBlocking<absl::Status>(
        "hm-stop", absl::StrCat("stop of proc mesh \"", mesh_->name(), "\""),
        [mesh, wait] { return mesh.Stop(wait); }));
  }

 private:
  // Engaged but for a moved-from object.
  std::optional<ProcMesh> mesh_;
};

// A port on the client: every message sent to ref(), in arrival order.
class PyPort {
 public:
  explicit PyPort(std::shared_ptr<Client> client)
      : client_(std::move(client)), state_(std::make_shared<State>()) {
    ref_ = client_->mailbox().OpenPort([state = state_](v1::Envelope e) {
      absl::MutexLock lock(&state->mu);
      state->queue.push_back(std::move(e));
    });
  }
  ~PyPort() { Close(); }
  PyPort(const PyPort&) = delete;
  PyPort& operator=(const PyPort&) = delete;

  py::bytes ref() const { return py::bytes(ref_.SerializeAsString()); }

  void Close() {
    if (client_ == nullptr) return;
    client_->mailbox().ClosePort(ref_.port());
    ResetWithoutGil(client_);
  }

  // Once an actor of `mesh` ends, Recv fails with that end (after what is
  // queued) instead of waiting out its timeout.
  void Watch(const PyActorMesh& mesh) {
    if (client_ == nullptr) {
      throw StatusError(absl::FailedPreconditionError("the port is closed"));
    }
    std::weak_ptr<State> weak = state_;
    client_->OnMeshEnd(mesh.mesh(), weak, [weak](const absl::Status& ended) {
      if (auto state = weak.lock()) {
        absl::MutexLock lock(&state->mu);
        if (state->error.ok()) state->error = ended;
      }
    });
  }

  // The next message: (type name, bytes); raises the sender's error, the
  // watched mesh's end, or DEADLINE_EXCEEDED after `timeout`. Waits in
  // slices, checking for signals (on the main thread) between them.
  py::tuple Recv(double timeout) {
    absl::Time deadline = absl::Now() + Seconds(timeout);
    bool main = PyThread_get_thread_ident() == main_thread_id;
    while (true) {
      std::optional<v1::Envelope> envelope;
      absl::Status error;
      {
        py::gil_scoped_release release;
        absl::MutexLock lock(&state_->mu);
        State* state = state_.get();
        auto ready = [state]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) {
          return !state->queue.empty() || !state->error.ok();
        };
        absl::Duration left = deadline - absl::Now();
        state_->mu.AwaitWithTimeout(absl::Condition(&ready),
                                    main ? std::min(left, kSignalSlice) : left);
        if (!state_->queue.empty()) {
          envelope = std::move(state_->queue.front());
          state_->queue.pop_front();
        } else {
          error = state_->error;
        }
      }
      if (envelope.has_value()) {
        py::object reply = ReplyToPython(*std::move(envelope));
        if (PyExceptionInstance_Check(reply.ptr())) {
          SetPythonError(reply);
          throw py::error_already_set();
        }
        return reply;
      }
      ThrowIfError(error);
      if (absl::Now() >= deadline) {
        throw StatusError(absl::DeadlineExceededError(
            absl::StrCat("no message on the port within ",
                         absl::FormatDuration(absl::Seconds(timeout)))));
      }
      if (main && PyErr_CheckSignals() != 0) {
        ThrowSignal("receive on a port");
      }
    }
  }

 private:
  struct State {
    absl::Mutex mu;
    std::deque<v1::Envelope> queue ABSL_GUARDED_BY(mu);
    absl::Status error ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<Client> client_;
  std::shared_ptr<State> state_;
  v1::PortRef ref_;
};

struct HostOptions {
  std::string hostd_path;
  std::vector<std::string> hostd_args;
  double timeout = 30;
  std::optional<bool> keep_logs;
  // token, CA, certificate, key (PEM); Attach only.
  std::optional<std::vector<std::string>> credentials;
  bool forward_proc_output = true;
};

absl::StatusOr<HostMesh::Options> ToOptions(const HostOptions& given) {
  HostMesh::Options options;
  options.hostd_path = given.hostd_path;
  options.hostd_args = given.hostd_args;
  options.timeout = Seconds(given.timeout);
  options.keep_logs = given.keep_logs;
  ClientOptions client_options;
  client_options.forward_proc_output = given.forward_proc_output;
  if (given.credentials.has_value()) {
    const std::vector<std::string>& pems = *given.credentials;
    if (pems.size() != 4) {
      return absl::InvalidArgumentError(
          "credentials: token, CA, certificate and key");
    }
    ClientCredentials credentials;
    credentials.token = pems[0];
    credentials.tls_ca_pem = pems[1];
    credentials.tls_cert_pem = pems[2];
    credentials.tls_key_pem = pems[3];
    client_options.credentials = std::move(credentials);
  }
  if (given.credentials.has_value() || !given.forward_proc_output) {
    absl::StatusOr<std::shared_ptr<Client>> client =
        Client::Create(std::move(client_options));
    if (!client.ok()) return client.status();
    options.client = *std::move(client);
  }
  return options;
}

class PyHostMesh {
 public:
  enum class Kind { kLocal, kProcess, kAttach, kSlurm };

  static std::unique_ptr<PyHostMesh> Start(Kind kind, size_t num_hosts,
                                           std::vector<std::string> addresses,
                                           const HostOptions& given,
                                           const SlurmOptions& slurm = {}) {
    HostMesh::Options options = ValueOrThrow(ToOptions(given));
    auto started = RunBlocking<absl::StatusOr<std::shared_ptr<HostMesh>>>(
        "hm-start", "start of the hosts",
        [kind, num_hosts, addresses, options,
         slurm]() -> absl::StatusOr<std::shared_ptr<HostMesh>> {
          absl::StatusOr<HostMesh> hosts =
              kind == Kind::kLocal     ? HostMesh::Local(options)
              : kind == Kind::kProcess ? HostMesh::Process(num_hosts, options)
              : kind == Kind::kSlurm   ? HostMesh::Slurm(slurm, options)
                                       : HostMesh::Attach(addresses, options);
          if (!hosts.ok()) return hosts.status();
          return std::make_shared<HostMesh>(*std::move(hosts));
        });
    return std::make_unique<PyHostMesh>(ValueOrThrow(std::move(started)));
  }

  explicit PyHostMesh(std::shared_ptr<HostMesh> mesh)
      : mesh_(std::move(mesh)) {}
  // The last reference shuts the hosts down (~HostMesh): without the GIL,
  // since that waits for threads that may call into Python.
  ~PyHostMesh() { ResetWithoutGil(mesh_); }

  std::vector<std::string> addresses() const { return mesh_->addresses(); }
  std::string logs_dir() const { return mesh_->logs_dir(); }
  std::string client_id() const { return mesh_->client()->id(); }
  std::string slurm_job() const { return mesh_->slurm_job(); }
  std::vector<std::string> nodes() const { return mesh_->nodes(); }

  PyProcMesh Spawn(const std::string& name,
                   const std::vector<std::pair<std::string, size_t>>& per_host,
                   const std::string& spec_bytes, bool detached) const {
    v1::ProcSpec spec = ParseOwn<v1::ProcSpec>(spec_bytes, "spec");
    std::shared_ptr<HostMesh> mesh = mesh_;
    Extent extent{std::vector<Extent::Dim>(per_host.begin(), per_host.end())};
    ProcMeshOptions options;
    options.detached = detached;
    return PyProcMesh(ValueOrThrow(RunBlocking<absl::StatusOr<ProcMesh>>(
        "hm-spawn-procs", absl::StrCat("spawn of proc mesh \"", name, "\""),
        [mesh, name, extent, spec, options] {
          return mesh->Spawn(name, extent, spec, options);
        })));
  }

  void Shutdown(double grace) const {
    absl::Duration wait = Seconds(grace);
    std::shared_ptr<HostMesh> mesh = mesh_;
    ThrowIfError(RunBlocking<absl::Status>(
        "hm-shutdown", "shutdown of the hosts",
        [mesh, wait] { return mesh->Shutdown(wait); }));
  }

  std::unique_ptr<PyPort> OpenPort() const {
    return std::make_unique<PyPort>(mesh_->client());
  }

 private:
  std::shared_ptr<HostMesh> mesh_;
};

// Glog: warnings and errors to stderr, as the demo does (GLOG_* variables
// still win: glog reads them as its flags' defaults).
void InitLogging() {
  if (google::IsGoogleLoggingInitialized()) return;
  if (std::getenv("GLOG_logtostderr") == nullptr) FLAGS_logtostderr = true;
  if (std::getenv("GLOG_minloglevel") == nullptr) {
    FLAGS_minloglevel = google::GLOG_WARNING;
  }
  google::InitGoogleLogging("hostmesh");
}

}  // namespace
}  // namespace mesh::python

PYBIND11_MODULE(_hostmesh, m) {
  using namespace mesh::python;  // NOLINT(build/namespaces)
  m.doc() = "hostmesh's client library (use the hostmesh package)";
  InitLogging();
  main_thread_id = PyThread_get_thread_ident();
  {
    py::object threading = py::module_::import("threading");
    main_thread_id = threading.attr("main_thread")()
                         .attr("ident")
                         .cast<unsigned long>();  // NOLINT(runtime/int)
  }

  py::register_exception_translator([](std::exception_ptr thrown) {
    try {
      if (thrown) std::rethrow_exception(thrown);
    } catch (const StatusError& error) {
      SetPythonError(MakeError(error.status));
    }
  });

  m.def(
      "set_error_factory",
      [](py::object factory) {
        if (error_factory == nullptr) error_factory = new py::object();
        *error_factory = std::move(factory);
      },
      "factory(code, message, event_bytes_or_None) -> exception instance");
  m.def("drain", &Drain, py::arg("timeout"),
        "waits for interrupted work to end; returns how many are left");
  m.def("credentials_from_files",
        [](const std::string& token_file, const std::string& ca_file,
           const std::string& cert_file, const std::string& key_file) {
          mesh::ClientCredentials credentials =
              ValueOrThrow(mesh::ClientCredentials::FromFiles(
                  token_file, ca_file, cert_file, key_file));
          return std::vector<std::string>{
              credentials.token, credentials.tls_ca_pem,
              credentials.tls_cert_pem, credentials.tls_key_pem};
        });

  py::class_<HostOptions>(m, "HostOptions")
      .def(py::init<>())
      .def_readwrite("hostd_path", &HostOptions::hostd_path)
      .def_readwrite("hostd_args", &HostOptions::hostd_args)
      .def_readwrite("timeout", &HostOptions::timeout)
      .def_readwrite("keep_logs", &HostOptions::keep_logs)
      .def_readwrite("credentials", &HostOptions::credentials)
      .def_readwrite("forward_proc_output", &HostOptions::forward_proc_output);

  // mesh::SlurmOptions itself; time_limit in seconds (0: the partition's).
  py::class_<mesh::SlurmOptions>(m, "SlurmOptions")
      .def(py::init<>())
      .def_readwrite("job_id", &mesh::SlurmOptions::job_id)
      .def_readwrite("nodes", &mesh::SlurmOptions::nodes)
      .def_readwrite("tasks_per_node", &mesh::SlurmOptions::tasks_per_node)
      .def_readwrite("partition", &mesh::SlurmOptions::partition)
      .def_property(
          "time_limit",
          [](const mesh::SlurmOptions& slurm) {
            return absl::ToDoubleSeconds(slurm.time_limit);
          },
          [](mesh::SlurmOptions& slurm, double seconds) {
            if (!(seconds >= 0)) {
              throw StatusError(absl::InvalidArgumentError(absl::StrCat(
                  "time_limit must not be negative, got ", seconds)));
            }
            slurm.time_limit = absl::Seconds(seconds);
          })
      .def_readwrite("job_name", &mesh::SlurmOptions::job_name)
      .def_readwrite("salloc_args", &mesh::SlurmOptions::salloc_args)
      .def_readwrite("env", &mesh::SlurmOptions::env)
      .def_readwrite("listen", &mesh::SlurmOptions::listen)
      .def_readwrite("node_dir", &mesh::SlurmOptions::node_dir);

  py::class_<PyActorMesh>(m, "ActorMesh")
      .def_property_readonly("name", &PyActorMesh::name)
      .def_property_readonly("type", &PyActorMesh::type)
      .def_property_readonly("extent", &PyActorMesh::extent)
      .def_property_readonly("num_ranks", &PyActorMesh::num_ranks)
      .def("actor", &PyActorMesh::actor)
      .def("slice", &PyActorMesh::Slice)
      .def("cast", &PyActorMesh::Cast)
      .def("call", &PyActorMesh::Call)
      .def("reduce", &PyActorMesh::Reduce)
      .def("status", &PyActorMesh::Status)
      .def("on_supervision_event", &PyActorMesh::OnSupervisionEvent);

  py::class_<PyProcMesh>(m, "ProcMesh")
      .def_property_readonly("name", &PyProcMesh::name)
      .def_property_readonly("extent", &PyProcMesh::extent)
      .def_property_readonly("num_ranks", &PyProcMesh::num_ranks)
      .def("procs", &PyProcMesh::procs)
      .def("spawn", &PyProcMesh::Spawn)
      .def("stop", &PyProcMesh::Stop);

  py::class_<PyPort>(m, "Port")
      .def_property_readonly("ref", &PyPort::ref)
      .def("watch", &PyPort::Watch)
      .def("recv", &PyPort::Recv)
      .def("close", &PyPort::Close);

  py::class_<PyHostMesh>(m, "HostMesh")
      .def_static("local",
                  [](const HostOptions& options) {
                    return PyHostMesh::Start(PyHostMesh::Kind::kLocal, 1, {},
                                             options);
                  })
      .def_static("process",
                  [](size_t num_hosts, const HostOptions& options) {
                    return PyHostMesh::Start(PyHostMesh::Kind::kProcess,
                                             num_hosts, {}, options);
                  })
      .def_static(
          "attach",
          [](std::vector<std::string> addresses, const HostOptions& options) {
            return PyHostMesh::Start(PyHostMesh::Kind::kAttach, 0,
                                     std::move(addresses), options);
          })
      .def_static(
          "slurm",
          [](const mesh::SlurmOptions& slurm, const HostOptions& options) {
            return PyHostMesh::Start(PyHostMesh::Kind::kSlurm, 0, {}, options,
                                     slurm);
          })
      .def_property_readonly("addresses", &PyHostMesh::addresses)
      .def_property_readonly("logs_dir", &PyHostMesh::logs_dir)
      .def_property_readonly("client_id", &PyHostMesh::client_id)
      .def_property_readonly("slurm_job", &PyHostMesh::slurm_job)
      .def_property_readonly("nodes", &PyHostMesh::nodes)
      .def("spawn", &PyHostMesh::Spawn)
      .def("shutdown", &PyHostMesh::Shutdown)
      .def("open_port", &PyHostMesh::OpenPort);
}
