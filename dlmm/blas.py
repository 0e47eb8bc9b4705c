"""BLAS threads per phase.

The client's phase (eigendecomposition, null fit) is one large LAPACK call and
uses every core through BLAS threads.  The scan's tasks are many and run in
parallel on the Dask threads, so inside them BLAS runs on one thread: nested
BLAS threads would oversubscribe the cores, and OpenBLAS's threads cost far
more than they give on the scan's narrow matrix products (10x slower on a
loaded 2-core machine, measured on the grid step of ``fit_exact``).

OpenBLAS built on pthreads (the numpy and scipy wheels) has one thread pool
for the whole process, and a call that uses it waits for the pool to be free:
a task's small product in the fit then waits for another task's whole
rotation (measured: 0.6 ms became 0.6-7 s).  threadpoolctl >= 3.8 lets only
one "controlling" thread set that pool's size and silently ignores the others,
and a thread stays in control until it is cleared.  A Dask worker's threads
take turns being the first task in, so each change of the limit here first
clears the controlling thread (under this module's lock).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

__all__ = ["single_threaded"]

_lock = threading.Lock()
_active = 0
_limiter = None
_controller = None


def _release_control() -> None:
    """Let the calling thread set OpenBLAS's pool size (threadpoolctl >= 3.8 lets only
    its controlling thread do so); a no-op with older threadpoolctl."""
    import threadpoolctl

    openblas = getattr(threadpoolctl, "OpenBLASController", None)
    if openblas is not None and hasattr(openblas, "clear_controlling_thread"):
        openblas.clear_controlling_thread(force=True)


@contextmanager
def single_threaded():
    """Run the body with one BLAS thread (process-wide, while any task is inside).

    BLAS thread counts are per process, so concurrent tasks share one limit:
    the first to enter sets it and the last to leave restores it, whichever
    threads they are.
    """
    global _active, _limiter, _controller
    from threadpoolctl import ThreadpoolController

    with _lock:
        if _active == 0:
            if _controller is None:
                _controller = ThreadpoolController()
            _release_control()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _release_control()
                _limiter.restore_original_limits()
                _release_control()
                _limiter = None
