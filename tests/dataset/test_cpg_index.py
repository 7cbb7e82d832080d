"""The CpG index: label and region look-ups without a hash table, lazy coordinates, old stores."""

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from xr_methyl import CorruptStoreError, Layout, MethylStore
from xr_methyl.dataset.cpg_index import CpgIndex
from xr_methyl.store.cpg_axis import sort_order

N = 300


def axis_table(order=None):
    chrom = np.array([f"chr{1 + i // 100}" for i in range(N)])
    pos = np.array([1000 + 10 * (i % 100) for i in range(N)])
    ids = np.array([f"{c}:{p}" for c, p in zip(chrom, pos)])
    if order is not None:
        chrom, pos, ids = chrom[order], pos[order], ids[order]
    return pa.table({"cpg_id": ids.tolist(), "chrom": chrom.tolist(), "pos": pa.array(pos, pa.int64())})


def open_store(tmp_path, table, name="s.zarr"):
    store = MethylStore.create(tmp_path / name, cpg_ids=table, layout=Layout(4, 4, 16, 64))
    rng = np.random.default_rng(0)
    beta = rng.random((4, N), dtype=np.float32)
    store.append("B1", ["a", "b", "c", "d"], beta, np.ones((4, N), np.uint16))
    return store, beta


@pytest.fixture
def opened(tmp_path):
    store, beta = open_store(tmp_path, axis_table())
    return xr.open_dataset(store.storage.root, engine="methylzarr"), beta, axis_table()


def test_sort_order_matches_numpy_on_awkward_ids():
    ids = np.array([b"b", b"a", b"ab", b"a\x7e", b"abcdefghij", b"abcdefghi", b"", b"zz" * 7], dtype="S14")
    np.testing.assert_array_equal(ids[sort_order(ids)], np.sort(ids))


def test_sel_by_ids_uses_the_cpg_index(opened):
    ds, beta, table = opened
    assert isinstance(ds.xindexes["cpg"], CpgIndex)
    ids = table["cpg_id"].to_pylist()
    want = [ids[250], ids[3], ids[120]]
    picked = ds.sel(cpg=want)
    assert list(picked.cpg.values) == want
    np.testing.assert_array_equal(picked.beta.values, beta[:, [250, 3, 120]])
    assert list(picked.pos.values) == [int(w.split(":")[1]) for w in want]
    assert float(ds.beta.sel(sample="b", cpg=ids[7])) == beta[1, 7]
    with pytest.raises(KeyError, match="2 CpG id"):
        ds.sel(cpg=[ids[0], "chr9:1", "café"])


def test_selections_compose_after_isel(opened):
    ds, beta, table = opened
    ids = table["cpg_id"].to_pylist()
    part = ds.isel(cpg=slice(100, 200, 2))
    np.testing.assert_array_equal(part.sel(cpg=[ids[150], ids[100]]).beta.values, beta[:, [150, 100]])
    with pytest.raises(KeyError):
        part.sel(cpg=[ids[151]])  # stepped over
    picked = ds.isel(cpg=[290, 5, 17])
    np.testing.assert_array_equal(picked.sel(cpg=[ids[17], ids[290]]).beta.values, beta[:, [17, 290]])
    assert list(picked.cpg.values) == [ids[290], ids[5], ids[17]]


def test_boolean_masks_select_like_xarray(opened):
    ds, beta, _ = opened
    mask = (ds.chrom == "chr2") & (ds.pos >= 1500)
    picked = ds.sel(cpg=mask)
    expected = np.flatnonzero((np.arange(N) // 100 == 1) & (1000 + 10 * (np.arange(N) % 100) >= 1500))
    np.testing.assert_array_equal(picked.beta.values, beta[:, expected])
    assert set(picked.chrom.values) == {"chr2"}
    part = ds.isel(cpg=slice(0, 150))
    np.testing.assert_array_equal(part.sel(cpg=part.pos < 1100).beta.values, beta[:, [*range(10), *range(100, 110)]])
    with pytest.raises(IndexError, match="300 entries"):
        ds.sel(cpg=np.ones(5, bool))


def test_region_is_half_open_and_a_slice_in_genome_order(opened):
    ds, beta, table = opened
    got = ds.methyl.region("chr2", 1100, 1150)  # positions 1100..1140 of chr2: columns 110..114
    assert list(got.pos.values) == [1100, 1110, 1120, 1130, 1140]
    assert set(got.chrom.values) == {"chr2"}
    np.testing.assert_array_equal(got.beta.values, beta[:, 110:115])
    assert ds.methyl.region("chr2", 0, 10).sizes["cpg"] == 0
    with pytest.raises(KeyError, match="chr7"):
        ds.methyl.region("chr7", 0, 10)
    # a region of a subset keeps to the subset
    assert list(ds.isel(cpg=slice(112, None)).methyl.region("chr2", 1100, 1150).pos.values) == [1120, 1130, 1140]


def test_region_on_an_axis_out_of_genome_order(tmp_path):
    order = np.random.default_rng(1).permutation(N)
    store, beta = open_store(tmp_path, axis_table(order))
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    got = ds.methyl.region("chr3", 1500, 1530)
    assert sorted(got.pos.values) == [1500, 1510, 1520] and set(got.chrom.values) == {"chr3"}
    cols = [int(np.flatnonzero((ds.pos.values == p) & (ds.chrom.values == "chr3"))[0]) for p in got.pos.values]
    np.testing.assert_array_equal(got.beta.values, beta[:, cols])
    assert (tmp_path / "s.zarr" / "cpg_index" / "locus_order.npy").exists()


def test_coordinates_are_lazy_and_open_reads_no_axis_pages(opened):
    ds, _, _ = opened
    for name in ("cpg", "chrom", "pos"):
        assert not ds[name].variable._in_memory
    assert ds.cpg.values.dtype.kind == "U"


def test_datasets_with_the_index_pickle_and_concat(opened):
    ds, beta, table = opened
    clone = pickle.loads(pickle.dumps(ds.isel(cpg=slice(10, 20))))
    np.testing.assert_array_equal(clone.beta.values, beta[:, 10:20])
    assert list(clone.cpg.values) == table["cpg_id"].to_pylist()[10:20]
    both = xr.concat([ds.sel(sample=["a"]), ds.sel(sample=["d"])], dim="sample")
    np.testing.assert_array_equal(both.beta.values, beta[[0, 3]])


@pytest.mark.parametrize("version", [1, 3])
def test_a_store_of_another_format_version_is_refused(tmp_path, version):
    store, _ = open_store(tmp_path, axis_table())
    root = store.storage.root
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "format_version": version}))
    with pytest.raises(CorruptStoreError, match=f"version {version}; this xr_methyl reads methylzarr version 2"):
        MethylStore.open(root)


def test_a_manifest_without_a_field_is_refused_by_name(tmp_path):
    store, _ = open_store(tmp_path, axis_table())
    root = store.storage.root
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["coverage_dtype"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptStoreError, match="manifest.json: coverage_dtype is missing"):
        MethylStore.open(root)


def test_a_changed_axis_of_the_same_length_is_refused_at_open_and_before_writing(tmp_path):
    store, _ = open_store(tmp_path, axis_table())
    other, _ = open_store(tmp_path, axis_table(np.arange(N)[::-1]), name="other.zarr")
    opened = MethylStore.open(store.storage.root)
    # Rewritten in place while open: the memory-mapped ids change under the open store.
    (store.storage.root / "cpg_ids.npy").write_bytes((other.storage.root / "cpg_ids.npy").read_bytes())
    with pytest.raises(CorruptStoreError, match="must never change"):
        opened.append("B2", ["e"], np.zeros((1, N), np.float32), np.zeros((1, N), np.uint16))
    assert opened.refresh().sample_ids == ["a", "b", "c", "d"]
    with pytest.raises(CorruptStoreError, match="cpg_ids.npy: it differs from what the store was created with"):
        MethylStore.open(store.storage.root)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 40),
    outer=st.one_of(
        st.none(),
        st.tuples(
            st.integers(-45, 45) | st.none(), st.integers(-45, 45) | st.none(), st.sampled_from([None, 1, 2, 3, -1, -2])
        ),
    ),
    inner=st.lists(st.integers(-45, 45), max_size=12)
    | st.tuples(st.integers(-45, 45) | st.none(), st.integers(-45, 45) | st.none(), st.sampled_from([None, 1, 2, -1])),
)
def test_composed_selections_are_what_numpy_gives(n, outer, inner):
    """isel of an isel: the columns the index keeps are numpy's, or numpy's IndexError."""
    from xr_methyl.dataset.cpg_index import _columns, _compose

    cols = slice(*outer) if outer is not None else None
    key = slice(*inner) if isinstance(inner, tuple) else np.array(inner, dtype=np.int64)
    expected_cols = np.arange(n) if cols is None else np.arange(n)[cols]
    try:
        expected = expected_cols[key]
    except IndexError:
        with pytest.raises(IndexError):
            _compose(cols, n, key)
        return
    np.testing.assert_array_equal(_columns(_compose(cols, n, key), n), expected)
    if isinstance(key, np.ndarray) and len(expected_cols):  # and composed once more, from an array of columns
        again = _compose(_compose(cols, n, key), n, np.zeros(1, np.int64) if len(expected) else key)
        np.testing.assert_array_equal(_columns(again, n), expected[:1] if len(expected) else expected)
