"""Opening a store refuses files that do not say what the store was created with.

Every file that labels the columns (``cpg_ids.npy`` and ``cpg_index/``) is
checked against the sha256 the manifest records, on disk and through the local
copy of an S3 store's axis; files found right are remembered by their identity
so that later opens do not read them again.  The manifest and the sidecars are
refused when they lack what the code reads.
"""

import json
import logging
import os
import re
import shutil
import time

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr

from xr_methyl import CorruptStoreError, Layout, MethylStore
from xr_methyl.storage.s3 import S3Storage
from xr_methyl.store import cpg_axis
from xr_methyl.store.cpg_axis import INDEX_FILES

IDS = [f"cg{i:08d}" for i in range(40)]
LAYOUT = Layout(sample_block=4, chunk_rows=4, cpg_chunk=16, cpg_shard=32)


def shuffled_table():
    """40 CpGs on chr1 and chr2, not in genome order (so the axis has locus_order.npy too);
    the first two differ in every column."""
    order = np.r_[0, 20, np.random.default_rng(4).permutation(np.r_[1:20, 21:40])]
    chrom = np.array(["chr1"] * 20 + ["chr2"] * 20)[order]
    pos = (1000 + 7 * np.arange(40))[order]
    return pa.table(
        {"cpg_id": [f"{c}:{p}" for c, p in zip(chrom, pos)], "chrom": chrom.tolist(), "pos": pa.array(pos, pa.int64())}
    )


def swap_first_two(path):
    """Rewrite a .npy file with two entries swapped: same length, same dtype, other content."""
    array = np.load(path)
    array[[0, 1]] = array[[1, 0]]
    np.save(path, array)


@pytest.fixture
def hashed(monkeypatch):
    """Names of the axis files hashed, in order; files settle after 50 ms instead of 2 s."""
    names = []
    original = cpg_axis._DIGESTS["file"]
    monkeypatch.setitem(cpg_axis._DIGESTS, "file", lambda path: names.append(path.name) or original(path))
    monkeypatch.setattr(cpg_axis, "SETTLE_SECONDS", 0.05)
    return names


def test_a_replaced_cpg_ids_file_is_refused_at_open(tmp_path):
    path = tmp_path / "s.zarr"
    MethylStore.create(path, cpg_ids=IDS)
    ids = np.load(path / "cpg_ids.npy")
    ids[7] = b"cgCHANGED"
    np.save(path / "cpg_ids.npy", ids)
    for opening in (MethylStore.open, lambda p: xr.open_dataset(p, engine="methylzarr")):
        with pytest.raises(
            CorruptStoreError,
            match=r"cpg_ids\.npy: it differs from what the store was created "
            r"with .* put the original file back",
        ):
            opening(path)


@pytest.mark.parametrize("name", ["cpg_ids.npy", *(f"cpg_index/{n}" for n in INDEX_FILES)])
def test_every_file_that_labels_columns_is_checked(tmp_path, name):
    store = MethylStore.create(tmp_path / "s.zarr", cpg_ids=shuffled_table(), layout=LAYOUT)
    assert name in store.manifest.axis_files
    swap_first_two(store.storage.root / name)
    with pytest.raises(CorruptStoreError, match=re.escape(f"{name}: it differs")):
        MethylStore.open(store.storage.root)


def test_a_missing_axis_file_or_one_the_store_was_not_created_with_is_refused(tmp_path):
    store = MethylStore.create(
        tmp_path / "s.zarr", cpg_ids=shuffled_table().sort_by([("chrom", "ascending"), ("pos", "ascending")])
    )
    index = store.storage.root / "cpg_index"
    assert not (index / "locus_order.npy").exists()  # a genome-order axis needs none
    np.save(index / "locus_order.npy", np.arange(40)[::-1])  # would reorder every region look-up
    with pytest.raises(CorruptStoreError, match="locus_order.npy is not one of the CpG axis files"):
        MethylStore.open(store.storage.root)
    (index / "locus_order.npy").unlink()
    (index / "sorted_ids.npy").unlink()
    with pytest.raises(CorruptStoreError, match=r"cpg_index/sorted_ids\.npy is missing"):
        MethylStore.open(store.storage.root)


def test_files_checked_once_are_read_again_only_after_a_change_or_a_copy(tmp_path, hashed):
    path = tmp_path / "s.zarr"
    store = MethylStore.create(path, cpg_ids=IDS)
    assert hashed == []  # the create wrote the files: it does not hash them again
    time.sleep(0.1)  # let the files settle (see SETTLE_SECONDS)
    MethylStore.open(path)
    assert sorted(hashed) == sorted(key.rsplit("/", 1)[-1] for key in store.manifest.axis_files)
    n = len(hashed)
    MethylStore.open(path)
    xr.open_dataset(path, engine="methylzarr")
    assert len(hashed) == n  # remembered

    # Rewritten in place with the same size and the old mtime put back: the ctime still tells.
    ids_path = path / "cpg_ids.npy"
    original, st = ids_path.read_bytes(), ids_path.stat()
    ids_path.write_bytes(original[:-1] + b"8")  # the last id, cg00000039, becomes cg00000038: a duplicate
    os.utime(ids_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ids_path.stat().st_size == st.st_size and ids_path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(CorruptStoreError, match="cpg_ids.npy: it differs"):
        MethylStore.open(path)
    ids_path.write_bytes(original)
    assert MethylStore.open(path).cpg_axis.labels().tolist() == IDS

    # A copy elsewhere (times kept) is a new set of files: checked on its first open.
    shutil.copytree(path, tmp_path / "copy.zarr")
    before = len(hashed)
    MethylStore.open(tmp_path / "copy.zarr")
    assert len(hashed) > before


def test_an_unwritable_record_folder_only_costs_a_check_at_every_open(tmp_path, hashed, monkeypatch, caplog):
    (tmp_path / "not-a-folder").write_text("x")
    monkeypatch.setenv("XR_METHYL_CACHE", str(tmp_path / "not-a-folder"))
    monkeypatch.setattr(cpg_axis, "_cannot_remember_warned", False)
    MethylStore.create(tmp_path / "s.zarr", cpg_ids=IDS)
    time.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="xr_methyl.store.cpg_axis"):
        for _ in range(2):
            assert MethylStore.open(tmp_path / "s.zarr").cpg_axis.labels().tolist() == IDS
    assert hashed.count("cpg_ids.npy") == 2
    assert caplog.text.count("every open will hash it again") == 1


def test_stores_without_per_file_hashes_check_their_ids(tmp_path):
    """Stores created before the manifest recorded each axis file's sha256: their ids are checked against
    cpg_ids_sha256."""
    store = MethylStore.create(tmp_path / "s.zarr", cpg_ids=IDS)
    root = store.storage.root
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["axis_files"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert MethylStore.open(root).cpg_axis.labels().tolist() == IDS
    swap_first_two(root / "cpg_ids.npy")
    with pytest.raises(CorruptStoreError, match="cpg_ids.npy: the ids it holds differ"):
        MethylStore.open(root)


def test_the_local_copy_of_an_s3_axis_is_checked_and_downloaded_again_when_damaged(
    moto_server, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("XR_METHYL_CACHE", str(tmp_path / "cache"))
    uri, opts = f"s3://{moto_server.new_bucket()}/s.zarr", moto_server.options
    MethylStore.create(uri, cpg_ids=IDS, storage_options=opts)  # fills the local copy with the bytes it wrote
    (copy,) = (tmp_path / "cache" / "cpg_axis").iterdir()
    swap_first_two(copy / "cpg_ids.npy")
    with caplog.at_level(logging.WARNING, logger="xr_methyl.store.cpg_axis"):
        store = MethylStore.open(uri, storage_options=opts)
    assert store.cpg_axis.labels().tolist() == IDS
    assert "cpg_ids.npy: it differs" in caplog.text and "downloading it again" in caplog.text
    # A changed object on S3 is refused when it is downloaded.
    sorted_ids = np.load(copy / "cpg_index" / "sorted_ids.npy")
    S3Storage(uri, opts).write_atomic("cpg_index/sorted_ids.npy", _npy(sorted_ids[::-1]))
    shutil.rmtree(copy)
    with pytest.raises(CorruptStoreError, match="sorted_ids.npy does not match the sha256"):
        MethylStore.open(uri, storage_options=opts)


def _npy(array) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("key", "edit", "message"),
    [
        ("manifest.json", lambda m: m.pop("layout"), "manifest.json: layout is missing"),
        ("manifest.json", lambda m: m.update(n_cpgs="forty"), "manifest.json: n_cpgs is 'forty'"),
        ("manifest.json", lambda m: m.update(coverage_dtype="float32"), "coverage_dtype is 'float32'"),
        ("manifest.json", lambda m: m["layout"].update(chunk_shape=[4]), "manifest.json: layout is"),
        ("manifest.json", lambda m: m.update(axis_files=["cpg_ids.npy"]), "manifest.json: axis_files is"),
        ("ingested_batches.json", lambda d: d.update(B1=5), "ingested_batches.json: batch 'B1' holds 5"),
        ("samples.json", lambda d: d.update(a="x"), "samples.json: sample 'a' holds 'x'"),
    ],
)
def test_open_refuses_a_manifest_or_sidecar_of_the_wrong_shape(tmp_path, key, edit, message):
    store = MethylStore.create(tmp_path / "s.zarr", cpg_ids=IDS, layout=LAYOUT)
    store.append("B1", ["a"], np.full((1, 40), 0.5, np.float32), np.ones((1, 40), np.uint16))
    path = store.storage.root / key
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptStoreError, match=re.escape(message)):
        MethylStore.open(store.storage.root)


def test_provenance_of_the_wrong_shape_is_refused_where_it_is_read(tmp_path):
    store = MethylStore.create(tmp_path / "s.zarr", cpg_ids=IDS, layout=LAYOUT)
    store.append(
        "B1",
        ["a"],
        np.full((1, 40), 0.5, np.float32),
        np.ones((1, 40), np.uint16),
        provenance={"queries": [{"query_id": "q1", "bytes_scanned": 10, "dollars": 0.5}]},
    )
    assert store.cost() == {"queries": 1, "bytes_scanned": 10, "dollars": 0.5}
    path = store.storage.root / "provenance.json"
    doc = json.loads(path.read_text())
    doc["B1"][0]["queries"][0]["bytes_scanned"] = "lots"
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptStoreError, match=r"provenance\.json: batch 'B1': query 'q1' has bytes_scanned 'lots'"):
        MethylStore.open(store.storage.root).info()
