"""Python actors for python_actor_test.py: a module the procs import (the
test's directory is on the client's sys.path, which procd_py's procs get as
their PYTHONPATH)."""

import os

import hostmesh
from hostmesh.proto import actors_pb2


class Pinger(hostmesh.Actor):
    """GetActorId (also sent to its port), Echo, a counter, Seq ordering,
    Fail (raises ValueError)."""

    def init(self, params, ctx):
        self.value = params.by if params is not None else 0
        self.init_rank = ctx.rank
        self.report = actors_pb2.SeqReport()

    @hostmesh.handler(actors_pb2.GetActorId)
    def get_id(self, msg, ctx):
        reply = actors_pb2.ActorIdReply(id=ctx.self, rank=ctx.rank,
                                        cast_rank=ctx.cast_rank,
                                        pid=os.getpid())
        if msg.HasField("port"):
            ctx.send(msg.port, reply)
        return reply

    @hostmesh.handler(actors_pb2.Echo)
    def echo(self, msg, ctx):
        return actors_pb2.Echo(text=f"{msg.text} from {ctx.rank}")

    @hostmesh.handler(actors_pb2.Increment)
    def increment(self, msg, ctx):
        self.value += msg.by or 1
        return actors_pb2.Count(value=self.value, rank=ctx.rank)

    @hostmesh.handler(actors_pb2.GetCount)
    def get_count(self, msg, ctx):
        return actors_pb2.Count(value=self.value, rank=self.init_rank)

    @hostmesh.handler(actors_pb2.Seq)
    def seq(self, msg, ctx):
        last = self.report.last_by_sender
        sender = msg.sender or ctx.sender
        if sender in last and msg.n != last[sender] + 1:
            self.report.out_of_order += 1
        last[sender] = msg.n
        self.report.received += 1
        return self.report

    @hostmesh.handler(actors_pb2.GetSeqReport)
    def get_report(self, msg, ctx):
        return self.report

    @hostmesh.handler(actors_pb2.Fail)
    def fail(self, msg, ctx):
        return self.deeper(msg.why)

    def deeper(self, why):
        raise ValueError(f"asked to fail: {why}")


class FailsInInit(hostmesh.Actor):

    def init(self, params, ctx):
        raise RuntimeError(f"no GPU on rank {ctx.rank}")


class WrongReply(hostmesh.Actor):

    @hostmesh.handler(actors_pb2.Echo)
    def echo(self, msg, ctx):
        return "not a message"


class Picky(hostmesh.Actor):

    @hostmesh.handler(actors_pb2.Echo)
    def echo(self, msg, ctx):
        raise hostmesh.InvalidArgument(f"will not echo {msg.text!r}")


class Inside(hostmesh.Actor):
    """Says what the client API does inside a proc."""

    @hostmesh.handler(actors_pb2.Echo)
    def echo(self, msg, ctx):
        try:
            hostmesh.this_host()
        except ImportError as error:
            return actors_pb2.Echo(text=f"{hostmesh.IN_PROC}: {error}")
        return actors_pb2.Echo(text="the client API loaded in a proc")
