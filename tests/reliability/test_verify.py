"""verify: a healthy store passes; each kind of damage is found and named."""

import io
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
    return subprocess.run(
        [sys.executable, "-m", "xr_methyl.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )


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


def edit_json(key, change):
    def edit(store):
        path = store.storage.root / key
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return edit


def swap_first_two(key):
    def edit(store):
        path = store.storage.root / key
        array = np.load(path)
        array[[0, 1]] = array[[1, 0]]
        np.save(path, array)

    return edit


def remove(key):
    return lambda store: (store.storage.root / key).unlink()


def garbage(key):
    return lambda store: (store.storage.root / key).write_text("{ not json")


def reversed_record(store):
    path = store.storage.root / "blocks" / "00000000.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "block": 1}))


# Each damage names the file it is in; every one makes verify say NOT healthy and exit 1.
DAMAGE = {
    "garbage JSON": [
        (garbage(key), key.removesuffix("/zarr.json"))
        for key in (
            "manifest.json",
            "samples.json",
            "ingested_batches.json",
            "provenance.json",
            "coverage.zarr/zarr.json",
            "blocks/00000000.json",
        )
    ],
    # blocks/00000000.json: a deleted block record
    "missing file": [
        (remove(key), key.removesuffix("/zarr.json"))
        for key in (
            "manifest.json",
            "samples.json",
            "ingested_batches.json",
            "sample_ids.json",
            "cpg_ids.npy",
            "cpg_index/sorted_ids.npy",
            "cpg_index/locus_keys.npy",
            "coverage.zarr/zarr.json",
            "blocks/00000000.json",
        )
    ],
    "wrong schema": [
        (edit_json("manifest.json", lambda m: m.pop("layout")), "manifest.json: layout is missing"),
        (edit_json("manifest.json", lambda m: m.update(coverage_dtype="int8")), "manifest.json: coverage_dtype"),
        (edit_json("samples.json", lambda d: d.update(S0000=["F", 40])), "samples.json: sample 'S0000'"),
        (edit_json("ingested_batches.json", lambda d: d.update(B0="S0000")), "ingested_batches.json: batch 'B0'"),
        (edit_json("provenance.json", lambda d: d.update(B0="paid")), "provenance.json: batch 'B0'"),
        (
            edit_json("provenance.json", lambda d: next(iter(d.values()))[0].update(samples="S0000")),
            "provenance.json: batch",
        ),
        (edit_json("blocks/00000000.json", lambda d: d.update(beta=[1, 2])), "blocks/00000000.json does not hold"),
        (reversed_record, "blocks/00000000.json does not hold the shard record of block 0"),
    ],
    "changed axis": [
        (swap_first_two("cpg_ids.npy"), "cpg_ids.npy: it differs"),
        (swap_first_two("cpg_index/sorted_order.npy"), "cpg_index/sorted_order.npy: it differs"),
        (swap_first_two("cpg_index/pos.npy"), "cpg_index/pos.npy: it differs"),
        (swap_first_two("cpg_index/chrom_names.npy"), "cpg_index/chrom_names.npy: it differs"),
    ],
}


@pytest.mark.parametrize(
    ("damage", "names"),
    [case for cases in DAMAGE.values() for case in cases],
    ids=[f"{kind}-{i}" for kind, cases in DAMAGE.items() for i in range(len(cases))],
)
def test_every_file_of_the_store_is_checked(filled, damage, names):
    damage(filled)
    report = verify_store(filled.storage.root)
    assert not report.ok
    assert any(names in p for p in report.problems), report.problems
    out = cli("verify", filled.storage.root)
    assert out.returncode == 1 and out.stdout.startswith("NOT healthy") and names in out.stdout, out.stdout


def test_what_makes_info_fail_makes_verify_fail(filled):
    (filled.storage.root / "provenance.json").write_text("[1, 2")
    info = cli("info", filled.storage.root)
    assert info.returncode == 1 and "provenance.json" in info.stderr
    out = cli("verify", filled.storage.root)
    assert out.returncode == 1 and "provenance.json is not valid JSON" in out.stdout, out.stdout


def test_verify_names_damaged_objects_on_s3(moto_server, warehouse):
    opts = moto_server.options
    store = MethylStore.create(
        f"s3://{moto_server.new_bucket()}/s.methyl.zarr", warehouse=warehouse, storage_options=opts
    )
    Loader(store).ingest(IDS[:2], progress=False)
    assert verify_store(store.storage.uri, storage_options=opts).ok
    ids = np.load(io.BytesIO(store.storage.read_bytes("cpg_ids.npy")))
    ids[[0, 1]] = ids[[1, 0]]
    changed = io.BytesIO()
    np.save(changed, ids)
    store.storage.write_atomic("cpg_ids.npy", changed.getvalue())
    store.storage.remove("blocks/00000000.json")
    store.storage.write_atomic("provenance.json", b"{")
    problems = " | ".join(verify_store(store.storage.uri, storage_options=opts).problems)
    for name in ("cpg_ids.npy: it differs", "blocks/00000000.json (the shard record", "provenance.json"):
        assert name in problems, problems


def test_cells_that_differ_from_the_warehouse_are_reported(tmp_path):
    def warehouse(path, value):
        wh = LocalWarehouse(path)
        wh.create_tables()
        wh.append(
            "cpgs", pa.table({"cpg_id": ["c1", "c2"], "chrom": ["chr1"] * 2, "pos": pa.array([1, 2], pa.int64())})
        )
        wh.append("sample_batch_map", pa.table({"sample_id": ["a"], "batch_id": ["P"]}))
        wh.append(
            "beta",
            pa.table({"batch_id": ["P", "P"], "sample_id": ["a", "a"], "cpg_id": ["c1", "c2"], "beta": [value, value]}),
        )
        wh.append(
            "coverage",
            pa.table({"batch_id": ["P"], "sample_id": ["a"], "cpg_id": ["c1"], "coverage": pa.array([5], pa.int64())}),
        )
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
        Loader(MethylStore.open(FaultyStorage(filled.storage, "blocks/*", fault=Crash))).ingest(
            ["S0001"], progress=False
        )
    (filled.storage.root / "write.lock").unlink(missing_ok=True)
    report = verify_store(filled.storage.root)
    assert report.ok and any("uncommitted row" in n for n in report.notes)
    np.testing.assert_array_equal(MethylStore.open(filled.storage.root).sample_ids, IDS)
