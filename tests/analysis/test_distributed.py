"""The analysis runs unchanged on a dask.distributed cluster of worker processes.

The workers read the store themselves: the lazy arrays are pickled into the
tasks and reopen the Zarr arrays in each worker process.
"""

import os

import numpy as np
import pytest
import xarray as xr
from dask_support import two_worker_client

from xr_methyl import Loader, LocalWarehouse, MethylStore

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with two_worker_client() as client:
        yield client


@pytest.fixture(scope="module")
def store_path(cohort, tmp_path_factory):
    store = MethylStore.create(
        tmp_path_factory.mktemp("dist") / "s.methyl.zarr", warehouse=LocalWarehouse(cohort.warehouse.path)
    )
    Loader(store).ingest(cohort.sample_ids, progress=False)
    return store.storage.root


def test_feature_selection_on_worker_processes_equals_the_local_run(client, store_path, truth):
    ds = xr.open_dataset(store_path, engine="methylzarr")
    args = {"min_coverage": 5, "min_samples": 8, "cpgs_per_task": 500}
    with distributed.get_task_stream(client) as stream:
        on_cluster = {m: ds.methyl.select_features("age", 30, method=m, **args) for m in ("pearson", "spearman")}
        masked_sum = float(ds.methyl.mask(min_coverage=5).sum().compute())
    workers = {task["worker"] for task in stream.data}
    assert len(workers) == 2  # both worker processes took part
    assert os.getpid() not in client.run(os.getpid).values()  # and they are other processes

    with _synchronous():
        for method, got in on_cluster.items():
            local = ds.methyl.select_features("age", 30, method=method, **args)
            assert list(got.cpg.values) == list(local.cpg.values)
            np.testing.assert_array_equal(got.values, local.values)
            np.testing.assert_array_equal(got.n_samples.values, local.n_samples.values)
    beta = truth.beta.loc[list(ds.sample.values)].to_numpy(np.float64)
    coverage = truth.coverage.loc[list(ds.sample.values)].to_numpy()
    np.testing.assert_allclose(masked_sum, np.nansum(np.where(coverage >= 5, beta, np.nan)), rtol=1e-5)


def test_folds_from_ensure_compute_on_the_cluster(client, store_path, truth):
    ds = xr.open_dataset(store_path, engine="methylzarr")
    fold = ds.methyl.ensure(["S0013", "S0002", "S0007", "S0019", "S0004"], progress=False)
    got = client.compute(fold.methyl.m_values(alpha=0.5).mean("cpg")).result()
    b = truth.beta.loc[list(fold.sample.values)].to_numpy(np.float64)
    np.testing.assert_allclose(got.values, np.nanmean(np.log2((b + 0.5) / (1 - b + 0.5)), axis=1), rtol=1e-5)


def _synchronous():
    import dask

    return dask.config.set(scheduler="synchronous")
