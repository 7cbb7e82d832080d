"""Warehouses: where the long tables live.

``Warehouse`` is the protocol.  Implementations:

* ``LocalWarehouse``: the embedded default, a real Iceberg warehouse on local
  disk (pyiceberg sqlite catalog), read with DuckDB;
* ``IcebergWarehouse``: the same over any pyiceberg catalog (Glue, REST, SQL);
* ``AthenaWarehouse``: Amazon Athena through PyAthena, exporting with UNLOAD.

Heavy clients (pyiceberg, duckdb, pyathena, boto3) are imported inside the
methods that use them, so importing this package stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

from xr_methyl.errors import WarehouseError
from xr_methyl.warehouse.athena import AthenaWarehouse
from xr_methyl.warehouse.base import EXPORT_SCHEMA, VALUE_TABLES, Export, Warehouse, check_ids
from xr_methyl.warehouse.iceberg import IcebergWarehouse
from xr_methyl.warehouse.local import LocalWarehouse

__all__ = [
    "EXPORT_SCHEMA",
    "VALUE_TABLES",
    "AthenaWarehouse",
    "Export",
    "IcebergWarehouse",
    "LocalWarehouse",
    "Warehouse",
    "check_ids",
    "open_warehouse",
    "resolve",
]

#: URI schemes of Iceberg catalogs read directly (see IcebergWarehouse.from_uri).
_ICEBERG_SCHEMES = ("glue", "rest", "sql", "hive", "dynamodb")


def open_warehouse(spec: Warehouse | str | os.PathLike) -> Warehouse:
    """Turn a warehouse object, a URI or a local path into a warehouse.

    The string forms are what :meth:`Warehouse.describe` returns and what the
    store's manifest records:

    * a local path or ``file:///path``: :class:`LocalWarehouse`;
    * ``athena://<database>?unload_location=s3://...&s3_staging_dir=s3://...&region=...``:
      :class:`AthenaWarehouse`;
    * ``glue://<database>?region=...`` (also ``rest://``, ``sql://``): :class:`IcebergWarehouse`.
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

        scheme = spec.split("://", 1)[0].lower()
        if scheme == "athena":
            return AthenaWarehouse.from_uri(spec)
        if scheme in _ICEBERG_SCHEMES:
            return IcebergWarehouse.from_uri(spec)
        raise WarehouseError(
            f"unsupported warehouse URI scheme {scheme!r} in {redact(spec)!r}; expected a local path, file://, "
            f"athena:// or an Iceberg catalog ({', '.join(s + '://' for s in _ICEBERG_SCHEMES)})"
        )
    raise TypeError(f"expected a Warehouse, a URI or a path, got {type(spec).__name__}")


def resolve(spec: Warehouse | str | os.PathLike | None, store) -> Warehouse:
    """The warehouse to ingest from or compare with: ``spec``, else the one the store's manifest records.

    ``store`` is a :class:`~xr_methyl.MethylStore` (any object with its
    ``manifest.warehouse`` and ``storage.uri``).  Raises
    :class:`~xr_methyl.errors.DataError` when neither names a warehouse.
    """
    from xr_methyl.errors import DataError

    spec = spec if spec is not None else store.manifest.warehouse
    if spec is None:
        raise DataError(
            f"the store {store.storage.uri} records no warehouse and none was given; "
            "pass warehouse= to ingest missing samples"
        )
    return open_warehouse(spec)
