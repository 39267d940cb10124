"""Python actors (hostmesh.Actor classes in procd_py procs), against real
hostd and procd_py processes.

Run by //python:python_actor_test (tests/run_python_test.sh). The actors are
in py_actors.py, which the procs import through the client's sys.path (this
file's directory), and one is in this script itself (imported in the procs
as __hostmesh_main__). Every test checks, by the pids it started, that
nothing is left running. Ends with a Catch2-style summary line, which
`make test` counts.
"""

import glob
import os
import unittest

import hostmesh
from hostmesh.proto import actors_pb2
from hostmesh.proto import proc_pb2
from hostmesh.proto import resource_pb2

import py_actors
from hostmesh_test import TIMEOUT, MeshTestCase, main, running, wait_until


class MainScriptActor(hostmesh.Actor):
    """Defined in the client's main script: the procs import this file."""

    @hostmesh.handler(actors_pb2.Echo)
    def echo(self, msg, ctx):
        return actors_pb2.Echo(text=f"{__name__}: {msg.text}")


class PythonActorTestCase(MeshTestCase):

    def python_procs(self, hosts, n, **kwargs):
        return self.spawn_procs(hosts, per_host={"procs": n}, python=True,
                                **kwargs)


class CanonicalFlowTest(PythonActorTestCase):

    def test_python_actor_mesh_cast_call_slice_shutdown(self):
        hosts = self.start_host()
        procs = self.python_procs(hosts, 4, name="p0")
        self.assertEqual(procs.extent, {"hosts": 1, "procs": 4})
        self.assertTrue(all(running(pid) for pid in procs.pids))

        pingers = procs.spawn("t0", py_actors.Pinger,
                              actors_pb2.Increment(by=10))
        self.assertEqual(len(pingers), 4)
        self.assertEqual(pingers.type, "python")

        # Cast to a port: each actor sends its id there (ctx.send).
        with hosts.open_port(actors_pb2.ActorIdReply) as port:
            pingers.cast(actors_pb2.GetActorId(port=port.ref))
            arrived = [port.recv(timeout=TIMEOUT) for _ in range(4)]
        self.assertEqual(sorted(r.rank for r in arrived), [0, 1, 2, 3])
        self.assertEqual({r.pid for r in arrived}, set(procs.pids))
        self.assertEqual({r.id.actor for r in arrived}, {"t0"})

        # A gathered call, in rank order; init got the params.
        replies = pingers.call(actors_pb2.GetActorId(), timeout=TIMEOUT)
        self.assertEqual([r.rank for r in replies], [0, 1, 2, 3])
        self.assertEqual([r.pid for r in replies], procs.pids)
        self.assertEqual([r.id.proc for r in replies],
                         ["p0_0", "p0_1", "p0_2", "p0_3"])
        self.assertEqual([c.value for c in pingers.call(actors_pb2.GetCount())],
                         [10] * 4)
        self.assertEqual([e.text for e in pingers.call(actors_pb2.Echo(
            text="hi"))], [f"hi from {rank}" for rank in range(4)])

        # A slice: ranks 1 and 2, view ranks 0 and 1.
        middle = pingers.slice(procs=slice(1, 3))
        self.assertEqual([(r.rank, r.cast_rank) for r in middle.call(
            actors_pb2.GetActorId())], [(1, 0), (2, 1)])
        middle.cast(actors_pb2.Increment(by=5))
        self.assertEqual([c.value for c in pingers.call(actors_pb2.GetCount())],
                         [10, 15, 15, 10])
        self.assertEqual(pingers.reduce(actors_pb2.GetCount(), "sum",
                                        field="value").value, 50)

        # The built-in C++ actors run beside them, and so does a class of
        # the client's main script.
        echo = procs.spawn("e0", "mesh.echo")
        self.assertEqual([r.rank for r in echo.call(actors_pb2.GetActorId())],
                         [0, 1, 2, 3])
        scripted = procs.spawn("m0", MainScriptActor)
        self.assertEqual(scripted.slice(procs=0).call_one(
            actors_pb2.Echo(text="x")).text, "__hostmesh_main__: x")
        # Inside a proc, hostmesh is the actor API only.
        inside = procs.spawn("i0", py_actors.Inside).slice(procs=0)
        self.assertRegex(inside.call_one(actors_pb2.Echo()).text,
                         "^True: hostmesh.this_host is not available inside "
                         "a proc")

        hosts.shutdown()
        self.assert_nothing_left()

    def test_1000_casts_arrive_in_order(self):
        hosts = self.start_host()
        procs = self.python_procs(hosts, 2)
        pingers = procs.spawn("t0", py_actors.Pinger)
        for n in range(1000):
            pingers.cast(actors_pb2.Seq(n=n))
        reports = pingers.call(actors_pb2.GetSeqReport(), timeout=TIMEOUT)
        for report in reports:
            self.assertEqual(report.received, 1000)
            self.assertEqual(report.out_of_order, 0)
            self.assertEqual(list(report.last_by_sender.values()), [999])


class FailureTest(PythonActorTestCase):

    def test_an_exception_raises_with_its_traceback_and_poisons_the_mesh(self):
        hosts = self.start_host()
        procs = self.python_procs(hosts, 4)
        pingers = procs.spawn("t0", py_actors.Pinger)

        with self.assertRaises(hostmesh.MeshError) as raised:
            pingers.slice(procs=1).call(actors_pb2.Fail(why="boom"))
        error = raised.exception
        self.assertEqual(error.rank, 1)
        text = str(error)
        self.assertIn("Pinger.fail", text)
        self.assertIn("ValueError: asked to fail: boom", text)
        self.assertIn("Traceback (most recent call last)", text)
        self.assertIn("py_actors.py", text)
        self.assertIn("in deeper", text)

        # Nobody handles the failure: the mesh is poisoned with the event.
        self.assertTrue(wait_until(lambda: pingers.status() is not None))
        with self.assertRaises(hostmesh.FailedPrecondition) as raised:
            pingers.call(actors_pb2.Echo(text="after"))
        event = raised.exception.event
        self.assertIsNotNone(event)
        self.assertEqual(event.rank, 1)
        self.assertEqual(event.cause, proc_pb2.SupervisionEvent.ACTOR_ENDED)
        self.assertTrue(event.failure)
        self.assertEqual(event.actor.status, resource_pb2.FAILED)
        self.assertIn("ValueError: asked to fail: boom", event.message)
        self.assertIn("in deeper", event.actor.reason)
        # Its proc lives on; the whole traceback is in its stderr.
        self.assertTrue(running(procs.pids[1]))
        logs = glob.glob(os.path.join(hosts.logs_dir, "**", "procs",
                                      procs.procs[1].name, "stderr.log"),
                         recursive=True)
        self.assertEqual(len(logs), 1, f"its stderr under {hosts.logs_dir}")
        with open(logs[0], errors="replace") as f:
            stderr = f.read()
        self.assertIn("hostmesh: Python handler Pinger.fail for mesh.v1.Fail "
                      "raised:", stderr)
        self.assertIn("Traceback (most recent call last)", stderr)
        self.assertIn('raise ValueError(f"asked to fail: {why}")', stderr)

    def test_a_supervision_handler_gets_the_event_instead(self):
        hosts = self.start_host()
        procs = self.python_procs(hosts, 2)
        pingers = procs.spawn("t0", py_actors.Pinger)
        events = []
        pingers.on_supervision_event(events.append)
        with self.assertRaises(hostmesh.MeshError):
            pingers.slice(procs=0).call_one(actors_pb2.Fail(why="handled"))
        self.assertTrue(wait_until(lambda: events))
        self.assertEqual(events[0].rank, 0)
        self.assertTrue(events[0].failure)
        self.assertIn("ValueError: asked to fail: handled", events[0].message)
        self.assertIn("Traceback", events[0].message)
        self.assertIsNone(pingers.status())  # handled: not poisoned
        self.assertEqual(pingers.slice(procs=1).call_one(
            actors_pb2.Echo(text="alive")).text, "alive from 1")
        # The failed actor refuses what comes next, as a C++ actor does.
        with self.assertRaises(hostmesh.FailedPrecondition):
            pingers.slice(procs=0).call_one(actors_pb2.Echo(text="late"))

    def test_a_raised_mesh_error_keeps_its_code(self):
        hosts = self.start_host()
        picky = self.python_procs(hosts, 1).spawn("p0", py_actors.Picky)
        with self.assertRaises(hostmesh.InvalidArgument) as raised:
            picky.call_one(actors_pb2.Echo(text="x"))
        self.assertIn("will not echo 'x'", str(raised.exception))

    def test_an_unknown_module_fails_the_spawn_naming_host_and_module(self):
        hosts = self.start_host()
        procs = self.python_procs(hosts, 2)

        class Ghost(hostmesh.Actor):
            pass

        Ghost.__module__ = "no_such_module_for_hostmesh"
        Ghost.__qualname__ = "Ghost"
        with self.assertRaises(hostmesh.MeshError) as raised:
            procs.spawn("g0", Ghost)
        text = str(raised.exception)
        self.assertIn('cannot import module "no_such_module_for_hostmesh"',
                      text)
        self.assertIn("No module named 'no_such_module_for_hostmesh'", text)
        self.assertIn(hosts.addresses[0], text)
        self.assertIn("sys.path", text)
        self.assertIn("2 of 2 ranks did not start", text)

        # An exception in init fails the spawn with its traceback.
        with self.assertRaises(hostmesh.MeshError) as raised:
            procs.spawn("f0", py_actors.FailsInInit)
        text = str(raised.exception)
        self.assertIn("FailsInInit.init", text)
        self.assertIn("RuntimeError: no GPU on rank 0", text)
        self.assertIn("Traceback", text)

        # The procs serve on.
        self.assertEqual(len(procs.spawn("t0", py_actors.Pinger).call(
            actors_pb2.GetCount())), 2)


class BadInputTest(PythonActorTestCase):

    def test_bad_classes_and_messages_raise_clear_exceptions(self):
        with self.assertRaises(TypeError):
            hostmesh.handler(str)
        with self.assertRaises(TypeError):
            hostmesh.handler()

        class Twice(hostmesh.Actor):
            pass

        with self.assertRaisesRegex(TypeError, "two handlers"):

            class Doubled(hostmesh.Actor):  # pylint: disable=unused-variable

                @hostmesh.handler(actors_pb2.Echo)
                def one(self, msg, ctx):
                    pass

                @hostmesh.handler(actors_pb2.Echo)
                def two(self, msg, ctx):
                    pass

        hosts = self.start_host()
        stock = self.spawn_procs(hosts, per_host={"procs": 1})
        with self.assertRaisesRegex(hostmesh.InvalidArgument, "python=True"):
            stock.spawn("t0", py_actors.Pinger)

        procs = self.python_procs(hosts, 2)
        with self.assertRaisesRegex(TypeError, "inside a function"):
            procs.spawn("t0", Twice)
        with self.assertRaisesRegex(TypeError, "hostmesh.Actor"):
            procs.spawn("t0", dict)
        with self.assertRaises(TypeError):
            procs.spawn("t0", py_actors.Pinger, params="not a message")
        with self.assertRaises(ValueError):
            hosts.spawn_procs(per_host={"procs": 1}, python=True,
                              command="/bin/true")

        # A message without a handler is refused; the actor keeps running.
        pingers = procs.spawn("t0", py_actors.Pinger)
        with self.assertRaises(hostmesh.InvalidArgument) as raised:
            pingers.call(actors_pb2.Forward())
        self.assertIn("mesh.v1.Forward", str(raised.exception))
        self.assertEqual(len(pingers.call(actors_pb2.GetCount())), 2)

        # A handler that returns no message fails its actor, saying so.
        wrong = procs.spawn("w0", py_actors.WrongReply)
        with self.assertRaises(hostmesh.MeshError) as raised:
            wrong.slice(procs=0).call_one(actors_pb2.Echo())
        self.assertIn("returned str, not a protobuf message",
                      str(raised.exception))


if __name__ == "__main__":
    main()
