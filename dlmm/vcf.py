"""VCF/BCF: not read directly; converted once by bio2zarr's ``vcf2zarr`` to a VCF Zarr
store, which dlmm scans (:func:`dlmm.io.open_store`).

Why not call bio2zarr from here: it needs the VCF bgzipped, sorted and indexed
(tabix/csi) for more than one contig anyway, and its conversion (explode, then
encode) is a one-off that took 11.8 s on mouse_hs1940 (one process) against none
for a .pgen; done once, explicitly, its store is then scanned at once every time.
"""

from __future__ import annotations

import os
import re

from .errors import InputError

__all__ = ["read_vcf", "VCF_SUFFIXES"]

#: names taken for VCF/BCF files
VCF_SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz", ".bcf")


def read_vcf(path: str | os.PathLike, chunk_size: int | None = None):
    """Refuse a VCF/BCF with the one line that says how to convert it.

    Raises
    ------
    InputError
        always: convert with ``vcf2zarr convert X.vcf.gz X.vcz`` (``pip install
        'bio2zarr[vcf]'``; the file bgzipped and indexed), then give ``X.vcz``.
    """
    p = str(path)
    stem = re.sub(r"\.(vcf(\.b?gz)?|bcf)$", "", p)
    raise InputError(p, "VCF/BCF is read through a VCF Zarr store",
                     f"convert it once: vcf2zarr convert {p} {stem}.vcz (pip install "
                     f"'bio2zarr[vcf]'; the VCF bgzipped and indexed: tabix -p vcf {p}), "
                     f"then give {stem}.vcz")
