"""An xarray index for the CpG axis that never builds a hash table of its ids.

A default xarray index over 28 M string ids costs seconds and gigabytes to
build (a pandas Index), and more at the first ``.sel`` (its hash table).
:class:`CpgIndex` answers the same questions from the store's memory-mapped
look-up tables (:class:`~xr_methyl.store.cpg_axis.CpgAxis`): labels by binary search
over the sorted ids, regions by binary search over sorted locus keys.  Its
coordinates ``cpg``, ``chrom`` and ``pos`` are lazy: only the elements shown or
asked for are read, and never turned into dask (:class:`UnchunkedVariable`).
In memory the labels are fixed-width unicode (dask can size those, for
``chunks="auto"``); their encoding writes them as variable-length strings,
which Zarr v3 specifies (its fixed-width unicode type is unstable) and netCDF4 has.

Two indexes over the same axis (the same sha256 of the ids, as the manifest
records it) align by column arithmetic, as pandas indexes of their labels would
(``join``, ``reindex_like``, ``concat``); indexes over different axes fall back
to a pandas index of the labels.  xarray aligns only indexes of one type: to
align with a pandas-indexed ``cpg`` (``reindex(cpg=[...])``, an annotation
table), first turn the index into a pandas one with
``ds.drop_indexes("cpg").set_xindex("cpg")``.

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
from xarray.core.indexes import Index, IndexSelResult, PandasIndex

from xr_methyl.store.cpg_axis import CpgAxis

DIM = "cpg"


def _columns(cols: slice | np.ndarray | None, n: int) -> np.ndarray:
    """Axis columns of a subset as an array (``None``: the whole axis)."""
    if cols is None:
        return np.arange(n)
    if isinstance(cols, slice):
        return np.arange(*cols.indices(n))
    return cols


def _same_columns(a: slice | np.ndarray | None, b: slice | np.ndarray | None, n: int) -> bool:
    """Whether two subsets of an axis of ``n`` columns hold the same columns in the same order."""
    ranges = [range(n)[c] if isinstance(c, slice) else range(n) if c is None else None for c in (a, b)]
    if ranges[0] is not None and ranges[1] is not None:
        return ranges[0] == ranges[1]  # compares the elements, without making them
    return bool(np.array_equal(_columns(a, n), _columns(b, n)))


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
    if key.size == 0:  # xarray makes an empty list float64
        return np.zeros(key.shape, dtype=np.int64)
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


class UnchunkedVariable(xr.Variable):
    """A coordinate that xarray keeps out of dask: numpy in memory, or read on demand from memory-mapped tables.

    ``open_dataset(chunks=...)`` and ``Dataset.chunk`` turn every other
    variable into dask; sample metadata is small and the CpG axis's
    coordinates cost nothing until read, so neither gains from dask, and an
    index coordinate in dask cannot even give ``.item()``.  dask also cannot
    size (``chunks="auto"``) arrays of Python strings: in-memory data says so
    through ``_in_memory``, which is what ``open_dataset`` checks before sizing.
    """

    __slots__ = ()

    @property
    def _in_memory(self) -> bool:
        data = self._data
        while isinstance(data, (indexing.CopyOnWriteArray, indexing.MemoryCachedArray)):
            data = data.array  # the layers open_dataset puts around every variable
        return isinstance(data, (np.ndarray, indexing.NumpyIndexingAdapter))

    def chunk(self, *args, **kwargs) -> UnchunkedVariable:
        return self.copy(deep=False)

    def to_base_variable(self) -> UnchunkedVariable:
        return self.copy(deep=False)  # already a plain variable: keep the rule when a Dataset is built of it


#: Encoding of the text coordinates of the axis: variable-length strings when written (Zarr v3, netCDF).
TEXT_ENCODING = {"dtype": np.dtype(object)}


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
    selections compose.  ``axis_sha256`` names the axis (the manifest's
    ``cpg_ids_sha256``): indexes over the same axis align without reading labels.
    ``name`` and ``dim`` are the coordinate's and dimension's names (``cpg``
    until renamed).
    """

    def __init__(
        self,
        axis: CpgAxis,
        cols: slice | np.ndarray | None = None,
        *,
        axis_sha256: str | None = None,
        name: Hashable = DIM,
        dim: Hashable = DIM,
    ) -> None:
        self.axis = axis
        self.cols = cols
        self.axis_sha256 = axis_sha256
        self.name = name
        self.dim = dim
        self._inverse: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def size(self) -> int:
        return LazyCpgArray(self.axis, "pos", self.cols).shape[0]

    def _with(self, cols: slice | np.ndarray | None) -> CpgIndex:
        return CpgIndex(self.axis, cols, axis_sha256=self.axis_sha256, name=self.name, dim=self.dim)

    # -- xarray's Index interface ----------------------------------------------------------
    @classmethod
    def from_variables(cls, variables, *, options):
        raise TypeError("CpgIndex is built by the methylzarr backend; open the store with engine='methylzarr'")

    def create_variables(self, variables: Mapping[Any, xr.Variable] | None = None) -> dict[Hashable, xr.Variable]:
        old = variables.get(self.name) if variables else None
        encoding = {**TEXT_ENCODING, **old.encoding} if old is not None else dict(TEXT_ENCODING)
        return {
            self.name: UnchunkedVariable(
                (self.dim,),
                LazyCpgArray(self.axis, "cpg", self.cols),
                attrs=old.attrs if old is not None else None,
                encoding=encoding,
            )
        }

    def isel(self, indexers: Mapping[Any, Any]) -> CpgIndex | None:
        key = indexers[self.dim]
        if isinstance(key, xr.Variable):
            if key.dims != (self.dim,):
                return None  # vectorized indexing onto a new dimension: no index there
            key = key.values
        if isinstance(key, (int, np.integer)) or (isinstance(key, np.ndarray) and key.ndim == 0):
            return None  # the dimension is dropped
        return self._with(_compose(self.cols, len(self.axis), key))

    def sel(self, labels: dict[Any, Any], method=None, tolerance=None) -> IndexSelResult:
        if method is not None or tolerance is not None:
            raise ValueError("CpgIndex selects exact labels only; method= and tolerance= are not supported")
        if not self._is_unique():  # a selection repeated CpGs: pandas' rules for repeated labels (a small subset)
            return PandasIndex(self.to_pandas_index(), self.dim, coord_dtype=_label_dtype(self)).sel(labels)
        return IndexSelResult({self.dim: self._positions_of_ids(labels[self.name])})

    def equals(self, other: Index, *, exclude=None) -> bool:
        if not isinstance(other, CpgIndex) or other.dim != self.dim:
            return False
        if self.size != other.size:
            return False
        if self.same_axis(other):  # ids are unique on an axis: the same columns are the same labels
            return _same_columns(self.cols, other.cols, len(self.axis))
        return bool(np.array_equal(self._ids(), other._ids()))

    def join(self, other: Index, how: str = "inner") -> Index:
        """The labels of both indexes (``how="outer"``) or of this one found in ``other`` (``"inner"``).

        Labels and their order are those of pandas' ``union`` and ``intersection``
        (what xarray's default index gives): over the same axis they are found
        from the columns' ranks among the sorted ids; otherwise (or when xarray
        hands on the result of an earlier join) through a pandas index.
        """
        if isinstance(self, CpgIndex) and isinstance(other, CpgIndex) and self.same_axis(other):
            ranks = self._ranks(), other._ranks()  # ids sort as their ranks do: pandas on ranks orders as on labels
            mine, theirs = pd.Index(ranks[0]), pd.Index(ranks[1])
            joined = mine.union(theirs) if how == "outer" else mine.intersection(theirs)
            return self._with(np.asarray(self.axis._table("sorted_order")[joined.to_numpy()], dtype=np.int64))
        labels = [idx.to_pandas_index() for idx in (self, other)]
        joined = labels[0].union(labels[1]) if how == "outer" else labels[0].intersection(labels[1])
        return PandasIndex(joined.rename(labels[0].name), self.dim, coord_dtype=_label_dtype(self, other))

    def reindex_like(self, other: Index, method=None, tolerance=None) -> dict[Hashable, np.ndarray]:
        """Positions in this index of each label of ``other`` (-1 where absent), as xarray reindexes."""
        if method is not None or tolerance is not None:
            raise ValueError("CpgIndex reindexes exact labels only; method= and tolerance= are not supported")
        if not self._is_unique():
            raise ValueError(
                f"cannot reindex or align along dimension {self.dim!r} because the index has duplicate "
                "values (a selection repeated CpGs)"
            )
        if isinstance(other, CpgIndex) and self.same_axis(other):
            cols, found = _columns(other.cols, len(other.axis)), None
        else:
            labels = other._ids() if isinstance(other, CpgIndex) else np.asarray(other.to_pandas_index(), dtype=object)
            cols, found = self.axis.columns_of(labels)
        pos = self._to_subset(cols)
        return {self.dim: pos if found is None else np.where(found, pos, -1)}

    @classmethod
    def concat(cls, indexes, dim: Hashable, positions=None) -> Index:
        """Indexes placed end to end along ``cpg``: columns of one axis, else a pandas index of the labels."""
        indexes = list(indexes)
        if indexes and all(isinstance(i, CpgIndex) and i.same_axis(indexes[0]) for i in indexes):
            first = indexes[0]
            cols = np.concatenate([_columns(i.cols, len(i.axis)) for i in indexes]).astype(np.int64)
            if positions is not None:
                cols = cols[np.argsort(np.concatenate(positions), kind="stable")]
            return first._with(cols)
        pandas = [PandasIndex(i.to_pandas_index(), dim, coord_dtype=_label_dtype(i)) for i in indexes]
        return PandasIndex.concat(pandas, dim, positions)

    def same_axis(self, other: CpgIndex) -> bool:
        """Whether both index the columns of one CpG axis (by the manifests' sha256, else by hashing the ids)."""
        if other.axis is self.axis:
            return True
        if len(other.axis) != len(self.axis):
            return False
        return (self.axis_sha256 or self.axis.sha256) == (other.axis_sha256 or other.axis.sha256)

    def to_pandas_index(self) -> pd.Index:
        return pd.Index(LazyCpgArray(self.axis, "cpg", self.cols).get_duck_array(), name=self.name)

    def rename(self, name_dict: Mapping[Any, Hashable], dims_dict: Mapping[Any, Hashable]) -> CpgIndex:
        renamed = self._with(self.cols)
        renamed.name, renamed.dim = name_dict.get(self.name, self.name), dims_dict.get(self.dim, self.dim)
        return renamed

    def roll(self, shifts: Mapping[Any, int]) -> CpgIndex:
        cols = _columns(self.cols, len(self.axis))
        return self._with(np.roll(cols, shifts[self.dim] % (len(cols) or 1)))

    def _copy(self, deep: bool = True, memo=None) -> CpgIndex:
        return self._with(self.cols)  # immutable and memory-mapped: never copy the arrays

    def _repr_inline_(self, max_width: int) -> str:
        return f"CpgIndex ({self.size:,} of {len(self.axis):,} CpGs)"

    def __repr__(self) -> str:
        # xarray's error for aligning with another kind of index prints this: say what to do.
        return (
            f"{self._repr_inline_(80)}; it aligns with CpgIndexes only, for a pandas index call "
            f"ds.drop_indexes({self.name!r}).set_xindex({self.name!r})"
        )

    # -- look-ups ------------------------------------------------------------------------
    def _ids(self) -> np.ndarray:
        """The ids of this subset, as stored (``S``)."""
        return np.asarray(self.axis.ids[self.cols if self.cols is not None else slice(None)])

    def _ranks(self) -> np.ndarray:
        """Each column's position among the axis's sorted ids."""
        return self.axis.ranks(_columns(self.cols, len(self.axis)))

    def _sorted_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """This subset's columns sorted, and the order that sorts them (array subsets only; computed once)."""
        if self._inverse is None:
            order = np.argsort(self.cols, kind="stable")
            self._inverse = (self.cols[order], order)
        return self._inverse

    def _is_unique(self) -> bool:
        if self.cols is None or isinstance(self.cols, slice):
            return True
        sorted_cols, _ = self._sorted_cols()
        return not bool(np.any(sorted_cols[1:] == sorted_cols[:-1]))

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
        sorted_cols, order = self._sorted_cols()
        where = np.searchsorted(sorted_cols, cols).clip(0, max(len(sorted_cols) - 1, 0))
        hit = (sorted_cols[where] == cols) if len(sorted_cols) else np.zeros(cols.shape, bool)
        return np.where(hit, order[where] if len(order) else -1, -1)

    def _label_slice(self, value: slice) -> slice:
        """Positions of a slice of labels, by pandas' rules (``Index.slice_indexer``), step included."""
        forward = value.step is None or value.step >= 0
        first, last = (value.start, value.stop) if forward else (value.stop, value.start)
        lo = 0 if first is None else self._slice_bound(first, "left")
        hi = self.size if last is None else self._slice_bound(last, "right")
        if not forward:  # the bounds were swapped: swap them back, one place earlier
            hi, lo = lo - 1, hi - 1
            hi, lo = (hi - self.size if hi == -1 else hi), (lo - self.size if lo == -1 else lo)
        return slice(lo, hi, value.step)

    def _slice_bound(self, label, side: str) -> int:
        """Where a slice bound falls: at the label, else (labels in sorted order only) where it would sort."""
        if isinstance(label, (xr.DataArray, xr.Variable, np.ndarray)):
            label = np.asarray(label).item()
        cols, found = self.axis.columns_of(np.array([label]))
        pos = int(self._to_subset(cols)[0]) if found[0] else -1
        if pos >= 0:
            return pos + 1 if side == "right" else pos
        ranks = self._ranks()
        increasing, decreasing = bool(np.all(ranks[1:] > ranks[:-1])), bool(np.all(ranks[1:] < ranks[:-1]))
        if not (increasing or decreasing):
            raise KeyError(
                f"CpG id {label!r} is not on this Dataset's cpg axis, and the axis is not in id order: "
                "a label slice needs ids that are on it"
            )
        key = str(label).encode()  # UTF-8 bytes sort as the strings do
        sorted_ids = self.axis._table("sorted_ids")
        below = int(np.searchsorted(sorted_ids, key, side="left"))  # axis ids < label
        up_to = int(np.searchsorted(sorted_ids, key, side="right"))  # axis ids <= label
        if increasing:
            return int(np.searchsorted(ranks, below if side == "left" else up_to))
        return len(ranks) - int(np.searchsorted(ranks[::-1], up_to if side == "left" else below))

    def _positions_of_ids(self, value):
        if isinstance(value, slice):
            return self._label_slice(value)
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
            raise KeyError(
                f"{len(missing)} CpG id(s) not on this Dataset's cpg axis: {shown}"
                + (" ..." if len(missing) > 10 else "")
            )
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


def _label_dtype(*indexes: Index) -> np.dtype:
    """The dtype of the labels of ``indexes`` together (a CpgIndex's, or a pandas index's coordinate dtype)."""
    dtypes = [
        LazyCpgArray(i.axis, "cpg", None).dtype if isinstance(i, CpgIndex) else np.dtype(i.coord_dtype) for i in indexes
    ]
    try:
        return np.result_type(*dtypes)
    except TypeError:  # labels of unrelated kinds
        return np.dtype(object)


def locus_coords(axis: CpgAxis) -> dict[str, xr.Variable]:
    """``chrom`` and ``pos`` on the cpg dimension, lazy (read only where indexed)."""
    if not axis.has_loci:
        return {}
    return {
        "chrom": UnchunkedVariable(
            (DIM,), LazilyIndexed(LazyCpgArray(axis, "chrom", None)), encoding=dict(TEXT_ENCODING)
        ),
        "pos": UnchunkedVariable((DIM,), LazilyIndexed(LazyCpgArray(axis, "pos", None))),
    }
