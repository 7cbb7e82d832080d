"""Damaged bytes are an error naming the object; a bug is not the store's fault; older stores still read.

Every inner chunk of beta, coverage and the CpG-major copy ends in a crc32c.
One flipped byte inside a chunk's payload (not the shard index) must raise
``CorruptStoreError`` naming the shard, whichever way the values are read (a
full ``.values``, an ``ensure()`` result, a list of CpGs) and wherever the
store lives (local disk: xr_methyl's own readers; S3: zarr's), and ``verify``
must report it.  Any other failure of a read propagates as itself.  Stores
created before the checksums (no crc32c in their ``zarr.json``) open, read,
take appends and verify as before.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import xarray as xr
import zarr

from xr_methyl import CorruptStoreError, Layout, Loader, MethylStore
from xr_methyl.store.layout import ARRAY_KEYS
from xr_methyl.store.verify import verify_store

IDS = ["S0000", "S0004", "S0009"]  # two in the first 8-sample block (shards c/0/*), one in the next
EMPTY = 2**64 - 1
BY_CPG_CHUNK = 64


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    """Where a test's store lives, and the storage options to open it with."""
    if request.param == "local":
        return str(tmp_path / "s.methyl.zarr"), {}
    moto = request.getfixturevalue("moto_server")
    return f"s3://{moto.new_bucket()}/s.methyl.zarr", moto.options


def filled_store(location, warehouse, **layout) -> MethylStore:
    path, options = location
    store = MethylStore.create(
        path, warehouse=warehouse, layout=Layout(by_cpg_chunk=BY_CPG_CHUNK, **layout), storage_options=options or None
    )
    Loader(store).ingest(IDS, progress=False)
    return MethylStore.open(path, storage_options=options or None)


def open_dataset(store, location):
    return xr.open_dataset(location[0], engine="methylzarr", storage_options=location[1] or None)


def flip_a_byte_in_a_chunk(store, name: str) -> tuple[str, str, int]:
    """Flip one byte in the middle of the first stored inner chunk of shard ``c/0/0`` of an array.

    Returns the shard's key, the sample of the chunk's (first) row and the
    chunk's first column.  The shard index is left as it was (its own crc32c
    still matches): only the chunk's payload changes.
    """
    arr = store.array(name)
    inner = arr.metadata.codecs[0].chunk_shape
    per_shard = (arr.shards[0] // inner[0], arr.shards[1] // inner[1])
    key = f"{ARRAY_KEYS[name]}/c/0/0"
    data = bytearray(store.storage.read_bytes(key))
    n_index = per_shard[0] * per_shard[1] * 16 + 4
    index = np.frombuffer(bytes(data[-n_index:-4]), "<u8").reshape(*per_shard, 2)
    row, col = (int(x) for x in np.argwhere(index[..., 0] != EMPTY)[0])
    offset, length = (int(x) for x in index[row, col])
    assert offset + length <= len(data) - n_index and length > 8
    data[offset + length // 2] ^= 0x10
    store.storage.write_atomic(key, bytes(data))
    return key, store.commit.rows[row * inner[0]], col * inner[1]


def names(key: str):
    """A regex for an error naming the shard ``key`` (a file path or an s3:// URI ending in it)."""
    return re.escape(key) + r": inner chunk \(\d+, \d+\) does not match its crc32c"


@pytest.mark.parametrize("name", ["beta", "coverage"])
def test_a_damaged_chunk_of_beta_or_coverage_is_an_error_naming_its_shard(location, warehouse, name):
    store = filled_store(location, warehouse)
    key, sample, col = flip_a_byte_in_a_chunk(store, name)
    ds = open_dataset(store, location)
    with pytest.raises(CorruptStoreError, match=names(key)):
        _ = ds[name].values
    with pytest.raises(CorruptStoreError, match=names(key)):
        _ = ds.methyl.ensure([IDS[2], sample], progress=False)[name].values
    with pytest.raises(CorruptStoreError, match=names(key)):
        _ = ds[name].sel(sample=sample).values  # one row: read by zarr itself
    with pytest.raises(CorruptStoreError, match=names(key)):
        _ = ds[name].isel(cpg=slice(col, col + 100)).values
    if name == "coverage":  # a list of CpGs (beta's is read from the copy, whole here)
        with pytest.raises(CorruptStoreError, match=names(key)):
            _ = ds.coverage.isel(cpg=[col + 1, col + 2, store.n_cpgs - 1]).values
    others = [s for s in IDS if s != sample and store.commit.row_of[s] >= store.layout.sample_block]
    assert ds[name].sel(sample=others).values.shape == (len(others), store.n_cpgs)  # other shards still read
    report = verify_store(location[0], storage_options=location[1] or None)
    assert any(re.search(names(key), p) for p in report.problems), report.problems


def test_a_damaged_chunk_of_the_cpg_major_copy_is_an_error_naming_its_shard(location, warehouse):
    store = filled_store(location, warehouse)
    key, _, col = flip_a_byte_in_a_chunk(store, "beta_by_cpg")
    ds = open_dataset(store, location)
    with pytest.raises(CorruptStoreError, match=names(key)):
        _ = ds.beta.isel(cpg=[col + 3, col + 1]).values  # a few scattered CpGs: read from the copy
    labels = [str(c) for c in ds.cpg.values[[col + 5, col + 60]]]
    with pytest.raises(CorruptStoreError, match=names(key)):
        _ = ds.beta.sel(sample=IDS[:2], cpg=labels).values
    np.testing.assert_array_equal(ds.beta.values[:, [col + 3]], ds.beta.isel(cpg=slice(col + 3, col + 4)).values)
    report = verify_store(location[0], storage_options=location[1] or None)
    assert any(re.search(names(key), p) for p in report.problems), report.problems


def test_a_truncated_shard_is_an_error_naming_it(tmp_path, warehouse):
    store = filled_store((str(tmp_path / "s.methyl.zarr"), {}), warehouse)
    key = "beta.zarr/c/0/0"
    data = store.storage.read_bytes(key)
    store.storage.write_atomic(key, data[: len(data) // 2])
    with pytest.raises(CorruptStoreError, match=re.escape(key) + ".*(truncated|checksum)"):
        _ = xr.open_dataset(store.storage.root, engine="methylzarr").beta.values


# -- a bug is not damage -----------------------------------------------------------------------------------
def test_a_bug_in_our_reader_propagates_as_itself(tmp_path, warehouse, monkeypatch):
    store = filled_store((str(tmp_path / "s.methyl.zarr"), {}), warehouse)

    def buggy_read_rows(*args, **kwargs):
        raise TypeError("a bug, not damage")

    monkeypatch.setattr("xr_methyl.dataset.backend.read_rows", buggy_read_rows)
    with pytest.raises(TypeError, match="a bug, not damage") as caught:
        _ = xr.open_dataset(store.storage.root, engine="methylzarr").beta.values
    assert not isinstance(caught.value, CorruptStoreError)


def test_a_failing_zarr_read_of_whole_bytes_propagates_as_itself(location, warehouse, monkeypatch):
    """zarr's reads (CpGs out of order; every read on S3) fail for a reason that is not the bytes: it stays itself."""
    store = filled_store(location, warehouse)

    async def failing(self, *args, **kwargs):
        raise IndexError("zarr was handed a selection it cannot take")

    monkeypatch.setattr(zarr.AsyncArray, "get_orthogonal_selection", failing)
    with pytest.raises(IndexError, match="cannot take") as caught:
        store.read("coverage", ["S0004"], np.array([7, 3]))  # CpGs not in order: zarr reads them, on disk too
    assert not isinstance(caught.value, CorruptStoreError)
    ds = open_dataset(store, location)
    if location[0].startswith("s3://"):
        with pytest.raises(IndexError, match="cannot take") as caught:
            _ = ds.coverage.values
        assert not isinstance(caught.value, CorruptStoreError)


# -- stores created before the checksums -------------------------------------------------------------------
def without_chunk_checksums(store) -> None:
    """Rewrite each (still empty) array's zarr.json with the inner codecs stores were created with before."""
    for name in store.array_names:
        key = f"{ARRAY_KEYS[name]}/zarr.json"
        meta = json.loads(store.storage.read_bytes(key))
        inner = meta["codecs"][0]["configuration"]["codecs"]
        assert inner[-1] == {"name": "crc32c"}
        inner.pop()
        store.storage.write_atomic(key, json.dumps(meta).encode())


@pytest.mark.parametrize("by_cpg_codec", ["zstd", "raw"])
def test_a_store_without_chunk_checksums_opens_reads_and_grows_as_before(location, warehouse, truth, by_cpg_codec):
    path, options = location
    store = MethylStore.create(
        path,
        warehouse=warehouse,
        storage_options=options or None,
        layout=Layout(by_cpg_chunk=BY_CPG_CHUNK, by_cpg_codec=by_cpg_codec),
    )
    without_chunk_checksums(store)
    Loader(MethylStore.open(path, storage_options=options or None)).ingest(IDS, progress=False)
    store = MethylStore.open(path, storage_options=options or None)
    for name in store.array_names:  # appends follow each array's zarr.json: still no checksums
        assert "crc32c" not in [codec.to_dict()["name"] for codec in store.array(name).metadata.codecs[0].codecs]

    ds = open_dataset(store, location)
    order = ["S0009", "S0000", "S0004", "S0009"]
    cols = [3, 1500, 64, 2999]
    np.testing.assert_array_equal(ds.beta.sel(sample=order).values, truth.beta.loc[order].to_numpy())
    np.testing.assert_array_equal(ds.coverage.values, truth.coverage.loc[IDS].to_numpy())
    np.testing.assert_array_equal(ds.beta.isel(cpg=cols).values, truth.beta.loc[IDS].iloc[:, cols].to_numpy())
    np.testing.assert_array_equal(ds.beta.sel(sample="S0004").values, truth.beta.loc["S0004"].to_numpy())
    more = ["S0013", "S0017"]
    grown = ds.methyl.ensure(more, progress=False)  # an append to the old store, in its own codecs
    np.testing.assert_array_equal(grown.beta.values, truth.beta.loc[more].to_numpy())
    np.testing.assert_array_equal(grown.beta.isel(cpg=cols).values, truth.beta.loc[more].iloc[:, cols].to_numpy())
    store = MethylStore.open(path, storage_options=options or None)
    copy = store.array("beta_by_cpg")  # zarr reads the copy's shards encoded here
    rows = [store.commit.row_of[s] for s in more]
    np.testing.assert_array_equal(copy.get_orthogonal_selection((rows, slice(None))), truth.beta.loc[more].to_numpy())
    report = store.verify()
    assert report.ok, report.problems
