"""Readers: PLINK and text genotypes into a VCF Zarr / sgkit-style Dataset,
phenotypes, covariates and kinship matrices into validated numpy arrays.

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

__all__ = [
    "balanced_chunks",
    "contig_index",
    "kinship_variants",
    "read_plink",
    "read_text_genotypes",
    "read_fam_phenotype",
    "read_fam_phenotypes",
    "select_phenotype",
    "read_phenotype",
    "read_phenotypes",
    "parse_pheno_cols",
    "read_covariates",
    "read_kinship",
    "genotype_dataset",
    "is_url",
    "is_zarr_store",
    "open_store",
]

DEFAULT_CHUNK = 10_000
#: A kinship with an eigenvalue below -PSD_TOL x its mean diagonal is refused.
PSD_TOL = 1e-3
_MISSING = {"NA", "na", "NaN", "nan", "-9", "-9.0", "."}


def _need_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise InputError(p, f"is a folder, not a {what} file", "give the file's path")
    if not p.is_file():
        raise InputError(p, f"{what} file not found", "check the path")
    if not os.access(p, os.R_OK):
        raise InputError(p, f"{what} file is not readable", "check its permissions")
    return p


def _read_table(path: Path, what: str) -> pd.DataFrame:
    import csv

    # pandas' C parser (the python one takes 1.4 s for a 300,000-line .bim): fields split
    # at whitespace, no quoting, no NA strings; a row's missing trailing fields are NaN
    try:
        return pd.read_csv(path, sep=r"\s+", header=None, dtype=str, comment=None,
                           keep_default_na=False, na_values=[""], quoting=csv.QUOTE_NONE,
                           engine="c")
    except pd.errors.EmptyDataError:
        raise InputError(path, f"the {what} file is empty", "give a non-empty file") from None
    except pd.errors.ParserError as e:
        raise InputError(path, f"the {what} file's rows differ in length "
                         f"({str(e).split(': ')[-1].strip()})",
                         "give every row the same number of columns") from None


def _to_float(df: pd.DataFrame, path: Path, what: str) -> np.ndarray:
    vals = df.to_numpy(dtype=str)
    out = np.full(vals.shape, np.nan)
    miss = np.isin(vals, list(_MISSING))
    try:
        out[~miss] = vals[~miss].astype(np.float64)
    except ValueError:
        bad = next(v for v in vals[~miss].ravel() if not _is_number(v))
        r, c = np.argwhere(vals == bad)[0]
        raise InputError(path, f"{what}: non-numeric value {bad!r} at line {r + 1}, column {c + 1}",
                         "use numbers, with NA or -9 for missing") from None
    return out


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


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
    fam = _read_table(_need_file(f"{prefix}.fam", "PLINK .fam"), "PLINK .fam")
    if fam.shape[1] < 6:
        raise InputError(f"{prefix}.fam", f"has {fam.shape[1]} columns, a .fam needs 6",
                         "give FID IID father mother sex phenotype")
    return fam


def read_plink(prefix: str | os.PathLike, chunk_size: int = DEFAULT_CHUNK) -> xr.Dataset:
    """Open PLINK ``prefix.bed/.bim/.fam`` as a lazy genotype Dataset.

    The dosage counts the first allele of the .bim (column 5, PLINK's A1,
    GEMMA's ``allele1``), chunked by ``chunk_size`` variants.
    """
    import dask.array as da
    from dask.base import tokenize

    bed = _need_file(f"{prefix}.bed", "PLINK .bed")
    bim_path = _need_file(f"{prefix}.bim", "PLINK .bim")
    fam = read_fam(prefix)
    bim = _read_table(bim_path, "PLINK .bim")
    if bim.shape[1] != 6:
        raise InputError(bim_path, f"has {bim.shape[1]} columns, a .bim needs 6",
                         "give chr id cM position allele1 allele2")
    n, m = len(fam), len(bim)
    expected = 3 + m * ((n + 3) // 4)
    with open(bed, "rb") as fh:
        magic = fh.read(3)
    if magic != b"\x6c\x1b\x01" or bed.stat().st_size != expected:
        raise InputError(bed, f"not a variant-major .bed for {n} samples x {m} variants "
                         f"(size {bed.stat().st_size}, expected {expected})",
                         "regenerate the .bed/.bim/.fam together with plink --make-bed")
    variant_contig, contig_id = contig_index(bim[0].to_numpy())
    try:
        position = bim[3].astype(np.int64).to_numpy()
    except ValueError:
        raise InputError(bim_path, "column 4 (position) is not an integer",
                         "fix the .bim positions") from None
    # one task per chunk, with no inputs (root tasks, read as the scans need them; see
    # _checked_read), not a from_delayed per chunk concatenated (three tasks per chunk)
    chunks = (balanced_chunks(m, chunk_size), (n,))
    dosage = da.map_blocks(
        _read_bed_chunk, path=str(bed), n_samples=n, n_variants=m, chunks=chunks,
        dtype=np.float32, meta=np.empty((0, 0), dtype=np.float32),
        name="read-bed-" + tokenize(str(bed), n, m, chunks),
    ) if m else da.zeros((0, n), dtype=np.float32)
    return genotype_dataset(
        dosage, sample_id=fam[1].to_numpy(), variant_id=bim[1].to_numpy(),
        variant_contig=variant_contig, contig_id=contig_id,
        variant_position=position, variant_allele=bim[[5, 4]].to_numpy(),
    ).assign(sample_family_id=(("samples",), fam[0].to_numpy().astype(object)))


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


def read_text_genotypes(path: str | os.PathLike, chunk_size: int = DEFAULT_CHUNK) -> xr.Dataset:
    """Read the lab's whitespace text matrix (rows samples, columns variants).

    Coded -1/0/1 (shifted to 0/1/2) or 0/1/2; NA or -9 for missing.  Variants
    are named ``snp1..snpM`` on contig ``0`` at their 1-based column index.
    """
    import dask.array as da

    p = _need_file(path, "genotype")
    x = _to_float(_read_table(p, "genotype"), p, "genotype")
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
                           chunks=(balanced_chunks(m, chunk_size), n))
    return genotype_dataset(
        dosage, sample_id=[f"sample{i + 1}" for i in range(n)],
        variant_id=[f"snp{j + 1}" for j in range(m)], variant_contig=np.zeros(m, int),
        contig_id=["0"], variant_position=np.arange(1, m + 1),
        variant_allele=np.array([["0", "1"]] * m, dtype=object).reshape(m, 2))


def select_phenotype(values: np.ndarray, col: int, path, what: str) -> np.ndarray:
    """Column ``col`` (1-based, as GEMMA's ``-n``) of a (samples, phenotypes) table."""
    if not 1 <= col <= values.shape[1]:
        raise InputError(path, f"--pheno-col {col} is out of range: the {what} has "
                         f"{values.shape[1]} phenotype column(s)",
                         f"give --pheno-col between 1 and {values.shape[1]}")
    return values[:, col - 1]


def read_fam_phenotypes(prefix: str | os.PathLike) -> np.ndarray:
    """All phenotypes of a .fam (columns 6...), (samples, phenotypes); NA and -9 -> NaN."""
    fam = read_fam(prefix)
    return _to_float(fam.iloc[:, 5:], Path(f"{prefix}.fam"), "phenotype")


def read_fam_phenotype(prefix: str | os.PathLike, col: int = 1) -> np.ndarray:
    """Phenotype ``col`` (1-based, as GEMMA's ``-n``) from .fam columns 6...

    NA and -9 become NaN.
    """
    return select_phenotype(read_fam_phenotypes(prefix), col, f"{prefix}.fam", ".fam")


def read_phenotype(path: str | os.PathLike, col: int = 1, n_samples: int | None = None) -> np.ndarray:
    """GEMMA's phenotype file: one row per sample, one column per phenotype."""
    return select_phenotype(read_phenotypes(path, n_samples), col, path, "phenotype file")


def read_phenotypes(path: str | os.PathLike, n_samples: int | None = None) -> np.ndarray:
    """All columns of GEMMA's phenotype file, (samples, phenotypes); NA and -9 -> NaN."""
    p = _need_file(path, "phenotype")
    vals = _to_float(_read_table(p, "phenotype"), p, "phenotype")
    if n_samples is not None and vals.shape[0] != n_samples:
        raise InputError(p, f"has {vals.shape[0]} rows but the genotypes have {n_samples} samples",
                         "give one phenotype row per sample, in the genotype file's order")
    return vals


def parse_pheno_cols(spec: str, n_columns: int, path, what: str) -> list[int] | None:
    """``--pheno-col``: ``"2"`` -> None (one trait, as GEMMA's -n 2), ``"1,2,3"`` or
    ``"all"`` -> the 1-based columns of many traits."""
    spec = str(spec).strip()
    if spec.isdigit():
        return None
    if spec == "all":
        return list(range(1, n_columns + 1))
    try:
        cols = [int(c) for c in spec.split(",") if c.strip()]
    except ValueError:
        raise InputError("--pheno-col", f"cannot read {spec!r}",
                         "give a column number, a comma-separated list (1,2,3) or all") from None
    if len(set(cols)) != len(cols) or not cols:
        raise InputError("--pheno-col", f"{spec!r} repeats a column or is empty",
                         "list each phenotype column once")
    for c in cols:
        select_phenotype(np.zeros((0, n_columns)), c, path, what)  # range check
    return cols


def read_covariates(path: str | os.PathLike, n_samples: int | None = None) -> np.ndarray:
    """GEMMA's covariate file: one row per sample; include the intercept column."""
    p = _need_file(path, "covariate")
    vals = _to_float(_read_table(p, "covariate"), p, "covariate")
    if n_samples is not None and vals.shape[0] != n_samples:
        raise InputError(p, f"has {vals.shape[0]} rows but the genotypes have {n_samples} samples",
                         "give one covariate row per sample, in the genotype file's order")
    return vals


def read_kinship(path: str | os.PathLike, n_samples: int | None = None,
                 sample_id=None) -> np.ndarray:
    """A kinship matrix: GEMMA's whitespace n x n text, ``.npy``, ``.npz`` or a Zarr store.

    Text and ``.npy`` carry no sample ids: their rows are taken in the
    genotypes' sample order.  An ``.npz`` holds ``kinship`` (n, n) and
    ``sample_id`` (n,); a Zarr store from ``dlmm grm`` holds ``grm``
    (samples, samples_2) and ``sample_id``.  Their ids must be the genotypes'
    ``sample_id`` (given as ``sample_id``), in any order; the matrix is
    returned in genotype order.
    """
    p = Path(path)
    if is_zarr_store(p):
        K, ids = _read_kinship_zarr(p)
        if ids is not None:
            K = _align_kinship(K, ids, sample_id, p)
        # positive semi-definiteness is checked by dlmm.scan (scanner._prepare_traits)
        return validate_kinship(K, p, n_samples, psd=False)
    p = _need_file(path, "kinship")
    ids = None
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "kinship" not in z or "sample_id" not in z:
                    raise InputError(p, f"an .npz kinship needs arrays kinship and sample_id, "
                                     f"it has {', '.join(z.files) or 'none'}",
                                     "save it with np.savez(path, kinship=K, sample_id=ids)")
                K, ids = z["kinship"].astype(np.float64), z["sample_id"].astype(str)
        elif p.suffix == ".npy":
            K = np.load(p, allow_pickle=False).astype(np.float64)
        else:
            K = _read_matrix_text(p)
    except InputError:
        raise
    except Exception as e:  # numpy raises ValueError, OSError, zipfile.BadZipFile, ...
        raise InputError(p, f"kinship is not a numeric matrix ({type(e).__name__}: {e})",
                         "give GEMMA's whitespace n x n text, .npy or .npz") from None
    if ids is not None:
        K = _align_kinship(K, ids, sample_id, p)
    # positive semi-definiteness is checked by dlmm.scan (scanner._prepare_traits)
    return validate_kinship(K, p, n_samples, psd=False)


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
    try:
        ds = xr.open_zarr(p, consolidated=None)
    except Exception as e:  # corrupt metadata: zarr/xarray raise many types
        raise InputError(p, f"cannot open the Zarr store ({type(e).__name__}: {e})",
                         "write the kinship with `dlmm grm`") from None
    square = [v for v in ds.data_vars
              if ds[v].ndim == 2 and ds[v].shape[0] == ds[v].shape[1]]
    name = "grm" if "grm" in ds else (square[0] if len(square) == 1 else None)
    if name is None:
        raise InputError(p, "no kinship variable `grm` (or single square matrix) in the store",
                         "write the kinship with `dlmm grm`")
    K = np.asarray(ds[name].values, dtype=np.float64)
    ids = (np.asarray(ds["sample_id"].values, dtype=object).astype(str)
           if "sample_id" in ds else None)
    return K, ids


def _align_kinship(K: np.ndarray, ids: np.ndarray, sample_id, source) -> np.ndarray:
    """Reorder an id-carrying kinship to the genotypes' sample order."""
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] != ids.shape[0]:
        raise InputError(source, f"kinship is {'x'.join(map(str, K.shape))} with "
                         f"{ids.shape[0]} sample ids", "give an n x n kinship and n sample ids")
    dup = pd.Index(ids)[pd.Index(ids).duplicated()]
    if len(dup):
        raise InputError(source, f"{len(dup)} duplicated sample id(s) in the kinship "
                         f"({_few(dup)})", "give each sample once")
    if sample_id is None:
        return K
    want = np.asarray(sample_id).astype(str)
    pos = pd.Index(ids).get_indexer(want)
    extra = np.setdiff1d(ids, want)
    if (pos < 0).any() or len(extra):
        missing = want[pos < 0]
        raise InputError(source, "kinship sample ids do not match the genotypes': "
                         f"{len(missing)} of {len(want)} genotype samples are not in the "
                         f"kinship ({_few(missing)}) and {len(extra)} kinship samples are "
                         f"not genotyped ({_few(extra)})",
                         "give the kinship of exactly the genotype samples (sample_id)")
    return K[np.ix_(pos, pos)]


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
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= m:
            raise InputError("--kinship-variants", f"{count} variants asked of {m}",
                             f"give a count between 1 and {m}, or a file of variant ids")
        return np.unique(np.linspace(0, m - 1, count).round().astype(np.int64))
    path = _need_file(text, "kinship variant list")
    wanted = path.read_text().split()
    if not wanted:
        raise InputError(path, "the kinship variant list is empty",
                         "list variant ids, one per line")
    index: dict[str, int] = {}
    for j, v in enumerate(str(v) for v in np.asarray(variant_id, dtype=object)):
        index.setdefault(v, j)
    unknown = [v for v in wanted if v not in index]
    if unknown:
        raise InputError(path, f"{len(unknown)} of {len(wanted)} kinship variant ids are not in "
                         f"the genotypes ({_few(unknown)})",
                         "list ids of the genotypes' variants (variant_id, PLINK .bim column 2)")
    return np.unique(np.array([index[v] for v in wanted], dtype=np.int64))


def _few(values, k: int = 3) -> str:
    values = [str(v) for v in values]
    shown = ", ".join(repr(v) for v in values[:k])
    return shown + (", ..." if len(values) > k else "") if values else "none"


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


def _read_rows(path: str, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` (variants) of a store's array; a chunk that cannot be
    read or decoded (a corrupt store) is an InputError naming it."""
    import zarr

    try:
        return zarr.open_array(path, path=name, mode="r")[start:stop]
    except Exception as e:  # zarr, numcodecs and fsspec raise many types
        raise InputError(path, f"{name}[{start}:{stop}] cannot be read ({type(e).__name__}: "
                         f"{e})", "rewrite the store (`dlmm convert`, bio2zarr); blocks already "
                         "written are kept for --resume") from None


def _read_block(store: str, variable: str, block_info=None) -> np.ndarray:
    (start, stop), *_ = block_info[None]["array-location"]
    return _read_rows(store, variable, start, stop)


def _checked_read(path, name: str, var: xr.DataArray):
    """``var`` as a dask array that reads its store with :func:`_read_rows`,
    one task per chunk of variants (all samples).

    A blockwise layer with no inputs, like ``from_array``: the scheduler sees
    its tasks as root tasks and runs them as the scans need them.  (One
    ``from_delayed`` per chunk, concatenated, was read far ahead of the scan:
    a worker's peak memory doubled from 50,000 to 200,000 variants.)
    """
    import dask.array as da
    from dask.base import tokenize

    if var.size == 0:
        return var.data
    chunks = (var.data.chunks[0],) + tuple((s,) for s in var.shape[1:])
    return da.map_blocks(_read_block, store=str(path), variable=name, chunks=chunks,
                         dtype=var.dtype, meta=np.empty((0,) * var.ndim, dtype=var.dtype),
                         name=f"read-{name}-" + tokenize(str(path), name, chunks))


def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open a VCF Zarr / sgkit genotype store lazily.

    ``path`` is a folder or an fsspec URL (``s3://``, ``gs://``, ``file://``;
    the workers must be able to read it too, with the same credentials).
    Accepts stores with ``call_dosage`` (variants, samples) or ``call_genotype``
    (variants, samples, ploidy; negative = missing, as bio2zarr and sgkit write
    it); the dosage used is the count of non-reference alleles, NaN where a
    call is missing.  Needs ``sample_id`` and ``variant_position``;
    ``variant_id``, ``variant_contig``/``contig_id`` and ``variant_allele`` are
    filled in when absent.
    """
    import dask.array as da

    p = str(path) if is_url(path) else Path(path)
    if not is_zarr_store(p):
        raise InputError(p, "not a Zarr store (no .zgroup, .zmetadata or zarr.json)",
                         "give a store written by `dlmm convert`, bio2zarr or sgkit")
    try:
        ds = xr.open_zarr(p, consolidated=None)
    except Exception as e:  # corrupt metadata: zarr/xarray raise many types
        raise InputError(p, f"cannot open the Zarr store ({type(e).__name__}: {e})",
                         "rewrite it with `dlmm convert`") from None
    if "call_dosage" not in ds:
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
        g = _checked_read(p, "call_genotype", gt)
        dos = (g > 0).sum(axis=-1, dtype=np.int8).astype(np.float32)  # no int64 temporary
        dosage = da.where((g < 0).any(axis=-1), np.float32(np.nan), dos)
        ds = ds.assign(call_dosage=(("variants", "samples"), dosage))
    elif ds["call_dosage"].dims != ("variants", "samples"):
        raise InputError(p, f"call_dosage has dims {ds['call_dosage'].dims}",
                         "expected (variants, samples)")
    else:
        ds = ds.assign(call_dosage=(("variants", "samples"),
                                    _checked_read(p, "call_dosage", ds["call_dosage"])))
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
    return ds
