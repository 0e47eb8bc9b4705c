"""BGEN (+ Oxford ``.sample``) into a lazy genotype Dataset (read by cbgen).

cbgen 1.0.6, not bgen-reader 4.0.9: bgen-reader reads by the same cbgen calls (all of
mouse_hs1940's 8-bit dosages 2.1-3.7 s against 3.2-3.9 s here) and pins dask, xarray < 2025.

The Dataset has the layout of :func:`dlmm.io.genotype_dataset`: ``call_dosage``
(variants, samples) float32, the expected count of the variant's second allele
(``variant_allele[:, 1]``), NaN where missing, one Dask task per chunk of
variants.  The variant offsets come from cbgen's metafile, written once beside
the .bgen (or in the user's cache folder when that folder is read-only).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .errors import InputError
from .io import contig_index, genotype_dataset, variant_chunks
from .samples import need_file, to_float

__all__ = ["read_bgen", "read_sample_file"]


def _cbgen():
    try:
        import cbgen
    except ImportError:
        raise InputError("cbgen", "the BGEN reader's package is not installed (it has wheels "
                         "for Python 3.10-3.12 only)",
                         "pip install cbgen (Python <= 3.12), or convert the .bgen with "
                         "plink2 --bgen X.bgen ref-first --make-pgen") from None
    return cbgen


def _bgen_header(path: Path) -> tuple[int, int, int]:
    """(variants, samples, flags) from a .bgen's header, checked: the magic number,
    the first variant's offset within the file, a known layout and compression."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    ok = len(head) == 24 and head[16:20] in (b"bgen", b"\0\0\0\0")
    if ok:
        offset, header_len, m, n, _, flags = struct.unpack("<IIII4sI", head)
        ok = (20 <= header_len <= offset and offset + 4 <= path.stat().st_size
              and (flags >> 2) & 0xF in (1, 2) and flags & 3 in (0, 1, 2))
    if not ok:
        raise InputError(path, "not a BGEN file (no BGEN header: magic number 'bgen' at "
                         "byte 16, layout 1 or 2)", "give a .bgen (e.g. plink2 --export "
                         "bgen-1.2)")
    return m, n, flags


def _metafile_path(bgen: Path) -> Path:
    """Where the metafile of ``bgen`` lives: beside it, or (a read-only folder) in
    the cache folder under a name unique to its path, size and time."""
    if os.access(bgen.parent, os.W_OK):
        return bgen.with_name(bgen.name + ".metafile")
    st = bgen.stat()
    key = hashlib.sha1(f"{bgen.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dlmm" / "bgen"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / f"{bgen.stem}-{key[:16]}.metafile"


def _metafile(bgen: Path, n_variants: int) -> Path:
    """cbgen's metafile of ``bgen`` (variant offsets), made when absent or stale."""
    cbgen = _cbgen()
    meta = _metafile_path(bgen)
    if meta.exists() and meta.stat().st_mtime_ns >= bgen.stat().st_mtime_ns:
        try:
            with cbgen.bgen_metafile(meta) as mf:
                if mf.nvariants == n_variants:
                    return meta
        except RuntimeError:  # unreadable (cut short): made again
            pass
    tmp = meta.with_name(meta.name + f".{os.getpid()}.partial")
    try:
        with cbgen.bgen_file(bgen) as bf:
            bf.create_metafile(tmp)
    except RuntimeError as e:
        tmp.unlink(missing_ok=True)
        raise InputError(bgen, f"cbgen cannot index it ({e})",
                         "check the file is a complete BGEN (v1.1-1.3)") from None
    os.replace(tmp, meta)
    return meta


def _variants(meta: Path, start: int = 0, stop: int | None = None):
    """cbgen's variant records ``start:stop`` of a metafile, as one ``Variants``-like dict."""
    cbgen = _cbgen()
    with cbgen.bgen_metafile(meta) as mf:
        size, stop = mf.partition_size, mf.nvariants if stop is None else stop
        first = start // size
        parts = [mf.read_partition(i).variants for i in range(first, -(-stop // size))]
    cut = slice(start - first * size, stop - first * size)
    fields = ("id", "rsid", "chromosome", "position", "nalleles", "allele_ids", "offset")
    return {f: np.concatenate([getattr(v, f) for v in parts])[cut] for f in fields}


def _dosage(bf, offset: int) -> np.ndarray:
    """(samples,) expected count of the second allele of a biallelic variant.

    Unphased: probabilities ordered by the second allele's count (0, 1, 2, ...);
    phased: (allele 1, allele 2) per haplotype.  Haploid samples' unused
    columns are NaN (counted as 0); a missing sample's row is all NaN.
    """
    p = bf.read_probability(offset)
    k = p.shape[1]
    # 2 or 3 columns: haploid or unphased diploid (phased rows come in pairs);
    # else ask whether it is phased (reading ploidy and missingness costs 40% more)
    phased = k > 3 and bf.read_genotype(offset).phased
    weights = np.tile([0.0, 1.0], k // 2) if phased else np.arange(k, dtype=float)
    missing = np.isnan(p).all(axis=1)
    d = np.nan_to_num(p) @ weights
    d[missing] = np.nan
    return d


def _read_bgen_chunk(path: str, metafile: str, n_samples: int, block_info=None) -> np.ndarray:
    """Variants of one chunk as (variants, samples) float32 dosages, NaN missing."""
    cbgen = _cbgen()
    (start, stop), _ = block_info[None]["array-location"]
    offsets = _variants(Path(metafile), start, stop)["offset"]
    out = np.empty((stop - start, n_samples), dtype=np.float32)
    with cbgen.bgen_file(path) as bf:
        for j, offset in enumerate(offsets.tolist()):
            out[j] = _dosage(bf, offset)
    return out


def read_sample_file(path: str | os.PathLike) -> pd.DataFrame:
    """An Oxford ``.sample`` file: a header line, a type line, one line per sample.

    Returns a table of strings with the header's column names, the types in
    ``attrs["types"]`` (0 for the id columns, D/C covariates, P/B phenotypes).
    """
    import csv

    p = need_file(path, "BGEN .sample")
    with open(p) as fh:
        names, types = fh.readline().split(), fh.readline().split()
    if not names or len(types) != len(names) or not names[0].upper().startswith("ID"):
        raise InputError(p, "not an Oxford .sample file (a header line ID_1 ID_2 ..., "
                         "then a type line 0 0 ...)", "give the .sample written with the .bgen")
    try:
        table = pd.read_csv(p, sep=r"\s+", header=None, skiprows=2, dtype=object,
                            keep_default_na=False, na_values=[""], quoting=csv.QUOTE_NONE)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(np.zeros((0, len(names)), dtype=object))
    except pd.errors.ParserError as e:
        raise InputError(p, f"rows differ in length ({str(e).split(': ')[-1].strip()})",
                         "give every row the header's columns") from None
    if table.shape[1] != len(names) or table.iloc[:, -1].isna().any():
        raise InputError(p, f"has rows of other than the header's {len(names)} columns",
                         "give every row the header's columns")
    table.columns = names
    table.attrs["types"] = dict(zip(names, types))
    return table


def _samples(bgen_path: Path, sample_path, n: int, cbgen_file) -> tuple[np.ndarray, dict]:
    """Sample ids (the .sample's ID_2, else the .bgen's own, else sample1...) and
    the extra variables (family ids, phenotypes) from the .sample."""
    if sample_path is None and bgen_path.with_suffix(".sample").is_file():
        sample_path = bgen_path.with_suffix(".sample")
    if sample_path is None:
        if cbgen_file.contain_samples:
            return np.array([s.decode() for s in cbgen_file.read_samples()], dtype=object), {}
        return np.array([f"sample{i + 1}" for i in range(n)], dtype=object), {}
    table = read_sample_file(sample_path)
    if len(table) != n:
        raise InputError(sample_path, f"has {len(table)} samples but the .bgen has {n}",
                         "give the .sample written with this .bgen")
    ids = table.columns[:2] if len(table.columns) > 1 and \
        table.attrs["types"][table.columns[1]] == "0" else table.columns[:1]
    extra = {}
    if len(ids) == 2:
        extra["sample_family_id"] = (("samples",), table[ids[0]].to_numpy().astype(object))
    pheno = [c for c, t in table.attrs["types"].items() if t in ("P", "B")]
    if pheno:
        values = to_float(table[pheno], Path(sample_path), "phenotype (type P or B)")
        extra["sample_phenotype"] = (("samples", "phenotypes"), values)
        extra["phenotype_name"] = (("phenotypes",), np.array(pheno, dtype=object))
    return table[ids[-1]].to_numpy().astype(object), extra


def read_bgen(path: str | os.PathLike, sample_path: str | os.PathLike | None = None,
              chunk_size: int | None = None) -> xr.Dataset:
    """Open a ``.bgen`` as a lazy genotype Dataset of expected allele counts.

    Parameters
    ----------
    path : the .bgen (v1.1-1.3; zlib or zstd; any bit depth).
    sample_path : Oxford .sample for the sample ids (its ID_2 column); default
        ``X.sample`` beside ``X.bgen`` if present, else the ids stored in the
        .bgen, else ``sample1..sampleN``.
    chunk_size : variants per chunk (one Dask task each, all samples); default: from
        a byte budget per task (:func:`dlmm.io.variant_chunks`).

    Returns
    -------
    Dataset with ``call_dosage`` (variants, samples) float32 dask array, the
    expected count of ``variant_allele[:, 1]`` (the .bgen's second allele),
    NaN missing; ``variant_id`` (the rsid, else the id), ``variant_contig``
    (index into ``contig_id``), ``variant_position``, ``variant_allele``,
    ``sample_id``; from the .sample also ``sample_family_id`` (ID_1) and
    ``sample_phenotype`` (samples, phenotypes) with ``phenotype_name`` (its
    columns of type P or B; NA and -9 are NaN).
    """
    import dask.array as da
    from dask.base import tokenize

    cbgen = _cbgen()
    bgen = need_file(path, "BGEN")
    m, n, _ = _bgen_header(bgen)
    if m == 0:
        raise InputError(bgen, "has no variants", "give a .bgen with variants")
    meta = _metafile(bgen, m)
    v = _variants(meta)
    multi = v["nalleles"] != 2
    if multi.any():
        raise InputError(bgen, f"{int(multi.sum())} variants have other than two alleles",
                         "split multi-allelic variants (bcftools norm -m-; qctool) first")
    with cbgen.bgen_file(bgen) as bf:
        sample_id, extra = _samples(bgen, sample_path, n, bf)
    alleles = np.array([a.decode().split(",") for a in v["allele_ids"]], dtype=object)
    names = np.where(v["rsid"] != b"", v["rsid"], v["id"])
    chunks = (variant_chunks(m, n, chunk_size), (n,))
    dosage = da.map_blocks(
        _read_bgen_chunk, path=str(bgen), metafile=str(meta), n_samples=n, chunks=chunks,
        dtype=np.float32, meta=np.empty((0, 0), dtype=np.float32), name="read-bgen-" + tokenize(
            str(bgen), bgen.stat().st_mtime_ns, n, m, chunks),
    )
    variant_contig, contig_id = contig_index([c.decode() for c in v["chromosome"]])
    ds = genotype_dataset(
        dosage, sample_id=sample_id, variant_id=[s.decode() for s in names],
        variant_contig=variant_contig, contig_id=contig_id,
        variant_position=v["position"].astype(np.int64), variant_allele=alleles.reshape(m, 2))
    phenotype_name = extra.pop("phenotype_name", None)
    ds = ds.assign(extra)
    return ds if phenotype_name is None else ds.assign_coords(phenotype_name=phenotype_name)
