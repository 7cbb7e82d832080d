"""build_cohort: the design holds, and the values read back from the warehouse look like WGBS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from xr_methyl.errors import WarehouseError
from xr_methyl.synthetic import Cohort, build_cohort
from xr_methyl.warehouse.local import LocalWarehouse, chrom_sort_key

N_SAMPLES, N_CPGS, BATCH_SIZE, N_AGE = 20, 2000, 8, 60


def _long(cohort: Cohort, table: str) -> pd.DataFrame:
    """Every row of a value table, read back through the warehouse's export."""
    with cohort.warehouse.export(table, cohort.batches) as export:
        frames = [
            pd.concat([b.to_pandas() for b in export.read(batch_id)]).assign(batch_id=batch_id)
            for batch_id in cohort.batch_ids
        ]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Cohort:
    return build_cohort(
        tmp_path_factory.mktemp("synthetic") / "wh",
        n_samples=N_SAMPLES,
        n_cpgs=N_CPGS,
        batch_size=BATCH_SIZE,
        n_age_cpgs=N_AGE,
        seed=5,
    )


@pytest.fixture(scope="module")
def beta(small) -> pd.DataFrame:
    return _long(small, "beta")


@pytest.fixture(scope="module")
def coverage(small) -> pd.DataFrame:
    return _long(small, "coverage")


def test_design(small):
    assert isinstance(small.warehouse, LocalWarehouse)
    assert small.sample_ids == [f"S{i:04d}" for i in range(N_SAMPLES)]
    assert small.batch_ids == ["B000", "B001", "B002"]
    assert [len(small.batches[b]) for b in small.batch_ids] == [8, 8, 4]
    assert sum(small.batches.values(), []) == small.sample_ids
    assert len(small.cpg_ids) == N_CPGS and len(set(small.cpg_ids.to_pylist())) == N_CPGS
    assert len(small.age_cpg_ids) == N_AGE and set(small.age_cpg_ids) <= set(small.cpg_ids.to_pylist())
    assert all(20 <= a <= 80 for a in small.ages.values())


def test_ids_widen_when_needed():
    from xr_methyl.synthetic import _ids

    assert _ids("B", 1000, 3)[-1] == "B999" and _ids("B", 1001, 3)[-1] == "B1000"
    assert _ids("S", 10_001, 4)[-2:] == ["S09999", "S10000"]


def test_sample_batch_map(small):
    rows = small.warehouse.resolve_samples(small.sample_ids)
    assert rows.column_names == ["sample_id", "batch_id", "age", "sex"]
    assert rows.schema.field("age").type == pa.float64()
    assert rows["sample_id"].to_pylist() == small.sample_ids
    by_sample = {s: b for b, ss in small.batches.items() for s in ss}
    assert rows["batch_id"].to_pylist() == [by_sample[s] for s in small.sample_ids]
    assert rows["age"].to_pylist() == [small.ages[s] for s in small.sample_ids]
    assert set(rows["sex"].to_pylist()) == {"F", "M"}


def test_cpgs_table(small):
    cpgs = small.warehouse.cpgs()
    assert cpgs["cpg_id"].to_pylist() == small.cpg_ids.to_pylist()  # built in genome order already
    df = cpgs.to_pandas()
    assert sorted(df["chrom"].unique(), key=chrom_sort_key) == [f"chr{k}" for k in range(1, 6)]
    assert (df["cpg_id"] == df["chrom"] + ":" + df["pos"].astype(str)).all()
    for _, group in df.groupby("chrom"):
        assert (np.diff(group["pos"].to_numpy()) > 0).all(), "positions increase within a chromosome"


def test_sparse_rows_and_missing_fractions(small, beta, coverage):
    for frame in (beta, coverage):
        assert not frame.duplicated(["sample_id", "cpg_id"]).any()
        assert set(frame["cpg_id"]) <= set(small.cpg_ids.to_pylist())
    # Both value tables have a row for exactly the same (sample, CpG) pairs.
    keys = ["batch_id", "sample_id", "cpg_id"]
    both = beta[keys].merge(coverage[keys], how="outer", indicator=True)
    assert (both["_merge"] == "both").all()
    present = beta.groupby("sample_id").size().reindex(small.sample_ids, fill_value=0)
    missing = 1 - present / N_CPGS
    assert missing.between(0.05, 0.30).all(), missing.describe()
    assert missing.std() > 0.02, "the fraction is drawn per sample"
    assert np.allclose(missing.to_numpy(), [small.missing_fractions[s] for s in small.sample_ids])
    # Each sample lives in its own batch only.
    by_sample = {s: b for b, ss in small.batches.items() for s in ss}
    assert (beta["batch_id"] == beta["sample_id"].map(by_sample)).all()


def test_values_look_like_wgbs(beta, coverage):
    b = beta["value"].dropna().to_numpy()
    assert np.isfinite(b).all() and b.min() >= 0 and b.max() <= 1
    assert np.mean((b < 0.2) | (b > 0.8)) > 0.7, "betas are bimodal"
    assert np.mean(b < 0.2) > 0.15 and np.mean(b > 0.8) > 0.4
    c = coverage["value"].to_numpy()
    assert (c >= 1).all() and (c == np.round(c)).all()
    assert 12 < c.mean() < 18 and c.std() > 3


def test_a_few_betas_are_null_with_their_coverage_kept(small, beta, coverage):
    null = beta["value"].isna()
    assert null.groupby(beta["sample_id"]).sum().reindex(small.sample_ids, fill_value=0).to_dict() == small.null_betas
    assert 0.001 < null.mean() < 0.004, "about 0.2 % of the rows by default"
    keys = ["sample_id", "cpg_id"]
    kept = beta.loc[null, keys].merge(coverage, on=keys)
    assert len(kept) == null.sum() and (kept["value"] >= 1).all()


def test_null_betas_leave_the_other_values_alone(tmp_path):
    kwargs = dict(n_samples=4, n_cpgs=2000, batch_size=4, n_age_cpgs=5, seed=4)

    def rows(path, fraction):
        cohort = build_cohort(tmp_path / path, null_beta_fraction=fraction, **kwargs)
        return _long(cohort, "beta").sort_values(["sample_id", "cpg_id"], ignore_index=True)

    none, some = rows("none", 0.0), rows("some", 0.05)
    assert none["value"].notna().all()
    null = some["value"].isna()
    assert 0.03 < null.mean() < 0.07
    pd.testing.assert_frame_equal(some[~null], none[~null])  # the same rows, the same values


def _age_correlations(small: Cohort, beta: pd.DataFrame, cpg_ids: list[str]) -> np.ndarray:
    wide = beta[beta["cpg_id"].isin(cpg_ids)].pivot(index="sample_id", columns="cpg_id", values="value")
    age = pd.Series(small.ages)
    return np.array([wide[c].corr(age.reindex(wide.index)) for c in cpg_ids])


def test_age_cpgs_track_age(small, beta):
    r_age = _age_correlations(small, beta, small.age_cpg_ids)
    assert np.nanmean(np.abs(r_age)) > 0.8
    assert np.mean(r_age > 0) > 0.2 and np.mean(r_age < 0) > 0.2, "both directions of drift"
    others = [c for c in small.cpg_ids.to_pylist() if c not in set(small.age_cpg_ids)]
    rng = np.random.default_rng(0)
    r_other = _age_correlations(small, beta, list(rng.choice(others, size=N_AGE, replace=False)))
    assert np.nanmean(np.abs(r_other)) < 0.35


def test_rows_are_shuffled_or_not(tmp_path):
    def positions_in_file_order(cohort: Cohort) -> dict[str, np.ndarray]:
        rows = cohort.warehouse._table("beta").scan().to_arrow().to_pandas()  # file order
        pos = rows["cpg_id"].str.split(":").str[1].astype(int)
        return {s: pos[rows["sample_id"] == s].to_numpy() for s in cohort.sample_ids}

    kwargs = dict(n_samples=4, n_cpgs=300, batch_size=4, n_chroms=1, n_age_cpgs=5, seed=2)
    ordered = positions_in_file_order(build_cohort(tmp_path / "a", shuffle_rows=False, **kwargs))
    shuffled = positions_in_file_order(build_cohort(tmp_path / "b", shuffle_rows=True, **kwargs))
    # One chromosome: genome order is position order.
    assert all((np.diff(p) > 0).all() for p in ordered.values())
    assert not any((np.diff(p) > 0).all() for p in shuffled.values())
    assert all(np.array_equal(np.sort(shuffled[s]), ordered[s]) for s in ordered)


def test_same_seed_same_cohort(tmp_path):
    kwargs = dict(n_samples=6, n_cpgs=400, batch_size=6, n_age_cpgs=10)
    a = build_cohort(tmp_path / "a", seed=9, **kwargs)
    b = build_cohort(tmp_path / "b", seed=9, **kwargs)
    c = build_cohort(tmp_path / "c", seed=10, **kwargs)

    def values(cohort):
        return _long(cohort, "beta").sort_values(["sample_id", "cpg_id"]).reset_index(drop=True)

    assert a.cpg_ids.equals(b.cpg_ids) and a.ages == b.ages and a.age_cpg_ids == b.age_cpg_ids
    pd.testing.assert_frame_equal(values(a), values(b))
    assert a.ages != c.ages
    assert not values(a).equals(values(c))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="batch_size=97"):
        build_cohort(tmp_path / "x", batch_size=97)
    with pytest.raises(ValueError, match="missing_fraction"):
        build_cohort(tmp_path / "x", missing_fraction=(0.3, 0.1))
    with pytest.raises(ValueError, match="null_beta_fraction"):
        build_cohort(tmp_path / "x", null_beta_fraction=1.0)
    with pytest.raises(ValueError, match="n_chroms"):
        build_cohort(tmp_path / "x", n_cpgs=3, n_chroms=4)
    assert not (tmp_path / "x").exists(), "arguments are checked before anything is written"


def test_refuses_an_existing_warehouse(small):
    with pytest.raises(WarehouseError, match="already exists"):
        build_cohort(small.warehouse, n_samples=2, n_cpgs=10, n_age_cpgs=0)
