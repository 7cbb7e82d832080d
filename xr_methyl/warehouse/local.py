"""The embedded warehouse: a real Apache Iceberg warehouse on local disk, queried with DuckDB.

Layout under ``path``::

    catalog.db      pyiceberg SqlCatalog (sqlite), catalog name "xr_methyl"
    warehouse/      Iceberg metadata and Parquet data files

It is an :class:`~xr_methyl.warehouse.iceberg.IcebergWarehouse` whose catalog
is that sqlite file; everything else (reads, export, table creation) is shared.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from xr_methyl.errors import WarehouseError
from xr_methyl.warehouse.iceberg import CATALOG_NAME, NAMESPACE, TABLE_SCHEMAS, IcebergWarehouse, chrom_sort_key

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pyiceberg.catalog.sql import SqlCatalog

__all__ = ["CATALOG_NAME", "NAMESPACE", "TABLE_SCHEMAS", "LocalWarehouse", "chrom_sort_key"]


class LocalWarehouse(IcebergWarehouse):
    """An Iceberg warehouse on local disk (pyiceberg SqlCatalog + DuckDB).

    Creating the object is cheap: nothing is imported or touched on disk until
    a method needs it.

    Parameters
    ----------
    path
        Directory holding ``catalog.db`` and ``warehouse/``.
    staging_dir
        Where :meth:`export` creates its per-call staging directories; the
        system temporary directory by default.
    """

    def __init__(self, path: str | os.PathLike, *, staging_dir: str | os.PathLike | None = None) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        super().__init__(CATALOG_NAME, namespace=NAMESPACE, staging_dir=staging_dir)

    def __repr__(self) -> str:
        return f"LocalWarehouse({str(self.path)!r})"

    @property
    def catalog_path(self) -> Path:
        """The sqlite file of the Iceberg catalog."""
        return self.path / "catalog.db"

    @property
    def warehouse_dir(self) -> Path:
        """Where Iceberg metadata and data files live."""
        return self.path / "warehouse"

    def describe(self) -> str:
        """``file://`` URI of this warehouse (reopened by ``open_warehouse``)."""
        return "file://" + str(self.path)

    def _hint(self) -> str:
        return f"LocalWarehouse({str(self.path)!r}).create_tables()"

    def _make_catalog(self, *, create: bool) -> SqlCatalog:
        if not create and not self.catalog_path.is_file():
            raise WarehouseError(
                f"no Iceberg catalog at {self.catalog_path}; build a synthetic cohort with "
                f"xr_methyl.synthetic.build_cohort({str(self.path)!r}) or create empty tables with "
                f"{self._hint()}"
            )
        from pyiceberg.catalog.sql import SqlCatalog

        if create:
            self.warehouse_dir.mkdir(parents=True, exist_ok=True)
        return SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{self.catalog_path}", warehouse=f"file://{self.warehouse_dir}")
