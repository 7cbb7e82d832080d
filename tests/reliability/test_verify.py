"""verify: a healthy store passes; each kind of damage is found and named."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from xr_methyl import Loader, LocalWarehouse, MethylStore
from xr_methyl.store.verify import verify_store
from xr_methyl.testing.faulty_storage import FaultyStorage

IDS = ["S0000", "S0004", "S0009", "S0013", "S0019"]


@pytest.fixture
def filled(store):
    Loader(store).ingest(IDS, progress=False)
    return MethylStore.open(store.storage.root)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "xr_methyl.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_a_healthy_store_passes_including_warehouse_cells(filled):
    report = filled.verify(cells=200, seed=1)
    assert report.ok, report.problems
    assert report.checked["warehouse cells"] == 200 and report.checked["samples"] == 5
    assert report.checked["shards"] > 0
    out = cli("verify", filled.storage.root, "--against-warehouse", 50)
    assert out.returncode == 0 and out.stdout.startswith("healthy:"), out.stdout + out.stderr


def first_shard(store):
    return store.storage.root / store.shard_keys("beta", 0)[0]


def truncate(store):
    path = first_shard(store)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(store):
    path = first_shard(store)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_zarr_json(**changes):
    def edit(store):
        path = store.storage.root / "beta.zarr" / "zarr.json"
        meta = json.loads(path.read_text())
        meta.update(changes)
        path.write_text(json.dumps(meta))
    return edit


def drop_from_samples_json(store):
    path = store.storage.root / "samples.json"
    doc = json.loads(path.read_text())
    del doc["S0004"]
    path.write_text(json.dumps(doc))


def move_between_batches(store):
    path = store.storage.root / "ingested_batches.json"
    doc = json.loads(path.read_text())
    doc["B999"] = ["S0004"]
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncate, "differs from what was written"),
        (flip_a_byte, "differs from what was written"),
        (lambda s: first_shard(s).unlink(), "is missing"),
        (lambda s: (s.storage.root / "blocks" / "00000000.json").write_text("{"), "not valid JSON"),
        (edit_zarr_json(data_type="float64"), "dtype float64"),
        (edit_zarr_json(shape=[4, 3000]), "shape"),
        (drop_from_samples_json, "'S0004' has no entry in samples.json"),
        (move_between_batches, "'S0004' is listed in 2 batches"),
        (lambda s: (s.storage.root / "cpg_ids.npy").write_bytes(b"\x93NUMPY"), "does not open"),
        (lambda s: (s.storage.root / "sample_ids.json").write_text('["S0000", '), "does not open.*not valid JSON"),
    ],
)
def test_damage_is_found_and_named(filled, damage, message):
    damage(filled)
    report = verify_store(filled.storage.root)
    assert not report.ok
    assert any(__import__("re").search(message, p) for p in report.problems), report.problems
    out = cli("verify", filled.storage.root)
    assert out.returncode == 1 and out.stdout.startswith("NOT healthy")


def test_cells_that_differ_from_the_warehouse_are_reported(tmp_path):
    def warehouse(path, value):
        wh = LocalWarehouse(path)
        wh.create_tables()
        wh.append("cpgs", pa.table({"cpg_id": ["c1", "c2"], "chrom": ["chr1"] * 2,
                                    "pos": pa.array([1, 2], pa.int64())}))
        wh.append("sample_batch_map", pa.table({"sample_id": ["a"], "batch_id": ["P"]}))
        wh.append("beta", pa.table({"batch_id": ["P", "P"], "sample_id": ["a", "a"], "cpg_id": ["c1", "c2"],
                                    "beta": [value, value]}))
        wh.append("coverage", pa.table({"batch_id": ["P"], "sample_id": ["a"], "cpg_id": ["c1"],
                                        "coverage": pa.array([5], pa.int64())}))
        return wh
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=warehouse(tmp_path / "wh", 0.25))
    Loader(store).ingest(["a"], progress=False)
    assert store.verify(cells=20, seed=0).ok
    other = warehouse(tmp_path / "changed", 0.75)  # the warehouse now says something else
    report = store.verify(warehouse=other, cells=20, seed=0)
    assert any("beta of ('a', 'c" in p and "0.75" in p for p in report.problems), report.problems
    out = cli("verify", store.storage.root, "--against-warehouse", 5, "--warehouse", other.path)
    assert out.returncode == 1 and "warehouse has 0.75" in out.stdout


def test_verify_of_a_path_that_is_not_a_store(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "missing"):
        report = verify_store(path)
        assert not report.ok and "does not open" in report.problems[0]
        assert cli("verify", path).returncode == 1


def test_orphans_are_a_note_not_a_problem(filled):
    class Crash(Exception):
        pass
    with pytest.raises(Crash):  # the shards are written, not the block records
        Loader(MethylStore.open(FaultyStorage(filled.storage, "blocks/*", fault=Crash))).ingest(["S0001"],
                                                                                                 progress=False)
    (filled.storage.root / "write.lock").unlink(missing_ok=True)
    report = verify_store(filled.storage.root)
    assert report.ok and any("uncommitted row" in n for n in report.notes)
    np.testing.assert_array_equal(MethylStore.open(filled.storage.root).sample_ids, IDS)
