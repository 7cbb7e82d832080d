"""xr_methyl: a Zarr v3 cache of wide DNA-methylation matrices, presented through xarray.

The data path, one package per stage, each importing only those below it::

    dataset/    store -> lazy labelled Dataset (engine="methylzarr"), ds.methyl, the CpG index
    ingest/     the samples a store lacks: long rows -> (row, column) positions -> wide blocks
    store/      wide blocks -> Zarr v3 + sidecars, one commit point (MethylStore)
    warehouse/  long rows (Iceberg via DuckDB, Athena; the Warehouse protocol)
    storage/    where a store's bytes live (a directory, an S3 prefix)
    zarrio/     fast reads and writes of the Zarr arrays
    analysis    masks, M-values, feature selection (xarray in, xarray out)

Importing this package registers the ``.methyl`` accessor and stays light:
pyiceberg, duckdb, pyathena and boto3 load only where they are used.
"""

from xr_methyl.dataset import accessor as _accessor  # noqa: F401  (registers ds.methyl)
from xr_methyl.errors import (
    CorruptStoreError,
    DataError,
    MethylError,
    MissingDependencyError,
    StoreConflictError,
    StoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    StoreWriteError,
    UnknownCpgError,
    UnknownCpgWarning,
    UnknownSamplesError,
    WarehouseError,
)
from xr_methyl.ingest.loader import Loader, LoadReport
from xr_methyl.store import Layout, MethylStore
from xr_methyl.warehouse import AthenaWarehouse, Export, IcebergWarehouse, LocalWarehouse, Warehouse, open_warehouse

__version__ = "0.1.0"

__all__ = [
    "AthenaWarehouse",
    "CorruptStoreError",
    "DataError",
    "Export",
    "IcebergWarehouse",
    "Layout",
    "LoadReport",
    "Loader",
    "LocalWarehouse",
    "MethylError",
    "MethylStore",
    "MissingDependencyError",
    "StoreConflictError",
    "StoreError",
    "StoreExistsError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreWriteError",
    "UnknownCpgError",
    "UnknownCpgWarning",
    "UnknownSamplesError",
    "Warehouse",
    "WarehouseError",
    "open_warehouse",
]
