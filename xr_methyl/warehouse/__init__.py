"""Warehouses: where the long tables live.

``Warehouse`` is the protocol; ``LocalWarehouse`` is the embedded default (a real
Iceberg warehouse on local disk, queried with DuckDB).  Heavy clients (pyiceberg,
duckdb, pyathena, boto3) are imported inside the methods that use them, so
importing this package stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

from xr_methyl.errors import WarehouseError
from xr_methyl.warehouse.base import EXPORT_SCHEMA, VALUE_TABLES, Export, Warehouse, check_ids
from xr_methyl.warehouse.local import LocalWarehouse

__all__ = ["EXPORT_SCHEMA", "VALUE_TABLES", "Export", "LocalWarehouse", "Warehouse", "check_ids", "open_warehouse"]


def open_warehouse(spec: Warehouse | str | os.PathLike) -> Warehouse:
    """Turn a warehouse object, a ``file://`` URI or a local path into a warehouse.

    The string forms are what :meth:`Warehouse.describe` returns and what the
    store's manifest records.
    """
    if isinstance(spec, Warehouse):
        return spec
    if isinstance(spec, os.PathLike):
        return LocalWarehouse(Path(spec))
    if isinstance(spec, str):
        if spec.startswith("file://"):
            return LocalWarehouse(Path(spec.removeprefix("file://")))
        if "://" not in spec:
            return LocalWarehouse(Path(spec))
        from xr_methyl.redact import redact

        scheme = spec.split("://", 1)[0]
        raise WarehouseError(
            f"unsupported warehouse URI scheme {scheme!r} in {redact(spec)!r}; expected a local path or file:// "
            "URI of an embedded Iceberg warehouse"
        )
    raise TypeError(f"expected a Warehouse, a URI or a path, got {type(spec).__name__}")
