"""hostmesh from Python: hosts -> procs -> actors, over the C++ client library.

    import hostmesh
    from hostmesh.proto import actors_pb2

    with hostmesh.this_host() as hosts:
        procs = hosts.spawn_procs(per_host={"procs": 4}, name="p0")
        echo = procs.spawn("a0", "mesh.echo")
        replies = echo.call(actors_pb2.Echo(text="hello"))   # rank order
        first_two = echo.slice(procs=slice(0, 2))

Messages are protobuf messages (hostmesh.proto has the mesh's own); errors
are MeshError subclasses carrying their cause. See the README's "Python quick
start".
"""

# The mesh's messages first: the extension then finds their descriptors
# already in Python's pool.
from hostmesh.proto import actors_pb2  # noqa: F401
from hostmesh.proto import host_pb2  # noqa: F401
from hostmesh.proto import mailbox_pb2  # noqa: F401
from hostmesh.proto import proc_pb2  # noqa: F401

from hostmesh import _errors
from hostmesh import _hostmesh
from hostmesh._errors import (Aborted, AlreadyExists, Cancelled, DataLoss,
                              DeadlineExceeded, FailedPrecondition, Internal,
                              InvalidArgument, MeshError, NotFound, OutOfRange,
                              PermissionDenied, ResourceExhausted,
                              Unauthenticated, Unavailable, Unimplemented,
                              Unknown)
from hostmesh._mesh import (ActorMesh, Credentials, HostMesh, Port, ProcMesh,
                            this_host)

_hostmesh.set_error_factory(_errors.make_error)
_errors.install_excepthook()

__all__ = [
    "Aborted", "ActorMesh", "AlreadyExists", "Cancelled", "Credentials",
    "DataLoss", "DeadlineExceeded", "FailedPrecondition", "HostMesh",
    "Internal", "InvalidArgument", "MeshError", "NotFound", "OutOfRange",
    "PermissionDenied", "Port", "ProcMesh", "ResourceExhausted",
    "Unauthenticated", "Unavailable", "Unimplemented", "Unknown", "this_host"
]
