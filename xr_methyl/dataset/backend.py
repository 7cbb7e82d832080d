"""The xarray backend ``engine="methylzarr"``: a store as a lazy, labelled Dataset.

xarray imports this module whenever it looks up engines, and with it the
``xr_methyl`` package: at module level it needs only numpy, pandas, xarray and
xr_methyl's own light modules; zarr, pyarrow and the warehouse and storage
clients are imported when a store is opened (``tests/dataset/test_backend.py``
checks that looking up engines imports none of the heavy clients).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from xr_methyl.dataset.cpg_index import CpgIndex, LazilyIndexed, UnchunkedVariable, locus_coords, plain_slices
from xr_methyl.zarrio.bycpg import by_cpg_cheaper, read_by_cpg
from xr_methyl.zarrio.rowread import read_rows

STORE_ATTR = "methylzarr_store"

# Warehouses handed to open_dataset, by store location, so that ds.methyl.ensure
# ingests from the same one (xarray attrs should stay plain data).
_WAREHOUSES: dict[str, Any] = {}
# The storage (with its S3 options) of each store opened here, by location, so that
# ds.methyl reopens it the same way; options may hold credentials, so never in attrs.
# Both hold one small object per distinct store location opened by this process (a
# location and its options, a warehouse's configuration; no data), replaced when the
# store is opened again: they grow with the number of stores a process opens, not with
# how often.  Evicting an entry would make ds.methyl reopen an S3 store without its options.
_STORAGES: dict[str, Any] = {}


class StoreArray(BackendArray):
    """Committed rows of one zarr array, addressed by sample index (padding rows skipped).

    Pickles as the store's storage (its location, and S3 options) and the
    array's key: a dask worker reopens the array itself, with no state of the
    process that opened the Dataset.

    ``by_cpg`` (beta of a store that keeps a CpG-major copy): the copy's key
    and layout; a list of CpGs that the copy reads more cheaply
    (:func:`~xr_methyl.zarrio.bycpg.by_cpg_cheaper`) is read from it.
    """

    def __init__(
        self,
        array,
        rows: np.ndarray,
        chunk_rows: int,
        *,
        storage=None,
        key: str | None = None,
        by_cpg: ByCpg | None = None,
    ) -> None:
        self._array = array
        self.storage = storage
        self.key = key
        self.rows = rows
        self.chunk_rows = chunk_rows
        self.by_cpg = by_cpg
        self.shape = (len(rows), array.shape[1])
        self.dtype = array.dtype

    @property
    def array(self):
        if self._array is None:
            import zarr

            self._array = zarr.open_array(self.storage.zarr_store(self.key, read_only=True), mode="r", zarr_format=3)
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.storage is not None:
            state["_array"] = None
        return state

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        if not isinstance(key, indexing.VectorizedIndexer):
            key = plain_slices(key, self.shape)
        sample_key, cpg_key = key.tuple
        if (
            isinstance(key, indexing.OuterIndexer)
            and isinstance(sample_key, np.ndarray)
            and sample_key.dtype.kind in "iu"
        ):
            # A list of samples in any order, repeats included, is read straight into
            # place (xarray would read it sorted and reorder a copy).
            picked = copy.copy(self)
            picked._array, picked.rows = self.array, self.rows[sample_key]
            picked.shape = (len(picked.rows), self.shape[1])
            return picked[indexing.OuterIndexer((slice(None), cpg_key))]
        # OUTER: a list of CpGs stays a list (xarray would otherwise read
        # everything between the first and the last).
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        """``values[sample_key, cpg_key]`` for an outer key as xarray decomposes it.

        Each of the two keys is an integer (that dimension is dropped), a slice
        with a positive step, or a non-decreasing array of positions; the reads
        below take lists of rows and columns, so integers become one-element
        lists and are squeezed out of the result.  Damaged bytes raise
        ``CorruptStoreError`` naming the shard (the readers below check them);
        any other error is not the store's fault and propagates as itself.
        """
        sample_key, cpg_key = key
        drop = tuple(i for i, k in enumerate(key) if isinstance(k, (int, np.integer)))
        rows = np.atleast_1d(self.rows[sample_key])
        if isinstance(cpg_key, (int, np.integer)):
            cpg_key = np.array([range(self.shape[1])[cpg_key]], dtype=np.int64)  # negative counted from the end
        if (
            self.by_cpg is not None
            and isinstance(cpg_key, np.ndarray)
            and self.by_cpg.cheaper(rows, cpg_key, self.shape[1])
        ):
            values = self.by_cpg.read(self.storage, rows, cpg_key)
        else:
            values = read_rows(self.array, rows, cpg_key, chunk_rows=self.chunk_rows)
        return values.squeeze(axis=drop) if drop else values


class ByCpg:
    """Where a store keeps its CpG-major copy of beta, and its layout (picklable: opened where it is read)."""

    def __init__(self, key: str, layout, array=None) -> None:
        self.key = key
        self.layout = layout
        self._array = array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def cheaper(self, rows: np.ndarray, cols: np.ndarray, n_cpgs: int) -> bool:
        """Whether the copy reads ``cols`` of ``rows`` more cheaply than beta itself."""
        block = self.layout.sample_block
        return by_cpg_cheaper(
            len(rows),
            len(np.unique(rows // block)),
            cols,
            chunk=self.layout.by_cpg_chunk,
            block=block,
            main_chunk=self.layout.cpg_chunk,
            codec=self.layout.by_cpg_codec,
            n_cpgs=n_cpgs,
        )

    def read(self, storage, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self._array is None:
            import zarr

            self._array = zarr.open_array(storage.zarr_store(self.key, read_only=True), mode="r", zarr_format=3)
        return read_by_cpg(self._array, rows, cols, block=self.layout.sample_block)


def samples_dataset(store, positions: np.ndarray, chunks: dict) -> xr.Dataset:
    """The committed samples at ``positions`` (any order, repeats allowed), dask-backed with ``chunks``.

    Chunks follow the requested order: each task reads its samples' rows
    straight into place (:func:`read_rows`), so no dask-level reordering copies
    the values again.
    """
    return store_to_dataset(store).isel(sample=positions).chunk(chunks)


def store_to_dataset(store, *, drop_variables: Iterable[str] | None = None) -> xr.Dataset:
    """Build the lazy Dataset of a store's committed samples (no chunking)."""
    commit = store.commit
    rows = np.array([i for i, s in enumerate(commit.rows) if s is not None], dtype=np.int64)
    sample_ids = np.array(commit.sample_ids, dtype=object)
    drop = set(drop_variables or ())

    # dask chunks follow the store: one sample block x one CpG shard.
    block = store.layout.sample_block
    per_block = np.bincount(rows // block, minlength=commit.n_rows // block) if len(rows) else np.zeros(0, int)
    sample_chunks = tuple(int(n) for n in per_block if n) or (0,)
    preferred = {"sample": sample_chunks, "cpg": store.layout.cpg_shard}

    data_vars = {}
    by_cpg = None
    if store.layout.by_cpg_chunk and "beta" not in drop:
        from xr_methyl.store.layout import BETA_BY_CPG

        by_cpg = ByCpg(BETA_BY_CPG, store.layout, store.array("beta_by_cpg"))
    for name in ("beta", "coverage"):
        if name in drop:
            continue
        array = StoreArray(
            store.array(name),
            rows,
            store.layout.chunk_rows,
            storage=store.storage,
            key=f"{name}.zarr",
            by_cpg=by_cpg if name == "beta" else None,
        )
        lazy = LazilyIndexed(array)
        var = xr.Variable(("sample", "cpg"), lazy)
        var.encoding = {"preferred_chunks": preferred, "dtype": var.dtype}
        data_vars[name] = var

    coords: dict[str, Any] = {"sample": ("sample", sample_ids), **locus_coords(store.cpg_axis)}
    samples = [commit.samples.get(s, {}) for s in commit.sample_ids]
    for column in _metadata_columns(samples):  # small: kept in memory, never dask (see UnchunkedVariable)
        coords[column] = UnchunkedVariable(("sample",), _column(samples, column))
    for name in drop:
        coords.pop(name, None)

    attrs = {STORE_ATTR: store.storage.uri, "n_cpgs": store.n_cpgs}
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    # cpg: lazy, behind an index that never hashes the ids (see cpg_index).
    index = CpgIndex(store.cpg_axis, axis_sha256=store.manifest.cpg_ids_sha256)
    return ds.assign_coords(xr.Coordinates.from_xindex(index))


def _metadata_columns(samples: list[dict]) -> list[str]:
    columns: dict[str, None] = {"batch_id": None}
    for meta in samples:
        columns.update(dict.fromkeys(meta))
    return list(columns)


def _column(samples: list[dict], column: str) -> np.ndarray:
    """One metadata field over the samples, typed as its values are.

    Whole numbers: int64 (float64 with NaN if any is missing); numbers: float64
    (NaN where missing); true/false: bool (objects with None where missing);
    anything else: ``str`` objects, NaN where missing (as pandas has them: ``isnull``
    finds them, ``groupby`` leaves them out, writers store "").
    """
    values = [meta.get(column) for meta in samples]
    present = [v for v in values if v is not None]
    complete = len(present) == len(values)
    if present and all(isinstance(v, bool) for v in present):
        return np.array(values, dtype=bool if complete else object)
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if complete and all(isinstance(v, int) and -(2**63) <= v < 2**63 for v in present):
            return np.array(values, dtype=np.int64)
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array([np.nan if v is None else str(v) for v in values], dtype=object)


def _looks_like_store(path: str | os.PathLike) -> bool:
    import json

    if isinstance(path, str) and "://" in path and not path.startswith("file://"):
        return False  # guessing must not touch the network: pass engine="methylzarr" for s3:// stores
    try:
        with open(os.path.join(os.fspath(path), "manifest.json"), "rb") as f:
            return json.load(f).get("format") == "methylzarr"
    except Exception:  # guess_can_open must never raise
        return False


class MethylZarrBackendEntrypoint(BackendEntrypoint):
    """Open a methylzarr store: ``xr.open_dataset(path, engine="methylzarr")``.

    Dims (sample, cpg); ``beta`` (float32, NaN = missing) and ``coverage``;
    coordinates ``sample`` (committed samples only), ``cpg``, ``chrom`` and
    ``pos`` on cpg, ``batch_id`` and the sample metadata on sample.  Opening
    never touches the warehouse; ``warehouse=`` is remembered for
    ``ds.methyl.ensure``.  An ``s3://bucket/prefix`` store takes
    ``storage_options`` (endpoint, region, credentials; never stored in the
    Dataset's attributes).
    """

    description = "Open a methylzarr store (wide DNA-methylation matrices cached in Zarr v3)"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "warehouse", "storage_options")

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj,
        *,
        drop_variables: str | Iterable[str] | None = None,
        warehouse=None,
        storage_options: dict[str, Any] | None = None,
    ) -> xr.Dataset:
        from xr_methyl.store import MethylStore

        if isinstance(filename_or_obj, MethylStore):
            store = filename_or_obj
        else:
            store = MethylStore.open(filename_or_obj, storage_options=storage_options)
        _STORAGES[store.storage.uri] = store.storage
        if warehouse is not None:
            _WAREHOUSES[store.storage.uri] = warehouse
        if isinstance(drop_variables, str):
            drop_variables = [drop_variables]
        return store_to_dataset(store, drop_variables=drop_variables)

    def guess_can_open(self, filename_or_obj) -> bool:
        if isinstance(filename_or_obj, (str, os.PathLike)):
            return _looks_like_store(filename_or_obj)
        return type(filename_or_obj).__name__ == "MethylStore"
