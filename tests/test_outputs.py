"""The result store as users read it, and the result tables: Parquet and gzipped TSV equal
the TSV; ``to_dataframe()`` gives one row per variant; ``.sel()`` by chromosome and
position."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import dlmm
from dlmm.demo import write_demo_plink


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    write_demo_plink(d / "p", seed=41, n_families=30, n_variants=900)
    opts = dlmm.ScanOptions(formats=("tsv", "parquet"), plot=False, tests="lrt,wald")
    run = dlmm.run(d / "p", out=d / "r", options=opts)
    gz = dlmm.run(d / "p", out=d / "z", options=opts.replace(gzip=True, formats="tsv"))
    return d, run, gz


def test_parquet_and_gzip_equal_the_tsv(scanned):
    d, run, gz = scanned
    assert [p.name for p in run.outputs.tables["pheno1"]] == ["r.assoc.tsv", "r.assoc.parquet"]
    tsv = pd.read_csv(d / "r.assoc.tsv", sep="\t", dtype={"chr": str, "rs": str})
    par = pd.read_parquet(d / "r.assoc.parquet")
    assert list(par.columns) == list(tsv.columns) and len(tsv) > 800
    # Parquet keeps full precision: af to the TSV's 3 decimals, the rest to its 10 digits
    np.testing.assert_allclose(par["af"], tsv["af"], rtol=0, atol=5e-4 + 1e-12)
    pd.testing.assert_frame_equal(par.drop(columns="af"), tsv.drop(columns="af"),
                                  check_exact=False, rtol=1e-9, check_dtype=False)
    assert pd.api.types.is_string_dtype(par["chr"]) and par["ps"].dtype == np.int64
    # the gzip file holds the TSV's bytes; p-values the same to the TSV's 10 digits
    text = gzip.decompress((d / "z.assoc.tsv.gz").read_bytes()).decode()
    assert text.splitlines()[0] == (d / "r.assoc.tsv").read_text().splitlines()[0]
    other = pd.read_csv(d / "z.assoc.tsv.gz", sep="\t")
    np.testing.assert_allclose(other["p_wald"], tsv["p_wald"], rtol=1e-8)


def test_result_store_as_a_table_and_by_position(scanned):
    d, run, _ = scanned
    plain = xr.open_zarr(d / "r.zarr")
    assert set(plain.dims) == {"variants", "traits"}
    frame = plain.to_dataframe()
    assert len(frame) == plain.sizes["variants"] == 900
    assert {"variant_lmm_p_value", "variant_id", "variant_contig_name",
            "variant_position", "trait_id"} <= set(frame.reset_index().columns)
    res = dlmm.load_results(d / "r.zarr")
    chrom = res.sel(variant_contig_name="3")  # a level selected: indexed by position
    n3 = int((plain["variant_contig_name"] == "3").sum())
    assert chrom.sizes["variant_position"] == n3 > 100
    j = 123
    row = plain.isel(variants=j)
    key = (str(row["variant_contig_name"].values), int(row["variant_position"].values))
    hit = res.sel(variants=key)
    assert str(hit["variant_id"].values.squeeze()) == str(row["variant_id"].values)
    np.testing.assert_array_equal(hit["variant_lmm_p_value"].values.ravel(),
                                  row["variant_lmm_p_value"].values.ravel())
    # the run's own results are indexed the same way
    assert run.results.sel(variant_contig_name="3").sizes["variant_position"] == n3
