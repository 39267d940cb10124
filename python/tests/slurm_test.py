"""HostMesh.slurm from Python, against a real Slurm: a private one-node
cluster (//tests:slurm_cluster_main: its own munged, slurmctld and slurmd on
127.0.0.1) on which the mesh allocates 2 tasks, i.e. two hostds on the one
node started with srun.

Run by //python:slurm_test (tests/run_python_test.sh). Where the cluster
cannot start (no Slurm here) the canonical flow skips with the reason; under
CI=true that is a failure, as HOSTMESH_SKIP is in C++ (lib/testing/skip.h).
Ends with hostmesh_test's Catch2-style summary line, which `make test`
counts.
"""

import os
import shutil
import subprocess
import tempfile
import time

import hostmesh
from hostmesh.proto import actors_pb2

from hostmesh_test import (ROOT, TIMEOUT, MeshTestCase, children, main,
                           running, wait_until)

CLUSTER = os.path.join(ROOT, "tests", "slurm_cluster_main")

# Under --config=asan the interpreter runs with the sanitizer runtimes
# preloaded (tests/run_python_test.sh); Slurm's programs (salloc, srun) are
# not ours and must not inherit them (their own leaks would fail them).
# hostd and procd are instrumented builds and need no preload.
if "HOSTMESH_CHILD_ASAN_OPTIONS" in os.environ:
    os.environ.pop("LD_PRELOAD", None)


def in_ci():
    """True when CI asks for a CI run (as mesh::testing::InCi)."""
    return os.environ.get("CI", "") not in ("", "0", "false")


class SlurmCluster:
    """The helper: a private cluster until close() (its stdin closed)."""

    def __init__(self):
        self.process = subprocess.Popen(
            [CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.env = {}
        self.closed = None
        for line in self.process.stdout:
            line = line.strip()
            if line == "ready":
                break
            key, _, value = line.partition("=")
            self.env[key] = value

    def ready(self):
        return "SLURM_NODE" in self.env and self.process.poll() is None

    def why_not(self):
        """(exit code, stderr) of a helper that did not start a cluster."""
        code, err = self.close()
        return code, err.strip()

    def queue(self):
        """The job ids in the cluster's queue."""
        squeue = subprocess.run(
            ["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
            env=dict(os.environ, SLURM_CONF=self.env["SLURM_CONF"]),
            check=False, timeout=60)
        if squeue.returncode != 0:
            raise AssertionError(f"squeue failed: {squeue.stderr}")
        return squeue.stdout.split()

    def close(self):
        """Stops the cluster; the helper's exit code and stderr."""
        if self.closed is None:
            try:
                _, err = self.process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                _, err = self.process.communicate()
            self.closed = (self.process.returncode, err)
        return self.closed


class SlurmMeshTest(MeshTestCase):

    def start_cluster_or_skip(self):
        cluster = SlurmCluster()
        self.addCleanup(cluster.close)  # a second close is harmless
        if not cluster.ready():
            code, err = cluster.why_not()
            reason = f"no Slurm cluster here (exit {code}): {err}"
            if code != 3:
                self.fail(f"the cluster helper failed: {reason}")
            if in_ci():
                self.fail(f"cannot skip under CI: {reason}")
            self.skipTest(reason)
        return cluster

    def test_two_hostds_from_an_allocation_run_the_canonical_flow(self):
        cluster = self.start_cluster_or_skip()
        node_dir = tempfile.mkdtemp(prefix="hostmesh-py-slurm-")
        self.addCleanup(shutil.rmtree, node_dir, ignore_errors=True)
        env = {"SLURM_CONF": cluster.env["SLURM_CONF"],
               "HOSTMESH_SLURM_CLUSTER": cluster.env["HOSTMESH_SLURM_CLUSTER"]}
        node = cluster.env["SLURM_NODE"]

        before = children()
        with hostmesh.HostMesh.slurm(tasks_per_node=2, env=env,
                                     node_dir=node_dir, job_name="py-test",
                                     hostd_args=["--stop-grace=1s"],
                                     timeout=60, keep_logs=False) as hosts:
            started = children() - before  # the sruns
            self.assertEqual(len(hosts.addresses), 2)
            self.assertEqual(hosts.nodes, [node, node])
            self.assertTrue(hosts.slurm_job)
            self.assertEqual(cluster.queue(), [hosts.slurm_job])

            procs = hosts.spawn_procs(per_host={"procs": 2})
            self.assertEqual(procs.extent, {"hosts": 2, "procs": 2})
            pids = procs.pids
            self.assertTrue(all(running(pid) for pid in pids))
            echo = procs.spawn("a0", "mesh.echo")
            replies = echo.call(actors_pb2.GetActorId(), timeout=TIMEOUT)
            self.assertEqual([r.rank for r in replies], [0, 1, 2, 3])
            self.assertEqual([r.pid for r in replies], pids)

        # The allocation is released (a cancelled job stays a moment while
        # it completes), every proc and srun is gone.
        self.assertTrue(wait_until(lambda: not cluster.queue(), timeout=20),
                        f"still queued: {cluster.queue()}")
        left = set(pids) | started
        self.assertTrue(wait_until(lambda: not any(map(running, left))),
                        f"left running: {[p for p in left if running(p)]}")

        code, err = cluster.close()
        self.assertEqual(code, 0, f"the cluster helper: {err}")

    def test_bad_input_raises_before_anything_starts(self):
        before = children()
        with self.assertRaisesRegex(ValueError, "nodes"):
            hostmesh.HostMesh.slurm(nodes=0)
        with self.assertRaisesRegex(TypeError, "tasks_per_node"):
            hostmesh.HostMesh.slurm(tasks_per_node="2")
        with self.assertRaisesRegex(TypeError, "nodes"):
            hostmesh.HostMesh.slurm(nodes=True)
        with self.assertRaisesRegex(TypeError, "env"):
            hostmesh.HostMesh.slurm(env={"A": 1})
        with self.assertRaisesRegex(ValueError, "time_limit"):
            hostmesh.HostMesh.slurm(time_limit=-1)
        with self.assertRaisesRegex(TypeError, "time_limit"):
            hostmesh.HostMesh.slurm(time_limit="1h")
        with self.assertRaisesRegex(TypeError, "salloc_args"):
            hostmesh.HostMesh.slurm(salloc_args="--account=ml")
        with self.assertRaisesRegex(TypeError, "salloc_args"):
            hostmesh.HostMesh.slurm(salloc_args=[1])
        time.sleep(0.1)
        self.assertEqual(children() - before, set())

    def test_a_mesh_not_from_slurm_has_no_job_and_no_nodes(self):
        hosts = self.start_host()
        self.assertEqual(hosts.slurm_job, "")
        self.assertEqual(hosts.nodes, [])


if __name__ == "__main__":
    main()
