"""The result store: a Zarr store written block by block, restartable by design.

Its life: :func:`initialise` lays out every variable (the variant fields and null-model
figures written at once) under ``NAME.zarr.partial``; :func:`write_blocks` computes the
scan's blocks and writes each as it finishes, flagging it in ``blocks/done``; a crash
keeps every finished block, and a resume with the same fingerprint computes only the
others; :func:`finalise` sets ``complete`` and renames the store to ``NAME.zarr``.
The bookkeeping lives in the ``blocks`` subgroup, so ``xr.open_zarr`` sees only the
results (dims ``variants``, ``traits``; ``contigs`` for LOCO's null figures).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from . import outputs, progress, schema
from .errors import InputError

__all__ = ["ResultStore", "write_results", "open_results", "load_results", "index_variants",
           "is_complete", "check_complete_matches", "check_resumable", "ZARR_FORMAT"]

ZARR_FORMAT = 2  # as bio2zarr's VCF Zarr stores; opened by sgkit and xarray alike


#: attrs that do not identify a result: notes, and the inputs' paths as given (their
#: identities are fingerprinted: the same files by another path resume)
_NOT_FINGERPRINTED = ("sample_notes", "provenance", "source", "kinship")


def _lazy_names(res: xr.Dataset) -> list[str]:
    names = {v.name for v in schema.VARIABLES}
    return [v for v in res.data_vars if v in names]


@dataclass
class ResultStore:
    """A result store being written: ``path`` the final ``NAME.zarr``, ``tmp`` where it
    is written, ``run`` this writer's number (0, then +1 per resume), ``done`` (blocks,)."""

    path: Path
    tmp: Path
    run: int
    done: np.ndarray

    @staticmethod
    def fingerprint_of(res: xr.Dataset, extra: dict | None = None) -> str:
        """What must match for a resume to reuse blocks: the options and inputs in
        ``res.attrs`` (and ``extra``), the variables and the blocks' layout."""
        fp = {k: res.attrs.get(k) for k in sorted(res.attrs) if k not in _NOT_FINGERPRINTED}
        fp.update(extra or {})
        fp["variables"] = _lazy_names(res)
        fp["chunks"] = list(res["variant_lmm_tested"].chunks[0])
        return json.dumps(fp, sort_keys=True, default=str)

    @classmethod
    def initialise(cls, res: xr.Dataset, path, fingerprint: str) -> "ResultStore":
        """Lay out a new store for the lazy result ``res`` under ``NAME.zarr.partial``."""
        import dask.array as da
        import zarr

        path = Path(path)
        tmp = outputs.partial_path(path)
        outputs.remove(tmp)
        lazy = _lazy_names(res)
        chunks = res["variant_lmm_tested"].chunks[0]
        side = int(max(chunks)) if chunks else 1
        template = res[lazy].copy()
        # Zarr chunks are regular, the blocks need not be (LOCO splits them at contigs):
        # blocks are written one after another, so a chunk shared by two is safe
        # shallow: a deep copy would copy the variant coordinates (300,000 string ids:
        # 0.3 s) once per variable, and nothing here changes them
        for v in lazy:
            zeros = da.zeros(template[v].shape, dtype=template[v].dtype,
                             chunks=(side,) + template[v].shape[1:])
            template[v] = template[v].copy(deep=False, data=zeros)
        encoding = {v: {"chunks": (side,) + res[v].shape[1:]} for v in lazy}
        template.attrs = {}
        template.to_zarr(tmp, mode="w", compute=False, zarr_format=ZARR_FORMAT,
                         consolidated=False, encoding=encoding)
        fields = res.drop_vars(lazy)
        fields.attrs = {}
        fields.to_zarr(tmp, mode="a", zarr_format=ZARR_FORMAT, consolidated=False)
        group = zarr.open_group(str(tmp), mode="r+")
        n = len(chunks)
        blocks = group.create_group("blocks")
        blocks.create_array("done", shape=(n,), chunks=(1,), dtype=bool, fill_value=False)
        blocks.create_array("run", shape=(n,), chunks=(1,), dtype=np.int32, fill_value=-1)
        group.attrs.update(_json_attrs(res.attrs))
        group.attrs.update(dlmm_fingerprint=fingerprint, complete=False)
        return cls(path, tmp, 0, np.zeros(n, dtype=bool))

    @classmethod
    def reopen(cls, path, fingerprint: str) -> "ResultStore":
        """The interrupted store of ``path`` (``NAME.zarr.partial``), to finish it."""
        path = Path(path)
        tmp = outputs.partial_path(path)
        if not tmp.is_dir():
            what = "is complete" if is_complete(path) else "has no interrupted scan"
            raise InputError(path, f"nothing to resume: {path.name} {what}",
                             "run without --resume (with --overwrite to replace it)")
        old, done, run = _read_partial(tmp)
        _same_fingerprint(path, old, fingerprint)
        return cls(path, tmp, int(run.max(initial=-1)) + 1, done.astype(bool))

    def write_blocks(self, res: xr.Dataset, client=None, on_block=None) -> None:
        """Compute the blocks not done and write each as it finishes (see the module)."""
        import zarr

        lazy = _lazy_names(res)
        todo = [i for i in range(len(self.done)) if not self.done[i]]
        bounds = np.concatenate([[0], np.cumsum(res["variant_lmm_tested"].chunks[0])])
        blocks, unpack = _block_tasks(res, lazy, todo)
        group = zarr.open_group(str(self.tmp), mode="r+")
        arrays = {v: group[v] for v in lazy}
        done_arr, run_arr = group["blocks/done"], group["blocks/run"]

        def write(i, values):
            rows = slice(int(bounds[i]), int(bounds[i + 1]))
            for v, val in zip(lazy, unpack(values)):
                arrays[v][rows] = val
            run_arr[i] = self.run
            done_arr[i] = True
            self.done[i] = True
            if on_block is not None:
                on_block(int(self.done.sum()) - (len(self.done) - len(todo)), len(todo))

        for i, values in _computed(blocks, client):
            write(i, values)

    def finalise(self) -> Path:
        """Flag the store complete and rename it into place."""
        import zarr

        if not self.done.all():
            raise RuntimeError("finalise() before every block is written")
        group = zarr.open_group(str(self.tmp), mode="r+")
        group.attrs["complete"] = True
        zarr.consolidate_metadata(str(self.tmp))
        return outputs.replace_dir(self.tmp, self.path)


def _read_partial(tmp: Path) -> tuple[str | None, np.ndarray, np.ndarray]:
    """The fingerprint and the blocks' ``done`` and ``run`` of an interrupted store."""
    import zarr

    try:
        group = zarr.open_group(str(tmp), mode="r")
        old = group.attrs.get("dlmm_fingerprint")
        done, run = group["blocks/done"][:], group["blocks/run"][:]
    except Exception as e:  # a store broken by a crash while laid out, or edited
        error = InputError(tmp, f"the interrupted store cannot be read ({type(e).__name__})",
                           "start again with --overwrite")
    else:
        return old, done, run
    raise error


def check_resumable(path, known: dict) -> None:
    """Before any work: the interrupted store of ``path`` (else the complete one) can be
    read and was made with the options and inputs ``known`` (a part of the fingerprint:
    keys as in :meth:`ResultStore.fingerprint_of`), else an InputError saying what
    changed.  The whole fingerprint is compared again when the scan is set up."""
    import zarr

    path = Path(path)
    tmp = outputs.partial_path(path)
    if tmp.is_dir():
        old = _read_partial(tmp)[0]
    else:
        try:
            old = zarr.open_group(str(path), mode="r").attrs.get("dlmm_fingerprint")
        except Exception:
            old = None
    try:
        recorded = json.loads(old)
    except (TypeError, ValueError):
        raise InputError(path, "cannot resume: the store was made by another dlmm "
                         "version", "start again with --overwrite") from None
    new = json.loads(json.dumps(known, sort_keys=True, default=str))
    part = {k: recorded.get(k) for k in new}
    _same_fingerprint(path, json.dumps(part, sort_keys=True), json.dumps(new, sort_keys=True))


def _same_fingerprint(path, old: str | None, new: str) -> None:
    if old != new:
        raise InputError(path, "cannot resume: " + _what_changed(old, new),
                         "rerun with the same inputs and options, or start again with "
                         "--overwrite")


def check_complete_matches(path, fingerprint: str) -> None:
    """A complete store made with ``fingerprint`` (else an InputError saying what
    changed): its results can be reused."""
    import zarr

    _same_fingerprint(path, zarr.open_group(str(path), mode="r").attrs.get(
        "dlmm_fingerprint"), fingerprint)


def _json_attrs(attrs: dict) -> dict:
    """Attributes as Zarr stores them (JSON): numpy scalars as Python ones."""
    return json.loads(json.dumps(attrs, default=lambda v: v.item() if hasattr(v, "item")
                                 else str(v)))


#: how a changed fingerprint entry is named: the option's flag, or what it stands for
_CHANGED = {"chunks": "chunk size (--chunk-size)", "center": "kinship centring "
            "(--no-center-kinship)", "tests": "tests (--test)", "variables": "tests or model",
            "inputs_digest": "phenotype, covariate or kinship values",
            "kinship_variants_used": "kinship variants (--kinship-variants)",
            "n_samples_total": "number of samples", "dlmm_version": "dlmm version"}


def _what_changed(old: str | None, new: str) -> str:
    """Which recorded options or inputs differ between two fingerprints."""
    try:
        a, b = json.loads(old), json.loads(new)
    except (TypeError, ValueError):
        return "the store was made by another dlmm version"
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    named = []
    for k in keys:
        if k == "inputs":
            named += _inputs_changed(a.get(k) or {}, b.get(k) or {})
        else:
            named.append(_CHANGED.get(k, f"{k} (--{k.replace('_', '-')})"))
    return "changed since the first run: " + ", ".join(dict.fromkeys(named))


def _inputs_changed(a: dict, b: dict) -> list[str]:
    """``role (what differs)`` for each input file whose identity changed."""
    out = []
    for role in sorted(set(a) | set(b)):
        if a.get(role) == b.get(role):
            continue
        name = role.replace("_", " ")
        if role not in a or role not in b:
            out.append(f"{name} ({'given' if role in b else 'not given'} now)")
        else:
            fields = [f for f in ("size", "sha256", "mtime", "path")
                      if a[role].get(f) != b[role].get(f)]
            how = "rewritten" if {"size", "sha256"} & set(fields) else "touched"
            out.append(f"{name} file ({how}: {', '.join(fields)} differ)")
    return out


def _block_tasks(res: xr.Dataset, lazy: list[str], todo: list[int]):
    """One Dask task per block to compute (the scan's own, split on the client), and the
    function that splits a computed block into the variables."""
    import dask

    stacked = res.encoding.get("dlmm_blocks")
    if stacked is not None and stacked.covers(res, lazy):
        parts = stacked.blocks()
        return {i: parts[i] for i in todo}, lambda values: stacked.split(values, lazy)
    blocks = {i: dask.delayed(tuple)([res[v].data.blocks[i] for v in lazy]) for i in todo}
    return blocks, lambda values: values


def _computed(blocks: dict, client):
    """``(block, values)`` as blocks finish: on ``client`` (default: the current
    distributed client) all submitted at once, else one after another."""
    import dask

    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is None:
        for i, blk in blocks.items():
            yield i, dask.compute(blk)[0]
        return
    from distributed import as_completed

    futures = dict(zip(client.compute(list(blocks.values())), blocks))
    progress.show(list(futures))
    for fut, values in as_completed(futures, with_results=True):
        yield futures[fut], values


def write_results(res: xr.Dataset, path: str | os.PathLike, *, resume: bool = False,
                  overwrite: bool = False, client=None, on_block=None,
                  fingerprint: str | None = None) -> Path:
    """Compute a lazy result (:func:`dlmm.scan`) into the store ``path`` (see the module).

    ``resume``: finish the interrupted store of ``path`` made with the same fingerprint
    (default :meth:`ResultStore.fingerprint_of`); otherwise an existing ``path`` is
    replaced only with ``overwrite`` (once the new store is complete).  ``client``: a
    distributed Client (default the current one, else the threaded scheduler).
    ``on_block(n_written, n_todo)`` is called after each block.  Returns ``path``.
    """
    path = Path(path)
    fingerprint = fingerprint or ResultStore.fingerprint_of(res)
    if resume:
        store = ResultStore.reopen(path, fingerprint)
    else:
        outputs.check_new([path], overwrite, dirs=(path,))
        try:
            store = ResultStore.initialise(res, path, fingerprint)
        except BaseException as e:  # e.g. a full disk, Ctrl-C: nothing to keep
            outputs.discard(outputs.partial_path(path))
            if isinstance(e, OSError):
                raise outputs.os_error(path, e) from None
            raise
    try:
        store.write_blocks(res, client=client, on_block=on_block)
        return store.finalise()
    except BaseException as e:  # a full disk, a corrupt chunk, Ctrl-C, ...
        kept = store.done.any()  # finished work is kept for --resume, else nothing
        if not kept:
            outputs.discard(store.tmp)
        if not isinstance(e, OSError):
            raise
        raise (outputs.os_error(path, e, f"free space, then rerun with --resume (the "
                                f"finished blocks are in {store.tmp.name})") if kept
               else outputs.os_error(path, e)) from None


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a result store whose every block is written."""
    import zarr

    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete", False))
    except Exception:
        return False


def open_results(path: str | os.PathLike, *, index: bool = True) -> xr.Dataset:
    """A complete result store, lazily (Dask arrays); see :func:`load_results`."""
    _check_complete(path)
    res = xr.open_zarr(path, consolidated=True)
    return index_variants(res) if index else res


def load_results(path: str | os.PathLike, *, index: bool = True) -> xr.Dataset:
    """A complete result store read into memory (one read per variable, no Dask task per
    Zarr chunk); a variable that cannot be read is an InputError naming it.  ``index``:
    ``variants`` indexed by chromosome and position (:func:`index_variants`)."""
    from .io import check_arrays

    _check_complete(path)
    fix = "rerun the scan (with --overwrite) or restore the store from a copy"
    try:
        res = xr.open_zarr(path, consolidated=True, chunks=None)
    except Exception as e:  # zarr and xarray raise many types
        raise InputError(path, f"the result store cannot be opened ({type(e).__name__})",
                         fix) from None
    check_arrays(path, res)
    for name in list(res.variables):
        try:
            res.variables[name].load()
        except Exception as e:  # a corrupt or unreadable chunk
            raise InputError(path, f"{name} cannot be read ({type(e).__name__}: {e})",
                             fix) from None
    return index_variants(res) if index else res


def index_variants(res: xr.Dataset) -> xr.Dataset:
    """``variants`` indexed by (``variant_contig_name``, ``variant_position``), so that
    ``res.sel(variant_contig_name="2")`` or ``res.sel(variants=("2", 1234567))`` select
    by chromosome and position."""
    return res.set_index(variants=["variant_contig_name", "variant_position"])


def _check_complete(path) -> None:
    if not is_complete(path):
        partial = outputs.partial_path(path).exists()
        raise InputError(path, "not a complete result store of dlmm scan" + (
            " (an interrupted scan is in .partial)" if partial else ""),
            "finish it with dlmm scan ... --resume" if partial else
            "give the PREFIX.zarr that dlmm scan wrote")
