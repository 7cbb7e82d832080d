"""The analysis layer: masks, M-values and per-CpG feature selection against scipy.

Every statistic is checked against an independent reference: a loop over CpGs
that drops the missing pairs and calls ``scipy.stats`` (or numpy) on what is
left, then sorts the CpGs with Python's ``sorted``.
"""

import numpy as np
import pytest
import scipy.stats as st
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as hst
from hypothesis.extra.numpy import arrays

from xr_methyl import Loader, MethylStore, analysis

N_SUBSET = 16  # samples of the session cohort ingested for these tests


# -- the independent reference --------------------------------------------------------
def reference_scores(X: np.ndarray, y: np.ndarray | None, method: str, min_samples: int):
    """(score, n) per column of X, one CpG at a time with scipy."""
    scores, counts = [], []
    for j in range(X.shape[1]):
        x = X[:, j].astype(np.float64)
        keep = ~np.isnan(x) if y is None else ~np.isnan(x) & ~np.isnan(y)
        n = int(keep.sum())
        counts.append(n)
        if n < min_samples:
            scores.append(np.nan)
        elif method == "variance":
            scores.append(float(np.var(x[keep], ddof=1)))
        elif np.all(x[keep] == x[keep][0]) or np.all(y[keep] == y[keep][0]):
            scores.append(np.nan)  # undefined for a constant side
        elif method == "pearson":
            scores.append(float(st.pearsonr(x[keep], y[keep])[0]))
        else:
            scores.append(float(st.spearmanr(x[keep], y[keep])[0]))
    return np.array(scores), np.array(counts)


def reference_top(scores: np.ndarray, k: int, by_abs: bool) -> list[int]:
    defined = [j for j in range(len(scores)) if not np.isnan(scores[j])]
    return sorted(defined, key=lambda j: (-(abs(scores[j]) if by_abs else scores[j]), j))[:k]


def assert_same_selection(got, cpg_ids, want: np.ndarray, k: int, by_abs: bool, tol: float = 1e-9):
    """``got`` is a top k of the reference scores ``want``, allowing any order among near-ties.

    Spearman's rho takes few distinct values on few samples, so exact ties
    are common and rounding decides their order differently in each code.
    """
    position = {c: j for j, c in enumerate(cpg_ids)}
    index = np.array([position[c] for c in got.cpg.values], dtype=int)
    np.testing.assert_allclose(got.values, want[index], rtol=tol)
    key = lambda s: np.abs(s) if by_abs else s  # noqa: E731
    top = reference_top(want, k, by_abs)
    np.testing.assert_allclose(key(got.values), key(want[top]), rtol=tol)  # the same best scores, best first
    assert len(set(index)) == len(index) == len(top)
    if top:  # everything clearly better than the k-th score is in
        clearly = np.flatnonzero(np.where(np.isnan(want), -np.inf, key(want)) > key(want[top[-1]]) + tol)
        assert set(clearly) <= set(index)


# -- small hand-made matrices ---------------------------------------------------------
def matrix(values: np.ndarray) -> xr.DataArray:
    n, m = values.shape
    return xr.DataArray(
        values.astype(np.float32),
        dims=("sample", "cpg"),
        coords={
            "sample": [f"S{i}" for i in range(n)],
            "cpg": [f"chr1:{100 + j}" for j in range(m)],
            "chrom": ("cpg", ["chr1"] * m),
            "pos": ("cpg", 100 + np.arange(m)),
        },
    )


@pytest.fixture
def awkward():
    """Random betas with the cases that break naive code, one per column."""
    rng = np.random.default_rng(5)
    n, m = 14, 60
    X = rng.beta(2, 2, size=(n, m))
    X[rng.random((n, m)) < 0.25] = np.nan  # scattered missing cells
    X[:, 0] = 0.5  # constant
    X[:, 1] = np.nan  # empty
    X[:, 2] = np.nan
    X[:2, 2] = [0.1, 0.9]  # two samples only
    X[:, 3] = np.round(X[:, 3], 1)  # many ties
    X[:, 4] = X[:, 5]  # an exact duplicate
    X[:, 6] = np.nan
    X[:3, 6] = [0.2, 0.4, 0.3]  # exactly three samples present
    y = rng.uniform(20, 80, size=n)
    y[[3, 9]] = np.nan  # unknown target values leave those samples out
    y[4] = y[5]  # a tie in the target
    return X.astype(np.float32), y  # float32, as stored


@pytest.mark.parametrize("method", ["pearson", "spearman", "variance"])
@pytest.mark.parametrize("min_samples", [2, 3, 4, 11])
def test_scores_equal_scipy_with_missing_values(awkward, method, min_samples):
    X, y = awkward
    target = None if method == "variance" else y
    got = analysis.feature_scores(matrix(X), target, method=method, min_samples=min_samples, cpgs_per_task=7)
    assert got.score.chunks is not None  # lazy until asked
    want, n = reference_scores(X, target, method, min_samples)
    np.testing.assert_array_equal(got.n_samples.values, n)
    np.testing.assert_allclose(got.score.values, want, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isnan(got.score.values[1])  # an empty column is never defined
    assert np.isnan(got.score.values[0]) == (method != "variance")  # a constant one has variance 0
    assert np.isnan(got.score.values[6]) == (min_samples > 3)  # defined on exactly min_samples samples


@pytest.mark.parametrize("method", ["pearson", "spearman", "variance"])
@pytest.mark.parametrize("cpgs_per_task", [1, 7, 60])
def test_top_k_is_the_reference_top_k_whatever_the_task_size(awkward, method, cpgs_per_task):
    X, y = awkward
    target = None if method == "variance" else y
    want, n = reference_scores(X, target, method, 3)
    top = reference_top(want, 12, by_abs=method != "variance")
    got = analysis.select_features(matrix(X), target, 12, method=method, cpgs_per_task=cpgs_per_task)
    assert list(got.cpg.values) == [f"chr1:{100 + j}" for j in top]
    np.testing.assert_allclose(got.values, want[top], rtol=1e-9)
    np.testing.assert_array_equal(got.n_samples.values, n[top])
    np.testing.assert_array_equal(got.pos.values, 100 + np.array(top))
    assert got.name == {"pearson": "pearson_r", "spearman": "spearman_rho", "variance": "variance"}[method]


def test_equal_scores_keep_genome_order(awkward):
    X, y = awkward
    X = np.repeat(X[:, [7]], 5, axis=1)  # five identical CpGs
    got = analysis.select_features(matrix(X), y, 3, cpgs_per_task=2)
    assert list(got.cpg.values) == ["chr1:100", "chr1:101", "chr1:102"]


def test_fewer_than_k_come_back_when_fewer_are_defined(awkward):
    X, y = awkward
    got = analysis.select_features(matrix(X), y, 60, min_samples=12)
    want, n = reference_scores(X, y, "pearson", 12)
    assert len(got) == np.count_nonzero(~np.isnan(want)) < 60
    assert (got.n_samples >= 12).all()
    nothing = analysis.select_features(matrix(X), y, 5, min_samples=13)  # only 12 targets are known
    assert nothing.sizes["cpg"] == 0


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        hst.tuples(hst.integers(1, 12), hst.integers(1, 5)),
        elements=hst.sampled_from([np.nan, 0.0, 0.25, 0.5, 1.0, 3.0]),
    )
)
def test_nanrank_matches_scipy_rankdata(a):
    want = np.column_stack([st.rankdata(a[:, j], method="average", nan_policy="omit") for j in range(a.shape[1])])
    np.testing.assert_array_equal(analysis.nanrank(a), want)


def test_mask_and_m_values_match_numpy():
    rng = np.random.default_rng(2)
    beta = rng.random((5, 40))
    beta[rng.random((5, 40)) < 0.2] = np.nan
    beta[0, :2] = [0.0, 1.0]
    coverage = rng.integers(0, 20, size=(5, 40))
    B, C = matrix(beta), matrix(coverage.astype(np.float64)).astype(np.uint16)
    masked = analysis.mask(B.chunk({"cpg": 9}), C.chunk({"cpg": 9}), 6)
    assert masked.chunks is not None and masked.name is None  # lazy
    np.testing.assert_array_equal(masked.values, np.where(coverage >= 6, B.values, np.nan))
    np.testing.assert_array_equal(analysis.mask(B, C, 0).values, B.values)
    m = analysis.m_values(B, alpha=0.05)
    b = B.values.astype(np.float64)
    np.testing.assert_allclose(m.values, np.log2((b + 0.05) / (1 - b + 0.05)), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isfinite(m.values[0, :2]).all() and m.values[0, 0] < 0 < m.values[0, 1]
    assert np.array_equal(np.isnan(m.values), np.isnan(b))
    assert m.name == "m_values" and m.dtype == np.float32


# -- argument checking ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "kendall"}, ValueError, "method='kendall'"),
        ({"k": 0}, ValueError, "k=0"),
        ({"k": 61}, ValueError, "k=61 but there are only 60"),
        ({"k": 2.5}, TypeError, "k=2.5"),
        ({"k": True}, TypeError, "k=True"),
        ({"min_samples": 1}, ValueError, "min_samples=1"),
        ({"cpgs_per_task": 0}, ValueError, "cpgs_per_task=0"),
        ({"min_coverage": 3}, ValueError, "min_coverage=3 needs the coverage"),
        ({"target": np.ones(13)}, ValueError, r"shape \(13,\)"),
        ({"target": np.array(["a", "b", "c"] * 4 + ["a", "b"])}, ValueError, "exactly two"),
        ({"target": np.r_[np.inf, np.ones(13)]}, ValueError, "infinite"),
        ({"target": None}, ValueError, "needs a target"),
        ({"method": "variance"}, ValueError, "takes no target"),
    ],
)
def test_bad_arguments_are_named(awkward, kwargs, error, match):
    X, y = awkward
    args = {"target": y, "k": 5, **kwargs}
    with pytest.raises(error, match=match):
        analysis.select_features(matrix(X), args.pop("target"), args.pop("k"), **args)


@pytest.mark.parametrize("alpha", [0, -0.1, float("nan"), float("inf"), "0.1"])
def test_bad_alpha_is_named(alpha):
    with pytest.raises(ValueError, match=f"alpha={alpha!r}"):
        analysis.m_values(matrix(np.zeros((2, 2))), alpha)


def test_bad_min_coverage_is_named():
    B = matrix(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="min_coverage=-1"):
        analysis.mask(B, B, -1)


# -- through the accessor, on a real store ----------------------------------------------
@pytest.fixture(scope="module")
def cached(cohort, tmp_path_factory):
    """A store holding N_SUBSET samples of the session cohort, from three batches."""
    from xr_methyl import LocalWarehouse

    store = MethylStore.create(
        tmp_path_factory.mktemp("analysis") / "s.methyl.zarr", warehouse=LocalWarehouse(cohort.warehouse.path)
    )
    ids = cohort.sample_ids[:N_SUBSET]
    Loader(store).ingest(ids, progress=False)
    return store, ids


def opened(store) -> xr.Dataset:
    return xr.open_dataset(store.storage.root, engine="methylzarr")


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_selection_on_the_store_equals_scipy_on_the_warehouse_pivot(cached, truth, method):
    store, ids = cached
    X = truth.beta.loc[ids].to_numpy()
    X = np.where(truth.coverage.loc[ids].to_numpy() >= 8, X, np.nan)
    age = truth.samples.loc[ids, "age"].to_numpy()
    want, n = reference_scores(X, age, method, 6)

    ds = opened(store)  # lazy backend arrays, read straight into the tasks
    got = ds.methyl.select_features("age", 25, method=method, min_coverage=8, min_samples=6, cpgs_per_task=400)
    assert_same_selection(got, list(truth.beta.columns), want, 25, by_abs=True)
    np.testing.assert_array_equal(got.n_samples.values, n[list(truth.beta.columns.get_indexer(got.cpg.values))])
    assert list(got.chrom.values) == [c.split(":")[0] for c in got.cpg.values]
    assert list(got.pos.values) == [int(c.split(":")[1]) for c in got.cpg.values]

    # the same from a dask-backed fold returned by ensure, in another sample order
    fold = ds.methyl.ensure(ids[::-1], progress=False)
    again = fold.methyl.select_features(fold.age.values, 25, method=method, min_coverage=8, min_samples=6)
    assert list(again.cpg.values) == list(got.cpg.values)
    np.testing.assert_allclose(again.values, got.values, rtol=1e-12)


def test_targets_by_name_array_or_labelled_dataarray_agree(cached, truth):
    store, ids = cached
    ds = opened(store)
    by_name = ds.methyl.feature_scores("age").score.values
    shuffled = ds.age.isel(sample=np.random.default_rng(0).permutation(len(ids)))
    np.testing.assert_array_equal(ds.methyl.feature_scores(shuffled).score.values, by_name)  # aligned by label
    np.testing.assert_array_equal(ds.methyl.feature_scores(list(ds.age.values)).score.values, by_name)
    want, _ = reference_scores(truth.beta.loc[ids].to_numpy(), truth.samples.loc[ids, "age"].to_numpy(), "pearson", 3)
    np.testing.assert_allclose(by_name, want, rtol=1e-9, equal_nan=True)


def test_two_level_metadata_is_a_usable_target(cached, truth):
    store, ids = cached
    ds = opened(store)
    sex = truth.samples.loc[ids, "sex"].to_numpy()
    assert set(sex) == {"F", "M"}
    got = ds.methyl.select_features("sex", 10)
    want, _ = reference_scores(truth.beta.loc[ids].to_numpy(), (sex == "M").astype(float), "pearson", 3)
    assert_same_selection(got, list(truth.beta.columns), want, 10, by_abs=True)


def test_accessor_mask_and_m_values_are_lazy_and_correct(cached, truth):
    store, ids = cached
    ds = opened(store)
    masked = ds.methyl.mask(min_coverage=10)
    assert masked.chunks is not None
    beta, coverage = truth.beta.loc[ids].to_numpy(), truth.coverage.loc[ids].to_numpy()
    np.testing.assert_array_equal(masked.values, np.where(coverage >= 10, beta, np.nan))
    m = ds.methyl.m_values(alpha=0.01, min_coverage=10).values
    b = np.where(coverage >= 10, beta, np.nan).astype(np.float64)
    np.testing.assert_allclose(m, np.log2((b + 0.01) / (1 - b + 0.01)), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert ds.methyl.select_features(None, 5, method="variance").sizes["cpg"] == 5


def test_accessor_errors_name_what_is_wrong(cached):
    store, _ = cached
    ds = opened(store)
    with pytest.raises(KeyError, match="'height'.*sample coordinates.*'age'"):
        ds.methyl.select_features("height", 5)
    with pytest.raises(ValueError, match="'chrom' has dims"):
        ds.methyl.select_features("chrom", 5)
    with pytest.raises(KeyError, match="no 'coverage' variable"):
        ds.drop_vars("coverage").methyl.mask(5)
    with pytest.raises(KeyError, match="no value for 1 sample"):
        ds.methyl.select_features(ds.age.isel(sample=slice(1, None)), 5)
