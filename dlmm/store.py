"""Writing results: GEMMA-style TSV (and, later, Zarr)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["to_gemma_table", "format_table", "write_tsv", "write_results_zarr", "open_results",
           "load_results", "convert", "write_kinship_zarr", "write_kinship_text"]

#: GEMMA ``-lmm 2`` columns first, then ours.
GEMMA_COLUMNS = ["chr", "rs", "ps", "n_miss", "allele1", "allele0", "af", "logl_H1", "l_mle",
                 "p_lrt"]


#: GEMMA ``-lmm 4`` order of the test columns (those of the tests run are written).
GEMMA_TEST_COLUMNS = ["beta", "se", "logl_H1", "l_remle", "l_mle", "p_wald", "p_lrt", "p_score"]

_TABLE_SOURCES = {
    "logl_H1": "variant_lmm_logl", "l_mle": "variant_lmm_lambda",
    "p_lrt": "variant_lmm_p_value", "beta": "variant_lmm_beta", "se": "variant_lmm_beta_se",
    "l_remle": "variant_lmm_lambda_reml", "p_wald": "variant_lmm_p_value_wald",
    "p_score": "variant_lmm_p_value_score", "beta_dom": "variant_lmm_beta_dominance",
    "se_dom": "variant_lmm_beta_dominance_se", "sigma_sq_a": "variant_lmm_sigma_sq_a",
    "sigma_sq_e": "variant_lmm_sigma_sq_e", "iterations": "variant_lmm_iterations",
    "iterations_remle": "variant_lmm_iterations_reml",
}


def to_gemma_table(results: xr.Dataset) -> pd.DataFrame:
    """The tested variants of a computed result Dataset as GEMMA's table (see
    :func:`_gemma_columns` for the columns)."""
    return pd.DataFrame(_gemma_columns(results))


def _gemma_columns(results: xr.Dataset) -> dict[str, np.ndarray]:
    """The tested variants of a computed result Dataset as GEMMA's table's columns.

    With the LRT alone (the default): ``chr rs ps n_miss allele1 allele0 af
    logl_H1 l_mle p_lrt`` (GEMMA ``-lmm 2``), then ``beta se`` (``beta_dom
    se_dom`` for the genotypic model), ``sigma_sq_a sigma_sq_e iterations``.
    With the Wald or score test: ``chr rs ps n_miss allele1 allele0 af`` and
    the columns of ``beta se logl_H1 l_remle l_mle p_wald p_lrt p_score`` (GEMMA
    ``-lmm 4``'s order) that the tests run produce, then ``beta_dom se_dom``,
    ``sigma_sq_a sigma_sq_e iterations iterations_remle`` when present.  As in
    GEMMA ``-lmm 1``, ``logl_H1`` is the REML log-likelihood when the Wald test
    runs without the LRT.
    """
    r = results
    tested = np.asarray(r["variant_lmm_tested"].values, dtype=bool)
    contigs = _str(r["contig_id"].values)
    allele = _str(r["variant_allele"].values)
    table = {
        "chr": contigs[np.asarray(r["variant_contig"].values)],
        "rs": _str(r["variant_id"].values),
        "ps": np.asarray(r["variant_position"].values),
        "n_miss": np.asarray(r["variant_n_missing"].values),
        "allele1": allele[:, 1],
        "allele0": allele[:, 0],
        "af": np.asarray(r["variant_allele_frequency"].values),
    }
    sources = dict(_TABLE_SOURCES)
    if "variant_lmm_logl" not in r:
        sources["logl_H1"] = "variant_lmm_logl_reml"
    lrt_only = "variant_lmm_p_value_wald" not in r and "variant_lmm_p_value_score" not in r
    order = (["logl_H1", "l_mle", "p_lrt", "beta", "se"] if lrt_only else GEMMA_TEST_COLUMNS)
    order = order + ["beta_dom", "se_dom", "sigma_sq_a", "sigma_sq_e", "iterations",
                     "iterations_remle"]
    for col in order:
        if sources[col] in r:
            table[col] = r[sources[col]].values
    table = {k: v[tested] for k, v in table.items()}
    for col in ("iterations", "iterations_remle"):
        if col in table:
            table[col] = table[col].astype(np.int64)
    return table


def _str(a) -> np.ndarray:
    """Strings of any numpy string dtype (object, <U, StringDType) as <U."""
    return np.asarray(a, dtype=object).astype(str)


def write_tsv(results: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write GEMMA's ``.assoc.txt``-style TSV, to a temporary name then renamed."""
    path = Path(path)
    text = _format_columns(_gemma_columns(results))
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def format_table(df: pd.DataFrame) -> str:
    """A GEMMA-style table as TSV text: the header, then one line per row.

    ``af`` at GEMMA's precision (``%.3f``), the other floats with 10
    significant digits (``%.10g``), NaN as an empty field, integers and
    strings as they are; a string holding a tab, a quote or a line break is
    quoted as CSV does.  The same bytes as ``df.to_csv(sep="\t", index=False,
    float_format="%.10g")`` with ``af`` preformatted; the numbers are written by
    compiled code (:mod:`dlmm.table`), the rare cell whose rounding it cannot
    be sure of by Python's ``%``.
    """
    return _format_columns({name: df[name].to_numpy() for name in df.columns})


def _format_columns(table: dict[str, np.ndarray]) -> str:
    """:func:`format_table` of columns (name -> (rows,) array)."""
    from . import table as tsv

    kinds, columns = [], []
    for name, a in table.items():
        if a.dtype.kind == "f":
            kinds.append(tsv.F3 if name == "af" else tsv.G10)
            columns.append(a.astype(np.float64))
        elif a.dtype.kind == "i" or (a.dtype.kind == "u" and a.max(initial=0) < 2**63):
            kinds.append(tsv.INT)
            columns.append(a.astype(np.int64))
        elif a.dtype.kind == "U" and not tsv.needs_quotes(a):  # no missing values either
            kinds.append(tsv.STR)
            columns.append(a)
        else:
            values = list(map(str, a.tolist()))
            for i in np.flatnonzero(pd.isna(a)).tolist():  # missing: an empty field, as pandas
                values[i] = ""
            if any(c in "".join(values) for c in '\t"\n\r'):
                values = [_quote(v) for v in values]
            kinds.append(tsv.STR)
            columns.append(values)

    def python_row(r: int) -> str:
        fields = []
        for k, col in zip(kinds, columns):
            v = col[r]
            fields.append(str(v) if k == tsv.STR else "%d" % v if k == tsv.INT else
                          "%.3f" % v if k == tsv.F3 else "" if v != v else "%.10g" % v)
        return "\t".join(fields) + "\n"

    head = "\t".join(_quote(str(c)) for c in table) + "\n"
    n_rows = len(next(iter(table.values()))) if table else 0
    return head + tsv.render(kinds, columns, n_rows, python_row)


def _quote(v: str) -> str:
    """A TSV field as CSV's minimal quoting writes it."""
    if any(c in v for c in '\t"\n\r'):
        return '"' + v.replace('"', '""') + '"'
    return v


# --------------------------------------------------------------------------
# Zarr: genotype stores and result stores
# --------------------------------------------------------------------------
ZARR_FORMAT = 2  # as bio2zarr's VCF Zarr stores; opened by sgkit and xarray alike
_RESULT_VARS_FIRST = "variant_lmm_tested"


def _fingerprint(res: xr.Dataset) -> str:
    """What must match for ``--resume`` to reuse blocks: inputs' shape and options."""
    import json

    keys = ("model", "solver", "em_start", "n_samples_total", "n_analysed", "n_covariates",
            "inputs_sha1", "source", "tests", "rotation_dtype")
    fp = {k: res.attrs.get(k) for k in keys}
    fp["chunks"] = list(res["variant_lmm_tested"].chunks[0])
    return json.dumps(fp, sort_keys=True, default=str)


def write_results_zarr(res: xr.Dataset, path: str | os.PathLike, *, resume: bool = False,
                       overwrite: bool = False, client=None, on_block=None) -> Path:
    """Compute a lazy result Dataset and write it to Zarr block by block.

    Each variant chunk is one Dask task (for a result of :func:`dlmm.scan` whose
    variables are not edited, the scan's task itself, split into the variables
    here: not a task per variable); as each finishes, its
    rows are written to the store (a region of every variable) and then its
    ``block_done`` flag is set, so a crash never loses finished blocks.  With ``resume`` an
    existing store made with the same inputs and options is completed: only
    blocks not flagged done are computed.

    Parameters
    ----------
    res : lazy Dataset from :func:`dlmm.scan`.
    path : the ``.zarr`` directory.
    client : a ``distributed.Client``; default the current one, else the
        local threaded scheduler (blocks are then computed one after another).
    on_block : called as ``on_block(n_written, n_todo)`` after each block is
        written (n_todo: the blocks this call computes).

    Returns
    -------
    The store's path.  ``block_done`` (blocks,) and ``block_run`` (blocks,):
    which run wrote each block (0 for the first, +1 for each resume).
    """
    import dask
    import zarr

    from .errors import InputError

    from .scanner import RESULT_VARIABLES

    path = Path(path)
    lazy = [v for v in res.data_vars if v in RESULT_VARIABLES]
    chunks = res[_RESULT_VARS_FIRST].chunks[0]
    n_blocks = len(chunks)
    bounds = np.concatenate([[0], np.cumsum(chunks)])
    fingerprint = _fingerprint(res)
    resuming = path.exists() and resume
    if resuming:
        group = zarr.open_group(str(path), mode="r+")
        if group.attrs.get("dlmm_fingerprint") != fingerprint:
            raise InputError(path, "this result store was made with other inputs or options",
                             "rerun without --resume (and with --overwrite)")
        run = int(np.max(group["block_run"][:])) + 1
        done = group["block_done"][:]
    else:
        if path.exists() and not overwrite:
            raise InputError(path, "output exists", "pass --overwrite, --resume, or another --out")
        run, done = 0, np.zeros(n_blocks, dtype=bool)
    todo = [i for i in range(n_blocks) if not done[i]]
    stacked = res.encoding.get("dlmm_blocks")
    if stacked is not None and stacked.covers(res, lazy):
        # a block is the scan's one task, split into the variables here
        parts = stacked.blocks()
        blocks = {i: parts[i] for i in todo}

        def unpack(values):
            return stacked.split(values, lazy)
    else:  # a task per variable and block, gathered per block
        blocks = {i: dask.delayed(tuple)([res[v].data.blocks[i] for v in lazy]) for i in todo}

        def unpack(values):
            return values
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    futures = None
    if client is not None:
        # one submission of every block's graph, before a new store is laid out (which
        # then overlaps the first blocks)
        futures = dict(zip(client.compute(list(blocks.values())), blocks))
    if not resuming:
        template = res[lazy]
        # Zarr chunks are regular; the result's blocks need not be (LOCO splits them at
        # chromosome boundaries): blocks are written one after another, so a Zarr chunk
        # shared by two blocks is safe
        side = int(max(chunks))
        for v in lazy:
            template[v] = template[v].copy(data=dask.array.zeros(
                template[v].shape, chunks=(side,) + template[v].shape[1:],
                dtype=template[v].dtype))
        template["block_done"] = (("blocks",), np.zeros(n_blocks, dtype=bool))
        template["block_run"] = (("blocks",), np.full(n_blocks, -1, dtype=np.int32))
        encoding = {v: {"chunks": (side,) + res[v].shape[1:]} for v in lazy}
        encoding.update({"block_done": {"chunks": (1,)}, "block_run": {"chunks": (1,)}})
        template.to_zarr(path, mode="w", compute=False, zarr_format=ZARR_FORMAT,
                         consolidated=True, encoding=encoding)
        # the variant fields (small; possibly lazy from a store) are written now
        res.drop_vars(lazy).to_zarr(path, mode="a", zarr_format=ZARR_FORMAT, consolidated=True)
        group = zarr.open_group(str(path), mode="r+")
        group.attrs["dlmm_fingerprint"] = fingerprint

    written = 0
    arrays = {v: group[v] for v in lazy}

    def write(i, values):
        nonlocal written
        sl = slice(int(bounds[i]), int(bounds[i + 1]))
        for v, val in zip(lazy, unpack(values)):
            arrays[v][sl] = val
        group["block_run"][i] = run
        group["block_done"][i] = True
        written += 1
        if on_block is not None:
            on_block(written, len(todo))

    if futures is None:
        for i, blk in blocks.items():
            write(i, dask.compute(blk)[0])
    else:
        from distributed import as_completed

        for fut, values in as_completed(futures, with_results=True):
            write(futures[fut], values)
    zarr.consolidate_metadata(str(path))
    return path


def open_results(path: str | os.PathLike) -> xr.Dataset:
    """Open a result store written by :func:`write_results_zarr` (lazy, Dask arrays)."""
    return xr.open_zarr(path, consolidated=True)


def load_results(path: str | os.PathLike) -> xr.Dataset:
    """A result store read into memory: :func:`open_results` then ``.load()``, without
    a Dask task per Zarr chunk (one read per variable; 0.5 -> 0.2 s at 300,000
    variants)."""
    return xr.open_zarr(path, consolidated=True, chunks=None).load()


def convert(ds: xr.Dataset, path: str | os.PathLike, *, chunk_size: int = 10_000,
            overwrite: bool = False) -> Path:
    """Write a genotype Dataset to a VCF Zarr store, chunk by chunk.

    ``call_genotype`` (variants, samples, ploidy=2) int8, -1 for missing, is
    derived from the dosage (0 -> [0, 0], 1 -> [0, 1], 2 -> [1, 1]); the
    variant and sample fields are copied.  Dask streams the chunks: the
    genotype matrix is never in memory at once.  Written to a temporary name
    and renamed when complete.
    """

    import dask.array as da

    from .errors import InputError

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "output exists", "pass --overwrite or choose another name")
    dosage = ds["call_dosage"].data
    if not isinstance(dosage, da.Array):
        dosage = da.from_array(dosage)
    dosage = dosage.rechunk({0: chunk_size, 1: -1})
    gt = dosage.map_blocks(_dosage_to_genotype, new_axis=2,
                           chunks=dosage.chunks + ((2,),), dtype=np.int8)
    out = ds.drop_vars("call_dosage").assign(
        call_genotype=(("variants", "samples", "ploidy"), gt))
    n = ds.sizes["samples"]
    enc = {v: _compressed(_FIELDS_CODEC) for v in out.data_vars}
    enc["call_genotype"] = {"chunks": (chunk_size, min(n, 10_000), 2),
                            **_compressed(_GENOTYPE_CODEC)}
    for v in out.data_vars:
        if v.startswith("variant_"):
            enc[v]["chunks"] = (chunk_size,) + out[v].shape[1:]
    return _to_zarr_renamed(out, path, enc)


def _codec(cname: str, clevel: int, shuffle: str, blocksize: int = 0):
    import numcodecs

    return numcodecs.Blosc(cname=cname, clevel=clevel, blocksize=blocksize,
                           shuffle=getattr(numcodecs.Blosc, shuffle))


#: call_genotype: zstd on bit-planes (0/1/-1 calls leave most bits constant) in 4 MiB
#: blocks: mouse_hs1940 1.17 MB, against 14.4 MB with lz4 and 1.20 MB with bio2zarr's
#: level 7 (three times slower).  The other variables: zstd 9 without shuffle (a .fam's
#: repeated phenotype columns stay repeats for zstd: 22 against 38 kB shuffled).
_GENOTYPE_CODEC = ("zstd", 5, "BITSHUFFLE", 1 << 22)
_FIELDS_CODEC = ("zstd", 9, "NOSHUFFLE", 1 << 20)


def _compressed(codec: tuple) -> dict:
    """The encoding entry of a numcodecs compressor for a Zarr format 2 array
    (xarray's key is ``compressors`` under zarr-python 3, ``compressor`` under 2)."""
    import zarr

    c = _codec(*codec)
    return {"compressors": (c,)} if int(zarr.__version__.split(".")[0]) >= 3 else \
        {"compressor": c}


def _to_zarr_renamed(ds: xr.Dataset, path: Path, encoding: dict) -> Path:
    """Write ``ds`` as a consolidated Zarr store under a temporary name, then rename
    it to ``path`` (replacing what was there): a reader never sees half a store."""
    import shutil

    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.to_zarr(tmp, mode="w", zarr_format=ZARR_FORMAT, consolidated=True, encoding=encoding)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def _dosage_to_genotype(d: np.ndarray) -> np.ndarray:
    gt = np.empty(d.shape + (2,), dtype=np.int8)
    miss = np.isnan(d)
    di = np.where(miss, 0, d).astype(np.int8)
    gt[..., 0] = di == 2
    gt[..., 1] = di >= 1
    gt[miss] = -1
    return gt


# --------------------------------------------------------------------------
# kinship matrices
# --------------------------------------------------------------------------
#: Name of the kinship variable in a kinship Zarr store.
KINSHIP_VARIABLE = "grm"


def write_kinship_zarr(K: xr.DataArray, path: str | os.PathLike, *,
                       overwrite: bool = False) -> Path:
    """Write a kinship to a Zarr store (temporary name, then renamed).

    Parameters
    ----------
    K : (samples, samples_2) DataArray, e.g. from :func:`dlmm.grm` (computed
        or lazy), with the ``sample_id`` coordinate along ``samples``.
    path : the ``.zarr`` directory.

    Returns
    -------
    The store's path.  It holds ``grm`` (samples, samples_2) float64,
    ``sample_id`` (samples,) and K's attrs; :func:`dlmm.io.read_kinship`
    reads it back.
    """

    from .errors import InputError

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "output exists", "pass --overwrite or choose another name")
    if K.dims != ("samples", "samples_2") or K.shape[0] != K.shape[1]:
        raise ValueError(f"kinship must be (samples, samples_2) and square, not {K.dims} "
                         f"{K.shape}")
    n = K.shape[0]
    ds = K.astype(np.float64).rename(KINSHIP_VARIABLE).to_dataset()
    if "sample_id" in ds.coords:
        ds = ds.reset_coords("sample_id")
        ds["sample_id"] = ds["sample_id"].astype(object)
    side = min(n, 4096)
    enc = {KINSHIP_VARIABLE: {"chunks": (side, side)}}
    return _to_zarr_renamed(ds, path, enc)


def write_kinship_text(K, path: str | os.PathLike) -> Path:
    """Write a kinship as GEMMA's ``.cXX.txt`` / ``.sXX.txt``: n lines of n
    tab-separated values with 10 significant digits (temporary name, renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    np.savetxt(tmp, np.asarray(K, dtype=np.float64), fmt="%.10g", delimiter="\t")
    os.replace(tmp, path)
    return path
