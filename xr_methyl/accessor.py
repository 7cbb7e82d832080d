"""``ds.methyl``: the accessor that ties a Dataset back to its store."""

from __future__ import annotations

from collections.abc import Iterable

import xarray as xr

from xr_methyl.backend import _WAREHOUSES, STORE_ATTR


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
        from xr_methyl.cpg_index import CpgIndex

        index = self._ds.xindexes.get("cpg")
        if not isinstance(index, CpgIndex):
            raise ValueError("this Dataset's cpg axis has no CpgIndex; open the store with engine='methylzarr'")
        return self._ds.isel(cpg=index.region_positions(chrom, start, end))

    def store(self):
        """The :class:`~xr_methyl.MethylStore` behind this Dataset, freshly opened."""
        from xr_methyl.store import MethylStore

        return MethylStore.open(self.store_path)

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
        from xr_methyl.loader import Loader

        path = self.store_path
        wh = warehouse if warehouse is not None else _WAREHOUSES.get(path)
        loader = Loader(self.store(), wh, on_unknown_cpg=on_unknown_cpg)
        return loader.load(sample_ids, progress=progress, chunks=chunks)
