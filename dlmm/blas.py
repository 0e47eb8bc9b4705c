"""BLAS threads per phase.

The client's phase (eigendecomposition, null fit) is one large LAPACK call and
uses every core through BLAS threads.  The scan's tasks are many and run in
parallel on the Dask threads, so inside them BLAS runs on one thread: nested
BLAS threads would oversubscribe the cores, and OpenBLAS's threads cost far
more than they give on the scan's narrow matrix products (10x slower on a
loaded 2-core machine, measured on the grid step of ``fit_exact``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

__all__ = ["single_threaded"]

_lock = threading.Lock()
_active = 0
_limiter = None
_controller = None


@contextmanager
def single_threaded():
    """Run the body with one BLAS thread (process-wide, while any task is inside).

    BLAS thread counts are per process, so concurrent tasks share one limit:
    the first to enter sets it and the last to leave restores it.
    """
    global _active, _limiter, _controller
    from threadpoolctl import ThreadpoolController

    with _lock:
        if _active == 0:
            if _controller is None:
                _controller = ThreadpoolController()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _limiter.restore_original_limits()
                _limiter = None
