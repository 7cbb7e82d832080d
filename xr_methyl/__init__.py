"""xr_methyl: a Zarr v3 cache of wide DNA-methylation matrices, presented through xarray.

The data path, one module per stage::

    warehouse/  long rows (Iceberg via DuckDB; the Warehouse protocol)
    locate      long rows -> (row, column) positions (a numpy hash table over the axis)
    scatter     positions -> dense wide blocks (pure numpy)
    store       wide blocks -> Zarr v3 + sidecars, one commit point
    loader      the steps above, for the samples a store lacks
    backend     store -> lazy labelled Dataset (engine="methylzarr")
    accessor    ds.methyl.ensure(...), .region, .mask, .m_values, .select_features
    analysis    the pure computations behind those (xarray in, xarray out)

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
