"""The store on its own: layout, append rule, the single commit point, refusals.

Tests that take ``any_store`` run on a local directory and on S3 (moto's server).
"""

import hashlib
import json
import threading

import numpy as np
import pyarrow as pa
import pytest
import zarr

from xr_methyl import CorruptStoreError, DataError, Layout, MethylStore, StoreExistsError, StoreNotFoundError
from xr_methyl.errors import StoreConflictError
from xr_methyl.testing.faulty_storage import FaultyStorage

N_CPGS = 100
LAYOUT = Layout(sample_block=4, chunk_rows=4, cpg_chunk=16, cpg_shard=64)


def cpg_table(n=N_CPGS):
    return pa.table(
        {
            "cpg_id": [f"chr{1 + i // 50}:{100 + i}" for i in range(n)],
            "chrom": [f"chr{1 + i // 50}" for i in range(n)],
            "pos": pa.array([100 + i for i in range(n)], pa.int64()),
        }
    )


def make_block(n_samples, seed=0, n_cpgs=N_CPGS):
    rng = np.random.default_rng(seed)
    beta = rng.random((n_samples, n_cpgs), dtype=np.float32)
    beta[rng.random(beta.shape) < 0.2] = np.nan
    coverage = np.where(np.isnan(beta), 0, rng.integers(1, 60, beta.shape)).astype(np.uint16)
    return beta, coverage


@pytest.fixture
def store(tmp_path):
    return MethylStore.create(tmp_path / "s.methyl.zarr", cpg_ids=cpg_table(), layout=LAYOUT)


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path):
    """The same empty store in a local directory, then under an S3 prefix."""
    if request.param == "local":
        return MethylStore.create(tmp_path / "s.methyl.zarr", cpg_ids=cpg_table(), layout=LAYOUT)
    moto = request.getfixturevalue("moto_server")
    return MethylStore.create(
        f"s3://{moto.new_bucket()}/s.methyl.zarr", cpg_ids=cpg_table(), layout=LAYOUT, storage_options=moto.options
    )


def chunk_files(store):
    """sha256 of every chunk/shard object under both arrays."""
    return {
        key: hashlib.sha256(store.storage.read_bytes(key)).hexdigest()
        for key, _ in sorted(store.storage.walk())
        if "/c/" in key
    }


def raw_array(store, name="beta.zarr"):
    """An array as plain zarr sees it (all rows, committed or not)."""
    return zarr.open_array(store.storage.zarr_store(name, read_only=True), mode="r")


def test_create_writes_the_documented_layout(store, tmp_path):
    root = tmp_path / "s.methyl.zarr"
    names = {p.name for p in root.iterdir()}
    assert {
        "beta.zarr",
        "coverage.zarr",
        "cpg_ids.npy",
        "cpg_index",
        "sample_ids.json",
        "ingested_batches.json",
        "samples.json",
        "manifest.json",
    } <= names
    assert {p.name for p in (root / "cpg_index").iterdir()} == {
        "sorted_ids.npy",
        "sorted_order.npy",
        "chrom.npy",
        "chrom_names.npy",
        "pos.npy",
        "locus_keys.npy",
    }
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["n_cpgs"] == N_CPGS
    assert manifest["layout"] == {"sample_block": 4, "chunk_shape": [4, 16], "shard_shape": [4, 64]}
    assert manifest["cpg_ids_sha256"] == store.cpg_axis.sha256
    beta = zarr.open_array(root / "beta.zarr", mode="r")
    assert beta.shape == (0, N_CPGS) and beta.dtype == np.float32
    assert beta.metadata.dimension_names == ("sample", "cpg")
    assert np.load(root / "cpg_ids.npy").astype(str).tolist() == cpg_table().column("cpg_id").to_pylist()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_create_refuses_to_overwrite(tmp_path, store):
    with pytest.raises(StoreExistsError, match="never overwrites"):
        MethylStore.create(tmp_path / "s.methyl.zarr", cpg_ids=cpg_table())
    (tmp_path / "a_file").write_text("keep me")
    with pytest.raises(FileExistsError):
        MethylStore.create(tmp_path / "a_file", cpg_ids=cpg_table())
    assert (tmp_path / "a_file").read_text() == "keep me"


@pytest.mark.parametrize(
    ("ids", "message"),
    [(["a", "b", "a"], "more than once"), (["ok", "has space"], "printable ASCII"), ([], "empty")],
)
def test_create_with_a_bad_axis_leaves_nothing(tmp_path, ids, message):
    with pytest.raises(DataError, match=message):
        MethylStore.create(tmp_path / "bad.zarr", cpg_ids=ids)
    assert list(tmp_path.iterdir()) == []


def test_append_round_trips_and_pads_to_whole_blocks(any_store):
    store = any_store
    beta, cov = make_block(3)
    assert store.append("B1", ["a", "b", "c"], beta, cov, metadata={"a": {"age": 30.0}}) == ["a", "b", "c"]
    reopened = MethylStore.open(store.storage)
    assert reopened.commit.rows == ["a", "b", "c", None]
    assert reopened.batches == {"B1": ["a", "b", "c"]}
    assert reopened.commit.samples["a"] == {"batch_id": "B1", "age": 30.0}
    np.testing.assert_array_equal(reopened.read("beta", ["c", "a"]), beta[[2, 0]])
    np.testing.assert_array_equal(reopened.read("coverage", ["b"]), cov[[1]])
    raw = raw_array(store)
    assert raw.shape == (4, N_CPGS)
    assert np.isnan(raw[3]).all()  # the padding row


def test_append_never_touches_existing_chunk_objects(any_store):
    store = any_store
    store.append("B1", ["a", "b", "c", "d"], *make_block(4, seed=1))
    store.append("B2", ["e"], *make_block(1, seed=2))
    before = chunk_files(store)
    assert before  # there is something to protect
    store.append("B3", ["f", "g", "h", "i", "j"], *make_block(5, seed=3))
    store.append("B2", ["k"], *make_block(1, seed=4))  # a second part of a batch is a new block too
    after = chunk_files(store)
    assert {k: after[k] for k in before} == before
    assert len(after) > len(before)
    assert store.batches["B2"] == ["e", "k"]


def test_all_empty_rows_write_no_chunk_objects(any_store):
    store = any_store
    beta = np.full((2, N_CPGS), np.nan, np.float32)
    store.append("B0", ["x", "y"], beta, np.zeros((2, N_CPGS), np.uint16))
    assert chunk_files(store) == {}
    assert store.sample_ids == ["x", "y"]
    assert store.verify().ok


def test_samples_committed_meanwhile_are_skipped(any_store):
    store = any_store
    beta, cov = make_block(2)
    store.append("B1", ["a", "b"], beta, cov)
    assert store.append("B1", ["b", "c"], beta, cov) == ["c"]
    assert store.sample_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(store.read("beta", ["c"]), beta[[1]])


def test_bad_blocks_are_refused_before_writing(any_store):
    store = any_store
    beta, cov = make_block(2)
    beta[1, 7] = 1.25
    with pytest.raises(DataError, match="sample 'b'"):
        store.append("B1", ["a", "b"], beta, cov)
    with pytest.raises(DataError, match="expected uint16"):
        store.append("B1", ["a", "b"], make_block(2)[0], cov.astype(np.int32))
    with pytest.raises(DataError, match="unique"):
        store.append("B1", ["a", "a"], *make_block(2))
    assert MethylStore.open(store.storage).sample_ids == []
    assert chunk_files(store) == {}


def test_conditional_writes_really_are_conditional(any_store):
    """The commit's compare-and-swap: on S3 PUT If-Match / If-None-Match, locally a check under the lock."""
    storage = any_store.storage
    _, tag = storage.read_tagged("sample_ids.json")
    new_tag = storage.write_json("sample_ids.json", [None] * 4, if_match=tag)  # (S3 ETags hash the content)
    data = storage.read_bytes("sample_ids.json")
    with pytest.raises(StoreConflictError, match="changed"):
        storage.write_json("sample_ids.json", ["x"], if_match=tag)  # the tag read before someone else's write
    with pytest.raises(StoreConflictError):
        storage.write_json("sample_ids.json", ["x"], if_absent=True)
    assert storage.read_tagged("sample_ids.json") == (data, new_tag)  # nothing was written
    assert storage.write_json("fresh.json", {}, if_absent=True)
    storage.remove("fresh.json")
    with pytest.raises(StoreConflictError, match="changed|removed"):
        storage.write_json("fresh.json", {}, if_match=new_tag)
    assert not storage.exists("fresh.json")


#: Where an append can die, named by what it writes: half of its shards (the second one fails), its block
#: records, each write-ahead sidecar, the commit itself.
FAIL_POINTS = ["*.zarr/c/*", "blocks/*", "ingested_batches.json", "samples.json", "sample_ids.json"]


class Crash(Exception):
    pass


@pytest.mark.parametrize("fail_at", FAIL_POINTS)
def test_a_crash_anywhere_in_an_append_leaves_the_last_commit(any_store, fail_at):
    store = any_store
    first_beta, first_cov = make_block(2, seed=5)
    store.append("B1", ["a", "b"], first_beta, first_cov)
    committed_chunks = chunk_files(store)

    faulty = FaultyStorage(store.storage, fail_at, nth=2 if fail_at == "*.zarr/c/*" else 1, fault=Crash)
    new_beta, new_cov = make_block(5, seed=6)
    with pytest.raises(Crash):
        MethylStore.open(faulty).append("B2", ["c", "d", "e", "f", "g"], new_beta, new_cov)
    assert faulty.fired

    after_crash = MethylStore.open(store.storage)
    assert after_crash.sample_ids == ["a", "b"]
    assert after_crash.batches == {"B1": ["a", "b"]}
    assert set(after_crash.commit.samples) == {"a", "b"}
    np.testing.assert_array_equal(after_crash.read("beta", ["a", "b"]), first_beta)
    assert {k: v for k, v in chunk_files(store).items() if k in committed_chunks} == committed_chunks
    assert not store.storage.exists("write.lock")

    # Re-running the same work completes it, over the orphaned rows.
    other_beta, other_cov = make_block(1, seed=7)
    after_crash.append("B3", ["z"], other_beta, other_cov)
    after_crash.append("B2", ["c", "d", "e", "f", "g"], new_beta, new_cov)
    final = MethylStore.open(store.storage)
    assert final.sample_ids == ["a", "b", "z", "c", "d", "e", "f", "g"]
    np.testing.assert_array_equal(final.read("beta", ["z"]), other_beta)
    np.testing.assert_array_equal(final.read("beta", ["c", "d", "e", "f", "g"]), new_beta)
    np.testing.assert_array_equal(final.read("coverage", ["g", "a"]), np.stack([new_cov[4], first_cov[0]]))
    assert raw_array(store).shape[0] == len(final.commit.rows) == 16
    assert final.verify().ok


def test_concurrent_appends_from_threads_all_commit(any_store):
    store = any_store
    blocks = {f"B{i}": make_block(3, seed=10 + i) for i in range(4)}

    def work(batch):
        ids = [f"{batch}_{k}" for k in range(3)]
        MethylStore.open(store.storage).append(batch, ids, *blocks[batch])

    threads = [threading.Thread(target=work, args=(b,)) for b in blocks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = MethylStore.open(store.storage)
    assert sorted(final.batches) == sorted(blocks)
    for batch, (beta, _) in blocks.items():
        np.testing.assert_array_equal(final.read("beta", final.batches[batch]), beta)


def test_open_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no methylzarr store"):
        MethylStore.open(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreNotFoundError, match="is a file"):
        MethylStore.open(tmp_path / "file")
    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreNotFoundError, match="manifest.json"):
        MethylStore.open(tmp_path / "dir")


def test_open_refuses_a_changed_cpg_axis(store):
    other = MethylStore.create(store.storage.root.parent / "other", cpg_ids=cpg_table(N_CPGS + 1))
    (store.storage.root / "cpg_ids.npy").write_bytes((other.storage.root / "cpg_ids.npy").read_bytes())
    with pytest.raises(CorruptStoreError, match="must never change"):
        MethylStore.open(store.storage.root)


@pytest.mark.parametrize(
    ("key", "content", "message"),
    [
        ("sample_ids.json", '["a", ', "not valid JSON"),
        ("sample_ids.json", "{}", "expected a list"),
        ("sample_ids.json", '["a", 3, null, null]', "list of sample ids"),
        ("sample_ids.json", '["a"]', "multiple of"),
        ("samples.json", "", "not valid JSON"),
        ("manifest.json", '{"format": "other"}', "version"),
    ],
)
def test_open_refuses_corrupt_sidecars(store, key, content, message):
    (store.storage.root / key).write_text(content)
    with pytest.raises(CorruptStoreError, match=message):
        MethylStore.open(store.storage.root).array("beta")


def test_a_zarr_json_edited_to_a_wrong_shape_is_reported(store):
    store.append("B1", ["a"], *make_block(1))
    meta_path = store.storage.root / "beta.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [4, N_CPGS - 1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptStoreError, match="shape"):
        MethylStore.open(store.storage.root).read("beta", ["a"])


def test_layout_is_validated():
    with pytest.raises(ValueError, match="multiple of chunk_rows"):
        Layout(sample_block=6, chunk_rows=4).for_axis(100)
    with pytest.raises(ValueError, match="positive integer"):
        Layout(cpg_chunk=0).for_axis(100)
    assert Layout(cpg_chunk=32, cpg_shard=2**21).for_axis(100) == Layout(8, 1, 32, 128)
