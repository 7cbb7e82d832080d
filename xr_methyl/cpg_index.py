"""An xarray index for the CpG axis that never builds a hash table of its ids.

A default xarray index over 28 M string ids costs seconds and gigabytes to
build (a pandas Index), and more at the first ``.sel`` (its hash table).
:class:`CpgIndex` answers the same questions from the store's memory-mapped
look-up tables (:class:`~xr_methyl.cpg_axis.CpgAxis`): labels by binary search
over the sorted ids, regions by binary search over sorted locus keys.  Its
coordinates ``cpg``, ``chrom`` and ``pos`` are lazy: only the elements shown or
asked for are read.

xarray imports this module (through the backend) whenever it looks up engines,
so it imports only numpy, pandas and xarray.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray.core import indexing
from xarray.core.indexes import Index, IndexSelResult

from xr_methyl.cpg_axis import CpgAxis

DIM = "cpg"


def _columns(cols: slice | np.ndarray | None, n: int) -> np.ndarray:
    """Axis columns of a subset as an array (``None``: the whole axis)."""
    if cols is None:
        return np.arange(n)
    if isinstance(cols, slice):
        return np.arange(*cols.indices(n))
    return cols


def _compose(cols: slice | np.ndarray | None, n: int, key) -> slice | np.ndarray:
    """The subset ``cols[key]`` without materialising slices of slices."""
    if isinstance(key, slice) and (cols is None or isinstance(cols, slice)):
        outer = range(n)[cols] if cols is not None else range(n)
        inner = outer[key]
        if not len(inner):
            return slice(0, 0)
        stop = inner[-1] + inner.step  # below 0 (a negative step run down to column 0) is written None
        return slice(inner.start, stop if stop >= 0 else None, inner.step)
    if cols is None or isinstance(cols, slice):  # positions into a range: arithmetic, no arange of the axis
        start, stop, step = (cols if cols is not None else slice(None)).indices(n)
        return start + step * _positions(key, len(range(start, stop, step)))
    return cols[key]


def _positions(key, size: int) -> np.ndarray:
    """Integer or boolean ``key`` into ``size`` elements as non-negative positions, as numpy would index."""
    key = np.asarray(key)
    if key.dtype == bool:
        if key.shape != (size,):
            raise IndexError(f"boolean index of shape {key.shape} does not match {size} elements")
        return np.flatnonzero(key)
    if key.dtype.kind not in "iu":
        raise IndexError(f"cpg positions must be integers, not {key.dtype}")
    key = key.astype(np.int64, copy=False)
    if key.size and (key.min() < -size or key.max() >= size):
        bad = key[(key < -size) | (key >= size)][0]
        raise IndexError(f"index {bad} is out of bounds for the cpg axis of {size} elements")
    return np.where(key < 0, key + size, key)


def plain_slices(key: indexing.ExplicitIndexer, shape: tuple[int, ...]) -> indexing.ExplicitIndexer:
    """``key`` with each slice written as its start, stop and step on its dimension (an empty one as ``0:0``).

    xarray 2026.9 reads an empty slice with a negative step whose start lies
    before the first element (``[-91::-1]`` of 90 elements) as a full reversed
    one, and cannot split other empty negative slices into a read and a reversal.
    """

    def plain(k, size: int):
        if not isinstance(k, slice):
            return k
        picked = range(size)[k]
        if not picked:
            return slice(0, 0)
        return slice(picked.start, picked.stop if picked.stop >= 0 else None, picked.step)

    return type(key)(tuple(plain(k, n) for k, n in zip(key.tuple, shape)))


class LazilyIndexed(indexing.LazilyIndexedArray):
    """xarray's lazy indexing of a backend array, with slices made plain first (:func:`plain_slices`)."""

    def _updated_key(self, new_key: indexing.ExplicitIndexer):
        return super()._updated_key(plain_slices(new_key, self.shape))


class LazyCpgArray(indexing.ExplicitlyIndexedNDArrayMixin):
    """One coordinate of the CpG axis (``cpg``, ``chrom`` or ``pos``) for a subset of columns, read on demand."""

    def __init__(self, axis: CpgAxis, name: str, cols: slice | np.ndarray | None) -> None:
        self.axis = axis
        self.name = name
        self.cols = cols

    @property
    def shape(self) -> tuple[int]:
        if self.cols is None:
            return (len(self.axis),)
        if isinstance(self.cols, slice):
            return (len(range(*self.cols.indices(len(self.axis)))),)
        return (len(self.cols),)

    @property
    def dtype(self) -> np.dtype:
        if self.name == "cpg":
            return np.dtype(f"U{self.axis.ids.dtype.itemsize}")
        if self.name == "chrom":
            return np.asarray(self.axis.chrom_names).dtype
        return np.dtype(np.int64)

    @property
    def _in_memory(self) -> bool:
        return False

    def _values(self, cols) -> np.ndarray:
        if self.name == "cpg":
            raw = self.axis.ids[cols]
            return np.asarray(raw).astype(self.dtype)
        if self.name == "chrom":
            return np.asarray(self.axis.chrom_names)[np.asarray(self.axis.chrom_codes[cols])]
        return np.asarray(self.axis.pos[cols], dtype=np.int64)

    def get_duck_array(self) -> np.ndarray:
        cols = self.cols if self.cols is not None else slice(None)
        return self._values(cols)

    def _subset(self, key) -> np.ndarray:
        return self._values(_compose(self.cols, len(self.axis), key))

    def __getitem__(self, indexer: indexing.ExplicitIndexer):
        self._check_and_raise_if_non_basic_indexer(indexer)
        (key,) = indexing.expanded_indexer(indexer.tuple, 1)
        return self._subset(key)

    def _oindex_get(self, indexer: indexing.OuterIndexer):
        (key,) = indexing.expanded_indexer(indexer.tuple, 1)
        return self._subset(key)

    def _vindex_get(self, indexer: indexing.VectorizedIndexer):
        (key,) = indexing.expanded_indexer(indexer.tuple, 1)
        return self._subset(np.asarray(key))

    def __array__(self, dtype=None, copy=None):
        values = self.get_duck_array()
        return values if dtype is None else values.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyCpgArray({self.name!r}, shape={self.shape})"


class CpgIndex(Index):
    """Index of the ``cpg`` dimension: labels (ids) and genomic regions (chrom, pos).

    Built by the methylzarr backend; ``ds.sel(cpg=[...])`` looks ids up by
    binary search and ``ds.methyl.region(...)`` selects loci.  It indexes the
    ``cpg`` coordinate only: ``chrom`` and ``pos`` are lazy coordinates beside
    it (see :func:`locus_coords`), so they can be dropped or replaced freely.
    After ``isel`` the index keeps the subset of columns it covers, so
    selections compose.
    """

    def __init__(self, axis: CpgAxis, cols: slice | np.ndarray | None = None) -> None:
        self.axis = axis
        self.cols = cols
        self._inverse: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def size(self) -> int:
        return LazyCpgArray(self.axis, "pos", self.cols).shape[0]

    # -- xarray's Index interface ----------------------------------------------------------
    @classmethod
    def from_variables(cls, variables, *, options):
        raise TypeError("CpgIndex is built by the methylzarr backend; open the store with engine='methylzarr'")

    def create_variables(self, variables: Mapping[Any, xr.Variable] | None = None) -> dict[Hashable, xr.Variable]:
        attrs = variables[DIM].attrs if variables and DIM in variables else None
        return {DIM: xr.Variable((DIM,), LazyCpgArray(self.axis, DIM, self.cols), attrs=attrs)}

    def isel(self, indexers: Mapping[Any, Any]) -> CpgIndex | None:
        key = indexers[DIM]
        if isinstance(key, xr.Variable):
            if key.dims != (DIM,):
                return None  # vectorized indexing onto a new dimension: no index there
            key = key.values
        if isinstance(key, (int, np.integer)) or (isinstance(key, np.ndarray) and key.ndim == 0):
            return None  # the dimension is dropped
        return CpgIndex(self.axis, _compose(self.cols, len(self.axis), key))

    def sel(self, labels: dict[Any, Any], method=None, tolerance=None) -> IndexSelResult:
        if method is not None or tolerance is not None:
            raise ValueError("CpgIndex selects exact labels only; method= and tolerance= are not supported")
        return IndexSelResult({DIM: self._positions_of_ids(labels[DIM])})

    def equals(self, other: Index, *, exclude=None) -> bool:
        if not isinstance(other, CpgIndex):
            return False
        if other.axis is not self.axis and (len(other.axis) != len(self.axis) or other.axis.source != self.axis.source
                                            or other.axis.source is None):
            return False
        return np.array_equal(_columns(self.cols, len(self.axis)), _columns(other.cols, len(other.axis)))

    def to_pandas_index(self) -> pd.Index:
        return pd.Index(LazyCpgArray(self.axis, "cpg", self.cols).get_duck_array(), name=DIM)

    def _copy(self, deep: bool = True, memo=None) -> CpgIndex:
        return CpgIndex(self.axis, self.cols)  # immutable and memory-mapped: never copy the arrays

    def _repr_inline_(self, max_width: int) -> str:
        return f"CpgIndex ({self.size:,} of {len(self.axis):,} CpGs)"

    def __repr__(self) -> str:
        return self._repr_inline_(80)

    # -- look-ups ------------------------------------------------------------------------
    def _to_subset(self, cols: np.ndarray) -> np.ndarray:
        """Positions within this index's subset of axis columns ``cols`` (-1 where absent)."""
        n = len(self.axis)
        if self.cols is None:
            return cols
        if isinstance(self.cols, slice):
            start, stop, step = self.cols.indices(n)
            offset = cols - start
            pos = offset // step
            ok = (offset % step == 0) & (pos >= 0) & (pos < len(range(start, stop, step)))
            return np.where(ok, pos, -1)
        if self._inverse is None:
            order = np.argsort(self.cols, kind="stable")
            self._inverse = (self.cols[order], order)
        sorted_cols, order = self._inverse
        where = np.searchsorted(sorted_cols, cols).clip(0, max(len(sorted_cols) - 1, 0))
        hit = (sorted_cols[where] == cols) if len(sorted_cols) else np.zeros(cols.shape, bool)
        return np.where(hit, order[where] if len(order) else -1, -1)

    def _positions_of_ids(self, value):
        if isinstance(value, slice):
            if value.step is not None:
                raise ValueError("a cpg label slice takes no step")
            lo = 0 if value.start is None else int(self._positions_of_ids(value.start))
            hi = self.size if value.stop is None else int(self._positions_of_ids(value.stop)) + 1
            return slice(lo, hi)
        dims = None
        if isinstance(value, (xr.DataArray, xr.Variable)):
            dims, value = value.dims, value.values
        labels = np.asarray(value)
        if labels.dtype == bool:  # a mask over this index, as `.sel(cpg=ds.chrom == "chr1")` gives
            if labels.shape != (self.size,):
                raise IndexError(f"a boolean cpg selection must have {self.size:,} entries, not {labels.shape}")
            return np.flatnonzero(labels)
        scalar = labels.ndim == 0
        cols, found = self.axis.columns_of(labels.reshape(-1))
        pos = np.where(found, self._to_subset(cols), -1)
        if (pos < 0).any():
            missing = labels.reshape(-1)[pos < 0]
            shown = ", ".join(repr(str(m)) for m in missing[:10])
            raise KeyError(f"{len(missing)} CpG id(s) not on this Dataset's cpg axis: {shown}"
                           + (" ..." if len(missing) > 10 else ""))
        if scalar:
            return int(pos[0])
        pos = pos.reshape(labels.shape)
        return xr.Variable(dims, pos) if dims is not None else pos

    def region_positions(self, chrom: str, start: int, end: int) -> slice | np.ndarray:
        """Positions (in this index's subset) of CpGs on ``chrom`` with ``start <= pos < end``."""
        cols = self.axis.region(chrom, start, end)
        if self.cols is None:
            return cols
        pos = self._to_subset(_columns(cols, len(self.axis)))
        return np.sort(pos[pos >= 0])


def locus_coords(axis: CpgAxis) -> dict[str, xr.Variable]:
    """``chrom`` and ``pos`` on the cpg dimension, lazy (read only where indexed)."""
    if not axis.has_loci:
        return {}
    return {name: xr.Variable((DIM,), LazilyIndexed(LazyCpgArray(axis, name, None)))
            for name in ("chrom", "pos")}
