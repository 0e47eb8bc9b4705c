"""Readers: PLINK, text and VCF Zarr genotypes into a VCF Zarr / sgkit-style Dataset,
and kinship matrices (phenotypes and covariates: :mod:`dlmm.samples`).

Genotype Datasets have dims ``variants`` and ``samples`` and hold
``call_dosage`` (variants, samples; float32 count of ``variant_allele[:, 1]``,
NaN where missing) as a lazy dask array chunked along ``variants``, with
``variant_contig`` (index into ``contig_id``), ``variant_position``,
``variant_id``, ``variant_allele`` and ``sample_id``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import xarray as xr

from .errors import InputError
from .samples import (Kinship, check_text, check_unique, few, need_file, read_text,
                      to_float)

__all__ = [
    "balanced_chunks",
    "variant_chunks",
    "contig_index",
    "kinship_variants",
    "is_variant_count",
    "read_plink",
    "read_text_genotypes",
    "read_fam",
    "read_fam_phenotype",
    "read_fam_phenotypes",
    "read_kinship",
    "validate_kinship",
    "genotype_dataset",
    "is_url",
    "is_zarr_store",
    "open_store",
    "check_arrays",
]

#: A kinship with an eigenvalue below -PSD_TOL x its mean diagonal is refused.
PSD_TOL = 1e-3
def genotype_dataset(dosage, *, sample_id, variant_id, variant_contig, contig_id,
                     variant_position, variant_allele) -> xr.Dataset:
    """Assemble a genotype Dataset in the VCF Zarr / sgkit layout.

    Parameters
    ----------
    dosage : (variants, samples) array (numpy or dask), NaN for missing.
    sample_id : (samples,) str.  variant_id : (variants,) str.
    variant_contig : (variants,) int index into ``contig_id`` (contigs,) str.
    variant_position : (variants,) int.  variant_allele : (variants, 2) str,
        ``[:, 1]`` is the allele counted by the dosage.
    """
    return xr.Dataset(
        {
            "call_dosage": (("variants", "samples"), dosage),
            "sample_id": (("samples",), np.asarray(sample_id, dtype=object)),
            "variant_id": (("variants",), np.asarray(variant_id, dtype=object)),
            "variant_contig": (("variants",), np.asarray(variant_contig, dtype=np.int32)),
            "contig_id": (("contigs",), np.asarray(contig_id, dtype=object)),
            "variant_position": (("variants",), np.asarray(variant_position, dtype=np.int64)),
            "variant_allele": (("variants", "alleles"), np.asarray(variant_allele, dtype=object)),
        }
    )


def balanced_chunks(m: int, chunk_size: int) -> tuple[int, ...]:
    """Chunk sizes of at most ``chunk_size`` for ``m`` variants, as even as possible.

    ``k = ceil(m / chunk_size)`` chunks of ``ceil(m / k)`` variants, the last
    one smaller (a regular grid, as Zarr needs), so the last task is not a
    small remainder: 10,768 variants in chunks of at most 10,000 are two tasks
    of 5,384, which two threads finish together.
    """
    if m == 0:
        return ()
    k = -(-m // max(1, chunk_size))
    q = -(-m // k)
    k = -(-m // q)
    return (q,) * (k - 1) + (m - q * (k - 1),)


def variant_chunks(m: int, n: int, chunk_size: int | None = None) -> tuple[int, ...]:
    """Chunks of ``m`` variants on ``n`` samples: at most ``chunk_size`` each, or (None)
    as many as one task holds in its byte budget (:func:`dlmm.memory.auto_chunk_size`:
    10,000 up to n = 4,360, then fewer as n grows), evened out by :func:`balanced_chunks`."""
    from .memory import auto_chunk_size

    return balanced_chunks(m, chunk_size or auto_chunk_size(n))


def _read_bed_block(path: str, n_samples: int, n_variants: int, start: int, stop: int) -> np.ndarray:
    """Variants ``start:stop`` of a variant-major .bed as (variants, samples) float32,
    the count of the .bim's first allele (A1), NaN for missing."""
    nbytes = (n_samples + 3) // 4
    raw = np.fromfile(path, dtype=np.uint8, count=(stop - start) * nbytes,
                      offset=3 + start * nbytes).reshape(stop - start, nbytes)
    return _decode_bed(raw, n_samples, _BED_CODES)


def _read_bed_chunk(path: str, n_samples: int, n_variants: int, block_info=None) -> np.ndarray:
    (start, stop), _ = block_info[None]["array-location"]
    return _read_bed_block(path, n_samples, n_variants, start, stop)


#: dosage of each 2-bit .bed code: 00 A1/A1, 01 missing, 10 A1/A2, 11 A2/A2
_BED_CODES = np.array([2.0, np.nan, 1.0, 0.0], dtype=np.float32)


@numba.njit(nogil=True, cache=True)
def _decode_bed(raw, n, codes):  # pragma: no cover (compiled)
    """(m, ceil(n/4)) .bed bytes -> (m, n) float32 (samples in the low bits first)."""
    m = raw.shape[0]
    out = np.empty((m, n), dtype=np.float32)
    for j in range(m):
        for i in range(n):
            out[j, i] = codes[(raw[j, i >> 2] >> (2 * (i & 3))) & 3]
    return out


def read_fam(prefix: str | os.PathLike) -> pd.DataFrame:
    """The .fam table (all columns as strings; columns 6.. are phenotypes)."""
    fam = read_text(need_file(f"{prefix}.fam", "PLINK .fam"), "PLINK .fam")
    if fam.shape[1] < 6:
        raise InputError(f"{prefix}.fam", f"has {fam.shape[1]} columns, a .fam needs 6",
                         "give FID IID father mother sex phenotype")
    return fam


def read_fam_phenotypes(prefix: str | os.PathLike) -> np.ndarray:
    """All phenotypes of a .fam (columns 6...), (samples, phenotypes); NA and -9 -> NaN."""
    return _fam_phenotypes(read_fam(prefix), f"{prefix}.fam")


def _fam_phenotypes(fam: pd.DataFrame, path) -> np.ndarray:
    return to_float(fam.iloc[:, 5:], path, "phenotype")


def read_fam_phenotype(prefix: str | os.PathLike, col: int = 1) -> np.ndarray:
    """Phenotype ``col`` (1-based, as GEMMA's ``-n``) of a .fam, in its sample order
    (the genotypes'); NA and -9 become NaN."""
    values = read_fam_phenotypes(prefix)
    if not 1 <= col <= values.shape[1]:
        raise InputError(f"{prefix}.fam", f"phenotype column {col} is out of range: the "
                         f".fam has {values.shape[1]}", f"give 1 to {values.shape[1]}")
    return values[:, col - 1]


def read_plink(prefix: str | os.PathLike, chunk_size: int | None = None) -> xr.Dataset:
    """Open PLINK ``prefix.bed/.bim/.fam`` as a lazy genotype Dataset.

    The dosage counts the first allele of the .bim (column 5, PLINK's A1,
    GEMMA's ``allele1``), chunked by ``chunk_size`` variants (default: from a byte
    budget per task, :func:`variant_chunks`).
    """
    import dask.array as da
    from dask.base import tokenize

    bed = need_file(f"{prefix}.bed", "PLINK .bed")
    bim_path = need_file(f"{prefix}.bim", "PLINK .bim")
    fam = read_fam(prefix)
    fam_path = f"{prefix}.fam"
    bim = read_text(bim_path, "PLINK .bim")
    if bim.shape[1] != 6:
        raise InputError(bim_path, f"has {bim.shape[1]} columns, a .bim needs 6",
                         "give chr id cM position allele1 allele2")
    n, m = len(fam), len(bim)
    expected = 3 + m * ((n + 3) // 4)
    with open(bed, "rb") as fh:
        magic = fh.read(3)
    if magic != b"\x6c\x1b\x01":
        raise InputError(bed, f"not a variant-major PLINK .bed (its first bytes are "
                         f"{magic.hex()}, a .bed starts with 6c1b01)",
                         "give a PLINK 1 .bed (plink --make-bed)")
    if bed.stat().st_size != expected:
        raise InputError(bed, f"size {bed.stat().st_size} bytes, but {n} samples (.fam) x "
                         f"{m} variants (.bim) need {expected}",
                         "regenerate the .bed/.bim/.fam together with plink --make-bed")
    variant_contig, contig_id = contig_index(bim[0].to_numpy())
    try:
        position = bim[3].astype(np.int64).to_numpy()
    except ValueError:
        raise InputError(bim_path, "column 4 (position) is not an integer",
                         "fix the .bim positions") from None
    # one task per chunk, with no inputs (root tasks, read as the scans need them; see
    # _checked_read), not a from_delayed per chunk concatenated (three tasks per chunk)
    chunks = (variant_chunks(m, n, chunk_size), (n,))
    dosage = da.map_blocks(
        _read_bed_chunk, path=str(bed), n_samples=n, n_variants=m, chunks=chunks,
        dtype=np.float32, meta=np.empty((0, 0), dtype=np.float32),
        name="read-bed-" + tokenize(str(bed), n, m, chunks),
    ) if m else da.zeros((0, n), dtype=np.float32)
    return genotype_dataset(
        dosage, sample_id=fam[1].to_numpy(), variant_id=bim[1].to_numpy(),
        variant_contig=variant_contig, contig_id=contig_id,
        variant_position=position, variant_allele=bim[[5, 4]].to_numpy(),
    ).assign(sample_family_id=(("samples",), fam[0].to_numpy().astype(object)),
             sample_phenotype=(("samples", "phenotypes"), _fam_phenotypes(fam, fam_path)))


def contig_index(names) -> tuple[np.ndarray, np.ndarray]:
    """Each variant's contig as an index into the sorted contig names.

    Parameters
    ----------
    names : (variants,) contig name of each variant (str).

    Returns
    -------
    variant_contig : (variants,) int, index into ``contig_id``.
    contig_id : (contigs,) object, numeric names first in numeric order, then the others.
    """
    # np.unique(..., return_inverse=True) by hashing (sorting 300,000 strings takes 0.1 s)
    codes, seen = pd.factorize(np.asarray(names, dtype=object))
    contigs, seen_idx = np.unique(np.asarray(seen, dtype=object), return_inverse=True)
    order = sorted(range(len(contigs)), key=lambda i: _contig_key(contigs[i]))
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    return rank[seen_idx[codes]], np.asarray(contigs[order], dtype=object)


def _contig_key(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def read_text_genotypes(path: str | os.PathLike, chunk_size: int | None = None) -> xr.Dataset:
    """Read the lab's whitespace text matrix (rows samples, columns variants).

    Coded -1/0/1 (shifted to 0/1/2) or 0/1/2; NA or -9 for missing.  Variants
    are named ``snp1..snpM`` on contig ``0`` at their 1-based column index.
    """
    import dask.array as da

    p = need_file(path, "genotype")
    x = to_float(read_text(p, "genotype"), p, "genotype")
    obs = x[~np.isnan(x)]
    if obs.size and obs.min() < 0:
        allowed, shift = (-1.0, 0.0, 1.0), 1.0
    else:
        allowed, shift = (0.0, 1.0, 2.0), 0.0
    bad = ~np.isnan(x) & ~np.isin(x, allowed)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(p, f"genotype value {x[r, c]:g} at line {r + 1}, column {c + 1} is "
                         f"outside the coding {'/'.join(f'{a:g}' for a in allowed)}",
                         "code genotypes as -1/0/1 or 0/1/2, NA for missing")
    n, m = x.shape
    dosage = da.from_array(np.ascontiguousarray((x + shift).T.astype(np.float32)),
                           chunks=(variant_chunks(m, n, chunk_size), n))
    return genotype_dataset(
        dosage, sample_id=[f"sample{i + 1}" for i in range(n)],
        variant_id=[f"snp{j + 1}" for j in range(m)], variant_contig=np.zeros(m, int),
        contig_id=["0"], variant_position=np.arange(1, m + 1),
        variant_allele=np.array([["0", "1"]] * m, dtype=object).reshape(m, 2))


def read_kinship(path: str | os.PathLike) -> Kinship:
    """A kinship matrix: GEMMA's whitespace n x n text, ``.npy``, ``.npz`` or a Zarr store.

    Text and ``.npy`` carry no sample ids (their rows are the genotypes' samples, in
    order).  An ``.npz`` holds ``kinship`` (n, n) and ``sample_id`` (n,); a Zarr store
    from ``dlmm grm`` holds ``grm`` (samples, samples_2) and ``sample_id``: they are
    joined to the genotypes by id (:func:`dlmm.samples.join_kinship`).  The matrix is
    checked square, finite and symmetric here; positive semi-definite by the scan,
    from the eigendecomposition it computes anyway.
    """
    p = Path(path)
    if is_zarr_store(p):
        K, ids = _read_kinship_zarr(p)
    else:
        K, ids = _read_kinship_file(need_file(path, "kinship"))
    if ids is not None:
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] != ids.shape[0]:
            raise InputError(p, f"kinship is {'x'.join(map(str, K.shape))} with "
                             f"{ids.shape[0]} sample ids",
                             "give an n x n kinship and n sample ids")
        check_unique(ids, p)
    return Kinship(validate_kinship(K, p, psd=False), ids, str(p))


def _read_kinship_file(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "kinship" not in z or "sample_id" not in z:
                    raise InputError(p, f"an .npz kinship needs arrays kinship and sample_id, "
                                     f"it has {', '.join(z.files) or 'none'}",
                                     "save it with np.savez(path, kinship=K, sample_id=ids)")
                return z["kinship"].astype(np.float64), _strings(z["sample_id"])
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False).astype(np.float64), None
        check_text(p, "kinship")
        return _read_matrix_text(p), None
    except InputError:
        raise
    except Exception as e:  # numpy raises ValueError, OSError, zipfile.BadZipFile, ...
        raise InputError(p, f"kinship is not a numeric matrix ({type(e).__name__}: {e})",
                         "give GEMMA's whitespace n x n text, .npy or .npz") from None


def _strings(a) -> np.ndarray:
    """Any numpy string array (object, <U, bytes, StringDType) as <U."""
    a = np.asarray(a)
    if a.dtype.kind == "S":
        return np.char.decode(a, "utf-8")
    return a if a.dtype.kind == "U" else np.asarray(a, dtype=object).astype(str)


def _read_matrix_text(p: Path) -> np.ndarray:
    """A whitespace-separated numeric matrix by pandas' C parser (0.35 s for mouse's
    1940 x 1940, np.loadtxt 0.8 s); 0.22 s with a single-tab separator, as GEMMA writes
    it, when the first line has one and the result is a full square matrix."""
    with open(p, "rb") as f:
        first = f.readline().rstrip(b"\r\n")
    if b"\t" in first and b" " not in first and not first.endswith(b"\t"):
        try:
            K = pd.read_csv(p, sep="\t", header=None, dtype=np.float64, engine="c").to_numpy()
        except ValueError:  # e.g. spaces further down: the general parser decides
            K = None
        if K is not None and K.shape[0] == K.shape[1] and not np.isnan(K).any():
            return np.ascontiguousarray(K)
    return np.ascontiguousarray(pd.read_csv(p, sep=r"\s+", header=None, dtype=np.float64,
                                            comment=None, engine="c").to_numpy())


def _read_kinship_zarr(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The kinship matrix and its sample_id (or None) from a Zarr store."""
    ds = open_zarr(p, "write the kinship with `dlmm grm`")
    square = [v for v in ds.data_vars
              if ds[v].ndim == 2 and ds[v].shape[0] == ds[v].shape[1]]
    name = "grm" if "grm" in ds else (square[0] if len(square) == 1 else None)
    if name is None:
        raise InputError(p, "no kinship variable `grm` (or single square matrix) in the store",
                         "write the kinship with `dlmm grm`")
    K = np.asarray(ds[name].values, dtype=np.float64)
    ids = _strings(ds["sample_id"].values) if "sample_id" in ds else None
    return K, ids


def is_variant_count(spec) -> bool:
    """Whether ``--kinship-variants`` gives a count (digits), not a file of ids."""
    return str(spec).strip().isdigit()


def kinship_variants(spec: str | int, variant_id) -> np.ndarray:
    """The variants forming a low-rank kinship (``--kinship-variants``), as indices.

    Parameters
    ----------
    spec : a count N (N variants spread evenly over the genome, the first and
        the last included), or a file of variant ids (whitespace separated, e.g.
        one per line; a PLINK ``--extract`` list).
    variant_id : (variants,) the genotypes' variant ids.

    Returns
    -------
    Sorted unique int64 indices into ``variants``.
    """
    m = len(variant_id)
    text = str(spec).strip()
    if is_variant_count(text):
        count = int(text)
        if not 1 <= count <= m:
            raise InputError("--kinship-variants", f"{count} variants asked of {m}",
                             f"give a count between 1 and {m}, or a file of variant ids")
        return np.unique(np.linspace(0, m - 1, count).round().astype(np.int64))
    path = need_file(text, "kinship variant list")
    check_text(path, "kinship variant list")
    wanted = path.read_text(errors="replace").split()
    if not wanted:
        raise InputError(path, "the kinship variant list is empty",
                         "list variant ids, one per line")
    ids = pd.Index(np.asarray(variant_id, dtype=object).astype(str))
    unknown = [v for v in wanted if v not in ids]
    if unknown:
        raise InputError(path, f"{len(unknown)} of {len(wanted)} kinship variant ids are not in "
                         f"the genotypes ({few(unknown)})",
                         "list ids of the genotypes' variants (variant_id, PLINK .bim column 2)")
    twice = ids[ids.duplicated(keep=False) & ids.isin(wanted)].unique()
    if len(twice):
        raise InputError(path, f"{len(twice)} kinship variant id(s) name more than one "
                         f"variant of the genotypes ({few(twice)})", "give those variants "
                         "distinct ids (.bim column 2), or list others")
    return np.unique(ids.get_indexer_for(wanted).astype(np.int64))


def validate_kinship(K: np.ndarray, source, n_samples: int | None = None, *,
                     psd: bool = True) -> np.ndarray:
    """Check a kinship is square, finite, symmetric and matches the samples.

    With ``psd`` also that it is not clearly indefinite (one Cholesky
    factorisation, O(n^3 / 3)).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise InputError(source, f"kinship is {'x'.join(map(str, K.shape))}, not square",
                         "give an n x n matrix")
    if n_samples is not None and K.shape[0] != n_samples:
        raise InputError(source, f"kinship is {K.shape[0]} x {K.shape[0]} but the genotypes "
                         f"have {n_samples} samples",
                         "give the kinship of all genotype samples, in their order")
    if not np.isfinite(K).all():
        raise InputError(source, "kinship has NaN or Inf entries", "recompute the kinship")
    scale = max(np.abs(K).max(), 1e-300)
    if np.abs(K - K.T).max() > 1e-6 * scale:
        raise InputError(source, "kinship is not symmetric", "give a symmetric matrix")
    if not psd:
        return K
    # clearly not positive semi-definite: an eigenvalue below -PSD_TOL x the mean
    # diagonal (Cholesky of the shifted matrix fails; cheaper than the eigenvalues)
    shift = PSD_TOL * max(float(np.abs(np.diag(K)).mean()), 1e-300)
    try:
        np.linalg.cholesky(K + shift * np.eye(K.shape[0]))
    except np.linalg.LinAlgError:
        raise not_psd(source) from None
    return K


def not_psd(source) -> InputError:
    """The error for a kinship with an eigenvalue below -PSD_TOL x its mean diagonal."""
    return InputError(source, "kinship is not positive semi-definite (an eigenvalue is "
                      f"below -{PSD_TOL:g} x its mean diagonal)",
                      "give a relationship matrix (e.g. a GRM), not a distance or "
                      "an edited matrix")


def is_url(path) -> bool:
    """Whether ``path`` is an fsspec URL (``s3://``, ``gs://``, ``file://``, ``memory://``...)."""
    return "://" in str(path)


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a Zarr store (v2 or v3 metadata at its root).

    ``path`` is a local folder or an fsspec URL (``s3://bucket/g.zarr``: the
    filesystem's package, e.g. s3fs or gcsfs, must be installed).
    """
    if is_url(path):
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(str(path))
            return any(fs.exists(f"{root.rstrip('/')}/{f}")
                       for f in (".zgroup", ".zmetadata", "zarr.json"))
        except (ImportError, ValueError) as e:  # unknown protocol, package not installed
            raise InputError(path, f"cannot read this URL ({e})",
                             "install the fsspec filesystem for it (s3fs, gcsfs, ...)") from None
        except OSError:
            return False
    p = Path(path)
    return p.is_dir() and any((p / f).exists() for f in (".zgroup", ".zmetadata", "zarr.json"))


def open_zarr(p, fix: str, **kw) -> xr.Dataset:
    """A Zarr store as a Dataset, from consolidated metadata when it has them (bio2zarr's
    stores do not: read without the warning xarray gives then); corrupt metadata is an
    InputError with ``fix``."""
    try:
        try:
            return xr.open_zarr(p, consolidated=True, **kw)
        except (KeyError, ValueError, FileNotFoundError):  # not consolidated
            return xr.open_zarr(p, consolidated=False, **kw)
    except Exception as e:  # corrupt metadata: zarr/xarray raise many types
        raise InputError(p, f"cannot open the Zarr store ({type(e).__name__}: {e})",
                         fix) from None


def _read_rows(path: str, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` (variants) of a store's array; a chunk that cannot be
    read or decoded (a corrupt store) is an InputError naming it."""
    import zarr

    try:
        return zarr.open_array(path, path=name, mode="r")[start:stop]
    except Exception as e:  # zarr, numcodecs and fsspec raise many types
        error = InputError(path, f"{name}[{start}:{stop}] cannot be read ({type(e).__name__}: "
                           f"{e})", "rewrite the store (`dlmm convert`, bio2zarr); blocks "
                           "already written are kept for --resume")
    # raised outside the except: a task's error travels with its context (Dask pickles
    # it), and a context that does not unpickle turns it into a bare Exception
    raise error


def _read_block(store: str, variable: str, block_info=None) -> np.ndarray:
    (start, stop), *_ = block_info[None]["array-location"]
    return _read_rows(store, variable, start, stop)


def _read_genotype_block(store: str, block_info=None) -> np.ndarray:
    """A chunk of ``call_genotype`` (variants, samples, 2) as dosages (variants, samples)
    float32: the count of allele 1, NaN where a call is missing (negative)."""
    (start, stop), *_ = block_info[None]["array-location"]
    g = _read_rows(store, "call_genotype", start, stop)
    bad = (g > 1) | (g < -2)
    if bad.any():
        j, i, _ = np.argwhere(bad)[0]
        kind = "a multi-allelic call" if g[j, i].max() > 1 else "an invalid allele index"
        raise InputError(store, f"call_genotype[{start + j}, {i}] is {g[j, i].tolist()}: "
                         f"{kind} (dlmm tests biallelic variants: allele 0 or 1, -1 "
                         "missing)", "split multi-allelic sites (bcftools norm -m-) or "
                         "rewrite the store")
    dosage = g.sum(axis=-1, dtype=np.int8).astype(np.float32)
    dosage[(g < 0).any(axis=-1)] = np.nan
    return dosage


def _variant_chunks(var: xr.DataArray, chunk_size: int | None) -> tuple[int, ...]:
    """``chunk_size`` evened out (:func:`balanced_chunks`), or (None) the store's chunks
    along variants, each split evenly when a task could not hold it (its byte budget)."""
    if chunk_size is not None:
        return balanced_chunks(var.shape[0], chunk_size)
    from .memory import auto_chunk_size

    most = auto_chunk_size(var.shape[1])
    return tuple(c for size in var.data.chunks[0] for c in balanced_chunks(size, most))


def _checked_read(path, name: str, var: xr.DataArray, chunk_size: int | None = None):
    """``var`` as a dask array that reads its store with :func:`_read_rows`,
    one task per chunk of variants (all samples); ``call_genotype`` is read as
    dosages (variants, samples) by :func:`_read_genotype_block`.

    A blockwise layer with no inputs, like ``from_array``: the scheduler sees
    its tasks as root tasks and runs them as the scans need them.  (One
    ``from_delayed`` per chunk, concatenated, was read far ahead of the scan:
    a worker's peak memory doubled from 50,000 to 200,000 variants.)
    """
    import dask.array as da
    from dask.base import tokenize

    genotype = name == "call_genotype"
    shape = var.shape[:2] if genotype else var.shape
    chunks = (_variant_chunks(var, chunk_size),) + tuple((s,) for s in shape[1:])
    if var.size == 0:
        return da.zeros(shape, dtype=np.float32 if genotype else var.dtype)
    func, kw = ((_read_genotype_block, {}) if genotype
                else (_read_block, {"variable": name}))
    dtype = np.float32 if genotype else var.dtype
    return da.map_blocks(func, store=str(path), chunks=chunks, dtype=dtype,
                         meta=np.empty((0,) * len(shape), dtype=dtype),
                         name=f"read-{name}-" + tokenize(str(path), name, chunks), **kw)


def open_store(path: str | os.PathLike, chunk_size: int | None = None) -> xr.Dataset:
    """Open a VCF Zarr / sgkit genotype store lazily.

    ``path`` is a folder or an fsspec URL (``s3://``, ``gs://``, ``file://``;
    the workers must be able to read it too, with the same credentials).
    Accepts stores with ``call_dosage`` (variants, samples) or diploid
    ``call_genotype`` (variants, samples, 2; negative = missing, as bio2zarr and
    sgkit write it; biallelic: a larger allele index is an error when its chunk is
    read); the dosage is the count of allele 1 (``variant_allele[:, 1]``), NaN
    where a call is missing.  Needs ``sample_id`` and ``variant_position``;
    ``variant_id``, ``variant_contig``/``contig_id`` and ``variant_allele`` are
    filled in when absent.  ``chunk_size``: variants per task (default: the
    store's chunks).
    """
    p = str(path) if is_url(path) else Path(path)
    if not is_zarr_store(p):
        raise InputError(p, "not a Zarr store (no .zgroup, .zmetadata or zarr.json)",
                         "give a store written by `dlmm convert`, bio2zarr or sgkit")
    ds = open_zarr(p, "rewrite it with `dlmm convert`", mask_and_scale=False)
    check_arrays(p, ds)
    ds = ds.assign(call_dosage=(("variants", "samples"), _store_dosage(p, ds, chunk_size)))
    for need in ("sample_id", "variant_position"):
        if need not in ds:
            raise InputError(p, f"no {need} variable", "give a VCF Zarr store with it")
    m = ds.sizes["variants"]
    if "variant_id" not in ds:
        ds["variant_id"] = (("variants",), np.array([f"snp{j + 1}" for j in range(m)], object))
    if "variant_contig" not in ds or "contig_id" not in ds:
        ds["variant_contig"] = (("variants",), np.zeros(m, np.int32))
        ds["contig_id"] = (("contigs",), np.array(["0"], object))
    if "variant_allele" not in ds:
        ds["variant_allele"] = (("variants", "alleles"), np.array([["0", "1"]] * m, object))
    strings = {v: (ds[v].dims, _strings(ds[v].values).astype(object))
               for v in ("sample_id", "variant_id", "contig_id", "variant_allele")}
    return ds.assign(strings)


def check_arrays(p, ds: xr.Dataset) -> None:
    """Every array the store's (consolidated) metadata lists has its folder: a missing
    one would read as its fill value."""
    if is_url(p):  # listing a URL costs a request per array
        return
    p = Path(p)
    missing = [v for v in ds.variables if not (p / v).is_dir()]
    if missing:
        where = "their folders are" if len(missing) > 1 else "its folder is"
        raise InputError(p, f"the store lists {few(missing)} but {where} missing",
                         "rewrite the store (`dlmm convert`, bio2zarr), or copy it whole")


def _store_dosage(p, ds: xr.Dataset, chunk_size: int | None):
    """The store's ``call_dosage``, or dosages from its ``call_genotype``, checked."""
    if "call_dosage" in ds:
        if ds["call_dosage"].dims != ("variants", "samples"):
            raise InputError(p, f"call_dosage has dims {ds['call_dosage'].dims}",
                             "expected (variants, samples)")
        return _checked_read(p, "call_dosage", ds["call_dosage"], chunk_size)
    if "call_genotype" not in ds:
        raise InputError(p, "no call_genotype or call_dosage variable",
                         "give a VCF Zarr store (bio2zarr, sgkit or `dlmm convert`)")
    gt = ds["call_genotype"]
    if gt.dims[:2] != ("variants", "samples") or gt.ndim != 3:
        raise InputError(p, f"call_genotype has dims {gt.dims}",
                         "expected (variants, samples, ploidy)")
    if gt.dtype.kind not in "iu":
        raise InputError(p, f"call_genotype has dtype {gt.dtype}, not integer allele "
                         "indices", "give a VCF Zarr store (bio2zarr, sgkit or "
                         "`dlmm convert`)")
    if gt.shape[2] != 2:
        raise InputError(p, f"call_genotype has ploidy {gt.shape[2]}; dlmm tests diploid "
                         "dosages 0..2", "give diploid genotypes (or call_dosage)")
    return _checked_read(p, "call_genotype", gt, chunk_size)
