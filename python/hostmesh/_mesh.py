"""Host, proc and actor meshes over the C++ client library (_hostmesh)."""

import asyncio
import atexit
import concurrent.futures
import dataclasses
import functools
import itertools
import os
import shutil
import sys
import threading
import weakref

from hostmesh import _actor
from hostmesh import _errors
from hostmesh import _hostmesh
from hostmesh import _messages
from hostmesh.proto import host_pb2
from hostmesh.proto import mailbox_pb2
from hostmesh.proto import proc_pb2

DEFAULT_TIMEOUT = 30.0

_REDUCERS = {
    "collect": mailbox_pb2.REDUCE_COLLECT,
    "count": mailbox_pb2.REDUCE_COUNT,
    "sum": mailbox_pb2.REDUCE_SUM,
    "min": mailbox_pb2.REDUCE_MIN,
    "max": mailbox_pb2.REDUCE_MAX,
    "first_error": mailbox_pb2.REDUCE_FIRST_ERROR,
}


def _check_timeout(timeout, what="timeout"):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got "
                        f"{type(timeout).__name__}")
    if not timeout > 0:
        raise ValueError(f"{what} must be positive, got {timeout}")
    return float(timeout)


def _check_name(name, what):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    return name


# ---------------------------------------------------------------------------
# asyncio: blocking calls run on threads of their own (they release the GIL).

_executor = None
_executor_lock = threading.Lock()


def _run_async(function, *args, **kwargs):
    global _executor  # pylint: disable=global-statement
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=32, thread_name_prefix="hostmesh")
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(_executor,
                                functools.partial(function, *args, **kwargs))


# ---------------------------------------------------------------------------
# Finding hostd: HOSTMESH_HOSTD, else beside this package (Bazel's output
# tree, or an install prefix), else the PATH; else the library's own search.


def _find_hostd():
    if os.environ.get("HOSTMESH_HOSTD"):
        return ""  # the library reads it
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = []
    for base in (here, os.path.dirname(os.path.realpath(__file__))):
        # bazel-bin/python/site/hostmesh -> bazel-bin/hostd/hostd
        candidates.append(os.path.join(base, "..", "..", "..", "hostd", "hostd"))
        # <prefix>/lib/python3/dist-packages/hostmesh -> <prefix>/bin/hostd
        candidates.append(os.path.join(base, "..", "..", "..", "..", "bin",
                                       "hostd"))
    on_path = shutil.which("hostd")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return os.path.normpath(candidate)
    return ""


def _find_procd_py():
    """procd_py, the procd of Python actors: HOSTMESH_PROCD_PY, else beside
    this package (bazel-bin/python/procd_py; <prefix>/bin/procd_py for a
    package in <prefix>/lib/python3*/dist-packages), else on the PATH."""
    if os.environ.get("HOSTMESH_PROCD_PY"):
        return os.path.abspath(os.environ["HOSTMESH_PROCD_PY"])
    candidates = []
    for base in (os.path.dirname(os.path.abspath(__file__)),
                 os.path.dirname(os.path.realpath(__file__))):
        # bazel-bin/python/site/hostmesh -> bazel-bin/python/procd_py
        candidates.append(os.path.join(base, "..", "..", "procd_py"))
        candidates.append(os.path.join(base, "..", "..", "..", "..", "bin",
                                       "procd_py"))
    on_path = shutil.which("procd_py")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return os.path.abspath(candidate)
    looked = sorted(set(os.path.normpath(c) for c in candidates))
    raise _errors.NotFound(
        "procd_py (the procd of Python actors) is not beside the hostmesh "
        f"package, nor on the PATH; looked at {looked} (set "
        "HOSTMESH_PROCD_PY, or build //python:procd_py)")


def _python_path():
    """This interpreter's sys.path as a PYTHONPATH for procs ("" is the
    current directory)."""
    entries = []
    for entry in sys.path:
        entry = os.path.abspath(entry) if entry else os.getcwd()
        if entry not in entries:
            entries.append(entry)
    return os.pathsep.join(entries)


# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a client presents to attached hosts: a token and/or TLS (PEM).

    See the README's "Security"; from_files reads (and checks the modes of)
    the files as meshctl does.
    """
    token: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @classmethod
    def from_files(cls, token_file="", tls_ca_file="", tls_cert_file="",
                   tls_key_file=""):
        token, ca, cert, key = _hostmesh.credentials_from_files(
            token_file, tls_ca_file, tls_cert_file, tls_key_file)
        return cls(token, ca, cert, key)

    @classmethod
    def from_env(cls):
        """From the files named by HOSTMESH_TOKEN_FILE, HOSTMESH_TLS_CA, ..."""
        env = os.environ
        return cls.from_files(env.get("HOSTMESH_TOKEN_FILE", ""),
                              env.get("HOSTMESH_TLS_CA", ""),
                              env.get("HOSTMESH_TLS_CERT", ""),
                              env.get("HOSTMESH_TLS_KEY", ""))


class Port:
    """A port on this client: every message sent to `ref`, in arrival order.

    Put `ref` (a mesh.v1.PortRef) in a message; actors send their messages
    there. Closed by close() or on leaving a `with` block.
    """

    def __init__(self, impl, reply_type=None):
        self._impl = impl
        self._reply_type = reply_type
        self.ref = mailbox_pb2.PortRef.FromString(impl.ref)

    def recv(self, timeout=DEFAULT_TIMEOUT):
        """The next message; DeadlineExceeded after `timeout` seconds.

        Raises the sender's error, or the end of a watched mesh's actor.
        """
        type_name, data = self._impl.recv(_check_timeout(timeout))
        return _messages.decode(type_name, data, self._reply_type)

    async def recv_async(self, timeout=DEFAULT_TIMEOUT):
        return await _run_async(self.recv, timeout)

    def watch(self, mesh):
        """Once an actor of `mesh` ends, recv raises that end at once."""
        if not isinstance(mesh, ActorMesh):
            raise TypeError(
                f"watch takes an ActorMesh, got {type(mesh).__name__}")
        self._impl.watch(mesh._impl)  # pylint: disable=protected-access

    def close(self):
        self._impl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ActorMesh:
    """N actors of one type, one per proc, used as one (a view of them).

    cast sends to every actor of the view; call gathers one reply per rank in
    rank order; slice narrows the view. A mesh whose actor failed with nobody
    handling it (on_supervision_event) is poisoned: later calls raise that
    failure.
    """

    def __init__(self, impl, procs):
        self._impl = impl
        self._procs = procs  # keeps the proc and host meshes alive

    @property
    def name(self):
        return self._impl.name

    @property
    def type(self):
        return self._impl.type

    @property
    def extent(self):
        """{label: size} of this view, e.g. {"hosts": 1, "procs": 4}."""
        return dict(self._impl.extent)

    def __len__(self):
        return self._impl.num_ranks

    def actor(self, rank):
        """The mesh.v1.ActorRef at view rank `rank`."""
        if rank < 0:
            rank += len(self)
        return mailbox_pb2.ActorRef.FromString(self._impl.actor(rank))

    @property
    def actors(self):
        return [self.actor(rank) for rank in range(len(self))]

    def slice(self, **dims):
        """A view: slice(procs=slice(0, 2)), slice(hosts=1, procs=3), ..."""
        impl = self._impl
        for label, selection in dims.items():
            size = dict(impl.extent).get(label)
            if size is None:
                raise ValueError(f"actor mesh {self.name!r} has no dimension "
                                 f"{label!r} (its extent: {self.extent})")
            if isinstance(selection, slice):
                begin, end, step = selection.indices(size)
                if step != 1:
                    raise ValueError(f"{label}: a slice step must be 1")
                if begin >= end:
                    raise ValueError(f"{label}: empty selection {selection}")
            elif isinstance(selection, int) and not isinstance(selection, bool):
                begin = selection + size if selection < 0 else selection
                if not 0 <= begin < size:
                    raise IndexError(f"{label}={selection} out of range (size "
                                     f"{size})")
                end = begin + 1
            else:
                raise TypeError(f"{label} takes an int or a slice, got "
                                f"{type(selection).__name__}")
            impl = impl.slice(label, begin, end)
        return ActorMesh(impl, self._procs)

    def cast(self, message):
        """Sends `message` to every actor of the view; returns once queued."""
        type_name, data = _messages.encode(message)
        self._impl.cast(type_name, data)

    def call(self, message, reply_type=None, timeout=DEFAULT_TIMEOUT,
             return_exceptions=False):
        """Casts `message`; returns one reply per view rank, in rank order.

        A rank that failed (its actor's error, its proc gone, no reply within
        `timeout`) raises the lowest failing rank's MeshError (with .rank, the
        actor's rank in its mesh, .view_rank, and .results: every rank's
        reply or exception); with return_exceptions=True its exception is in
        the list instead.
        """
        type_name, data = _messages.encode(message)
        _messages.check_reply_type(reply_type)
        raw = self._impl.call(type_name, data, _check_timeout(timeout))
        results = []
        for view_rank, reply in enumerate(raw):
            if not isinstance(reply, BaseException):
                try:
                    reply = _messages.decode(reply[0], reply[1], reply_type)
                except _errors.MeshError as error:
                    reply = error
            if isinstance(reply, _errors.MeshError):
                reply.view_rank = view_rank
                reply.rank = self.actor(view_rank).rank
            results.append(reply)
        if not return_exceptions:
            for result in results:
                if isinstance(result, BaseException):
                    result.results = results
                    raise result
        return results

    def call_one(self, message, reply_type=None, timeout=DEFAULT_TIMEOUT):
        """call on a view of exactly one actor; returns its reply."""
        if len(self) != 1:
            raise ValueError(f"call_one needs a view of one actor; actor mesh "
                             f"{self.name!r} has {len(self)} (use slice)")
        return self.call(message, reply_type, timeout)[0]

    def reduce(self, message, reduce="count", field="",
               timeout=DEFAULT_TIMEOUT):
        """Folds the replies with a built-in reducer: "count", "sum", "min",
        "max" (of numeric `field`), "collect", "first_error". Returns the
        mesh.v1.Reduced (hosts fold their ranks' replies)."""
        if reduce not in _REDUCERS:
            raise ValueError(f"reduce must be one of {sorted(_REDUCERS)}, got "
                             f"{reduce!r}")
        if not isinstance(field, str):
            raise TypeError(f"field must be a str, got {type(field).__name__}")
        type_name, data = _messages.encode(message)
        reduced = self._impl.reduce(type_name, data, _REDUCERS[reduce],
                                    _check_timeout(timeout), field)
        return mailbox_pb2.Reduced.FromString(reduced)

    def status(self):
        """None, or the MeshError of the failure that poisoned the mesh."""
        return self._impl.status()

    def check(self):
        """Raises the failure that poisoned the mesh, if any."""
        error = self._impl.status()
        if error is not None:
            raise error

    def on_supervision_event(self, handler):
        """handler(mesh.v1.SupervisionEvent) gets every end of the mesh's
        actors (on a library thread; keep it short). A failure it gets is
        handled: the mesh is not poisoned. None removes it."""
        if handler is None:
            self._impl.on_supervision_event(None)
            return
        if not callable(handler):
            raise TypeError("handler must be callable")

        def deliver(event_bytes):
            handler(proc_pb2.SupervisionEvent.FromString(event_bytes))

        self._impl.on_supervision_event(deliver)

    async def call_async(self, message, reply_type=None,
                         timeout=DEFAULT_TIMEOUT, return_exceptions=False):
        return await _run_async(self.call, message, reply_type, timeout,
                                return_exceptions)

    async def call_one_async(self, message, reply_type=None,
                             timeout=DEFAULT_TIMEOUT):
        return await _run_async(self.call_one, message, reply_type, timeout)

    async def cast_async(self, message):
        return await _run_async(self.cast, message)

    async def reduce_async(self, message, reduce="count", field="",
                           timeout=DEFAULT_TIMEOUT):
        return await _run_async(self.reduce, message, reduce, field, timeout)

    def __repr__(self):
        return (f"<ActorMesh {self.name!r} of {self.type!r} {self.extent}>")


class ProcMesh:
    """Procs spawned by a HostMesh: {hosts: H, <per_host dims>}."""

    def __init__(self, impl, hosts, python=None):
        self._impl = impl
        self._hosts = hosts  # keeps the host mesh alive
        # True: procd_py (Python actors); False: the stock procd (none);
        # None: the user's own command.
        self._python = python
        self.procs = [host_pb2.ProcState.FromString(b) for b in impl.procs()]

    @property
    def name(self):
        return self._impl.name

    @property
    def extent(self):
        return dict(self._impl.extent)

    def __len__(self):
        return self._impl.num_ranks

    @property
    def pids(self):
        """The procs' pids, by rank (as of spawn)."""
        return [proc.pid for proc in self.procs]

    def spawn(self, name, actor_type, params=None, timeout=DEFAULT_TIMEOUT):
        """Spawns actor mesh `name`: one actor of `actor_type` per proc,
        either a registered type name (e.g. "mesh.echo") or a Python actor
        class (a hostmesh.Actor subclass; the procs must run procd_py:
        spawn_procs(..., python=True)). `params` (a message, or None) reach
        each actor's Init (a Python actor's init). Returns once every actor
        is RUNNING."""
        _check_name(name, "name")
        if isinstance(actor_type, type):
            spec = _actor.spec_for(actor_type, params)
            if self._python is False:
                raise _errors.InvalidArgument(
                    f"proc mesh {self.name!r} runs the stock procd, which has "
                    f"no Python actors ({actor_type.__qualname__}): spawn its "
                    "procs with spawn_procs(..., python=True)")
            actor_type, params = "python", spec
        elif not isinstance(actor_type, str):
            raise TypeError("actor_type must be the name of a registered actor "
                            "type (a str) or a hostmesh.Actor class, got "
                            f"{type(actor_type).__name__}")
        params_type, params_data = None, b""
        if params is not None:
            params_type, params_data = _messages.encode(params, "params")
        impl = self._impl.spawn(name, actor_type, params_type, params_data,
                                _check_timeout(timeout))
        return ActorMesh(impl, self)

    def stop(self, grace=5.0):
        """Stops every proc of the mesh (gracefully, then by signal)."""
        self._impl.stop(_check_timeout(grace, "grace"))

    def __repr__(self):
        return f"<ProcMesh {self.name!r} {self.extent}>"


_live_hosts = weakref.WeakSet()
_names = itertools.count()


class HostMesh:
    """The hosts this client can start procs on.

    HostMesh.local() (also this_host()): one private hostd child on loopback.
    HostMesh.process(n): n hostd children. HostMesh.attach(addresses,
    credentials=...): hostds already running. HostMesh.slurm(...): one hostd
    per task of a Slurm allocation. shutdown() (also on leaving a `with`
    block, on garbage collection and at exit) leaves nothing running that
    this mesh started: hosts it started are shut down; on attached hosts the
    procs it spawned are stopped.
    """

    def __init__(self, impl):
        self._impl = impl
        self._shut_down = False
        _live_hosts.add(self)

    @staticmethod
    def _options(hostd, hostd_args, timeout, keep_logs, forward_proc_output):
        options = _hostmesh.HostOptions()
        if hostd is None:
            hostd = _find_hostd()
        if not isinstance(hostd, str):
            raise TypeError(f"hostd must be a path, got {type(hostd).__name__}")
        if isinstance(hostd_args, str) or not all(
                isinstance(arg, str) for arg in hostd_args):
            raise TypeError("hostd_args must be a list of str")
        options.hostd_path = hostd
        options.hostd_args = list(hostd_args)
        options.timeout = _check_timeout(timeout)
        options.keep_logs = keep_logs
        options.forward_proc_output = bool(forward_proc_output)
        return options

    @classmethod
    def local(cls, *, hostd=None, hostd_args=(), timeout=DEFAULT_TIMEOUT,
              keep_logs=None, forward_proc_output=True):
        """One host on this machine: a private hostd child on loopback.

        keep_logs: keep the hosts' logs (logs_dir) after shutdown; None: kept
        except under a test runner. forward_proc_output: show the procs'
        stdout/stderr here, each line prefixed by its proc.
        """
        return cls(_hostmesh.HostMesh.local(cls._options(
            hostd, hostd_args, timeout, keep_logs, forward_proc_output)))

    @classmethod
    def process(cls, num_hosts, *, hostd=None, hostd_args=(),
                timeout=DEFAULT_TIMEOUT, keep_logs=None,
                forward_proc_output=True):
        """`num_hosts` hostd children on this machine."""
        if isinstance(num_hosts, bool) or not isinstance(num_hosts, int):
            raise TypeError(f"num_hosts must be an int, got "
                            f"{type(num_hosts).__name__}")
        if num_hosts < 1:
            raise ValueError(f"num_hosts must be at least 1, got {num_hosts}")
        return cls(_hostmesh.HostMesh.process(num_hosts, cls._options(
            hostd, hostd_args, timeout, keep_logs, forward_proc_output)))

    @classmethod
    def attach(cls, addresses, *, credentials=None, timeout=DEFAULT_TIMEOUT,
               forward_proc_output=True):
        """Hosts already running (host:port each), e.g. under systemd.

        credentials: a Credentials; None: Credentials.from_env()'s files.
        """
        if isinstance(addresses, str):
            addresses = [addresses]
        addresses = list(addresses)
        if not addresses or not all(isinstance(a, str) for a in addresses):
            raise TypeError("addresses must be a non-empty list of host:port")
        if credentials is not None and not isinstance(credentials,
                                                      Credentials):
            raise TypeError("credentials must be a hostmesh.Credentials, got "
                            f"{type(credentials).__name__}")
        options = cls._options("", (), timeout, None, forward_proc_output)
        if credentials is not None:
            options.credentials = [credentials.token, credentials.tls_ca,
                                   credentials.tls_cert, credentials.tls_key]
        return cls(_hostmesh.HostMesh.attach(addresses, options))

    @classmethod
    def slurm(cls, *, job_id=None, nodes=1, tasks_per_node=1, partition="",
              time_limit=None, job_name="hostmesh", salloc_args=(), env=None,
              listen="127.0.0.1:0", node_dir="/tmp", hostd=None,
              hostd_args=(), timeout=DEFAULT_TIMEOUT, keep_logs=None,
              forward_proc_output=True):
        """One hostd per task of a Slurm allocation, started with srun.

        The allocation: job_id, else $SLURM_JOB_ID (this process runs inside
        salloc or sbatch), else a new one made with `salloc --no-shell` from
        nodes, tasks_per_node, partition ("": the default), time_limit
        (seconds, rounded up to whole minutes; None: the partition's),
        job_name and salloc_args (further salloc flags, e.g.
        ["--account=ml"]). Hosts are in rank order, node by node,
        tasks_per_node on each; `nodes` (the property) names each host's
        node. env: added to the environment of salloc, srun, squeue, scontrol
        and scancel (e.g. {"SLURM_CONF": ...}), and so of the hostds.
        listen: each hostd's --listen (the default serves only its own node;
        across nodes give a reachable address and TLS in hostd_args).
        node_dir: where each hostd keeps its state and logs on its node.

        A host that does not start fails the whole call naming its node; what
        did start is shut down and an allocation made here released.
        shutdown() stops the procs, then the hostds, then releases an
        allocation this call made (scancel). A cancelled (or timed out) job
        is a host loss: its hosts are lost at once, and their actors end with
        HOST_LOST.
        """
        if job_id is None:
            job_id = ""
        if not isinstance(job_id, str):
            raise TypeError(f"job_id must be a str, got "
                            f"{type(job_id).__name__}")
        for what, value in (("nodes", nodes),
                            ("tasks_per_node", tasks_per_node)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{what} must be an int, got "
                                f"{type(value).__name__}")
            if value < 1:
                raise ValueError(f"{what} must be at least 1, got {value}")
        for what, value in (("partition", partition), ("job_name", job_name),
                            ("listen", listen), ("node_dir", node_dir)):
            if not isinstance(value, str):
                raise TypeError(f"{what} must be a str, got "
                                f"{type(value).__name__}")
        if time_limit is None:
            time_limit = 0.0
        elif (isinstance(time_limit, bool)
              or not isinstance(time_limit, (int, float))):
            raise TypeError("time_limit must be a number of seconds or None, "
                            f"got {type(time_limit).__name__}")
        elif not time_limit >= 0:
            raise ValueError(f"time_limit must not be negative, got "
                             f"{time_limit}")
        if isinstance(salloc_args, (str, bytes)):
            raise TypeError("salloc_args must be a list of str, got a str")
        try:
            salloc_args = list(salloc_args)
        except TypeError:
            raise TypeError("salloc_args must be a list of str, got "
                            f"{type(salloc_args).__name__}") from None
        if not all(isinstance(arg, str) for arg in salloc_args):
            raise TypeError("salloc_args must be a list of str")
        if env is None:
            env = {}
        if not isinstance(env, dict):
            raise TypeError(f"env must be a dict of str to str, got "
                            f"{type(env).__name__}")
        for key, value in env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"env must be a dict of str to str, got "
                                f"{key!r}: {type(value).__name__}")
        slurm = _hostmesh.SlurmOptions()
        slurm.job_id = job_id
        slurm.nodes = nodes
        slurm.tasks_per_node = tasks_per_node
        slurm.partition = partition
        slurm.time_limit = float(time_limit)
        slurm.job_name = job_name
        slurm.salloc_args = salloc_args
        slurm.env = dict(env)
        slurm.listen = listen
        slurm.node_dir = node_dir
        return cls(_hostmesh.HostMesh.slurm(slurm, cls._options(
            hostd, hostd_args, timeout, keep_logs, forward_proc_output)))

    @property
    def addresses(self):
        return list(self._impl.addresses)

    @property
    def slurm_job(self):
        """A Slurm mesh's job id ("" for other meshes)."""
        return self._impl.slurm_job

    @property
    def nodes(self):
        """A Slurm mesh's node of each host, by rank ([] for other meshes)."""
        return list(self._impl.nodes)

    @property
    def logs_dir(self):
        """Where local/process hosts keep the procs' and hostd's logs."""
        return self._impl.logs_dir

    @property
    def client_id(self):
        """This client's mailbox id, "client:<hex>"."""
        return self._impl.client_id

    def spawn_procs(self, per_host=None, name=None, *, spec=None, command="",
                    args=(), env=None, detached=False, python=False):
        """Spawns a proc mesh: per_host={"procs": 4} gives 4 procs per host,
        extent {hosts: H, procs: 4}; returns once all are RUNNING.

        name: the proc mesh's name (procs <name>_<rank>); default p0, p1, ...
        spec: a mesh.v1.ProcSpec; or command/args/env for one (command: your
        own procd binary; empty: the host's procd).
        python: the procs run procd_py, which adds Python actors (hostmesh.Actor
        classes) to the built-in ones, with this interpreter's sys.path as
        their PYTHONPATH (after env's own). Remote hosts need procd_py and the
        modules at the same paths.
        """
        if per_host is None:
            per_host = {}
        if not isinstance(per_host, dict):
            raise TypeError("per_host must be a dict like {\"procs\": 4}, got "
                            f"{type(per_host).__name__}")
        dims = []
        for label, size in per_host.items():
            if not isinstance(label, str) or not label:
                raise TypeError(f"per_host labels must be non-empty str, got "
                                f"{label!r}")
            if isinstance(size, bool) or not isinstance(size, int):
                raise TypeError(f"per_host[{label!r}] must be an int, got "
                                f"{type(size).__name__}")
            if size < 1:
                raise ValueError(f"per_host[{label!r}] must be at least 1, got "
                                 f"{size}")
            dims.append((label, size))
        if name is None:
            name = f"p{next(_names)}"
        _check_name(name, "name")
        if spec is None:
            spec = host_pb2.ProcSpec(command=command, args=list(args),
                                     env=dict(env or {}))
        elif not isinstance(spec, host_pb2.ProcSpec):
            raise TypeError("spec must be a hostmesh.proto.host_pb2.ProcSpec, "
                            f"got {type(spec).__name__}")
        else:
            spec = host_pb2.ProcSpec.FromString(spec.SerializeToString())
        if python:
            if spec.command:
                raise ValueError("python=True runs procd_py; it takes no "
                                 f"command (got {spec.command!r})")
            spec.command = _find_procd_py()
            path = _python_path()
            if spec.env.get("PYTHONPATH"):
                path = spec.env["PYTHONPATH"] + os.pathsep + path
            spec.env["PYTHONPATH"] = path
            runs_python = True
        else:
            runs_python = False if not spec.command else None
        impl = self._impl.spawn(name, dims, spec.SerializeToString(),
                                bool(detached))
        return ProcMesh(impl, self, runs_python)

    def open_port(self, reply_type=None):
        """A Port on this client; its messages decoded as `reply_type`."""
        _messages.check_reply_type(reply_type)
        return Port(self._impl.open_port(), reply_type)

    def shutdown(self, grace=5.0):
        """See the class comment. Idempotent."""
        self._shut_down = True
        self._impl.shutdown(_check_timeout(grace, "grace"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def __repr__(self):
        return f"<HostMesh {self.addresses}>"


def this_host(**options):
    """One host on this machine (HostMesh.local)."""
    return HostMesh.local(**options)


@atexit.register
def _shutdown_at_exit():
    for hosts in list(_live_hosts):
        if not hosts._shut_down:  # pylint: disable=protected-access
            try:
                hosts.shutdown()
            except BaseException:  # pylint: disable=broad-except
                pass
    # Work a Ctrl-C abandoned ends once its hosts are gone (or times out).
    _hostmesh.drain(10.0)
    if _executor is not None:
        _executor.shutdown(wait=False)
