"""The backend behaves like an in-memory Dataset: every indexer form, alignment, metadata coordinates, writing.

Expected values come from numpy (the arrays appended) or from pandas (labels),
never from xr_methyl itself.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xr_methyl import Layout, MethylStore

N_CPGS = 90
N_SAMPLES = 11  # three batches in blocks of 4 rows: the store has padding rows between them

# small dask chunks across the store's blocks are the point here, not a mistake
pytestmark = pytest.mark.filterwarnings("ignore:The specified chunks separate the stored chunks")


def cpg_table(n=N_CPGS, first=0):
    """CpGs ``first`` to ``first + n`` of one genome: 40 per chromosome, 7 bp apart."""
    cpgs = range(first, first + n)
    return pa.table(
        {
            "cpg_id": [f"chr{1 + k // 40}:{100 + 7 * k}" for k in cpgs],
            "chrom": [f"chr{1 + k // 40}" for k in cpgs],
            "pos": pa.array([100 + 7 * k for k in cpgs], pa.int64()),
        }
    )


def make_store(path, layout, *, seed=0, cpgs=None, batches=((3, "B0"), (5, "B1"), (3, "B2"))):
    """A store of ``batches`` with random beta (some NaN) and coverage; returns it and the values in sample order."""
    store = MethylStore.create(path, cpg_ids=cpgs if cpgs is not None else cpg_table(), layout=layout)
    rng = np.random.default_rng(seed)
    betas, coverages = [], []
    for n, batch in batches:
        beta = rng.random((n, store.n_cpgs), dtype=np.float32)
        beta[rng.random(beta.shape) < 0.2] = np.nan
        coverage = np.where(np.isnan(beta), 0, rng.integers(1, 40_000, beta.shape)).astype(np.uint16)
        store.append(batch, [f"{batch}_{i}" for i in range(n)], beta, coverage)
        betas.append(beta)
        coverages.append(coverage)
    return store, np.concatenate(betas), np.concatenate(coverages)


def in_memory(beta, coverage, batches=((3, "B0"), (5, "B1"), (3, "B2")), table=None):
    """What ``make_store`` stored, as an in-memory Dataset with pandas indexes (the twin to compare with)."""
    table = table if table is not None else cpg_table()
    samples = [f"{batch}_{i}" for n, batch in batches for i in range(n)]
    return xr.Dataset(
        {"beta": (("sample", "cpg"), beta), "coverage": (("sample", "cpg"), coverage)},
        coords={
            "sample": np.array(samples, dtype=object),
            "cpg": np.array(table["cpg_id"].to_pylist()),
            "chrom": ("cpg", np.array(table["chrom"].to_pylist())),
            "pos": ("cpg", table["pos"].to_numpy()),
            "batch_id": ("sample", np.array([b for n, b in batches for _ in range(n)], dtype=object)),
        },
    )


def assert_like(ours, twin):
    """Identical values, labels, coordinates and names, once our CpG index is a pandas one like the twin's."""
    from xr_methyl.dataset.cpg_index import CpgIndex

    for name, index in ours.xindexes.items():
        if isinstance(index, CpgIndex):
            ours = ours.drop_indexes(name).set_xindex(name)
    ours = ours.copy()
    for name in ("methylzarr_store", "n_cpgs"):  # where the store is: the twin has no store
        ours.attrs.pop(name, None)
    xr.testing.assert_identical(ours.load(), twin)


LAYOUTS = {
    "plain": Layout(sample_block=4, chunk_rows=1, cpg_chunk=16, cpg_shard=32),
    "tall-chunks": Layout(sample_block=4, chunk_rows=2, cpg_chunk=30, cpg_shard=60),
    "by-cpg": Layout(sample_block=4, chunk_rows=1, cpg_chunk=16, cpg_shard=32, by_cpg_chunk=8),
}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def stored(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("like-xarray") / "s.methyl.zarr"
    store, beta, coverage = make_store(path, LAYOUTS[request.param])
    return path, beta, coverage


def opened(path, how):
    """The same store as a Dataset: lazy backend arrays, dask chunks of the store, or small dask chunks."""
    chunks = {"none": None, "store": {}, "small": {"sample": 3, "cpg": 20}}[how]
    return xr.open_dataset(path, engine="methylzarr", chunks=chunks)


def indexer(size):
    """Any indexer xarray accepts for one dimension: integers (negative too), slices with any step,
    lists in any order with repeats, boolean masks."""
    ints = st.integers(-size, size - 1)
    bounds = st.integers(-size - 3, size + 3) | st.none()
    return st.one_of(
        ints,
        st.builds(slice, bounds, bounds, st.sampled_from([None, 1, 2, 3, -1, -2, -5])),
        st.lists(ints, max_size=8),  # a plain list: xarray makes an empty one float64
        st.lists(ints, max_size=8).map(lambda k: np.array(k, dtype=np.int64)),
        st.lists(st.booleans(), min_size=size, max_size=size).map(np.array),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), how=st.sampled_from(["none", "store", "small"]))
def test_every_outer_indexer_reads_what_numpy_gives(stored, data, how):
    path, beta, coverage = stored
    ds = opened(path, how)
    on_samples = data.draw(indexer(N_SAMPLES), label="sample")
    on_cpgs = data.draw(indexer(N_CPGS), label="cpg")
    if how != "none":  # dask 2026.8 reads x[-n-1::-1] (empty in numpy) as x[::-1]: its bug, not the backend's
        assume(
            not any(
                isinstance(k, slice) and (k.step or 1) < 0 and k.start is not None and k.start < -n
                for k, n in ((on_samples, N_SAMPLES), (on_cpgs, N_CPGS))
            )
        )
    expected = beta[on_samples][..., on_cpgs]
    np.testing.assert_array_equal(ds.beta.isel(sample=on_samples, cpg=on_cpgs).values, expected)
    np.testing.assert_array_equal(ds.beta[on_samples, on_cpgs].values, expected)
    got = ds.coverage.isel(sample=on_samples, cpg=on_cpgs).values
    np.testing.assert_array_equal(got, coverage[on_samples][..., on_cpgs])
    assert got.dtype == np.uint16


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), how=st.sampled_from(["none", "store"]))
def test_vectorized_indexers_read_what_numpy_gives(stored, data, how):
    path, beta, _ = stored
    ds = opened(path, how)
    n = data.draw(st.integers(0, 6))
    rows = np.array(data.draw(st.lists(st.integers(-N_SAMPLES, N_SAMPLES - 1), min_size=n, max_size=n)), dtype=int)
    cols = np.array(data.draw(st.lists(st.integers(-N_CPGS, N_CPGS - 1), min_size=n, max_size=n)), dtype=int)
    got = ds.beta.isel(sample=xr.DataArray(rows, dims="point"), cpg=xr.DataArray(cols, dims="point"))
    np.testing.assert_array_equal(got.values, beta[rows, cols])


@pytest.mark.parametrize("how", ["none", "store", "small"])
def test_one_cpg_or_one_sample_by_label_and_position(stored, how):
    path, beta, _ = stored
    ds = opened(path, how)
    ids = cpg_table()["cpg_id"].to_pylist()
    np.testing.assert_array_equal(ds.beta.sel(cpg=ids[2]).values, beta[:, 2])
    np.testing.assert_array_equal(ds.beta[:, 2].values, beta[:, 2])
    np.testing.assert_array_equal(ds.isel(cpg=-1).beta.values, beta[:, -1])
    np.testing.assert_array_equal(ds.beta.sel(sample="B1_2", cpg=ids[40]).values, beta[5, 40])
    assert float(ds.beta.isel(sample=-2, cpg=-3)) == pytest.approx(beta[-2, -3], nan_ok=True)


def test_out_of_range_positions_raise_index_errors_as_numpy_does(stored):
    path, _, _ = stored
    ds = opened(path, "none")
    for key in ({"cpg": N_CPGS}, {"cpg": -N_CPGS - 1}, {"sample": [0, N_SAMPLES]}):
        with pytest.raises(IndexError):
            ds.beta.isel(key).values


def test_ensure_results_select_one_cpg(warehouse, truth, tmp_path):
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=warehouse)
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    ids = ["S0013", "S0002", "S0007", "S0002"]
    cpg = truth.beta.columns[1234]
    for chunks in (None, {"sample": 2, "cpg": 700}):
        got = ds.methyl.ensure(ids, progress=False, chunks=chunks)
        np.testing.assert_array_equal(got.beta.sel(cpg=cpg).values, truth.beta.loc[ids, cpg].to_numpy())
        np.testing.assert_array_equal(got.isel(cpg=-2).coverage.values, truth.coverage.loc[ids].iloc[:, -2])
        np.testing.assert_array_equal(got.beta[:, ::-700].values, truth.beta.loc[ids].iloc[:, ::-700].to_numpy())


# -- combining results: CpG indexes of one axis align like pandas indexes of their labels --------------------
@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    """Two stores of the same CpG axis (different samples), their twins, and a store of another axis."""
    root = tmp_path_factory.mktemp("two-stores")
    layout = LAYOUTS["plain"]
    _, beta_a, cov_a = make_store(root / "a.zarr", layout, seed=1)
    other_batches = ((2, "C0"), (3, "C1"))
    _, beta_b, cov_b = make_store(root / "b.zarr", layout, seed=2, batches=other_batches)
    shifted = cpg_table(first=45)  # its first 45 CpGs are the last 45 of the others
    _, beta_c, cov_c = make_store(root / "c.zarr", layout, seed=3, cpgs=shifted, batches=((2, "D0"),))
    open_ = {
        name: (
            lambda chunks=None, name=name: xr.open_dataset(root / f"{name}.zarr", engine="methylzarr", chunks=chunks)
        )
        for name in "abc"
    }
    twins = {
        "a": in_memory(beta_a, cov_a),
        "b": in_memory(beta_b, cov_b, other_batches),
        "c": in_memory(beta_c, cov_c, ((2, "D0"),), shifted),
    }
    return open_, twins, root


SUBSETS = [slice(None), [50, 3, 20, 7], slice(0, 30, 3), slice(80, 10, -4), [89, 0]]


@pytest.mark.parametrize("chunks", [None, {}])
def test_two_stores_of_one_axis_concat_subtract_and_merge(two_stores, chunks):
    open_, twin, _ = two_stores
    a, b = open_["a"](chunks), open_["b"](chunks)
    both = xr.concat([a.isel(sample=[0]), b.isel(sample=[1])], "sample", join="exact")
    assert_like(both, xr.concat([twin["a"].isel(sample=[0]), twin["b"].isel(sample=[1])], "sample", join="exact"))
    for left in SUBSETS:
        for right in SUBSETS:
            ours = a.beta.isel(sample=0, cpg=left) - b.beta.isel(sample=1, cpg=right)
            assert_like(ours, twin["a"].beta.isel(sample=0, cpg=left) - twin["b"].beta.isel(sample=1, cpg=right))
    merged = xr.merge(
        [a.beta.isel(cpg=[50, 3, 20]).rename("x"), b.coverage.isel(cpg=slice(0, 30, 3)).rename("y")],
        join="outer",
        compat="no_conflicts",
    )
    expected = xr.merge(
        [twin["a"].beta.isel(cpg=[50, 3, 20]).rename("x"), twin["b"].coverage.isel(cpg=slice(0, 30, 3)).rename("y")],
        join="outer",
        compat="no_conflicts",
    )
    assert_like(merged, expected)


@pytest.mark.parametrize("join", ["inner", "outer", "left", "right", "exact"])
def test_align_and_reindex_like_pandas_indexes(two_stores, join):
    open_, twin, _ = two_stores
    a, b = open_["a"](), open_["b"]()
    for left, right in [(SUBSETS[1], SUBSETS[2]), (SUBSETS[3], SUBSETS[0]), (SUBSETS[2], SUBSETS[2])]:
        ours, theirs = (a.isel(cpg=left), b.isel(cpg=right)), (twin["a"].isel(cpg=left), twin["b"].isel(cpg=right))
        try:
            expected = xr.align(*theirs, join=join)
        except ValueError as err:
            with pytest.raises(type(err)):
                xr.align(*ours, join=join)
            continue
        for got, want in zip(xr.align(*ours, join=join), expected):
            assert_like(got, want)
    assert_like(a.reindex_like(b.isel(cpg=[7, 60, 3])), twin["a"].reindex_like(twin["b"].isel(cpg=[7, 60, 3])))


def test_an_index_over_another_axis_aligns_through_a_pandas_index(two_stores):
    from xarray.core.indexes import PandasIndex

    open_, twin, _ = two_stores
    a, c = open_["a"](), open_["c"]()
    diff = a.beta.isel(sample=0) - c.beta.isel(sample=1)
    assert_like(diff, twin["a"].beta.isel(sample=0) - twin["c"].beta.isel(sample=1))
    assert diff.sizes["cpg"] == 45 and isinstance(diff.xindexes["cpg"], PandasIndex)
    for join in ("outer", "left"):
        for got, want in zip(
            xr.align(a.isel(cpg=[80, 2, 60]), c, join=join),
            xr.align(twin["a"].isel(cpg=[80, 2, 60]), twin["c"], join=join),
        ):
            assert_like(got, want)
    b = open_["b"]()  # three at once: the join of two indexes of one axis meets a pandas index
    for got, want in zip(
        xr.align(a.isel(cpg=[80, 2]), c.isel(cpg=[0, 40]), b.isel(cpg=[5, 85]), join="outer"),
        xr.align(twin["a"].isel(cpg=[80, 2]), twin["c"].isel(cpg=[0, 40]), twin["b"].isel(cpg=[5, 85]), join="outer"),
    ):
        assert_like(got, want)
    ends = xr.concat(
        [a.isel(cpg=slice(0, 3)), c.isel(cpg=slice(-2, None))], "cpg", join="outer", coords="different", compat="equals"
    )
    assert_like(
        ends,
        xr.concat(
            [twin["a"].isel(cpg=slice(0, 3)), twin["c"].isel(cpg=slice(-2, None))],
            "cpg",
            join="outer",
            coords="different",
            compat="equals",
        ),
    )


def test_pieces_of_one_axis_concat_along_it_and_keep_the_cpg_index(two_stores):
    from xr_methyl.dataset.cpg_index import CpgIndex

    open_, twin, _ = two_stores
    a = open_["a"]()
    pieces = [a.isel(cpg=slice(60, 70)), a.isel(cpg=[3, 1]), a.isel(cpg=slice(20, 5, -5))]
    joined = xr.concat(pieces, "cpg")
    assert isinstance(joined.xindexes["cpg"], CpgIndex)
    assert_like(joined, xr.concat([twin["a"].isel(cpg=k) for k in (slice(60, 70), [3, 1], slice(20, 5, -5))], "cpg"))
    np.testing.assert_array_equal(joined.sel(cpg=joined.cpg.values[11]).beta.values, twin["a"].beta.values[:, 1])


def test_renamed_and_rolled_cpg_indexes_select_and_align(two_stores):
    open_, twin, _ = two_stores
    a, b = open_["a"](), open_["b"]()
    ids = twin["a"].cpg.values
    for rename in (
        lambda ds: ds.rename(cpg="probe"),
        lambda ds: ds.rename_vars(cpg="cpg_id"),
        lambda ds: ds.rename_dims(cpg="probe"),
    ):
        assert_like(rename(a), rename(twin["a"]))
    assert_like(a.rename(cpg="probe").sel(probe=ids[[40, 2]]), twin["a"].rename(cpg="probe").sel(probe=ids[[40, 2]]))
    assert_like(a.rename_vars(cpg="cpg_id").sel(cpg_id=ids[7]), twin["a"].rename_vars(cpg="cpg_id").sel(cpg_id=ids[7]))
    ours = xr.align(a.rename(cpg="probe").isel(probe=[1, 2]), b.rename(cpg="probe").isel(probe=[5, 2]), join="outer")
    theirs = xr.align(
        twin["a"].rename(cpg="probe").isel(probe=[1, 2]), twin["b"].rename(cpg="probe").isel(probe=[5, 2]), join="outer"
    )
    for got, want in zip(ours, theirs):
        assert_like(got, want)
    for shift in (3, -95, 0):
        assert_like(a.roll(cpg=shift, roll_coords=True), twin["a"].roll(cpg=shift, roll_coords=True))
        assert_like(
            a.isel(cpg=[4, 9, 1]).roll(cpg=shift, roll_coords=True),
            twin["a"].isel(cpg=[4, 9, 1]).roll(cpg=shift, roll_coords=True),
        )


def test_labels_of_a_selection_with_repeated_cpgs_select_as_pandas_does(two_stores):
    open_, twin, _ = two_stores
    a, ids = open_["a"](), twin["a"].cpg.values
    selections = [
        lambda ds: ds.isel(cpg=[0, 1, 0]).sel(cpg=ids[0]),
        lambda ds: ds.isel(cpg=[0, 1, 0]).sel(cpg=ids[1]),
        lambda ds: ds.isel(cpg=[0, 0, 1]).sel(cpg=slice(None, ids[0])),
        lambda ds: ds.isel(cpg=[0, 1, 0]).sel(cpg=[ids[0]]),
        lambda ds: ds.isel(cpg=[0, 1, 0]).sel(cpg=[]),
        lambda ds: ds.isel(cpg=[0, 1, 0]).sel(cpg=slice(None, ids[0])),
    ]
    for select in selections:
        try:
            expected = select(twin["a"])
        except Exception as err:  # pandas refuses lists and some slices on repeated labels
            with pytest.raises(type(err)):
                select(a)
            continue
        assert_like(select(a), expected)


def test_copies_of_a_store_align_by_their_axis_not_their_path(two_stores, tmp_path):
    import shutil

    open_, twin, root = two_stores
    shutil.copytree(root / "a.zarr", tmp_path / "copy.zarr")
    a, copy = open_["a"](), xr.open_dataset(tmp_path / "copy.zarr", engine="methylzarr")
    assert a.xindexes["cpg"].equals(copy.xindexes["cpg"])
    summed = a.beta + copy.beta  # join="exact" would raise if the indexes differed
    with xr.set_options(arithmetic_join="exact"):
        assert_like(a.beta + copy.beta, twin["a"].beta * 2)
    assert_like(summed, twin["a"].beta * 2)
    assert not a.xindexes["cpg"].equals(open_["c"]().xindexes["cpg"])


def test_pandas_indexed_cpgs_need_a_pandas_index_and_the_error_says_how(two_stores):
    open_, twin, _ = two_stores
    a = open_["a"]()
    labels = list(twin["a"].cpg.values[[5, 2, 70]]) + ["chr9:1"]
    annotation = xr.Dataset({"gene": ("cpg", ["g1", "g2", "g3"])}, coords={"cpg": twin["a"].cpg.values[10:13]})
    for attempt in (lambda ds: ds.reindex(cpg=labels), lambda ds: xr.merge([ds, annotation], join="left")):
        with pytest.raises(ValueError, match=r"set_xindex\('cpg'\)"):
            attempt(a)
        assert_like(attempt(a.drop_indexes("cpg").set_xindex("cpg")), attempt(twin["a"]))


def test_concat_of_an_opened_dataset_and_an_ensure_result(warehouse, truth, tmp_path):
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=warehouse)
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    first = ds.methyl.ensure(["S0004", "S0001"], progress=False)
    opened_again = xr.open_dataset(store.storage.root, engine="methylzarr").sel(sample=["S0001"])
    both = xr.concat([opened_again, first.methyl.ensure(["S0003"], progress=False)], "sample", join="exact")
    np.testing.assert_array_equal(both.beta.values, truth.beta.loc[["S0001", "S0003"]].to_numpy())
    assert list(both.sex.values) == list(truth.samples.loc[["S0001", "S0003"], "sex"])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_join_and_reindex_like_give_what_pandas_gives_for_the_labels(data):
    """On an axis out of label order, with ids of different lengths: labels and order as pandas' union and
    intersection, positions as pandas' get_indexer."""
    from xr_methyl.dataset.cpg_index import CpgIndex
    from xr_methyl.store.cpg_axis import CpgAxis

    n = 30
    ids = np.array([f"c{(i * 7919) % 1000}" + "x" * (i % 3) for i in range(n)])
    axis = CpgAxis.from_ids(pa.array(ids))
    subset = st.one_of(
        st.builds(
            slice, st.integers(-n, n) | st.none(), st.integers(-n, n) | st.none(), st.sampled_from([None, 2, -1, -3])
        ),
        st.lists(st.integers(0, n - 1), unique=True, max_size=12).map(lambda k: np.array(k, dtype=np.int64)),
    )
    left, right = data.draw(subset), data.draw(subset)
    mine, theirs = CpgIndex(axis).isel({"cpg": left}), CpgIndex(axis).isel({"cpg": right})
    labels = {id(mine): pd.Index(ids[left]), id(theirs): pd.Index(ids[right])}
    for how, expected in (
        ("outer", labels[id(mine)].union(labels[id(theirs)])),
        ("inner", labels[id(mine)].intersection(labels[id(theirs)])),
    ):
        joined = mine.join(theirs, how=how)
        assert list(joined.to_pandas_index()) == list(expected)
    positions = mine.reindex_like(theirs)["cpg"]
    np.testing.assert_array_equal(positions, labels[id(mine)].get_indexer(labels[id(theirs)]))


# -- sample metadata: typed, in memory, the same however the Dataset was made ---------------------------------
METADATA = {
    "M0_0": {"age": 41, "weight": 61.5, "sex": "F", "smoker": True, "site": "A", "visit": "2024-01-02", "flag": True},
    "M0_1": {"age": 57, "weight": None, "sex": "M", "smoker": False, "site": 3, "flag": None},
    "M1_0": {"age": 33, "weight": 70, "sex": "F", "smoker": True, "site": "B", "visit": "2024-03-04", "flag": False},
}
METADATA_DTYPES = {
    "batch_id": object,
    "age": np.int64,
    "weight": np.float64,
    "sex": object,
    "smoker": bool,
    "site": object,
    "visit": object,
    "flag": object,
}


@pytest.fixture(scope="module")
def with_metadata(tmp_path_factory):
    path = tmp_path_factory.mktemp("metadata") / "s.methyl.zarr"
    store = MethylStore.create(path, cpg_ids=cpg_table(), layout=LAYOUTS["plain"])
    rng = np.random.default_rng(5)
    beta = rng.random((3, N_CPGS), dtype=np.float32)
    coverage = rng.integers(1, 40_000, beta.shape).astype(np.uint16)
    store.append("M0", ["M0_0", "M0_1"], beta[:2], coverage[:2], metadata=METADATA)
    store.append("M1", ["M1_0"], beta[2:], coverage[2:], metadata=METADATA)
    return path, beta, coverage


def made_every_way(path):
    """The store's samples M1_0, M0_0 as each route to a Dataset gives them."""
    ds = xr.open_dataset(path, engine="methylzarr")
    yield "open_dataset", ds.sel(sample=["M1_0", "M0_0"])
    for chunks in ({}, "auto", {"sample": 1}):
        yield (
            f"open_dataset(chunks={chunks!r})",
            xr.open_dataset(path, engine="methylzarr", chunks=chunks).sel(sample=["M1_0", "M0_0"]),
        )
    yield "ensure()", ds.methyl.ensure(["M1_0", "M0_0"], progress=False)
    yield "ensure(chunks=)", ds.methyl.ensure(["M1_0", "M0_0"], progress=False, chunks={"sample": 1, "cpg": 30})


def test_metadata_coordinates_are_typed_numpy_and_the_same_every_way(with_metadata):
    path, beta, _ = with_metadata
    first = None
    for how, ds in made_every_way(path):
        for name, dtype in METADATA_DTYPES.items():
            coord = ds[name]
            assert coord.dtype == np.dtype(dtype), (how, name, coord.dtype)
            assert isinstance(coord.data, np.ndarray) and coord.chunks is None, (how, name, type(coord.data))
        assert list(ds.age.values) == [33, 41] and list(ds.sex.values) == ["F", "F"]
        assert list(ds.site.values) == ["B", "A"] and list(ds.smoker.values) == [True, True]
        for name in ("cpg", "chrom", "pos"):  # the axis's coordinates stay lazy numpy too, never dask
            assert ds[name].chunks is None, (how, name)
        assert ds.isel(cpg=2).cpg.item() == cpg_table()["cpg_id"][2].as_py() and ds.isel(cpg=2).pos.item() == 114
        np.testing.assert_array_equal(ds.beta.values, beta[[2, 0]])
        if first is None:
            first = ds
        else:
            xr.testing.assert_identical(ds.coords.to_dataset().load(), first.coords.to_dataset().load())
    whole = xr.open_dataset(path, engine="methylzarr")
    assert np.isnan(whole.weight.values[1]) and whole.flag.values[1] is None
    assert list(whole.visit.isnull().values) == [False, True, False]  # missing text is NaN, as pandas has it
    assert list(whole.groupby("visit").groups) == ["2024-01-02", "2024-03-04"]


def test_masks_from_the_cpg_coordinates_select_under_any_chunking(with_metadata):
    path, beta, _ = with_metadata
    table = cpg_table()
    on_chr2 = np.array(table["chrom"].to_pylist()) == "chr2"
    far = table["pos"].to_numpy() > 500
    for how, ds in made_every_way(path):
        np.testing.assert_array_equal(ds.where(ds.chrom == "chr2", drop=True).beta.values, beta[[2, 0]][:, on_chr2])
        np.testing.assert_array_equal(ds.isel(cpg=ds.pos > 500).beta.values, beta[[2, 0]][:, far], err_msg=how)
        np.testing.assert_array_equal(ds.sel(cpg=ds.cpg.str.endswith("7")).pos.values % 10, 7)


@pytest.mark.parametrize("chunks", [None, {}, "auto"])
def test_groupby_a_metadata_coordinate(with_metadata, chunks):
    path, beta, _ = with_metadata
    ds = xr.open_dataset(path, engine="methylzarr", chunks=chunks)
    means = ds.beta.groupby("sex").mean()
    assert list(means.sex.values) == ["F", "M"]
    np.testing.assert_allclose(means.sel(sex="F").values, beta[[0, 2]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(means.sel(sex="M").values, beta[1], rtol=1e-6)
    per_site = ds.methyl.ensure(["M0_0", "M0_1", "M1_0"], progress=False).coverage.groupby("smoker").sum()
    assert per_site.sizes["smoker"] == 2


# -- writing a selection: Zarr v3 and netCDF4 without warnings, every label and dtype back ------------------
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("chunks", [None, {}])
def test_to_zarr_of_a_selection_writes_cleanly_and_round_trips(with_metadata, tmp_path, chunks):
    path, beta, coverage = with_metadata
    ds = xr.open_dataset(path, engine="methylzarr", chunks=chunks)
    picked = ds.isel(sample=[2, 0], cpg=[60, 3, 41])
    # consolidated=False: xarray's default consolidated metadata warns for any Dataset under Zarr v3
    picked.to_zarr(tmp_path / "out.zarr", consolidated=False)
    back = xr.open_zarr(tmp_path / "out.zarr", consolidated=False)
    ids = np.array(cpg_table()["cpg_id"].to_pylist())
    assert list(back.cpg.values) == list(ids[[60, 3, 41]]) and list(back.chrom.values) == ["chr2", "chr1", "chr2"]
    assert list(back.sample.values) == ["M1_0", "M0_0"] and list(back.sex.values) == ["F", "F"]
    assert back.coverage.dtype == np.uint16 and back.age.dtype == np.int64
    np.testing.assert_array_equal(back.beta.values, beta[[2, 0]][:, [60, 3, 41]])
    np.testing.assert_array_equal(back.coverage.values, coverage[[2, 0]][:, [60, 3, 41]])


def test_to_netcdf_with_h5netcdf_keeps_uint16_coverage(with_metadata, tmp_path):
    path, beta, coverage = with_metadata
    picked = xr.open_dataset(path, engine="methylzarr").isel(cpg=slice(10, 40))
    assert (coverage[:, 10:40] > 32767).any()  # beyond int16
    picked.to_netcdf(tmp_path / "out.nc", engine="h5netcdf")
    back = xr.open_dataset(tmp_path / "out.nc", engine="h5netcdf")
    assert back.coverage.dtype == np.uint16
    np.testing.assert_array_equal(back.coverage.values, coverage[:, 10:40])
    np.testing.assert_array_equal(back.beta.values, beta[:, 10:40])
    assert list(back.cpg.values) == cpg_table()["cpg_id"].to_pylist()[10:40]
    assert list(back.sex.values) == ["F", "M", "F"] and back.age.dtype == np.int64


@settings(max_examples=300, deadline=None)
@given(data=st.data(), sorted_axis=st.booleans())
def test_label_slices_select_what_pandas_slice_indexer_gives(data, sorted_axis):
    """Bounds on or off the axis, any step, subsets in, against or out of id order: pandas' positions or its error."""
    from xr_methyl.dataset.cpg_index import CpgIndex
    from xr_methyl.store.cpg_axis import CpgAxis

    n = 24
    ids = np.array([f"c{(i * 37) % 100:02d}" for i in range(n)])
    if sorted_axis:
        ids = np.sort(ids)
    index = CpgIndex(CpgAxis.from_ids(pa.array(ids)))
    subset = data.draw(
        st.one_of(
            st.builds(
                slice,
                st.integers(-n, n) | st.none(),
                st.integers(-n, n) | st.none(),
                st.sampled_from([None, 1, 3, -1, -2]),
            ),
            st.lists(st.integers(0, n - 1), unique=True, max_size=10).map(lambda k: np.array(k, dtype=np.int64)),
        )
    )
    labels = pd.Index(ids[subset])
    bound = st.none() | st.sampled_from(list(ids)) | st.sampled_from(["a", "c", "c05", "c5", "c50x", "d", "café"])
    wanted = slice(data.draw(bound), data.draw(bound), data.draw(st.sampled_from([None, 1, 2, -1, -3])))
    picked = index.isel({"cpg": subset})
    try:
        expected = labels.slice_indexer(wanted.start, wanted.stop, wanted.step)
    except KeyError:
        with pytest.raises(KeyError):
            picked.sel({"cpg": wanted})
        return
    got = picked.sel({"cpg": wanted}).dim_indexers["cpg"]
    assert list(labels[got]) == list(labels[expected])
