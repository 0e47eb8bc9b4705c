"""The Dask cluster a command runs on: the only place dlmm makes or connects one.

Safe by default: a local cluster listens on 127.0.0.1 only (one worker in this
process: no socket at all but the dashboard's), serves HTTP only for its
dashboard, and none without one; a remote scheduler's address is checked, and
its handshake read before Dask's client reads anything from it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import struct
import time
from collections.abc import Iterator

from distributed import Client, Nanny, Scheduler, SpecCluster, Worker

from .errors import InputError

__all__ = ["CONNECT_TIMEOUT", "check_options", "check_scheduler_address", "client_for",
           "cluster_memory", "resources"]

CONNECT_TIMEOUT = 10.0  # seconds to connect to a scheduler and read its handshake
MIN_WORKER_MEMORY = 512 * 2**20  # below this a worker pauses on its own imports
_GRACE = 2.0  # seconds a Dask server may take to greet before we half-close
_HANDSHAKE_MAX = 64 * 2**10  # a Dask handshake is ~60 bytes: a longer "frame" is not one
_GiB = 2**30


class _QuietScheduler(Scheduler):
    """A scheduler without an HTTP server (stock ones always start one, /health and
    /metrics at least, even with ``dashboard=False``)."""

    def start_http_server(self, routes, dashboard_address, default_port=0, ssl_options=None):
        return None


class _QuietWorker(Worker):
    """A worker without an HTTP server (stock ones serve /health, /metrics)."""

    def start_http_server(self, routes, dashboard_address, default_port=0, ssl_options=None):
        return None


class _LocalCluster(SpecCluster):
    """A SpecCluster whose dashboard link is where its HTTP server listens (the stock
    link takes the host of an ``inproc://`` address: the machine's external one)."""

    @property
    def dashboard_link(self) -> str:
        from distributed.utils import format_dashboard_link

        http = getattr(self.scheduler, "http_server", None)
        if http is None:
            return ""
        host = http.address if http.address not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return format_dashboard_link(host, http.port)


_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_ADDRESS = re.compile(rf"^(?:(tcp|tls)://)?({_HOST}):([0-9]{{1,5}})$")


def check_scheduler_address(address: str, source: str = "--scheduler") -> str:
    """A scheduler address as Dask's client takes it: ``tcp://HOST:PORT`` or
    ``tls://HOST:PORT`` (``HOST:PORT`` means tcp).

    Parameters
    ----------
    address : the address given.
    source : where it was given, named in the error.

    Returns
    -------
    str : the address with its protocol, e.g. ``tcp://10.0.0.5:8786``.

    Raises
    ------
    InputError : anything else (another protocol, no port, a port out of range).
    """
    m = _ADDRESS.match(address.strip())
    if not m or not 0 < int(m[3]) < 65536:
        raise InputError(source, f"{address!r} is not a scheduler address",
                         "give tcp://HOST:PORT or tls://HOST:PORT (dask scheduler prints it; "
                         "port 8786 by default)")
    return f"{m[1] or 'tcp'}://{m[2]}:{int(m[3])}"


def _check_dashboard_address(address: str) -> str:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (the latter two on 127.0.0.1) as ``HOST:PORT``."""
    m = re.match(r"^(?:([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)?:)?([0-9]{1,5})$",
                 address.strip())
    if not m or int(m[2]) > 65535:
        raise InputError("--dashboard-address", f"{address!r} is not HOST:PORT",
                         "give e.g. 127.0.0.1:8787, :8787 (on 127.0.0.1) or 0.0.0.0:8787 "
                         "(every interface: anyone who reaches this machine sees it)")
    return f"{m[1] or '127.0.0.1'}:{int(m[2])}"


def _positive(value, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(option, f"{value!r} is not a positive whole number", "give 1 or more")
    return value


def _memory(value: str | int, workers: int) -> int:
    """The total memory limit in bytes: ``8GiB``, ``500 MB``, a number of bytes."""
    from dask.utils import parse_bytes
    from distributed.system import MEMORY_LIMIT

    try:
        total = value if isinstance(value, int) and not isinstance(value, bool) \
            else int(parse_bytes(str(value)))
    except (ValueError, TypeError):
        total = -1
    if total < workers * MIN_WORKER_MEMORY:
        raise InputError("--memory-limit", f"{value!r} is not a size of at least "
                         f"{MIN_WORKER_MEMORY >> 20} MiB per worker",
                         "give the total for all workers, e.g. 8GiB or 500MB")
    if total > MEMORY_LIMIT:
        raise InputError("--memory-limit", f"{value!r} is more than this machine's "
                         f"{MEMORY_LIMIT / _GiB:.1f} GiB", "give at most that, or leave it out")
    return total


def check_options(scheduler: str | None = None, *, threads: int | None = None,
                  workers: int | None = None, memory_limit: str | int | None = None,
                  dashboard: bool = True, dashboard_address: str | None = None) -> dict:
    """Check the options of :func:`client_for` without starting or connecting anything.

    Returns
    -------
    dict : ``scheduler`` (checked address and where it came from, or None) or the local
        cluster's ``threads`` (a list, one count per worker), ``memory`` (bytes per
        worker), ``dashboard_address`` (``HOST:PORT``, or None for no dashboard).

    Raises
    ------
    InputError : naming the option at fault.
    """
    import dask
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    source = "--scheduler"
    if scheduler is None:
        scheduler, source = dask.config.get("scheduler-address", None), "DASK_SCHEDULER_ADDRESS"
        scheduler = scheduler or None  # set but empty: unset
    local = {"--threads": threads, "--workers": workers, "--memory-limit": memory_limit,
             "--dashboard-address": dashboard_address}
    if scheduler is not None:
        given = [k for k, v in local.items() if v is not None]
        if given:
            raise InputError(given[0], f"sizes the local cluster, but {source} gives a "
                             "scheduler", f"drop {given[0]}, or the scheduler "
                             f"({'unset ' if source[0] == 'D' else 'drop '}{source})")
        return {"scheduler": check_scheduler_address(scheduler, source), "source": source}
    if dashboard_address is not None and not dashboard:
        raise InputError("--dashboard-address", "given with --no-dashboard", "drop one")
    workers = 1 if workers is None else _positive(workers, "--workers")
    if workers > CPU_COUNT:
        raise InputError("--workers", f"{workers} worker processes on {CPU_COUNT} cores",
                         f"give at most {CPU_COUNT} (and more --threads for each)")
    threads = max(CPU_COUNT, workers) if threads is None else _positive(threads, "--threads")
    if threads < workers:
        raise InputError("--threads", f"{threads} thread{'s' * (threads > 1)} in all cannot "
                         f"run {workers} workers", f"give at least {workers} threads, or "
                         "fewer workers")
    total = MEMORY_LIMIT if memory_limit is None else _memory(memory_limit, workers)
    return {"scheduler": None,
            "threads": [threads // workers + (i < threads % workers) for i in range(workers)],
            "memory": total // workers,
            "dashboard_address": (_check_dashboard_address(dashboard_address or ":0")
                                  if dashboard else None)}


def _size(client: Client) -> str:
    """``N workers, T threads, M GiB`` of the workers connected now."""
    info = client.scheduler_info(n_workers=-1)["workers"].values()
    n, t = len(info), sum(w["nthreads"] for w in info)
    mem = sum(w.get("memory_limit") or 0 for w in info)
    return (f"{n} worker{'s' * (n != 1)}, {t} thread{'s' * (t != 1)}, "
            f"{mem / _GiB:.1f} GiB")


@contextlib.contextmanager
def _local(threads: list[int], memory: int, dashboard_address: str | None,
           ) -> Iterator[tuple[Client, str]]:
    """A cluster on this machine: one worker in this process (``inproc://``: no
    socket), or worker processes on tcp://127.0.0.1; the scheduler in this process,
    its HTTP server on ``dashboard_address`` or none."""
    one = len(threads) == 1
    net = {"protocol": "inproc://", "host": None} if one else \
        {"protocol": "tcp://", "host": "127.0.0.1"}
    if dashboard_address is None:
        scheduler = {"cls": _QuietScheduler, "options": {**net, "dashboard": False}}
    else:
        scheduler = {"cls": Scheduler, "options": {**net, "dashboard": True,
                                                   "dashboard_address": dashboard_address}}
    quiet = {**net, "memory_limit": memory, "dashboard": False, "silence_logs": logging.WARNING}
    workers = {i: {"cls": _QuietWorker, "options": {**quiet, "nthreads": n}} if one else
               {"cls": Nanny, "options": {**quiet, "nthreads": n, "worker_class": _QuietWorker}}
               for i, n in enumerate(threads)}
    with _LocalCluster(workers=workers, scheduler=scheduler,
                       silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        yield client, f"local cluster: {_size(client)}"


def _connect(host: str, port: int, timeout: float, fail) -> socket.socket:
    """A TCP connection, or ``fail(problem, fix)`` saying why not."""
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        fail("connection refused: no scheduler listens there")
    except socket.gaierror:
        fail(f"unknown host {host!r}")
    except (TimeoutError, socket.timeout):
        fail(f"no answer within {timeout:g} s", "check the address; a remote scheduler "
             "behind a firewall is reached through an SSH tunnel (see the README)")
    except OSError as e:
        fail(f"cannot connect: {e.strerror or e}")


def _read_greeting(sock, deadline: float, tls: bool, rest: str, fail) -> None:
    """Read the first message on ``sock``; ``fail`` unless it is a Dask handshake."""
    import msgpack
    from distributed.protocol.utils import unpack_frames

    def read(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            part = sock.recv(n - len(buf))
            if not part:
                break
            buf += part
        return buf

    # a Dask server speaks at once; a silent one (HTTP, TLS) is told we are done
    # sending, and closes: no waiting out the timeout (not over TLS: it has begun)
    if not tls:
        sock.settimeout(min(_GRACE, max(deadline - time.monotonic(), 1e-3)))
        with contextlib.suppress(TimeoutError, socket.timeout):
            sock.recv(1, socket.MSG_PEEK)
        sock.shutdown(socket.SHUT_WR)
    head = read(8)
    if not head:
        fail("closed the connection without a Dask handshake: not a Dask scheduler (an "
             "HTTP or a TLS server?)", "give the scheduler's tcp:// address, or tls:// if "
             "it uses TLS")
    if head[:1] in (b"\x15", b"\x16") and head[1:2] == b"\x03":  # a TLS record
        fail("answered as a TLS server, not a Dask handshake",
             f"give tls://{rest} and Dask's distributed.comm.tls certificates")
    length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    if not 0 < length <= _HANDSHAKE_MAX:
        fail(f"answered {head!r}, not a Dask handshake (an HTTP server? the dashboard?)",
             "give the scheduler's port (8786 by default), not the dashboard's (8787)")
    hello = msgpack.unpackb(unpack_frames(read(length))[0], raw=False, strict_map_key=False)
    if not (isinstance(hello, dict) and "pickle-protocol" in hello):
        fail("answered, but not with a Dask handshake", "give a Dask scheduler's port")


def _greeting(address: str, timeout: float, where: str) -> None:
    """Read a Dask server's handshake (it speaks first: an 8-byte frame length, then a
    small msgpack map) on a socket of our own, before Dask's client reads from it.

    Dask's client reads the first 8 bytes as a frame length and allocates that much:
    from an HTTP server, ``HTTP/1.1`` is 3.07 EiB. Here anything but a handshake, a
    silence or a refusal is one InputError naming ``where`` (the address).
    """
    import msgpack
    from distributed.security import Security

    proto, rest = address.split("://")
    host, port = rest.rsplit(":", 1)
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    ctx = None
    if proto == "tls":
        ctx = Security().get_connection_args("client")["ssl_context"]
        if ctx is None:
            raise InputError(where, "tls:// needs this client's certificate", "set Dask's "
                             "distributed.comm.tls config (DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
                             "..._CLIENT__CERT, ..._CLIENT__KEY)")

    def fail(problem: str, fix: str = "check the address (dask scheduler prints it)"):
        raise InputError(where, problem, fix) from None

    try:
        with _connect(host, int(port), timeout, fail) as sock:
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_hostname=host if ctx.check_hostname
                                       else None)
            _read_greeting(sock, deadline, ctx is not None, rest, fail)
    except InputError:
        raise
    except (TimeoutError, socket.timeout):
        fail(f"sent no Dask handshake within {timeout:g} s: not a Dask scheduler (an HTTP "
             "or a TLS server?), or one too busy", "give the scheduler's tcp:// address, "
             "or tls:// if it uses TLS")
    except ssl.SSLError as e:
        fail(f"TLS handshake failed ({e.reason or e})", "use tcp:// if the scheduler has "
             "no TLS, else check Dask's distributed.comm.tls certificates")
    except (OSError, ValueError, IndexError, struct.error, msgpack.UnpackException) as e:
        fail(f"the handshake failed ({type(e).__name__}: {e})", "give a Dask scheduler's "
             "address")


@contextlib.contextmanager
def _remote(address: str, source: str, timeout: float) -> Iterator[tuple[Client, str]]:
    """A client of the scheduler at ``address``, whose handshake was checked first."""
    where = f"{source} {address}" if source.startswith("--") else f"{address} ({source})"
    _greeting(address, timeout, where)
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as e:  # e.g. TLS required by the config
        raise InputError(where, f"cannot connect ({e})",
                         "check the address and Dask's distributed.comm config") from None
    with client:
        yield client, f"scheduler {address}: {_size(client)}"


@contextlib.contextmanager
def client_for(scheduler: str | None = None, *, threads: int | None = None,
               workers: int | None = None, memory_limit: str | int | None = None,
               dashboard: bool = True, dashboard_address: str | None = None,
               timeout: float = CONNECT_TIMEOUT) -> Iterator[tuple[Client, str]]:
    """The Dask client of a command, with what it runs on.

    Parameters
    ----------
    scheduler : address of a running scheduler (``tcp://HOST:PORT``, ``tls://HOST:PORT``
        or ``HOST:PORT``); default Dask's ``scheduler-address`` config
        (``DASK_SCHEDULER_ADDRESS``), else a local cluster.
    threads : the local cluster's threads in all (default one per core,
        ``dask.system.CPU_COUNT``), split as evenly as can be among the workers.
    workers : the local cluster's workers (default 1, in this process: threads share
        memory without copies); more are worker processes on tcp://127.0.0.1, at most
        one per core.
    memory_limit : the local cluster's memory in all, bytes or ``"8GiB"`` (default all
        of this machine's, cgroup limits included), split evenly among the workers. The
        one in-process worker counts this whole process's memory.
    dashboard : serve the scheduler's dashboard (on 127.0.0.1, a free port); False:
        no HTTP server at all.
    dashboard_address : ``HOST:PORT`` (or ``:PORT``, on 127.0.0.1) of the dashboard.
    timeout : seconds to connect to ``scheduler`` and read its handshake.

    Yields
    ------
    (Client, str) : the client, and a description for the log, e.g. ``local cluster:
        1 worker, 2 threads, 23.4 GiB`` or ``scheduler tcp://...: 4 workers, ...``.

    Raises
    ------
    InputError : a bad option, or a scheduler that cannot be reached, in one line.
    """
    if not 0 < timeout < float("inf"):
        raise InputError("timeout", f"{timeout!r} is not a positive number of seconds",
                         f"give e.g. {CONNECT_TIMEOUT:g}")
    opts = check_options(scheduler, threads=threads, workers=workers,
                         memory_limit=memory_limit, dashboard=dashboard,
                         dashboard_address=dashboard_address)
    if opts["scheduler"] is not None:
        with _remote(opts["scheduler"], opts["source"], timeout) as pair:
            yield pair
    else:
        with _local(opts["threads"], opts["memory"], opts["dashboard_address"]) as pair:
            yield pair


def resources(client: Client | None = None) -> dict:
    """What a scan's memory check needs to know of where it runs.

    Returns
    -------
    dict with ``threads_per_worker`` and ``n_workers`` (the most threads of a worker;
    without a client, this process's cores), ``in_process`` (the one worker is this
    process: the client's and its arrays add up), ``client_bytes`` (what this process
    may use: the memory available now plus its own, within the machine's or cgroup's
    limit and an in-process worker's ``memory_limit``), ``worker_bytes`` (the
    memory limits of worker processes; empty in process or when none is set) and
    ``local_workers`` (worker processes on this machine, sharing its memory).
    """
    import psutil
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    own = psutil.Process().memory_info().rss
    client_bytes = min(MEMORY_LIMIT, psutil.virtual_memory().available + own)
    if client is None:
        return {"threads_per_worker": CPU_COUNT, "n_workers": 1, "in_process": True,
                "client_bytes": client_bytes, "worker_bytes": [], "local_workers": 0}
    workers = client.scheduler_info(n_workers=-1)["workers"]  # address -> its info
    info = list(workers.values())
    in_process = client.scheduler.address.startswith("inproc://")
    limits = cluster_memory(client)
    if in_process and limits and limits[0]:
        client_bytes = min(client_bytes, limits[0])
    return {"threads_per_worker": max([w["nthreads"] for w in info], default=1),
            "n_workers": max(1, len(info)), "in_process": in_process,
            "client_bytes": client_bytes,
            "worker_bytes": [] if in_process or not all(limits) else limits,
            "local_workers": 0 if in_process else sum(map(_on_this_machine, workers))}


def _on_this_machine(address: str) -> bool:
    """Whether the worker at ``address`` runs on this machine."""
    from distributed.comm import get_address_host

    try:
        host = get_address_host(address)
        return host in ("127.0.0.1", "localhost", "::1") or host == socket.gethostbyname(
            socket.gethostname())
    except (ValueError, OSError):  # an address of another kind, an unknown host name
        return False


def cluster_memory(client: Client) -> list[int]:
    """Each connected worker's memory limit in bytes (0: none set), for memory checks."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return [int(w.get("memory_limit") or 0) for w in info.values()]
