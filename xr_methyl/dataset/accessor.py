"""``ds.methyl``: the accessor that ties a Dataset back to its store, and its analysis methods.

The computations live in :mod:`xr_methyl.analysis` (pure functions on xarray
objects); the accessor only picks the variables and resolves coordinate names.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import xarray as xr
from numpy.typing import ArrayLike

from xr_methyl.dataset.backend import _STORAGES, _WAREHOUSES, STORE_ATTR


@xr.register_dataset_accessor("methyl")
class MethylAccessor:
    """Methylation-specific methods on a Dataset opened with ``engine="methylzarr"``."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    @property
    def store_path(self) -> str:
        path = self._ds.attrs.get(STORE_ATTR) or self._ds.encoding.get("source")
        if not path:
            raise ValueError(
                "this Dataset does not come from a methylzarr store (no 'methylzarr_store' attribute); "
                'open one with xr.open_dataset(path, engine="methylzarr")'
            )
        return path

    def region(self, chrom: str, start: int, end: int) -> xr.Dataset:
        """The CpGs on ``chrom`` with ``start <= pos < end``, by binary search over the loci.

        Parameters
        ----------
        chrom
            Chromosome name as in the store (e.g. ``"chr2"``).
        start, end
            Half-open range of positions, in the coordinates of the ``pos`` coordinate.

        Returns
        -------
        xarray.Dataset
            This Dataset restricted to those CpGs (in axis order; lazy).
        """
        from xr_methyl.dataset.cpg_index import CpgIndex

        index = self._ds.xindexes.get("cpg")
        if not isinstance(index, CpgIndex):
            raise ValueError("this Dataset's cpg axis has no CpgIndex; open the store with engine='methylzarr'")
        return self._ds.isel(cpg=index.region_positions(chrom, start, end))

    def store(self):
        """The :class:`~xr_methyl.MethylStore` behind this Dataset, freshly opened."""
        from xr_methyl.store import MethylStore

        path = self.store_path
        return MethylStore.open(_STORAGES.get(path, path))  # with the storage options it was opened with

    def ensure(
        self,
        sample_ids: Iterable[str],
        *,
        progress: bool = True,
        warehouse=None,
        on_unknown_cpg: str = "warn",
        chunks=None,
    ) -> xr.Dataset:
        """Return exactly ``sample_ids``, in that order, ingesting what the store lacks.

        Samples already in the store are read from it alone (the warehouse is
        not contacted); missing ones come from ``warehouse``, else the one given
        to ``open_dataset``, else the one recorded in the store's manifest.
        The result is lazy (dask-backed, chunks following the store's layout).

        Raises
        ------
        UnknownSamplesError
            (a ``KeyError``) naming ids the warehouse does not know; nothing is written.
        """
        from xr_methyl.ingest.loader import Loader

        path = self.store_path
        wh = warehouse if warehouse is not None else _WAREHOUSES.get(path)
        loader = Loader(self.store(), wh, on_unknown_cpg=on_unknown_cpg)
        return loader.load(sample_ids, progress=progress, chunks=chunks)

    # -- analysis (pure functions in xr_methyl.analysis) -----------------------------------
    def mask(self, min_coverage: int) -> xr.DataArray:
        """``beta`` with the cells read from fewer than ``min_coverage`` reads set to NaN (lazy).

        See :func:`xr_methyl.analysis.mask`.
        """
        from xr_methyl import analysis

        return analysis.mask(_lazy(self._variable("beta")), _lazy(self._variable("coverage")), min_coverage)

    def m_values(self, alpha: float = 0.01, *, min_coverage: int | None = None) -> xr.DataArray:
        """M-values ``log2((beta + alpha) / (1 - beta + alpha))``, lazy, NaN where beta is missing.

        ``min_coverage`` masks low-coverage cells first (see :meth:`mask`).
        See :func:`xr_methyl.analysis.m_values`.
        """
        from xr_methyl import analysis

        beta = _lazy(self._variable("beta")) if min_coverage is None else self.mask(min_coverage)
        return analysis.m_values(beta, alpha)

    def feature_scores(
        self,
        target: Hashable | ArrayLike | None = None,
        *,
        method: str = "pearson",
        min_coverage: int | None = None,
        min_samples: int = 3,
        cpgs_per_task: int | None = None,
    ) -> xr.Dataset:
        """Every CpG's statistic against ``target`` as a lazy Dataset (``score``, ``n_samples``).

        Arguments as for :meth:`select_features`; see
        :func:`xr_methyl.analysis.feature_scores`.
        """
        from xr_methyl import analysis

        return analysis.feature_scores(**self._selection_args(target, method, min_coverage, min_samples, cpgs_per_task))

    def select_features(
        self,
        target: Hashable | ArrayLike | None,
        k: int,
        *,
        method: str = "pearson",
        min_coverage: int | None = None,
        min_samples: int = 3,
        cpgs_per_task: int | None = None,
    ) -> xr.DataArray:
        """The ``k`` CpGs most associated with ``target``, best first, with their scores.

        Computed out of core over runs of CpGs with dask (on whatever scheduler
        is active, e.g. a ``dask.distributed`` Client), NaN-aware: each CpG uses
        the samples where it and the target are present.

        Parameters
        ----------
        target
            A sample coordinate name (``"age"``, ``"sex"``), or one value per
            sample (array in sample order, or a DataArray on ``sample``).
            None for ``method="variance"``.
        k
            How many CpGs to return (1 <= k <= number of CpGs).
        method
            ``"pearson"``, ``"spearman"`` (ranks within each CpG over the
            samples present, ties averaged) or ``"variance"``.
        min_coverage
            Treat cells read fewer times as missing.
        min_samples
            The fewest samples a CpG's statistic may rest on (>= 2).
        cpgs_per_task
            CpGs per dask task; default about 16 MiB of float64 per task.

        Returns
        -------
        xarray.DataArray
            Scores on dim ``cpg`` with coordinates ``cpg``, ``chrom``, ``pos``
            and ``n_samples``; use ``ds.sel(cpg=result.cpg)`` to pick them.
            See :func:`xr_methyl.analysis.select_features`.
        """
        from xr_methyl import analysis

        args = self._selection_args(target, method, min_coverage, min_samples, cpgs_per_task)
        return analysis.select_features(k=k, **args)

    def _selection_args(self, target, method, min_coverage, min_samples, cpgs_per_task) -> dict:
        from xr_methyl.analysis import resolve_target

        return {
            "beta": self._variable("beta"),
            "target": resolve_target(self._ds, target),
            "method": method,
            "coverage": self._variable("coverage") if min_coverage is not None else None,
            "min_coverage": min_coverage,
            "min_samples": min_samples,
            "cpgs_per_task": cpgs_per_task,
        }

    def _variable(self, name: str) -> xr.DataArray:
        if name not in self._ds.data_vars:
            raise KeyError(f"this Dataset has no {name!r} variable (data variables: {list(self._ds.data_vars)})")
        return self._ds[name]


def _lazy(array: xr.DataArray) -> xr.DataArray:
    """Dask-backed, so that elementwise work stays lazy (backend arrays would load whole)."""
    from xr_methyl.analysis import chunk_by_cpg

    return array if array.chunks is not None else chunk_by_cpg(array)
