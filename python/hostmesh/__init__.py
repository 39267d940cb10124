"""hostmesh from Python: hosts -> procs -> actors, over the C++ client library.

    import hostmesh
    from hostmesh.proto import actors_pb2

    with hostmesh.this_host() as hosts:
        procs = hosts.spawn_procs(per_host={"procs": 4}, name="p0")
        echo = procs.spawn("a0", "mesh.echo")
        replies = echo.call(actors_pb2.Echo(text="hello"))   # rank order
        first_two = echo.slice(procs=slice(0, 2))

Python actors: subclasses of hostmesh.Actor with @hostmesh.handler methods,
spawned with procs.spawn("t0", MyActor) on procs started with
spawn_procs(..., python=True).

Messages are protobuf messages (hostmesh.proto has the mesh's own); errors
are MeshError subclasses carrying their cause. See the README's "Python quick
start".
"""

import sys

# The mesh's messages first: the extension then finds their descriptors
# already in Python's pool.
from hostmesh.proto import actors_pb2  # noqa: F401
from hostmesh.proto import host_pb2  # noqa: F401
from hostmesh.proto import mailbox_pb2  # noqa: F401
from hostmesh.proto import proc_pb2  # noqa: F401

from hostmesh import _errors
from hostmesh._actor import Actor, Context, handler
from hostmesh._errors import (Aborted, AlreadyExists, Cancelled, DataLoss,
                              DeadlineExceeded, FailedPrecondition, Internal,
                              InvalidArgument, MeshError, NotFound, OutOfRange,
                              PermissionDenied, ResourceExhausted,
                              Unauthenticated, Unavailable, Unimplemented,
                              Unknown)

# Inside a proc of procd_py (a Python actor's), whose built-in module
# _hostmesh_proc is there: only the actor API. The client library (the
# extension) cannot load into a proc: both hold the mesh's generated
# messages, which one process may register only once.
IN_PROC = "_hostmesh_proc" in sys.builtin_module_names

_CLIENT_NAMES = ("ActorMesh", "Credentials", "HostMesh", "Port", "ProcMesh",
                 "this_host")

if not IN_PROC:
    from hostmesh import _hostmesh
    from hostmesh._mesh import (ActorMesh, Credentials, HostMesh, Port,
                                ProcMesh, this_host)

    _hostmesh.set_error_factory(_errors.make_error)
    _errors.install_excepthook()
else:

    def __getattr__(name):
        if name in _CLIENT_NAMES:
            raise ImportError(
                f"hostmesh.{name} is not available inside a proc (a Python "
                "actor's): only the actor API is. A script that defines "
                "actors keeps its client code under "
                "`if __name__ == \"__main__\":`")
        raise AttributeError(f"module 'hostmesh' has no attribute {name!r}")


__all__ = [
    "Aborted", "Actor", "ActorMesh", "AlreadyExists", "Cancelled", "Context",
    "Credentials", "DataLoss", "DeadlineExceeded", "FailedPrecondition",
    "HostMesh", "Internal", "InvalidArgument", "MeshError", "NotFound",
    "OutOfRange", "PermissionDenied", "Port", "ProcMesh", "ResourceExhausted",
    "Unauthenticated", "Unavailable", "Unimplemented", "Unknown", "handler",
    "this_host"
]
