"""Writing genotype and kinship stores: ``dlmm convert`` and ``dlmm grm``'s outputs
(results: :mod:`dlmm.results`, tables: :mod:`dlmm.export`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from . import outputs

__all__ = ["convert", "write_kinship_zarr", "write_kinship_text", "ZARR_FORMAT"]

ZARR_FORMAT = 2  # as bio2zarr's VCF Zarr stores; opened by sgkit and xarray alike


def convert(ds: xr.Dataset, path: str | os.PathLike, *, chunk_size: int | None = None,
            overwrite: bool = False) -> Path:
    """Write a genotype Dataset to a VCF Zarr store, chunk by chunk.

    ``call_genotype`` (variants, samples, ploidy=2) int8, -1 for missing, is
    derived from the dosage (0 -> [0, 0], 1 -> [0, 1], 2 -> [1, 1]; a fractional
    dosage is an error); a BGEN's expected counts are kept as ``call_dosage``
    float32.  The variant and sample fields are copied.  Dask streams the chunks: the
    genotype matrix is never in memory at once; ``chunk_size`` variants per chunk
    (default: as many as a task holds in its byte budget,
    :func:`dlmm.memory.auto_chunk_size`).  Written to a temporary name and renamed
    when complete.
    """

    import dask.array as da

    from .options import positive_int

    from .memory import auto_chunk_size

    positive_int("chunk_size", chunk_size)
    chunk_size = chunk_size or auto_chunk_size(ds.sizes["samples"], task="convert")
    path = Path(path)
    outputs.check_unlocked(path)
    outputs.check_new([path], overwrite, dirs=(path,))
    dosage = ds["call_dosage"].data
    if not isinstance(dosage, da.Array):
        dosage = da.from_array(dosage)
    dosage = dosage.rechunk({0: chunk_size, 1: -1})
    n = ds.sizes["samples"]
    if ds.attrs.get("format") == "bgen":  # expected counts: kept as they are
        out = ds.drop_vars(["call_genotype"], errors="ignore").assign(
            call_dosage=(("variants", "samples"), dosage.astype(np.float32)))
        enc = {v: _compressed(_FIELDS_CODEC) for v in out.data_vars}
        enc["call_dosage"] = {"chunks": (chunk_size, min(n, 10_000)),
                              **_compressed(_DOSAGE_CODEC)}
    else:
        gt = dosage.map_blocks(_dosage_to_genotype, new_axis=2,
                               chunks=dosage.chunks + ((2,),), dtype=np.int8)
        out = ds.drop_vars(["call_dosage", "call_genotype"], errors="ignore").assign(
            call_genotype=(("variants", "samples", "ploidy"), gt))
        enc = {v: _compressed(_FIELDS_CODEC) for v in out.data_vars}
        enc["call_genotype"] = {"chunks": (chunk_size, min(n, 10_000), 2),
                                **_compressed(_GENOTYPE_CODEC)}
    for v in out.data_vars:
        if v.startswith("variant_"):
            enc[v]["chunks"] = (chunk_size,) + out[v].shape[1:]
    with outputs.lock(path):
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
#: call_dosage (BGEN's expected counts, float32): zstd on byte planes
_DOSAGE_CODEC = ("zstd", 5, "SHUFFLE", 1 << 22)


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
    tmp = outputs.partial_path(path)
    outputs.remove(tmp)
    try:
        ds.to_zarr(tmp, mode="w", zarr_format=ZARR_FORMAT, consolidated=True,
                   encoding=encoding)
    except OSError as e:
        outputs.discard(tmp)
        raise outputs.os_error(path, e) from None
    except BaseException:
        outputs.discard(tmp)
        raise
    return outputs.replace_dir(tmp, path)


def _dosage_to_genotype(d: np.ndarray) -> np.ndarray:
    from .errors import InputError

    gt = np.empty(d.shape + (2,), dtype=np.int8)
    miss = np.isnan(d)
    di = np.where(miss, 0, d).astype(np.int8)
    if (di != np.where(miss, 0, d)).any():
        raise InputError("dosages", "fractional dosages cannot be written as genotype "
                         "calls", "convert them from the .bgen (kept as call_dosage), or "
                         "scan the source directly")
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

    path = Path(path)
    outputs.check_new([path], overwrite, dirs=(path,))
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
    K = np.asarray(K, dtype=np.float64)
    return outputs.write_file(Path(path), lambda tmp: np.savetxt(tmp, K, fmt="%.10g",
                                                                 delimiter="\t"))
