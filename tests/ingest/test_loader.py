"""Warehouse -> store -> Dataset through the public API, compared with an independent pivot."""

import json
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr

from xr_methyl import (
    DataError,
    Loader,
    LocalWarehouse,
    MethylStore,
    UnknownCpgError,
    UnknownCpgWarning,
    UnknownSamplesError,
)


def chunk_objects(store_path):
    return sorted(str(p.relative_to(store_path)) for p in store_path.rglob("c/*/*") if p.is_file())


def assert_matches_truth(ds, truth, ids):
    np.testing.assert_array_equal(ds.beta.values, truth.beta.loc[ids].to_numpy())
    np.testing.assert_array_equal(ds.coverage.values, truth.coverage.loc[ids].to_numpy())
    assert ds.beta.dtype == np.float32


def test_ensure_returns_exactly_the_requested_samples_with_the_warehouse_values(store, truth, cohort):
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    assert ds.sizes["sample"] == 0
    ids = ["S0007", "S0001", "S0019", "S0012"]
    sub = ds.methyl.ensure(ids, progress=False)
    assert list(sub.sample.values) == ids
    assert list(sub.cpg.values) == cohort.cpg_ids.to_pylist()
    assert_matches_truth(sub, truth, ids)
    # lazily (dask-backed) until asked
    assert sub.beta.chunks is not None and sub.coverage.chunks is not None
    # metadata from sample_batch_map rides along as sample coordinates
    assert list(sub.batch_id.values) == [truth.samples.loc[s, "batch_id"] for s in ids]
    np.testing.assert_allclose(sub.age.values, truth.samples.loc[ids, "age"].to_numpy())
    assert list(sub.sex.values) == list(truth.samples.loc[ids, "sex"])


def test_repeated_ids_are_repeated_and_ingested_once(store, truth):
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    ids = ["S0003", "S0002", "S0003"]
    sub = ds.methyl.ensure(ids, progress=False)
    assert list(sub.sample.values) == ids
    assert_matches_truth(sub, truth, ids)
    assert MethylStore.open(store.storage.root).sample_ids.count("S0003") == 1


def test_the_second_call_reads_the_cache_only(store, truth):
    loader = Loader(store, store.manifest.warehouse)
    first = loader.ingest(["S0000", "S0009"], progress=False)
    assert first.ingested == ["S0000", "S0009"] and first.warehouse_used
    again = loader.ingest(["S0009", "S0000"], progress=False)
    assert again.ingested == [] and again.cached == 2 and not again.warehouse_used


def test_cached_samples_need_no_warehouse(own_cohort, tmp_path):
    path = tmp_path / "s.methyl.zarr"
    MethylStore.create(path, warehouse=own_cohort.warehouse)
    ds = xr.open_dataset(path, engine="methylzarr")
    before = ds.methyl.ensure(["S0001", "S0006"], progress=False).beta.values
    shutil.rmtree(own_cohort.warehouse.path)  # the warehouse is gone
    after = xr.open_dataset(path, engine="methylzarr").methyl.ensure(["S0006", "S0001"], progress=False)
    np.testing.assert_array_equal(after.beta.values, before[::-1])
    with pytest.raises(Exception, match="catalog"):
        ds.methyl.ensure(["S0002"], progress=False)


def test_ingesting_part_of_a_batch_then_the_rest(store, truth):
    batch = truth.samples.index[truth.samples.batch_id == "B001"].tolist()
    loader = Loader(store)
    loader.ingest(batch[:3], progress=False)
    loader.ingest(batch, progress=False)
    reopened = MethylStore.open(store.storage.root)
    assert reopened.batches == {"B001": batch[:3] + batch[3:]}
    assert_matches_truth(Loader(reopened).load(batch, progress=False), truth, batch)


def test_unknown_ids_are_named_and_nothing_is_written(store):
    before = (store.storage.root / "sample_ids.json").read_text()
    unknown = [f"NOPE{i:02d}" for i in range(12)]
    with pytest.raises(UnknownSamplesError) as err:
        Loader(store).load(["S0001", *unknown], progress=False)
    assert isinstance(err.value, KeyError)
    message = str(err.value)
    assert "12 sample id(s)" in message and "'NOPE00'" in message and "'NOPE09'" in message
    assert "NOPE10" not in message and "2 more" in message
    assert (store.storage.root / "sample_ids.json").read_text() == before
    assert chunk_objects(store.storage.root) == []


@pytest.mark.parametrize("bad", [[""], [" S0001"], ["S0001\n"], [3], "S0001"])
def test_malformed_ids_are_refused_with_the_value(store, bad):
    with pytest.raises((DataError, TypeError)) as err:
        Loader(store).load(bad, progress=False)
    assert repr(bad[0] if isinstance(bad, list) else bad) in str(err.value)


def test_rows_off_the_cpg_axis_are_dropped_with_a_count(warehouse, truth, tmp_path, cohort):
    axis = cohort.cpg_ids.to_pylist()[::2]  # a store that keeps every other CpG
    store = MethylStore.create(tmp_path / "half.zarr", cpg_ids=axis, warehouse=warehouse)
    ids = ["S0004", "S0015"]
    expected_dropped = sum(
        int((rows["sample_id"].isin(ids) & ~rows["cpg_id"].isin(axis)).sum()) for rows in truth.rows.values()
    )  # rows with a NULL value count too
    with pytest.warns(UnknownCpgWarning, match=f"dropped {expected_dropped} warehouse row"):
        sub = Loader(store).load(ids, progress=False)
    np.testing.assert_array_equal(sub.beta.values, truth.beta.loc[ids, axis].to_numpy())
    assert list(sub.chrom.values[:3]) == [c.split(":")[0] for c in axis[:3]]

    strict = MethylStore.create(tmp_path / "strict.zarr", cpg_ids=axis, warehouse=warehouse)
    with pytest.raises(UnknownCpgError, match="not on the store's CpG axis"):
        Loader(strict, on_unknown_cpg="error").load(ids, progress=False)
    assert MethylStore.open(strict.storage.root).sample_ids == []


def hand_made_warehouse(path, beta_rows, coverage_rows):
    """A tiny warehouse with explicit rows: (batch, sample, cpg, value)."""
    wh = LocalWarehouse(path)
    wh.create_tables(metadata_schema=pa.schema([("age", pa.float64())]))
    wh.append(
        "cpgs",
        pa.table({"cpg_id": ["c1", "c2", "c3"], "chrom": ["chr1"] * 3, "pos": pa.array([10, 20, 30], pa.int64())}),
    )
    wh.append("sample_batch_map", pa.table({"sample_id": ["a", "b"], "batch_id": ["P1", "P1"], "age": [40.0, 50.0]}))
    for name, rows in (("beta", beta_rows), ("coverage", coverage_rows)):
        columns = list(zip(*rows, strict=True))
        wh.append(
            name,
            pa.table(
                {
                    "batch_id": list(columns[0]),
                    "sample_id": list(columns[1]),
                    "cpg_id": list(columns[2]),
                    name: list(columns[3]),
                }
            ),
        )
    return wh


def test_exact_values_from_a_hand_made_warehouse(tmp_path):
    wh = hand_made_warehouse(
        tmp_path / "wh",
        beta_rows=[("P1", "a", "c1", 0.1), ("P1", "a", "c3", 1.0), ("P1", "b", "c2", 0.0)],
        coverage_rows=[("P1", "a", "c1", 7), ("P1", "a", "c3", 65535), ("P1", "b", "c2", 1)],
    )
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=wh)
    sub = Loader(store).load(["b", "a"], progress=False)
    np.testing.assert_array_equal(sub.beta.values, np.array([[np.nan, 0, np.nan], [0.1, np.nan, 1]], np.float32))
    np.testing.assert_array_equal(sub.coverage.values, [[0, 1, 0], [7, 0, 65535]])
    assert sub.age.values.tolist() == [50.0, 40.0]


@pytest.mark.parametrize(
    ("beta_rows", "coverage_rows", "message"),
    [
        ([("P1", "a", "c1", 0.5), ("P1", "a", "c1", 0.6)], [("P1", "a", "c1", 3)], "duplicate rows.*'a', 'c1'"),
        ([("P1", "a", "c1", 0.5)], [("P1", "a", "c2", 3), ("P1", "a", "c2", 4)], "duplicate rows.*'a', 'c2'"),
        ([("P1", "b", "c1", 1.5)], [("P1", "b", "c1", 3)], "sample 'b'.*\\[0, 1\\]"),
        ([("P1", "b", "c1", -0.1)], [("P1", "b", "c1", 3)], "sample 'b'"),
        ([("P1", "a", "c1", 0.5)], [("P1", "a", "c1", 70000)], "sample 'a'.*uint16"),
        ([("P1", "a", "c1", 0.5)], [("P1", "a", "c1", -2)], "sample 'a'"),
    ],
)
def test_bad_warehouse_rows_are_refused_and_nothing_is_committed(tmp_path, beta_rows, coverage_rows, message):
    wh = hand_made_warehouse(tmp_path / "wh", beta_rows, coverage_rows)
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=wh)
    with pytest.raises(DataError, match=message):
        Loader(store).load(["a", "b"], progress=False)
    assert MethylStore.open(store.storage.root).sample_ids == []
    assert chunk_objects(store.storage.root) == []
    assert not list(tmp_path.glob("**/xr-methyl-export-*"))


def test_progress_bar_only_when_asked(store, capsys):
    Loader(store).load(["S0005"], progress=False)
    assert capsys.readouterr().err == ""
    Loader(store).load(["S0006"], progress=True)
    assert "xr_methyl ensure" in capsys.readouterr().err


def test_the_store_records_where_it_ingests_from_without_secrets(store, warehouse):
    manifest = json.loads((store.storage.root / "manifest.json").read_text())
    assert manifest["warehouse"] == warehouse.describe() == f"file://{warehouse.path}"


def test_no_warning_when_every_row_is_on_the_axis(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Loader(store).load(["S0010"], progress=False)
