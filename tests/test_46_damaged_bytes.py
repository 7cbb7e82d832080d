"""A read that fails is CorruptStoreError only when the bytes are damaged; any other failure is itself.

A truncated shard raises ``CorruptStoreError`` naming it; a bug in a reader,
or zarr failing for a reason that is not the bytes, propagates as itself
(not as "the store is damaged", which ``verify`` would then contradict).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
import zarr
from aws_support import moto_server  # noqa: F401  (fixture)

import xr_methyl  # noqa: F401  (registers ds.methyl)
from xr_methyl import CorruptStoreError, Layout, Loader, MethylStore

IDS = ["S0000", "S0004", "S0009"]  # two in the first 8-sample block (shards c/0/*), one in the next
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
    store = MethylStore.create(path, warehouse=warehouse, layout=Layout(by_cpg_chunk=BY_CPG_CHUNK, **layout),
                               storage_options=options or None)
    Loader(store).ingest(IDS, progress=False)
    return MethylStore.open(path, storage_options=options or None)


def open_dataset(store, location):
    return xr.open_dataset(location[0], engine="methylzarr", storage_options=location[1] or None)


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

    monkeypatch.setattr("xr_methyl.backend.read_rows", buggy_read_rows)
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
