"""Bad input not covered by the layer tests: odd ids, odd values, odd warehouses, odd stores, and secrets."""

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from xr_methyl import (
    CorruptStoreError,
    DataError,
    Loader,
    LocalWarehouse,
    MethylStore,
    StoreNotFoundError,
    UnknownCpgError,
    UnknownSamplesError,
    WarehouseError,
)

ODD_IDS = ['O\'Brien "7"', "Ünïcødé-α", "x; DROP TABLE beta; --", "tab\tinside"]


def small_warehouse(path, sample_ids, *, beta=0.5, coverage=3, coverage_type=pa.int64(), drop_table=None):
    wh = LocalWarehouse(path)
    wh.create_tables(value_types={"coverage": coverage_type})
    wh.append("cpgs", pa.table({"cpg_id": ["c1", "c2"], "chrom": ["chr1"] * 2, "pos": pa.array([1, 2], pa.int64())}))
    wh.append("sample_batch_map", pa.table({"sample_id": sample_ids, "batch_id": ["P"] * len(sample_ids)}))
    n = len(sample_ids)
    wh.append(
        "beta",
        pa.table(
            {
                "batch_id": ["P"] * n,
                "sample_id": sample_ids,
                "cpg_id": ["c1"] * n,
                "beta": pa.array([beta] * n, pa.float64()),
            }
        ),
    )
    wh.append(
        "coverage",
        pa.table(
            {
                "batch_id": ["P"] * n,
                "sample_id": sample_ids,
                "cpg_id": ["c1"] * n,
                "coverage": pa.array([coverage] * n, coverage_type),
            }
        ),
    )
    if drop_table:
        wh._catalog().drop_table(("methylation", drop_table))
    return wh


def test_ids_with_quotes_unicode_and_sql_round_trip(tmp_path):
    ids = ODD_IDS[:3]
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=small_warehouse(tmp_path / "wh", ids))
    sub = Loader(store).load(ids[::-1], progress=False)
    assert list(sub.sample.values) == ids[::-1]
    np.testing.assert_array_equal(sub.beta.values[:, 0], [0.5] * 3)
    assert MethylStore.open(store.storage.root).sample_ids == ids[::-1]
    with pytest.raises(DataError, match="control characters"):
        Loader(store).load([ODD_IDS[3]], progress=False)


def test_ten_thousand_ids_at_once(own_cohort, tmp_path):
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=own_cohort.warehouse)
    unknown = [f"NOPE{i:05d}" for i in range(9_990)]
    t0 = time.perf_counter()
    with pytest.raises(UnknownSamplesError, match="9990 sample id\\(s\\).*and 9980 more"):
        Loader(store).load(["S0001", *unknown], progress=False)
    assert time.perf_counter() - t0 < 30
    assert MethylStore.open(store.storage.root).sample_ids == []
    known = [f"S{i % 10:04d}" for i in range(10_000)]  # 10,000 ids, each sample repeated
    sub = Loader(store).load(known, progress=False)
    assert sub.sizes["sample"] == 10_000 and list(sub.sample.values[:11]) == known[:11]
    np.testing.assert_array_equal(sub.beta.values[10], sub.beta.values[0])


@pytest.mark.parametrize(
    ("beta", "coverage", "dtype", "message"),
    [
        (0.5, 256, "uint8", "256.*uint8"),
        (0.5, 2.5, "uint16", "whole number"),
        (0.5, -1.0, "uint16", "whole number"),
        (0.5, float("inf"), "uint16", "whole number"),
        (float("-inf"), 3.0, "uint16", r"\[0, 1\]"),
    ],
)
def test_more_bad_values(tmp_path, beta, coverage, dtype, message):
    # A double coverage column, read in place: fractions, infinities and NaN can reach the loader.
    wh = small_warehouse(tmp_path / "wh", ["a"], beta=beta, coverage=coverage, coverage_type=pa.float64())
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=wh, coverage_dtype=dtype)
    with pytest.raises(DataError, match=message):
        Loader(store).load(["a"], progress=False)
    assert MethylStore.open(store.storage.root).sample_ids == []


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_null_or_nan_values_are_stored_as_missing(tmp_path, missing):
    wh = small_warehouse(tmp_path / "wh", ["a", "b"], beta=missing, coverage=missing, coverage_type=pa.float64())
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=wh)
    sub = Loader(store).load(["b", "a"], progress=False)
    np.testing.assert_array_equal(sub.beta.values, np.full((2, 2), np.nan, np.float32))
    np.testing.assert_array_equal(sub.coverage.values, np.zeros((2, 2), np.uint16))
    assert store.verify(cells=20, seed=0).ok


@pytest.mark.parametrize("table", ["coverage", "sample_batch_map"])
def test_a_missing_table_is_named_and_nothing_is_written(tmp_path, table):
    wh = small_warehouse(tmp_path / "wh", ["a"])
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=wh)
    wh._catalog().drop_table(("methylation", table))
    with pytest.raises(WarehouseError, match=f"no table methylation.{table}"):
        Loader(MethylStore.open(store.storage.root), LocalWarehouse(wh.path)).load(["a"], progress=False)
    assert MethylStore.open(store.storage.root).sample_ids == []


def test_a_store_made_for_another_cpg_axis(own_cohort, tmp_path):
    store = MethylStore.create(tmp_path / "s.zarr", cpg_ids=["cX1", "cX2", "cX3"], warehouse=None)
    with pytest.raises(UnknownCpgError, match="created for another CpG axis"):
        Loader(store, own_cohort.warehouse).load(["S0001"], progress=False)
    assert MethylStore.open(store.storage.root).sample_ids == []


def test_a_path_that_is_a_file(tmp_path):
    import xarray as xr

    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreNotFoundError, match="is a file"):
        Loader(str(tmp_path / "f"))
    with pytest.raises(StoreNotFoundError):
        xr.open_dataset(tmp_path / "f", engine="methylzarr")


@pytest.mark.parametrize(
    "key", ["manifest.json", "ingested_batches.json", "cpg_ids.npy", "cpg_index/pos.npy", "cpg_index/sorted_ids.npy"]
)
def test_a_truncated_sidecar_is_reported(store, key):
    path = store.storage.root / key
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    with pytest.raises(CorruptStoreError, match=key.split(".")[0].replace("_", ".?") + "|CpG axis|JSON"):
        MethylStore.open(store.storage.root)


def test_a_zarr_json_with_fewer_rows_than_committed(store):
    Loader(store).ingest(["S0001"], progress=False)
    path = store.storage.root / "coverage.zarr" / "zarr.json"
    meta = json.loads(path.read_text())
    meta["shape"] = [0, meta["shape"][1]]
    path.write_text(json.dumps(meta))
    with pytest.raises(CorruptStoreError, match="committed rows"):
        MethylStore.open(store.storage.root).read("coverage", ["S0001"])


SECRET = "FAKEs3cr3tValue0123456789"
TOKEN = "FAKEt0kenValue9876543210"


def test_no_secret_reaches_the_store_or_the_logs(own_cohort, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)

    class SecretiveWarehouse(LocalWarehouse):  # a warehouse whose URI carries credentials
        def describe(self):
            return f"s3://AKIAFAKE:{SECRET}@bucket/wh?session_token={TOKEN}&region=eu-west-1"

    wh = SecretiveWarehouse(own_cohort.warehouse.path)
    caplog.set_level(logging.DEBUG)
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=wh)
    Loader(store, wh).load(["S0001", "S0007"], progress=False)
    store.gc()
    store.verify(warehouse=wh, cells=5)
    assert "bucket/wh" in json.loads((store.storage.root / "manifest.json").read_text())["warehouse"]
    # XR_METHYL_CACHE: the session's cache folder (opens record the axis files they checked), never the user's.
    env = {
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "PATH": "/usr/bin:/bin",
        "XR_METHYL_CACHE": os.environ["XR_METHYL_CACHE"],
    }
    runs = [
        subprocess.run(
            [sys.executable, "-m", "xr_methyl.cli", "-v", *args], capture_output=True, text=True, env=env, timeout=120
        )
        for args in (
            ["ensure", store.storage.root, "S0002", "--warehouse", own_cohort.warehouse.path, "--no-progress"],
            ["init", tmp_path / "t.zarr", "--warehouse", f"https://user:{SECRET}@host/x?token={TOKEN}"],
            ["verify", store.storage.root],
            ["gc", store.storage.root],
            ["info", store.storage.root],
        )
    ]
    assert runs[1].returncode == 1 and "https://***@host" in runs[1].stderr
    texts = [caplog.text] + [r.stdout + r.stderr for r in runs]
    texts += [p.read_bytes().decode("latin-1") for p in store.storage.root.rglob("*") if p.is_file()]
    for text in texts:
        assert SECRET not in text and TOKEN not in text
