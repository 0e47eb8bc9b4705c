"""Dask's progress bar in a notebook: for the passes that run as Dask graphs (the GRM pass,
the scan's blocks) when a distributed client is current and the code runs in a Jupyter
kernel.  On a terminal the command line draws its own (dlmm.cli)."""

from __future__ import annotations

__all__ = ["in_notebook", "compute", "show"]


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel with ipywidgets (Dask's progress widget)."""
    import importlib.util

    try:
        from IPython import get_ipython
    except ImportError:
        return False
    if importlib.util.find_spec("ipywidgets") is None:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def show(futures) -> None:
    """Draw Dask's progress widget of ``futures`` in a notebook (nothing elsewhere)."""
    if in_notebook() and futures:
        from distributed import progress
        from IPython.display import display

        display(progress(futures, notebook=True, multi=False))


def compute(collection):
    """``collection.compute()``, with Dask's progress widget in a notebook."""
    client = _client()
    if client is None or not in_notebook():
        return collection.compute()
    future = client.compute(collection)
    show([future])
    return future.result()
