"""Exceptions: every error of the mesh is a MeshError, one subclass per code.

The extension builds them through make_error (set as its error factory), so
an error raised in C++ arrives as the right class with its cause attached: the
supervision event (which actor, rank, how its proc ended, the stderr lines
that explain it) when the failure carries one.
"""

import sys

# absl::StatusCode / grpc codes.
CODE_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

# What the extension passes for "a signal interrupted the wait".
_INTERRUPTED = -1


class MeshError(Exception):
    """An error from the mesh: a host, a proc, an actor, or bad input.

    Attributes:
      code: the status code's name, e.g. "UNAVAILABLE".
      message: what went wrong, naming the thing (actor, rank, proc, host).
      event: the mesh.v1.SupervisionEvent behind it, if the error is an
        actor's end (its handler failed, its proc ended, its host was lost);
        else None.
      rank: the rank (in its actor mesh) of the actor whose end this is
        (the event's), else of the actor whose reply it is (call), else None.
      view_rank: set by call: the rank in the view called.
      results: set by ActorMesh.call when it raises: every rank's reply or
        exception, in rank order.
    """

    code = "UNKNOWN"

    def __init__(self, message, event=None, rank=None):
        super().__init__(message)
        self.message = message
        self.event = event
        self._rank = rank
        self.view_rank = None
        self.results = None

    @property
    def rank(self):
        if self.event is not None:
            return self.event.rank
        return self._rank

    @rank.setter
    def rank(self, value):
        self._rank = value

    @property
    def proc_exit(self):
        """mesh.v1.ProcExit if the actor's proc ended, else None."""
        if self.event is not None and self.event.HasField("proc_exit"):
            return self.event.proc_exit
        return None

    @property
    def signal(self):
        """The signal number that killed the actor's proc, else None."""
        proc_exit = self.proc_exit
        if proc_exit is not None and proc_exit.HasField("term_signal"):
            return proc_exit.term_signal
        return None

    @property
    def exit_code(self):
        """The exit code of the actor's proc, if it exited, else None."""
        proc_exit = self.proc_exit
        if proc_exit is not None and proc_exit.HasField("exit_code"):
            return proc_exit.exit_code
        return None

    @property
    def stderr(self):
        """The proc's stderr lines that explain its end (may be empty)."""
        proc_exit = self.proc_exit
        return list(proc_exit.stderr_lines) if proc_exit is not None else []

    def __str__(self):
        return self.message


class Cancelled(MeshError):
    code = "CANCELLED"


class Unknown(MeshError):
    code = "UNKNOWN"


class InvalidArgument(MeshError, ValueError):
    code = "INVALID_ARGUMENT"


class DeadlineExceeded(MeshError, TimeoutError):
    code = "DEADLINE_EXCEEDED"


class NotFound(MeshError, LookupError):
    code = "NOT_FOUND"


class AlreadyExists(MeshError):
    code = "ALREADY_EXISTS"


class PermissionDenied(MeshError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(MeshError):
    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(MeshError):
    code = "FAILED_PRECONDITION"


class Aborted(MeshError):
    code = "ABORTED"


class OutOfRange(MeshError):
    code = "OUT_OF_RANGE"


class Unimplemented(MeshError):
    code = "UNIMPLEMENTED"


class Internal(MeshError):
    code = "INTERNAL"


class Unavailable(MeshError):
    code = "UNAVAILABLE"


class DataLoss(MeshError):
    code = "DATA_LOSS"


class Unauthenticated(MeshError):
    code = "UNAUTHENTICATED"


_BY_CODE = {
    cls.code: cls
    for cls in (Cancelled, Unknown, InvalidArgument, DeadlineExceeded,
                NotFound, AlreadyExists, PermissionDenied, ResourceExhausted,
                FailedPrecondition, Aborted, OutOfRange, Unimplemented,
                Internal, Unavailable, DataLoss, Unauthenticated)
}


def make_error(code, message, event_bytes=None):
    """The exception for a status (the extension's error factory)."""
    if code == _INTERRUPTED:
        interrupt = KeyboardInterrupt(f"hostmesh: {message} interrupted")
        interrupt._hostmesh_interrupt = True  # pylint: disable=protected-access
        return interrupt
    event = None
    if event_bytes is not None:
        from hostmesh.proto import proc_pb2  # pylint: disable=import-outside-toplevel
        event = proc_pb2.SupervisionEvent.FromString(event_bytes)
    cls = _BY_CODE.get(CODE_NAMES.get(code, "UNKNOWN"), MeshError)
    return cls(message, event=event)


def install_excepthook():
    """An interrupt of a hostmesh wait that nobody caught prints one line.

    Only those interrupts: everything else goes to the hook that was there.
    """
    previous = sys.excepthook
    if getattr(previous, "_hostmesh_hook", False):
        return

    def hook(kind, value, traceback):
        if getattr(value, "_hostmesh_interrupt", False):
            sys.stderr.write(f"KeyboardInterrupt: {value}\n")
            sys.stderr.flush()
            return
        previous(kind, value, traceback)

    hook._hostmesh_hook = True  # pylint: disable=protected-access
    sys.excepthook = hook
