"""Shared fixtures: one small synthetic cohort per session, and the truth to compare with.

The truth is computed independently of xr_methyl's export, locate and scatter:
the Iceberg tables are read back with pyiceberg and pivoted with pandas.  The
fixture chain is warehouse -> store -> dataset; the test folders mirror the
package and run from the lowest layer up, so the lowest broken layer fails first.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xr_methyl import LocalWarehouse, MethylStore
from xr_methyl.synthetic import build_cohort

N_SAMPLES, N_CPGS, BATCH_SIZE = 20, 3000, 8

#: Test folders from the lowest layer of the package up; folders not listed run last.
LAYER_ORDER = [
    "zarrio",
    "storage",
    "warehouse",
    "store",
    "ingest",
    "dataset",
    "importers",
    "analysis",
    "cli",
    "reliability",
    "examples",
]


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        folder = Path(item.path).parent.name
        return LAYER_ORDER.index(folder) if folder in LAYER_ORDER else len(LAYER_ORDER)

    items.sort(key=rank)  # stable: each folder keeps its files' and tests' order


@dataclass
class Truth:
    beta: pd.DataFrame  # samples x cpgs, float32, NaN where the warehouse has no row
    coverage: pd.DataFrame  # samples x cpgs, int, 0 where the warehouse has no row
    samples: pd.DataFrame  # sample_batch_map indexed by sample_id
    rows: dict[str, pd.DataFrame]  # the long beta and coverage tables as stored, NULL values included


def read_truth(warehouse) -> Truth:
    """Pivot the Iceberg tables of a LocalWarehouse or IcebergWarehouse, read whole with pyiceberg."""
    from pyiceberg.catalog import load_catalog

    if isinstance(warehouse, LocalWarehouse):
        catalog = load_catalog(
            "xr_methyl",
            type="sql",
            uri=f"sqlite:///{warehouse.path}/catalog.db",
            warehouse=f"file://{warehouse.path}/warehouse",
        )
    else:
        catalog = load_catalog(warehouse.catalog_name, **warehouse.properties)

    def table(name):
        return catalog.load_table(f"{warehouse.namespace}.{name}").scan().to_arrow().to_pandas()

    cpg_order = table("cpgs")["cpg_id"]
    samples = table("sample_batch_map").set_index("sample_id").sort_index()
    rows = {name: table(name) for name in ("beta", "coverage")}
    # A NULL (or NaN) beta is NaN, as a missing row; a NULL or missing coverage is 0.
    beta = rows["beta"].pivot(index="sample_id", columns="cpg_id", values="beta")
    coverage = rows["coverage"].pivot(index="sample_id", columns="cpg_id", values="coverage")
    beta = beta.reindex(index=samples.index, columns=cpg_order).astype(np.float32)
    coverage = coverage.reindex(index=samples.index, columns=cpg_order).fillna(0).astype(np.int64)
    return Truth(beta=beta, coverage=coverage, samples=samples, rows=rows)


@pytest.fixture(scope="session", autouse=True)
def axis_cache(tmp_path_factory):
    """The local cache of S3 stores' CpG axes (XR_METHYL_CACHE): a fresh folder, never the user's."""
    import os

    path = tmp_path_factory.mktemp("axis-cache")
    saved = os.environ.get("XR_METHYL_CACHE")
    os.environ["XR_METHYL_CACHE"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("XR_METHYL_CACHE", None)
    else:
        os.environ["XR_METHYL_CACHE"] = saved


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 and Glue server on a free port, with dummy credentials in the environment (started on first use)."""
    from xr_methyl.testing import local_aws

    with local_aws.moto_server() as moto:
        yield moto


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "warehouse"
    return build_cohort(LocalWarehouse(path), n_samples=N_SAMPLES, n_cpgs=N_CPGS, batch_size=BATCH_SIZE, seed=3)


@pytest.fixture(scope="session")
def truth(cohort):
    return read_truth(LocalWarehouse(cohort.warehouse.path))


@pytest.fixture
def warehouse(cohort):
    """The session's warehouse: read it, never change it (see `own_cohort`)."""
    return LocalWarehouse(cohort.warehouse.path)


@pytest.fixture
def own_cohort(tmp_path):
    """A small cohort of the test's own, free to break or delete."""
    return build_cohort(LocalWarehouse(tmp_path / "own-warehouse"), n_samples=10, n_cpgs=500, batch_size=4, seed=11)


@pytest.fixture
def store(warehouse, tmp_path):
    return MethylStore.create(tmp_path / "cohort.methyl.zarr", warehouse=warehouse)
