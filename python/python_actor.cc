#include "python/python_actor.h"

#include <Python.h>
#include <glog/logging.h>
#include <pybind11/embed.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "python/foreign_types.h"

namespace py = pybind11;

namespace mesh::python {
namespace {

// What a handler (or Init) gets as `ctx` from Python (wrapped by
// hostmesh._actor.Context): the C++ ActorContext, valid only during the
// call it was made for; afterwards every use raises.
class ContextHandle {
 public:
  explicit ContextHandle(ActorContext* ctx) : ctx_(ctx) {}

  ActorContext& ctx() const {
    if (ctx_ == nullptr) {
      throw std::runtime_error(
          "a hostmesh Context is valid only during the handler (or init) it "
          "was passed to");
    }
    return *ctx_;
  }
  void Invalidate() { ctx_ = nullptr; }

  uint64_t rank() const { return ctx().rank(); }
  uint64_t cast_rank() const { return ctx().cast_rank(); }
  std::string sender() const { return ctx().sender(); }
  py::bytes self_ref() const {
    return py::bytes(ctx().self().SerializeAsString());
  }

  // `to` is "port" (ref: a mesh.v1.PortRef) or "actor" (a mesh.v1.ActorRef).
  void Send(const std::string& to, const std::string& ref_bytes,
            const std::string& type_name, const std::string& bytes) const {
    ActorContext& context = ctx();
    absl::StatusOr<std::unique_ptr<google::protobuf::Message>> message =
        ParseForeign(type_name, bytes);
    if (!message.ok()) throw py::value_error(message.status().ToString());
    if (to == "port") {
      v1::PortRef port;
      if (!port.ParseFromString(ref_bytes)) {
        throw py::value_error("not a serialized mesh.v1.PortRef");
      }
      py::gil_scoped_release release;
      context.Send(port, **message);
    } else {
      v1::ActorRef actor;
      if (!actor.ParseFromString(ref_bytes)) {
        throw py::value_error("not a serialized mesh.v1.ActorRef");
      }
      py::gil_scoped_release release;
      context.Send(actor, **message);
    }
  }

 private:
  ActorContext* ctx_;
};

// A ContextHandle for Python during one call; invalidated when it ends.
class ScopedContext {
 public:
  explicit ScopedContext(ActorContext& ctx)
      : object_(py::cast(std::make_unique<ContextHandle>(&ctx))) {}
  ~ScopedContext() { object_.cast<ContextHandle&>().Invalidate(); }
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

  const py::object& object() const { return object_; }

 private:
  py::object object_;
};

// The Python thread state of one actor's thread, made on first use and
// deleted with the actor (on the same thread: the runtime makes, runs and
// destroys an actor on its own thread). Not thread-safe.
class ActorThreadState {
 public:
  ActorThreadState() = default;
  ~ActorThreadState() {
    if (state_ == nullptr) return;
    PyEval_RestoreThread(state_);
    PyThreadState_Clear(state_);
    PyThreadState_DeleteCurrent();  // releases the GIL
  }
  ActorThreadState(const ActorThreadState&) = delete;
  ActorThreadState& operator=(const ActorThreadState&) = delete;

  // Holds the GIL (with this thread state) for its scope.
  class Gil {
   public:
    explicit Gil(ActorThreadState& thread) {
      if (thread.state_ == nullptr) {
        thread.state_ = PyThreadState_New(PyInterpreterState_Main());
      }
      PyEval_RestoreThread(thread.state_);
    }
    ~Gil() { PyEval_SaveThread(); }
    Gil(const Gil&) = delete;
    Gil& operator=(const Gil&) = delete;
  };

 private:
  PyThreadState* state_ = nullptr;
};

// The status for what Python raised (the GIL held): hostmesh._actor raises
// ActorFailure(code, message) with the message made for the client;
// anything else is a bug of that module, reported as it is.
absl::Status StatusOfPythonError(py::error_already_set& error,
                                 const py::object& failure_class) {
  if (error.matches(failure_class)) {
    py::object value = error.value();
    int code = value.attr("code").cast<int>();
    std::string message = value.attr("message").cast<std::string>();
    if (code <= 0 ||
        code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
      code = static_cast<int>(absl::StatusCode::kUnknown);
    }
    return absl::Status(static_cast<absl::StatusCode>(code), message);
  }
  return absl::UnknownError(absl::StrCat("hostmesh._actor: ", error.what()));
}

class PythonActor : public Actor {
 public:
  ~PythonActor() override {
    if (!hosted_ && !decoded_ && !failure_class_) return;
    ActorThreadState::Gil gil(thread_);
    decoded_ = py::object();
    hosted_ = py::object();
    failure_class_ = py::object();
  }

  absl::Status Init(const google::protobuf::Any& params,
                    ActorContext& ctx) override {
    const std::string& url = params.type_url();
    const std::string type = url.substr(url.rfind('/') + 1);
    if (type != kPythonActorSpecType) {
      return absl::InvalidArgumentError(absl::StrCat(
          "actor type \"", kPythonActorType, "\" takes a ",
          kPythonActorSpecType,
          " as its params (ProcMesh.spawn with a hostmesh.Actor class sends "
          "one); got ",
          type.empty() ? "none" : type));
    }
    std::vector<std::string> types;
    {
      ActorThreadState::Gil gil(thread_);
      py::module_ module;
      try {
        py::module_::import("_hostmesh_proc");  // registers ContextHandle
        module = py::module_::import("hostmesh._actor");
      } catch (py::error_already_set& error) {
        std::string path = py::str(py::module_::import("sys").attr("path"));
        return absl::FailedPreconditionError(absl::StrCat(
            "cannot import the hostmesh package in proc \"", ctx.self().proc(),
            "\" (", error.what(), "); sys.path: ", path));
      }
      failure_class_ = module.attr("ActorFailure");
      ScopedContext pyctx(ctx);
      try {
        hosted_ =
            module.attr("host")(py::bytes(params.value()), pyctx.object());
        for (py::handle name : hosted_.attr("types")) {
          types.push_back(name.cast<std::string>());
        }
      } catch (py::error_already_set& error) {
        hosted_ = py::object();
        return StatusOfPythonError(error, failure_class_);
      } catch (const std::exception& error) {
        hosted_ = py::object();
        return absl::InternalError(
            absl::StrCat("Python actor's init: ", error.what()));
      }
    }
    for (const std::string& name : types) {
      HandleErased(
          name,
          [this, name](const google::protobuf::Any& payload,
                       std::unique_ptr<google::protobuf::Message>* request) {
            return Parse(name, payload, request);
          },
          [this, name](const google::protobuf::Message& request,
                       ActorContext& ctx) { return Run(name, request, ctx); });
    }
    return absl::OkStatus();
  }

 private:
  // The payload as a foreign message for the runtime, and decoded in Python
  // (kept for Run): a payload Python cannot decode is refused.
  bool Parse(const std::string& name, const google::protobuf::Any& payload,
             std::unique_ptr<google::protobuf::Message>* request) {
    absl::StatusOr<std::unique_ptr<google::protobuf::Message>> parsed =
        ParseForeign(name, payload.value());
    if (!parsed.ok()) return false;
    ActorThreadState::Gil gil(thread_);
    try {
      decoded_ = hosted_.attr("decode")(name, py::bytes(payload.value()));
    } catch (const std::exception&) {  // py::error_already_set too
      decoded_ = py::object();
      decoded_for_ = nullptr;
      return false;
    }
    decoded_for_ = parsed->get();
    *request = *std::move(parsed);
    return true;
  }

  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> Run(
      const std::string& name, const google::protobuf::Message& request,
      ActorContext& ctx) {
    std::string type_name;
    std::string bytes;
    {
      ActorThreadState::Gil gil(thread_);
      py::object message = std::move(decoded_);
      decoded_ = py::object();
      const bool decoded = decoded_for_ == &request && message;
      decoded_for_ = nullptr;
      ScopedContext pyctx(ctx);
      try {
        if (!decoded) {
          message = hosted_.attr("decode")(
              name, py::bytes(request.SerializeAsString()));
        }
        py::tuple reply = hosted_.attr("handle")(name, message, pyctx.object());
        type_name = reply[0].cast<std::string>();
        bytes = reply[1].cast<std::string>();
      } catch (py::error_already_set& error) {
        return StatusOfPythonError(error, failure_class_);
      } catch (const std::exception& error) {
        return absl::InternalError(
            absl::StrCat("the Python handler for ", name,
                         " returned no reply: ", error.what()));
      }
    }
    absl::StatusOr<std::unique_ptr<google::protobuf::Message>> reply =
        ParseForeign(type_name, bytes);
    if (!reply.ok()) {
      return absl::InternalError(
          absl::StrCat("the reply of the Python handler for ", name,
                       " cannot be sent: ", reply.status().message()));
    }
    return reply;
  }

  // Declared first: destroyed last, after the Python objects below.
  ActorThreadState thread_;
  py::object failure_class_;
  // The hostmesh._actor.Hosted around the user's instance.
  py::object hosted_;
  // The request Parse decoded, for the Run that follows it.
  py::object decoded_;
  const google::protobuf::Message* decoded_for_ = nullptr;
};

}  // namespace

void RegisterPythonActor(ActorRegistry& registry) {
  registry.Register(kPythonActorType,
                    [] { return std::unique_ptr<Actor>(new PythonActor()); });
}

}  // namespace mesh::python

// What hostmesh._actor uses in a proc; its presence (a built-in module)
// also tells the hostmesh package that it runs inside procd_py.
PYBIND11_EMBEDDED_MODULE(_hostmesh_proc, m) {
  using mesh::python::ContextHandle;
  m.doc() = "procd_py's side of hostmesh's Python actors (internal)";
  py::class_<ContextHandle>(m, "Context")
      .def_property_readonly("rank", &ContextHandle::rank)
      .def_property_readonly("cast_rank", &ContextHandle::cast_rank)
      .def_property_readonly("sender", &ContextHandle::sender)
      .def_property_readonly("self_ref", &ContextHandle::self_ref)
      .def("send", &ContextHandle::Send);
}
