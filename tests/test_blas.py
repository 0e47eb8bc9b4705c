"""dlmm.blas.single_threaded: one BLAS thread inside the scan's tasks, whichever Dask
thread runs them."""

import threading
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import threadpool_info, threadpool_limits

from dlmm.blas import single_threaded


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_single_threaded_from_any_worker_thread():
    """The second of two long-lived pool threads to run a task still gets one BLAS thread.

    threadpoolctl >= 3.8 lets only the first thread that set OpenBLAS's
    (process-wide) pool size change it while that thread lives; a Dask worker's
    threads live as long as the worker.  Without releasing that control, the
    second thread's limit was ignored and its products waited on the pool.
    """
    import numpy  # noqa: F401  (loads numpy's BLAS)

    with threadpool_limits(limits=2, user_api="blas"):  # a pool to limit, on any machine
        original = _blas_threads()
        assert original and all(n == 2 for n in original)
        first_done = threading.Event()
        release = threading.Event()
        seen = {}

        def first():
            with single_threaded():
                seen["first"] = _blas_threads()
            first_done.set()
            release.wait(10)  # this thread stays alive, as a worker's thread does

        def second():
            first_done.wait(10)
            with single_threaded():
                seen["second"] = _blas_threads()
            seen["after"] = _blas_threads()
            release.set()

        with ThreadPoolExecutor(2) as ex:
            futures = [ex.submit(first), ex.submit(second)]
            for f in futures:
                f.result(timeout=30)
        assert seen["first"] == [1] * len(original)
        assert seen["second"] == [1] * len(original)
        assert seen["after"] == original  # restored when the last task left


def test_single_threaded_overlapping_tasks_restore_once():
    """Overlapping tasks on two threads: the limit holds until the last one leaves,
    even when that one is not the thread that set it."""
    with threadpool_limits(limits=2, user_api="blas"):
        original = _blas_threads()
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
        seen = {}

        def a():
            with single_threaded():
                a_in.set()
                b_in.wait(10)
            a_out.set()

        def b():
            a_in.wait(10)
            with single_threaded():
                b_in.set()
                a_out.wait(10)
                seen["b_alone"] = _blas_threads()
            seen["after"] = _blas_threads()

        with ThreadPoolExecutor(2) as ex:
            for f in [ex.submit(a), ex.submit(b)]:
                f.result(timeout=30)
        assert seen["b_alone"] == [1] * len(original)
        assert seen["after"] == original

