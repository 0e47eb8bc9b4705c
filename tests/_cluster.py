"""Real Dask clusters for tests: a ``dask scheduler`` and ``dask worker``
processes, on 127.0.0.1 or inside network namespaces (``ip netns``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PY = sys.executable
# workers that may start processes of their own; the tests' clusters do not need the daemon flag
# (and keep every worker's transition log: tests read it)
ENV = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False",
           DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH="1000000")


def dlmm_cli(*args, prefix=(), **kw) -> subprocess.CompletedProcess:
    """Run ``python -m dlmm.cli ARGS`` (inside ``prefix``, e.g. ``ip netns exec NS``)."""
    return subprocess.run([*prefix, PY, "-m", "dlmm.cli", *map(str, args)],
                          capture_output=True, text=True, **kw)


def blocks_done(zpath) -> int:
    """How many blocks a result store being written (``NAME.zarr.partial``) has flagged
    done (0 if none yet)."""
    try:
        import numpy as np
        import zarr

        group = zarr.open_group(f"{zpath}.partial", mode="r")
        return int(np.sum(group["blocks/done"][:]))
    except Exception:  # not created yet, or its metadata is being written
        return 0


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)


def _with_client(address: str, body: str, prefix=(), timeout: float = 180):
    """Run ``body`` (indented code using ``c``, a Client of ``address``) in a new
    Python process (inside ``prefix``); returns what its last line printed, as JSON."""
    script = ("import json\nfrom distributed import Client\n"
              f"with Client({address!r}, timeout=60) as c:\n{body}")
    r = subprocess.run([*prefix, PY, "-c", script], capture_output=True, text=True, env=ENV,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _wait_for_workers(address: str, n: int, prefix=()) -> list[str]:
    """Block until ``n`` workers are connected; returns their addresses."""
    return _with_client(address, f"    c.wait_for_workers({n}, timeout=60)\n"
                        "    print(json.dumps(sorted(c.scheduler_info(n_workers=-1)['workers'])))\n",
                        prefix)


@contextlib.contextmanager
def dask_cluster(workdir: Path, *, scheduler_host: str = "127.0.0.1",
                 worker_hosts=("127.0.0.1", "127.0.0.1"), scheduler_prefix=(),
                 worker_prefixes=None, client_prefix=(), worker_args=(), worker_env=None):
    """Start ``dask scheduler`` and one ``dask worker --nthreads 1`` per host.

    ``*_prefix`` wrap the commands (e.g. ``["ip", "netns", "exec", NS]``);
    ``client_prefix`` is where the readiness check runs from; ``worker_args`` are
    more ``dask worker`` options (e.g. ``--memory-limit``), ``worker_env`` more
    environment variables of the workers (e.g. Dask's config).  Processes are
    terminated (and reaped) on exit.
    """
    worker_prefixes = worker_prefixes or [()] * len(worker_hosts)
    sched_file = Path(workdir) / f"scheduler-{uuid.uuid4().hex[:8]}.json"
    sched = subprocess.Popen([*scheduler_prefix, PY, "-m", "dask", "scheduler", "--host",
                              scheduler_host, "--port", "0", "--no-dashboard",
                              "--scheduler-file", str(sched_file)],
                             stderr=subprocess.DEVNULL, env=ENV)
    cluster = Cluster(address="", scheduler=sched)
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline and sched.poll() is None:
            time.sleep(0.1)
        assert sched_file.exists(), "the scheduler did not start"
        time.sleep(0.2)  # the file is written in one go, but be safe against a partial read
        cluster.address = json.loads(sched_file.read_text())["address"]
        for host, prefix in zip(worker_hosts, worker_prefixes):
            cluster.workers.append(subprocess.Popen(
                [*prefix, PY, "-m", "dask", "worker", cluster.address, "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard", "--host", host,
                 "--local-directory", str(workdir), *map(str, worker_args)],
                stderr=subprocess.DEVNULL, env=dict(ENV, **(worker_env or {}))))
        _wait_for_workers(cluster.address, len(worker_hosts), client_prefix)
        yield cluster
    finally:
        for p in [*cluster.workers[::-1], sched]:
            if p.poll() is None:
                p.terminate()
        for p in [*cluster.workers, sched]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def worker_task_counts(address: str, prefix=()) -> dict[str, int]:
    """How many task transitions each connected worker has logged."""
    return _with_client(address, "    print(json.dumps(c.run(lambda dask_worker: "
                        "len(dask_worker.state.log))))\n", prefix)


def tasks_run(address: str, key_part: str, prefix=()) -> dict[str, int]:
    """Per connected worker, how many tasks whose key contains ``key_part`` it ran (from
    its own transition log)."""
    body = (
        "    def ran(dask_worker):\n"
        "        return len({str(e[0]) for e in dask_worker.state.log if len(e) > 2\n"
        "                    and tuple(e[1:3]) == ('executing', 'memory')\n"
        f"                    and {key_part!r} in str(e[0])}})\n"
        "    print(json.dumps(c.run(ran)))\n")
    return _with_client(address, body, prefix)


def shared_state_stories(address: str, prefix=()) -> dict[str, list]:
    """Per worker, from its own transition log: ``[blocks it ran, arrivals]``.

    ``arrivals`` lists the events that put the scan's shared state (the
    ``dlmm-shared-*`` key: U, the eigenvalues, the null fit) into the worker's
    memory, whether it came by scatter, replication or a fetch.
    """
    body = (
        "    def story(dask_worker):\n"
        "        log = list(dask_worker.state.log)\n"
        "        keys = {e[0] for e in log\n"
        "                if isinstance(e[0], str) and e[0].startswith('dlmm-shared-')}\n"
        "        arrivals = [e[1] for e in log if e[0] in keys and e[1] == 'put-in-memory']\n"
        "        ran = {str(e[0]) for e in log if len(e) > 2\n"
        "               and tuple(e[1:3]) == ('executing', 'memory') and '_block-' in str(e[0])}\n"
        "        return [len(ran), arrivals]\n"
        "    print(json.dumps(c.run(story)))\n")
    return _with_client(address, body, prefix)


# --------------------------------------------------------------------------
# network namespaces: three "hosts" on one bridge
# --------------------------------------------------------------------------
def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@contextlib.contextmanager
def network_namespaces(n_hosts: int, subnet: str = "10.231.17"):
    """Make ``n_hosts`` network namespaces joined by a bridge (in a hub namespace).

    Yields ``[(namespace, address), ...]``; host ``i`` has ``SUBNET.(i+1)/24``
    on ``eth0``.  Everything is deleted on exit.  Skips the test when
    ``ip netns`` is missing or not permitted (needs root or CAP_SYS_ADMIN).
    """
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed (apt-get install iproute2)")
    tag = f"dlmm{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    hub, hosts = f"{tag}hub", [f"{tag}h{i}" for i in range(n_hosts)]
    made = []
    try:
        r = _ip("netns", "add", hub, check=False)
        if r.returncode != 0:
            pytest.skip(f"`ip netns add` is not permitted here: {r.stderr.strip()}")
        made.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        out = []
        for i, ns in enumerate(hosts):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", hub, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", hub, "link", "set", f"v{i}", "master", "br0", "up")
            addr = f"{subnet}.{i + 1}"
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            out.append((ns, addr))
        yield out
    finally:
        for ns in made[::-1]:
            _ip("netns", "del", ns, check=False)
