"""The Dask cluster a command runs on: the given scheduler, or a local cluster."""

from __future__ import annotations

import contextlib
import logging

__all__ = ["client_for"]


@contextlib.contextmanager
def client_for(scheduler: str | None = None, *, dashboard: bool = True):
    """The Dask client of a command: the given scheduler, or a local cluster sized to the
    machine (one worker in this process, a thread per core, all the memory; the
    dashboard on a free port unless ``dashboard`` is False).

    Yields ``(client, description)``: what the cluster is, for the log."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client, f"scheduler {scheduler}"
        return
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    with LocalCluster(n_workers=1, threads_per_worker=CPU_COUNT, processes=False,
                      memory_limit=MEMORY_LIMIT,
                      dashboard_address="127.0.0.1:0" if dashboard else None,
                      silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        yield client, (f"local cluster: 1 worker, {CPU_COUNT} threads, "
                       f"{MEMORY_LIMIT / 2**30:.1f} GiB")
