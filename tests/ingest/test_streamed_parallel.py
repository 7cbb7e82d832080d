"""Ingest under a memory budget (whole-shard units) and on dask workers: same values, same commits."""

import numpy as np
import pytest

from xr_methyl import Layout, Loader, LocalWarehouse, MethylStore
from xr_methyl.ingest.fill import plan_units


def assert_matches_truth(ds, truth, ids):
    np.testing.assert_array_equal(ds.beta.values, truth.beta.loc[ids].to_numpy())
    np.testing.assert_array_equal(ds.coverage.values, truth.coverage.loc[ids].to_numpy())


# 3000 CpGs in shards of 512: six CpG shards, sample blocks of 4.
SMALL = Layout(sample_block=4, chunk_rows=4, cpg_chunk=256, cpg_shard=512)
IDS = [f"S{i:04d}" for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 17, 18)]


def test_plan_units_cover_everything_in_whole_shards():
    cases = [(10, 3000, 1 << 30), (10, 3000, 4 * 3000 * 7), (10, 3000, 4 * 1024 * 7), (10, 3000, 1), (3, 100, 50)]
    for n_rows, n_cpgs, budget in cases:
        units = plan_units(n_rows, n_cpgs, block=4, cpg_shard=512, bytes_per_cell=7, max_memory=budget)
        covered = np.zeros((n_rows, n_cpgs), int)
        for rows, cols in units:
            covered[rows, cols] += 1
            assert rows.start % 4 == 0 and cols.start % 512 == 0
            assert (cols.stop - cols.start) % 512 == 0 or cols.stop == n_cpgs
            assert (rows.stop - rows.start) % 4 == 0 or rows.stop == n_rows
            fits = (rows.stop - rows.start) * (cols.stop - cols.start) * 7 <= budget
            assert fits or (rows.stop - rows.start <= 4 and cols.stop - cols.start <= 512)  # one shard at least
        assert (covered == 1).all()
    assert len(plan_units(10, 3000, block=4, cpg_shard=512, bytes_per_cell=7, max_memory=4 * 1024 * 7)) == 9


@pytest.mark.parametrize("budget", [1 << 30, 4 * 3000 * 7, 1])
def test_a_memory_budget_changes_the_units_not_the_values(warehouse, truth, tmp_path, budget):
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=warehouse, layout=SMALL)
    report = Loader(store, max_memory=budget).ingest(IDS, progress=False)
    assert sorted(report.ingested) == sorted(IDS)
    assert report.long_rows == int(truth.coverage.loc[IDS].to_numpy().astype(bool).sum()) * 2
    assert_matches_truth(Loader(store).load(IDS, progress=False), truth, IDS)


def test_repeats_are_caught_in_every_unit(tmp_path):
    import pyarrow as pa

    from xr_methyl import DataError
    from xr_methyl.synthetic import build_cohort

    cohort = build_cohort(LocalWarehouse(tmp_path / "wh"), n_samples=4, n_cpgs=600, batch_size=4, seed=2)
    wh = cohort.warehouse
    repeat = {"batch_id": ["B000"], "sample_id": ["S0003"], "cpg_id": [cohort.cpg_ids[590].as_py()]}
    wh.append("beta", pa.table({**repeat, "beta": [0.5]}))
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=wh, layout=SMALL)
    with pytest.raises(DataError, match="S0003"):
        Loader(store, max_memory=1).ingest(cohort.sample_ids, progress=False)
    assert MethylStore.open(tmp_path / "s.zarr").sample_ids == []


def test_parallel_ingest_on_dask_workers_commits_in_order(warehouse, truth, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=warehouse, layout=SMALL)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        report = Loader(store, max_memory=4 * 3000 * 7).ingest(IDS, progress=False, client=client)
    assert report.batches == ["B000", "B001", "B002"]
    reopened = MethylStore.open(tmp_path / "s.zarr")
    assert reopened.sample_ids == report.ingested == [s for s in IDS]  # batch order, request order within
    assert_matches_truth(Loader(reopened).load(IDS, progress=False), truth, IDS)
