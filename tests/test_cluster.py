"""The Dask cluster a command runs on (dlmm.cluster): real clusters, sockets and servers
on 127.0.0.1, probed with psutil and HTTP requests; bad scheduler addresses."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import dask
import psutil
import pytest
from dask.system import CPU_COUNT

from _cluster import ENV, PY, dask_cluster
from dlmm.cluster import (check_options, check_scheduler_address, client_for, cluster_memory,
                          resources)
from dlmm.errors import InputError

LOOPBACK = {"127.0.0.1", "::1"}


@pytest.fixture(autouse=True)
def no_scheduler_from_env(monkeypatch):
    """A developer's DASK_SCHEDULER_ADDRESS must not turn local clusters into remote ones."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with dask.config.set({"scheduler-address": None}):
        yield


def listening(pid: int) -> list[tuple[int, str, int]]:
    """``(pid, ip, port)`` of every listening TCP socket of ``pid`` and its children."""
    out = []
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            out += [(p.pid, c.laddr.ip, c.laddr.port) for c in p.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN]
    return out


def http_status(ip: str, port: int, path: str = "/health") -> int | None:
    """The status of an HTTP GET, or None when what answers is not an HTTP server."""
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (http.client.HTTPException, OSError):
        return None
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# local clusters
# --------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_no_dashboard_no_http_server(workers):
    """dashboard=False: every socket of the cluster (scheduler, nannies, worker
    processes) on loopback, and none of them answers an HTTP GET (stock Dask servers
    serve /health and /metrics even without a dashboard)."""
    before = set(listening(os.getpid()))
    with client_for(workers=workers, threads=workers, dashboard=False) as (client, desc):
        assert client.submit(sum, [1, 2]).result() == 3
        socks = [s for s in listening(os.getpid()) if s not in before]
        assert client.dashboard_link == ""
        # one in-process worker talks inproc://: no socket at all; processes need some
        assert len(socks) == (0 if workers == 1 else 1 + 2 * workers), socks
        assert {ip for _, ip, _ in socks} <= LOOPBACK, socks
        answers = {port: http_status(ip, port) for _, ip, port in socks}
        assert all(v is None for v in answers.values()), answers
    assert desc.startswith(f"local cluster: {workers} worker")


def test_default_dashboard_on_loopback_only():
    """The default dashboard: on 127.0.0.1 (a free port) only, the printed link is that
    address and answers /status; nothing else of the cluster listens."""
    before = set(listening(os.getpid()))
    with client_for() as (client, desc):
        socks = [s for s in listening(os.getpid()) if s not in before]
        link = client.dashboard_link
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/status", link)
        assert m, link
        assert [(ip, port) for _, ip, port in socks] == [("127.0.0.1", int(m[1]))]
        assert http_status("127.0.0.1", int(m[1]), "/status") == 200
    from distributed.system import MEMORY_LIMIT  # the machine's, cgroup limits included

    assert desc == (f"local cluster: 1 worker, {CPU_COUNT} thread{'s' * (CPU_COUNT > 1)}, "
                    f"{MEMORY_LIMIT / 2**30:.1f} GiB")


def test_dashboard_address_port_only_is_loopback():
    port = free_port()
    with client_for(dashboard_address=f":{port}") as (client, _):
        assert client.dashboard_link == f"http://127.0.0.1:{port}/status"
        assert ("127.0.0.1", port) in [(ip, p) for _, ip, p in listening(os.getpid())]
        assert http_status("127.0.0.1", port, "/status") == 200


def test_workers_threads_memory():
    """workers=2 of threads=2 and 2 GiB: two worker processes of one thread and 1 GiB
    each, as the scheduler sees them; 3 threads split 2 + 1."""
    with client_for(workers=2, threads=2, memory_limit="2GiB", dashboard=False) as (c, desc):
        info = c.scheduler_info(n_workers=-1)["workers"]
        assert sorted(w["nthreads"] for w in info.values()) == [1, 1]
        assert cluster_memory(c) == [2**30, 2**30]
        # what the scan's memory check sees: two processes on this machine, beside it
        where = resources(c)
        assert (where["local_workers"], where["in_process"]) == (2, False)
        assert where["worker_bytes"] == [2**30, 2**30] and where["threads_per_worker"] == 1
        pids = c.run(os.getpid)
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        assert desc == "local cluster: 2 workers, 2 threads, 2.0 GiB"
    if CPU_COUNT >= 2:
        with client_for(workers=2, threads=3, dashboard=False) as (c, desc):
            info = c.scheduler_info(n_workers=-1)["workers"]
            assert sorted(w["nthreads"] for w in info.values()) == [1, 2]
            assert desc.startswith("local cluster: 2 workers, 3 threads")


def test_one_worker_memory_limit():
    with client_for(threads=1, memory_limit=3 * 2**30, dashboard=False) as (c, desc):
        assert cluster_memory(c) == [3 * 2**30]
        where = resources(c)  # one process: the worker's limit is the client's too
        assert where["in_process"] and where["local_workers"] == 0 and not where["worker_bytes"]
        assert where["client_bytes"] <= 3 * 2**30
        assert list(c.run(os.getpid).values()) == [os.getpid()]  # in this process
        assert desc == "local cluster: 1 worker, 1 thread, 3.0 GiB"


@pytest.mark.parametrize("kwargs, option", [
    ({"threads": 0}, "--threads"),
    ({"threads": -2}, "--threads"),
    ({"threads": 1.5}, "--threads"),
    ({"threads": True}, "--threads"),
    ({"workers": 0}, "--workers"),
    ({"workers": CPU_COUNT + 1}, "--workers"),
    ({"workers": 2, "threads": 1}, "--threads"),
    ({"memory_limit": "lots"}, "--memory-limit"),
    ({"memory_limit": "1KiB"}, "--memory-limit"),
    ({"memory_limit": "-4GiB"}, "--memory-limit"),
    ({"memory_limit": "10PiB"}, "--memory-limit"),
    ({"dashboard_address": "somewhere"}, "--dashboard-address"),
    ({"dashboard_address": "[::1]:8787"}, "--dashboard-address"),
    ({"dashboard_address": "127.0.0.1:99999"}, "--dashboard-address"),
    ({"dashboard_address": ":0", "dashboard": False}, "--dashboard-address"),
    ({"scheduler": "tcp://127.0.0.1:8786", "threads": 2}, "--threads"),
    ({"scheduler": "tcp://127.0.0.1:8786", "memory_limit": "1GiB"}, "--memory-limit"),
])
def test_bad_options(kwargs, option):
    """Each bad option is one InputError naming it, before anything starts."""
    with pytest.raises(InputError) as e:
        with client_for(**kwargs):
            pytest.fail("a cluster started")
    assert e.value.source == option and "\n" not in str(e.value)
    with pytest.raises(InputError):
        check_options(**kwargs)


def test_scheduler_from_config_conflicts_with_sizing():
    with dask.config.set({"scheduler-address": "tcp://127.0.0.1:8786"}):
        with pytest.raises(InputError, match="unset DASK_SCHEDULER_ADDRESS"):
            check_options(workers=2)


# --------------------------------------------------------------------------
# scheduler addresses
# --------------------------------------------------------------------------
@pytest.mark.parametrize("given, expected", [
    ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    ("tls://sched.example.org:8786", "tls://sched.example.org:8786"),
    ("localhost:8786", "tcp://localhost:8786"),
    ("tcp://[::1]:8786", "tcp://[::1]:8786"),
])
def test_scheduler_address_accepted(given, expected):
    assert check_scheduler_address(given) == expected


@pytest.mark.parametrize("given", [
    "not an address", "", "http://127.0.0.1:8786", "inproc://127.0.0.1/1/1", "ucx://h:1",
    "tcp://127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "tcp://:8786", "tcp://a b:1",
    "ws://127.0.0.1:8786", "tcp://127.0.0.1:8786/path",
])
def test_scheduler_address_refused(given):
    with pytest.raises(InputError) as e:
        check_scheduler_address(given)
    assert e.value.source == "--scheduler" and "\n" not in str(e.value)


@contextlib.contextmanager
def dask_scheduler(workdir: Path, *args: str):
    """A bare ``dask scheduler`` process on 127.0.0.1 (no workers); yields the
    scheduler file's contents (address, services)."""
    sched_file = Path(workdir) / f"scheduler-{uuid.uuid4().hex[:8]}.json"
    p = subprocess.Popen([PY, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                          "--scheduler-file", str(sched_file), *args],
                         stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert sched_file.exists(), "the scheduler did not start"
        time.sleep(0.2)
        yield json.loads(sched_file.read_text())
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def http_server(tmp_path):
    """``python -m http.server`` on 127.0.0.1; yields its port."""
    port = free_port()
    p = subprocess.Popen([PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while http_status("127.0.0.1", port, "/") != 200:
            assert time.time() < deadline and p.poll() is None, "http.server did not start"
            time.sleep(0.1)
        yield port
    finally:
        p.terminate()
        p.wait(timeout=30)


@contextlib.contextmanager
def eager_http_server():
    """A server answering ``HTTP/1.1 400`` at once to whatever arrives: Dask's own
    client reads that as an 8-byte frame length and allocates 3.07 EiB."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        srv.close()


def refused(address: str, timeout: float = 10.0, match: str = "") -> float:
    """Seconds ``client_for(address)`` took to raise its one-line InputError."""
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=match) as e:
        with client_for(address, timeout=timeout):
            pytest.fail(f"connected to {address}")
    assert "\n" not in str(e.value) and address.split("://")[-1] in str(e.value)
    return time.perf_counter() - t0


def test_refused_port_fast():
    assert refused(f"tcp://127.0.0.1:{free_port()}", match="refused") < 2


def test_unknown_host():
    assert refused("tcp://no-such-host.invalid:8786", match="unknown host") < 15


def test_http_servers_are_not_schedulers(tmp_path):
    """An HTTP server (silent until asked; or answering at once; or a stock Dask
    scheduler's HTTP port, served even with --no-dashboard): one line, in seconds, no
    huge allocation, though the timeout is long."""
    with http_server(tmp_path) as port:
        assert refused(f"tcp://127.0.0.1:{port}", timeout=30, match="not a Dask") < 5
    with eager_http_server() as port:
        assert refused(f"127.0.0.1:{port}", timeout=30, match="not a Dask handshake") < 5
    with dask_scheduler(tmp_path, "--no-dashboard") as info:
        port = info["services"]["dashboard"]
        assert http_status("127.0.0.1", port) == 200  # what the hostile pass found
        assert refused(f"tcp://127.0.0.1:{port}", timeout=30, match="not a Dask") < 5


def test_dask_scheduler_address_env(tmp_path, monkeypatch):
    """DASK_SCHEDULER_ADDRESS (Dask's scheduler-address config) reaches a real
    ``dask scheduler`` + ``dask worker`` pair; the description is its size."""
    with dask_cluster(tmp_path) as cluster:
        with dask.config.set({"scheduler-address": cluster.address}):
            with client_for() as (client, desc):
                assert client.scheduler.address == cluster.address
                assert len(cluster_memory(client)) == 2
        assert desc.startswith(f"scheduler {cluster.address}: 2 workers, 2 threads, ")
        # the variable itself, read by Dask's config in a new process
        code = ("from dlmm.cluster import client_for\n"
                "with client_for() as (c, d): print(d)\n")
        r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120,
                           env=dict(ENV, DASK_SCHEDULER_ADDRESS=cluster.address))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"scheduler {cluster.address}: 2 workers"), r.stdout


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A CA, certificate and key (one for both ends, as Dask's Security.temporary())."""
    pytest.importorskip("cryptography")
    from distributed.security import Security

    sec = Security.temporary()
    d = tmp_path_factory.mktemp("tls")
    files = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}
    files["ca"].write_text(sec.tls_ca_file)
    files["cert"].write_text(sec.tls_client_cert)
    files["key"].write_text(sec.tls_client_key)
    return files


def test_tls_scheduler(tmp_path, tls_files):
    """tls:// with the client's certificate connects; without it, over tcp://, or
    tls:// to a plain scheduler: one line each, fast."""
    tls = {"distributed.comm.tls.ca-file": str(tls_files["ca"]),
           "distributed.comm.tls.client.cert": str(tls_files["cert"]),
           "distributed.comm.tls.client.key": str(tls_files["key"])}
    with dask_scheduler(tmp_path, "--no-dashboard", "--protocol", "tls",
                        "--tls-ca-file", str(tls_files["ca"]),
                        "--tls-cert", str(tls_files["cert"]),
                        "--tls-key", str(tls_files["key"])) as info:
        address = info["address"]
        assert address.startswith("tls://127.0.0.1:")
        refused(address, match="needs this client's certificate")
        with dask.config.set(tls):
            with client_for(address) as (_, desc):
                assert desc.startswith(f"scheduler {address}: 0 workers")
        plain = address.replace("tls://", "tcp://")
        assert refused(plain, timeout=30, match="as a TLS server") < 5
    with dask_scheduler(tmp_path, "--no-dashboard") as info, dask.config.set(tls):
        assert refused(info["address"].replace("tcp://", "tls://"), match="TLS") < 5


# --------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------
def scan_and_watch(plink, out, *options) -> tuple[subprocess.CompletedProcess, set, dict]:
    """Run ``dlmm scan`` (many small blocks, so the cluster lives seconds); from the
    line announcing the cluster until the end, poll the listening sockets of the
    process and its children, and GET each one once.

    Returns the finished process, the sockets seen ``{(ip, port)}`` and
    ``{port: HTTP status or None}``.
    """
    args = [PY, "-m", "dlmm.cli", "scan", str(plink["prefix"]), "--out", str(out),
            "--no-plot", "--chunk-size", "50", *options]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=ENV)
    err, seen, answers = [], set(), {}
    for line in p.stderr:  # the cluster is up once its line is printed
        err.append(line)
        if line.startswith("dask dashboard:"):
            break
    while p.poll() is None:
        for _, ip, port in listening(p.pid):
            seen.add((ip, port))
            if port not in answers:
                answers[port] = http_status(ip, port, "/status")
        time.sleep(0.05)
    out_text = p.stdout.read()
    err += p.stderr.readlines()
    return subprocess.CompletedProcess(args, p.returncode, out_text, "".join(err)), seen, answers


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_no_dashboard_loopback_only(plink, tmp_path, workers):
    """``dlmm scan --no-dashboard``: while it runs, nothing listens on any address but
    loopback, and nothing that listens is an HTTP server."""
    r, seen, answers = scan_and_watch(plink, tmp_path / "nd", "--no-dashboard",
                                      "--workers", workers, "--threads", workers)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^dask dashboard: off \(local cluster: {workers} worker", r.stderr, re.M)
    assert {ip for ip, _ in seen} <= LOOPBACK, seen
    assert all(v is None for v in answers.values()), answers
    if workers == "2":  # the scheduler, the nannies and the worker processes were seen
        assert len(seen) >= 5, seen


def test_cli_dashboard_loopback_only(plink, tmp_path):
    """The default dashboard: on 127.0.0.1 only, the printed link answers /status."""
    r, seen, answers = scan_and_watch(plink, tmp_path / "d")
    assert r.returncode == 0, r.stderr
    m = re.search(r"^dask dashboard: http://127\.0\.0\.1:(\d+)/status \(local cluster",
                  r.stderr, re.M)
    assert m, r.stderr
    assert seen == {("127.0.0.1", int(m[1]))}, seen
    assert answers == {int(m[1]): 200}


def test_cli_threads_workers_reported(plink, tmp_path):
    """``--threads 1 --workers 1``: the cluster's size as its scheduler reports it, and
    the same table as two worker processes compute."""
    common = [plink["prefix"], "--no-plot", "--no-dashboard"]
    r = subprocess.run([PY, "-m", "dlmm.cli", "scan", *map(str, common), "--threads", "1",
                        "--workers", "1", "--memory-limit", "2GiB", "--out",
                        str(tmp_path / "one")], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "(local cluster: 1 worker, 1 thread, 2.0 GiB)" in r.stderr, r.stderr
    if CPU_COUNT >= 2:
        r2 = subprocess.run([PY, "-m", "dlmm.cli", "scan", *map(str, common), "--workers", "2",
                             "--threads", "2", "--out", str(tmp_path / "two")],
                            capture_output=True, text=True, env=ENV)
        assert r2.returncode == 0, r2.stderr
        assert "(local cluster: 2 workers, 2 threads," in r2.stderr
        assert (tmp_path / "one.assoc.tsv").read_bytes() == \
            (tmp_path / "two.assoc.tsv").read_bytes()


def test_cli_scheduler_env(plink, tmp_path):
    """DASK_SCHEDULER_ADDRESS sends ``dlmm scan`` to a real scheduler and workers."""
    with dask_cluster(tmp_path) as cluster:
        r = subprocess.run([PY, "-m", "dlmm.cli", "scan", str(plink["prefix"]), "--no-plot",
                            "--out", str(tmp_path / "env")], capture_output=True, text=True,
                           env=dict(ENV, DASK_SCHEDULER_ADDRESS=cluster.address))
    assert r.returncode == 0, r.stderr
    assert f"(scheduler {cluster.address}: 2 workers, 2 threads, " in r.stderr, r.stderr


@pytest.mark.parametrize("options, source", [
    (["--scheduler", "not an address"], "--scheduler"),
    (["--scheduler", "REFUSED"], "--scheduler tcp://127.0.0.1:"),
    (["--threads", "0"], "--threads"),
    (["--workers", "2", "--threads", "1"], "--threads"),
    (["--memory-limit", "1KiB"], "--memory-limit"),
    (["--dashboard-address", ":0", "--no-dashboard"], "--dashboard-address"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"], "--workers"),
])
def test_cli_bad_cluster_options(plink, tmp_path, options, source):
    """One line, exit 2, in seconds, nothing written."""
    options = [f"127.0.0.1:{free_port()}" if o == "REFUSED" else o for o in options]
    t0 = time.perf_counter()
    r = subprocess.run([PY, "-m", "dlmm.cli", "scan", str(plink["prefix"]), "--out",
                        str(tmp_path / "x"), *options], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"dlmm: error: {source}") and r.stderr.count("\n") == 1, r.stderr
    assert time.perf_counter() - t0 < 30
    assert list(tmp_path.iterdir()) == []
