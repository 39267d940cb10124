"""Python actors: classes whose methods handle messages, run in procd_py.

    class Trainer(hostmesh.Actor):
        def init(self, params, ctx):   # optional: the spawn's params (or None)
            self.lr = params.lr

        @hostmesh.handler(StepRequest)
        def step(self, msg, ctx):      # one message at a time
            return StepReply(loss=...)

A client spawns one per proc with procs.spawn("t0", Trainer, params) on procs
started with spawn_procs(..., python=True): that sends actor type "python"
with a PythonActorSpec (the class's module and qualified name, the params).
In the proc, procd_py's "python" actor (python/python_actor.cc) calls host()
to make the instance, then decode() and handle() per message, holding the
GIL. An exception fails the actor: ActorFailure carries the message the
client's exception and supervision event show (the exception and the last
lines of its traceback); the whole traceback goes to the proc's stderr.
"""

import importlib
import importlib.util
import os
import sys
import traceback

from google.protobuf import any_pb2
from google.protobuf import empty_pb2
from google.protobuf import message as _message

from hostmesh import _errors
from hostmesh import _messages
from hostmesh.proto import mailbox_pb2
from hostmesh.proto import python_actor_pb2

# The module a class of the client's main script is imported as in a proc.
MAIN_MODULE = "__hostmesh_main__"

# An error leaving a proc is cut to 2000 bytes (lib/names.h); a failure's
# message stays below that so its traceback's last lines survive.
_MAX_FAILURE_BYTES = 1500
_MAX_LINE_BYTES = 300

_CODES = {name: number for number, name in _errors.CODE_NAMES.items()}
_UNKNOWN = _CODES["UNKNOWN"]


def handler(*message_types):
    """Declares a method the handler of messages of `message_types`:

        @hostmesh.handler(StepRequest)
        def step(self, msg, ctx): ...

    It gets the message and a Context, and returns the reply (a protobuf
    message; None replies google.protobuf.Empty). An exception fails the
    actor.
    """
    if not message_types:
        raise TypeError("handler needs a protobuf message class: "
                        "@hostmesh.handler(StepRequest)")
    for message_type in message_types:
        if not (isinstance(message_type, type) and
                issubclass(message_type, _message.Message)):
            raise TypeError("handler takes protobuf message classes, got "
                            f"{message_type!r:.80}")

    def mark(function):
        if not callable(function):
            raise TypeError(f"@hostmesh.handler decorates a method, not "
                            f"{type(function).__name__}")
        function._hostmesh_handles = (
            getattr(function, "_hostmesh_handles", ()) + message_types)
        return function

    return mark


class Actor:
    """Base class of Python actors. Declare handlers with @hostmesh.handler;
    override init(params, ctx) to set up from the spawn's params. The class
    must be importable in the procs: defined at the top level of a module on
    the client's sys.path (or of the client's main script, whose client code
    then sits under `if __name__ == "__main__":`)."""

    # Full message name -> (message class, method name), inherited ones too.
    _hostmesh_handlers = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        handlers = {}
        for base in reversed(cls.__mro__[1:]):
            handlers.update(base.__dict__.get("_hostmesh_handlers", {}))
        own = {}
        for attr, value in cls.__dict__.items():
            for message_type in getattr(value, "_hostmesh_handles", ()):
                name = message_type.DESCRIPTOR.full_name
                if name in own:
                    raise TypeError(f"{cls.__qualname__} has two handlers for "
                                    f"{name}: {own[name][1]} and {attr}")
                own[name] = (message_type, attr)
        handlers.update(own)
        cls._hostmesh_handlers = handlers

    def init(self, params, ctx):
        """Called once, before any message: `params` is the message given to
        spawn (None if none). An exception fails the spawn."""


class Context:
    """What a handler knows about the message it handles, and how it sends.
    Valid only during the handler (or init) it was passed to."""

    __slots__ = ("_impl",)

    def __init__(self, impl):
        self._impl = impl

    @property
    def rank(self):
        """This actor's rank in its mesh."""
        return self._impl.rank

    @property
    def cast_rank(self):
        """This actor's rank in the view the message was cast to."""
        return self._impl.cast_rank

    @property
    def sender(self):
        """The sending mailbox, for diagnostics ("" in init)."""
        return self._impl.sender

    @property
    def self(self):
        """This actor's mesh.v1.ActorRef (host, proc, actor, rank)."""
        return mailbox_pb2.ActorRef.FromString(self._impl.self_ref)

    def send(self, to, message):
        """Sends `message` to a port (a mesh.v1.PortRef, e.g. one a client
        put in a message) or an actor (a mesh.v1.ActorRef); fire and
        forget, in order per destination."""
        type_name, data = _messages.encode(message)
        kind = getattr(getattr(to, "DESCRIPTOR", None), "full_name", None)
        if kind == "mesh.v1.PortRef":
            self._impl.send("port", to.SerializeToString(), type_name, data)
        elif kind == "mesh.v1.ActorRef":
            self._impl.send("actor", to.SerializeToString(), type_name, data)
        else:
            raise TypeError("send takes a mesh.v1.PortRef or ActorRef, got "
                            f"{type(to).__name__}")


# ---------------------------------------------------------------------------
# The client's side: the spec a spawn sends.


def spec_for(cls, params):
    """The PythonActorSpec for spawning `cls` with `params` (a message or
    None); TypeError for a class the procs could not import."""
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise TypeError(f"a Python actor class must subclass hostmesh.Actor, "
                        f"got {cls!r:.80}")
    if "<locals>" in cls.__qualname__:
        raise TypeError(f"{cls.__qualname__} is defined inside a function; "
                        "the procs import Python actor classes by name: "
                        "define it at a module's top level")
    spec = python_actor_pb2.PythonActorSpec(module=cls.__module__,
                                            qualname=cls.__qualname__)
    if cls.__module__ == "__main__":
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        if not path:
            raise TypeError(f"{cls.__qualname__} is defined in an interactive "
                            "session; the procs import Python actor classes: "
                            "define it in a module or a script file")
        spec.main_path = os.path.abspath(path)
    if params is not None:
        _messages.encode(params, "params")  # checks it is a message
        spec.params.Pack(params)
    return spec


# ---------------------------------------------------------------------------
# The proc's side (procd_py): called by python/python_actor.cc, GIL held.


class ActorFailure(Exception):
    """What fails the actor: a status code (absl's number) and the message
    the client sees."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _cut(line):
    data = line.encode("utf-8", "replace")
    if len(data) <= _MAX_LINE_BYTES:
        return line
    return data[:_MAX_LINE_BYTES].decode("utf-8", "ignore") + "..."


def _failure(error, what, skip_frames=1):
    """The ActorFailure for `error` raised by `what` (e.g. "Python handler
    Trainer.step for demo.Step"); prints its whole traceback to stderr.
    `skip_frames`: frames of this module at the top of its traceback."""
    tb = error.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    lines = "".join(traceback.format_exception(type(error), error,
                                               tb)).rstrip("\n").split("\n")
    try:
        sys.stderr.write(f"hostmesh: {what} raised:\n" + "\n".join(lines) +
                         "\n")
        sys.stderr.flush()
    except Exception:  # pylint: disable=broad-except
        pass
    detail = str(error).split("\n", 1)[0]
    summary = _cut(f"{what} raised {type(error).__name__}" +
                   (f": {detail}" if detail else ""))
    # The traceback's first line, then as many of its last lines as fit.
    budget = _MAX_FAILURE_BYTES - len(summary.encode())
    head = _cut(lines[0])
    budget -= len(head.encode()) + 1
    tail = []
    for line in reversed(lines[1:]):
        line = _cut(line)
        if len(line.encode()) + 1 > budget:
            break
        tail.insert(0, line)
        budget -= len(line.encode()) + 1
    left_out = len(lines) - 1 - len(tail)
    body = [head] + ([f"  ... ({left_out} lines left out)"] if left_out else
                     []) + tail
    code = _UNKNOWN
    if isinstance(error, _errors.MeshError):
        code = _CODES.get(error.code, _UNKNOWN)
    return ActorFailure(code, summary + "\n" + "\n".join(body))


def _import_class(spec, where):
    """The class `spec` names, imported in this proc."""
    what = f"Python actor class {spec.module}.{spec.qualname}"
    if spec.main_path:
        module = sys.modules.get(MAIN_MODULE)
        if module is None or module.__file__ != spec.main_path:
            if not os.path.isfile(spec.main_path):
                raise ActorFailure(
                    _CODES["NOT_FOUND"],
                    f"the client's script {spec.main_path} (which defines "
                    f"{spec.qualname}) is not a file {where}")
            loaded = importlib.util.spec_from_file_location(
                MAIN_MODULE, spec.main_path)
            module = importlib.util.module_from_spec(loaded)
            sys.modules[MAIN_MODULE] = module
            try:
                loaded.loader.exec_module(module)
            except BaseException as error:  # pylint: disable=broad-except
                del sys.modules[MAIN_MODULE]
                raise _failure(error, f"importing the client's script "
                               f"{spec.main_path} {where}") from None
    else:
        try:
            module = importlib.import_module(spec.module)
        except ModuleNotFoundError as error:
            if error.name and (spec.module == error.name or
                               spec.module.startswith(error.name + ".")):
                raise ActorFailure(
                    _CODES["NOT_FOUND"],
                    f"cannot import module \"{spec.module}\" for {what} "
                    f"{where}: {error} (sys.path: {sys.path})") from None
            raise _failure(error, f"importing module {spec.module} {where}",
                           skip_frames=0) from None
        except BaseException as error:  # pylint: disable=broad-except
            raise _failure(error, f"importing module {spec.module} {where}",
                           skip_frames=0) from None
    found = module
    for part in spec.qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ActorFailure(
                _CODES["NOT_FOUND"],
                f"module {spec.module} ({getattr(module, '__file__', '?')}) "
                f"has no {spec.qualname} {where}")
    if not (isinstance(found, type) and issubclass(found, Actor)):
        raise ActorFailure(
            _CODES["INVALID_ARGUMENT"],
            f"{spec.module}.{spec.qualname} is not a hostmesh.Actor class")
    return found


class Hosted:
    """One Python actor in this proc: the user's instance and its handlers."""

    def __init__(self, cls, instance):
        self._cls = cls
        self._instance = instance
        self._handlers = dict(cls._hostmesh_handlers)  # pylint: disable=protected-access
        self.types = sorted(self._handlers)

    def decode(self, type_name, data):
        """The request of type `type_name` (raises if `data` is not one)."""
        return self._handlers[type_name][0].FromString(data)

    def handle(self, type_name, message, ctx_impl):
        """Runs the handler: (reply type name, reply bytes), or raises
        ActorFailure."""
        attr = self._handlers[type_name][1]
        what = f"Python handler {self._cls.__qualname__}.{attr} for {type_name}"
        try:
            reply = getattr(self._instance, attr)(message, Context(ctx_impl))
        except BaseException as error:  # pylint: disable=broad-except
            raise _failure(error, what) from None
        if reply is None:
            reply = empty_pb2.Empty()
        if not isinstance(reply, _message.Message):
            message = (f"{what} returned {type(reply).__name__}, not a "
                       "protobuf message (or None)")
            sys.stderr.write(f"hostmesh: {message}\n")
            raise ActorFailure(_CODES["INTERNAL"], message)
        return reply.DESCRIPTOR.full_name, reply.SerializeToString()


def host(spec_bytes, ctx_impl):
    """Makes the actor a PythonActorSpec describes: imports its class, makes
    the instance and runs its init. Raises ActorFailure."""
    ctx = Context(ctx_impl)
    ref = ctx.self
    where = f"in proc \"{ref.proc}\" on host {ref.host}"
    try:
        spec = python_actor_pb2.PythonActorSpec.FromString(spec_bytes)
    except Exception as error:  # pylint: disable=broad-except
        raise ActorFailure(_CODES["INVALID_ARGUMENT"],
                           f"not a PythonActorSpec: {error}") from None
    cls = _import_class(spec, where)
    params = None
    if spec.HasField("params"):
        type_name = spec.params.type_url.rsplit("/", 1)[-1]
        params_class = _messages.message_class(type_name)
        if params_class is None:
            params = any_pb2.Any()
            params.CopyFrom(spec.params)
        else:
            params = params_class.FromString(spec.params.value)
    try:
        instance = cls()
    except BaseException as error:  # pylint: disable=broad-except
        raise _failure(error, f"{cls.__qualname__}() {where}") from None
    try:
        instance.init(params, ctx)
    except BaseException as error:  # pylint: disable=broad-except
        raise _failure(error, f"{cls.__qualname__}.init {where}") from None
    return Hosted(cls, instance)
