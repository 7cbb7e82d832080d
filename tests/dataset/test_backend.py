"""The xarray backend (engine="methylzarr") and the accessor, as a user meets them."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr

from xr_methyl import Layout, Loader, MethylStore
from xr_methyl.dataset.backend import MethylZarrBackendEntrypoint


@pytest.fixture
def filled(store):
    """A store holding 12 samples from three batches."""
    ids = [f"S{i:04d}" for i in (0, 1, 2, 9, 10, 11, 12, 13, 16, 17, 18, 19)]
    Loader(store).ingest(ids, progress=False)
    return store, ids


def test_engine_is_registered_through_the_entry_point():
    assert "methylzarr" in xr.backends.list_engines()


def test_open_dataset_is_labelled_and_lazy(filled, truth, cohort):
    store, ids = filled
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    assert dict(ds.sizes) == {"sample": len(ids), "cpg": cohort_n(cohort)}
    assert list(ds.sample.values) == ids  # committed samples, padding rows skipped
    assert set(ds.coords) >= {"sample", "cpg", "chrom", "pos", "batch_id", "age", "sex"}
    assert ds.chrom.dims == ("cpg",) and ds.batch_id.dims == ("sample",)
    assert ds.pos.values[0] == truth_pos(cohort, 0)
    assert ds.beta.chunks is None  # no dask unless asked
    assert not ds.beta.variable._in_memory  # and nothing read yet
    np.testing.assert_array_equal(ds.beta.values, truth.beta.loc[ids].to_numpy())


def cohort_n(cohort):
    return len(cohort.cpg_ids)


def truth_pos(cohort, i):
    return int(cohort.cpg_ids[i].as_py().split(":")[1])


def test_selections_behave_like_xarray(filled, truth):
    store, ids = filled
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    cpgs = list(truth.beta.columns[[5, 2999, 17, 640]])
    picked = ds.sel(sample=["S0017", "S0000", "S0010"], cpg=cpgs)
    np.testing.assert_array_equal(picked.beta.values, truth.beta.loc[["S0017", "S0000", "S0010"], cpgs].to_numpy())
    np.testing.assert_array_equal(
        ds.isel(sample=slice(2, 7), cpg=slice(100, 120)).coverage.values,
        truth.coverage.loc[ids[2:7]].iloc[:, 100:120].to_numpy(),
    )
    np.testing.assert_array_equal(ds.beta.sel(sample="S0009").values, truth.beta.loc["S0009"].to_numpy())
    np.testing.assert_array_equal(ds.beta.isel(sample=-1, cpg=[3, 1]).values, truth.beta.loc[ids[-1]].iloc[[3, 1]])
    on_chr2 = ds.beta.where(ds.chrom == "chr2", drop=True)
    assert set(on_chr2.chrom.values) == {"chr2"}


def test_dask_chunks_follow_the_store_layout(filled):
    store, ids = filled
    ds = xr.open_dataset(store.storage.root, engine="methylzarr", chunks={})
    sample_chunks, cpg_chunks = ds.beta.chunks
    # one dask chunk per 8-row block (B000: 3 samples, B001: 5, B002: 4), padding rows left out
    per_block = [sum(1 for s in ids if s in block) for block in _blocks(store)]
    assert sample_chunks == tuple(n for n in per_block if n)
    assert set(cpg_chunks[:-1]) <= {store.layout.cpg_shard}


def _blocks(store):
    rows = store.commit.rows
    b = store.layout.sample_block
    return [set(filter(None, rows[i : i + b])) for i in range(0, len(rows), b)]


def test_drop_variables(filled):
    store, _ = filled
    ds = xr.open_dataset(store.storage.root, engine="methylzarr", drop_variables=["coverage", "age"])
    assert "coverage" not in ds and "age" not in ds.coords and "beta" in ds


def test_guess_can_open_recognises_stores_and_never_raises(filled, tmp_path):
    store, _ = filled
    entry = MethylZarrBackendEntrypoint()
    assert entry.guess_can_open(store.storage.root)
    assert entry.guess_can_open(str(store.storage.root))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text("{not json")
    (tmp_path / "file.nc").write_bytes(b"\x89HDF")
    for thing in (tmp_path / "other", tmp_path / "file.nc", tmp_path / "missing", 42, b"bytes", None):
        assert entry.guess_can_open(thing) is False
    assert xr.open_dataset(store.storage.root).sizes["sample"] == 12  # found without naming the engine


def test_opening_never_touches_the_warehouse(own_cohort, tmp_path):
    path = tmp_path / "s.zarr"
    Loader(MethylStore.create(path, warehouse=own_cohort.warehouse)).ingest(["S0003"], progress=False)
    import shutil

    shutil.rmtree(own_cohort.warehouse.path)
    ds = xr.open_dataset(path, engine="methylzarr")
    assert list(ds.sample.values) == ["S0003"] and ds.beta.values.shape == (1, 500)


def test_readers_keep_their_snapshot_while_the_store_grows(filled, truth):
    store, ids = filled
    old = xr.open_dataset(store.storage.root, engine="methylzarr", chunks={})
    before = old.beta.values
    Loader(store).ingest(["S0005", "S0006"], progress=False)
    assert list(old.sample.values) == ids
    np.testing.assert_array_equal(old.beta.values, before)
    new = xr.open_dataset(store.storage.root, engine="methylzarr")
    assert list(new.sample.values) == ids + ["S0005", "S0006"]


def test_plain_zarr_readers_see_rows_matching_sample_ids_json(filled, truth):
    store, _ = filled
    rows = json.loads((store.storage.root / "sample_ids.json").read_text())
    beta = zarr.open_array(store.storage.root / "beta.zarr", mode="r")
    assert beta.shape[0] == len(rows)
    for row, sample in enumerate(rows):
        if sample is None:
            assert np.isnan(beta[row]).all()
        else:
            np.testing.assert_array_equal(beta[row], truth.beta.loc[sample].to_numpy())


def test_lazy_datasets_pickle_for_distributed_workers(filled, truth):
    store, ids = filled
    sub = Loader(store).load(["S0012", "S0001"], progress=False)
    clone = pickle.loads(pickle.dumps(sub))
    np.testing.assert_array_equal(clone.beta.values, truth.beta.loc[["S0012", "S0001"]].to_numpy())


def test_accessor_on_a_dataset_without_a_store_says_so():
    with pytest.raises(ValueError, match="does not come from a methylzarr store"):
        xr.Dataset().methyl.ensure(["S0001"])


def test_importing_the_package_stays_light():
    heavy = ("pyathena", "boto3", "duckdb", "pyiceberg", "sqlalchemy")
    code = (
        "import sys, xarray as xr, xr_methyl; xr.backends.list_engines(); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "layout",
    [
        Layout(sample_block=8, chunk_rows=8, cpg_chunk=512, cpg_shard=1024),
        Layout(sample_block=4, chunk_rows=2, cpg_chunk=1000, cpg_shard=3000),
    ],
)
def test_any_layout_reads_the_same_values(warehouse, truth, tmp_path, layout):
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=warehouse, layout=layout)
    ids = ["S0019", "S0003", "S0004", "S0011", "S0000"]
    Loader(store).ingest(ids, progress=False)
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    order = ["S0000", "S0019", "S0004", "S0003", "S0011", "S0004"]
    np.testing.assert_array_equal(ds.beta.sel(sample=order).values, truth.beta.loc[order].to_numpy())
    cols = [7, 1500, 2999, 3]
    np.testing.assert_array_equal(
        ds.coverage.sel(sample=order).isel(cpg=cols).values, truth.coverage.loc[order].iloc[:, cols].to_numpy()
    )
