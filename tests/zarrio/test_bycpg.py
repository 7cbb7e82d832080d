"""The CpG-major copy of beta (Layout.by_cpg_chunk): written with beta, read for few scattered CpGs.

Values through every path (xarray, the local reader, zarr's own reading of the
shards encoded here, the S3 fallback) equal beta's; the append rule, the commit
point, verify and gc hold for it as for beta; bad layouts are refused by name.
"""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import xr_methyl.zarrio.bycpg as bycpg
from xr_methyl import Layout, MethylStore
from xr_methyl.cli import main as cli
from xr_methyl.testing.faulty_storage import FaultyStorage
from xr_methyl.zarrio.bycpg import by_cpg_cheaper, plan_gather, read_by_cpg

N_CPGS = 300  # three CpG shards of 128, the last one partial; its last copy chunk too (300 = 18 * 16 + 12)


def layout(codec="zstd"):
    return Layout(sample_block=4, chunk_rows=1, cpg_chunk=32, cpg_shard=128, by_cpg_chunk=16, by_cpg_codec=codec)


def cpg_table(n=N_CPGS):
    return pa.table(
        {
            "cpg_id": [f"chr1:{100 + i}" for i in range(n)],
            "chrom": ["chr1"] * n,
            "pos": pa.array([100 + i for i in range(n)], pa.int64()),
        }
    )


def make_block(n, seed):
    rng = np.random.default_rng(seed)
    beta = rng.random((n, N_CPGS), dtype=np.float32)
    beta[rng.random(beta.shape) < 0.3] = np.nan
    beta[:, 16:48] = np.nan  # whole empty chunks of the copy
    if n > 1:
        beta[1, 128:256] = np.nan  # and a row empty across a whole shard
    coverage = np.where(np.isnan(beta), 0, rng.integers(1, 60, beta.shape)).astype(np.uint16)
    return beta, coverage


def fill(store, batches=((3, 1), (5, 2), (4, 3)), prefix="B"):
    """Append batches of (samples, seed) named ``prefix<k>``; return the beta of the samples appended."""
    rows = []
    for k, (n, seed) in enumerate(batches):
        beta, cov = make_block(n, seed)
        assert store.append(f"{prefix}{k}", [f"{prefix}{k}_{i}" for i in range(n)], beta, cov)
        rows.append(beta)
    return np.concatenate(rows)


@pytest.fixture(params=["zstd", "raw"])
def filled(request, tmp_path):
    store = MethylStore.create(tmp_path / "s.methyl.zarr", cpg_ids=cpg_table(), layout=layout(request.param))
    return store, fill(store)


def shard_hashes(store):
    return {
        key: hashlib.sha256(store.storage.read_bytes(key)).hexdigest()
        for key, _ in sorted(store.storage.walk())
        if "/c/" in key
    }


class Spy:
    """Counts reads that the local reader of the copy serves."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = bycpg.ByCpgReader.read

        def read(reader, rows, cols):
            self.calls += 1
            return real(reader, rows, cols)

        monkeypatch.setattr(bycpg.ByCpgReader, "read", read)


# -- the layout ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"by_cpg_chunk": -1}, "by_cpg_chunk=-1"),
        ({"by_cpg_chunk": 2.5}, "by_cpg_chunk=2.5"),
        ({"by_cpg_chunk": True}, "by_cpg_chunk=True"),
        ({"by_cpg_chunk": 48}, "by_cpg_chunk=48 must divide cpg_shard=128"),
        ({"by_cpg_chunk": 16, "by_cpg_codec": "lz4"}, "by_cpg_codec='lz4'"),
    ],
)
def test_bad_layouts_are_refused_by_name(tmp_path, kwargs, message):
    bad = Layout(sample_block=4, chunk_rows=1, cpg_chunk=32, cpg_shard=128, **kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        MethylStore.create(tmp_path / "s.methyl.zarr", cpg_ids=cpg_table(), layout=bad)
    assert not (tmp_path / "s.methyl.zarr").exists()


def test_a_chunk_that_does_not_divide_a_one_shard_axis_is_rounded_into_the_shard(tmp_path):
    store = MethylStore.create(tmp_path / "s.methyl.zarr", cpg_ids=cpg_table(100), layout=Layout(by_cpg_chunk=64))
    assert store.array("beta_by_cpg").shards == (8, 128)  # the axis (100) in whole chunks of 64
    beta, cov = np.random.default_rng(0).random((3, 100), dtype=np.float32), np.ones((3, 100), np.uint16)
    store.append("B", ["a", "b", "c"], beta, cov)
    np.testing.assert_array_equal(store.array("beta_by_cpg")[:3], beta)


def test_the_manifest_records_it_and_stores_without_it_read_as_none(tmp_path, filled):
    store, _ = filled
    assert json.loads(store.storage.read_bytes("manifest.json"))["layout"]["by_cpg"] == {
        "chunk": 16,
        "codec": store.layout.by_cpg_codec,
    }
    assert MethylStore.open(store.storage).layout.by_cpg_chunk == 16
    plain = MethylStore.create(
        tmp_path / "plain.methyl.zarr", cpg_ids=cpg_table(), layout=Layout(cpg_chunk=32, cpg_shard=128)
    )
    assert "by_cpg" not in json.loads(plain.storage.read_bytes("manifest.json"))["layout"]  # as before the option
    assert plain.array_names == ("beta", "coverage")
    old = {"sample_block": 8, "chunk_shape": [1, 65536], "shard_shape": [8, 2**21]}  # written before the option
    assert Layout.from_json(old) == Layout()
    assert not (plain.storage.root / "beta_by_cpg.zarr").exists()


# -- values -------------------------------------------------------------------------------------------
def test_zarr_reads_the_shards_encoded_here(filled):
    store, beta = filled
    copy = store.array("beta_by_cpg")
    assert copy.chunks == (4, 16) and copy.shards == (4, 128)
    rows = [i for i, s in enumerate(store.commit.rows) if s is not None]
    np.testing.assert_array_equal(copy[:][rows], beta)
    assert np.isnan(copy[:][[i for i, s in enumerate(store.commit.rows) if s is None]]).all()  # padding


@pytest.mark.parametrize(
    "cols",
    [
        [0, 15, 16, 127, 128, 255, 256, 288, 299],  # shard and chunk edges, the last partial chunk
        [299],
        [5, 5, 5],
        [250, 3, 128, 3],
        list(range(16, 48)),  # one, repeats, unsorted, empty chunks
    ],
)
def test_scattered_cpgs_through_xarray_equal_beta_and_use_the_copy(filled, monkeypatch, cols):
    store, beta = filled
    spy = Spy(monkeypatch)
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    np.testing.assert_array_equal(ds.beta.isel(cpg=cols).values, beta[:, cols])
    samples = [7, 0, 11, 3, 3]  # any order, repeats, across blocks
    np.testing.assert_array_equal(ds.beta.isel(sample=samples, cpg=cols).values, beta[samples][:, cols])
    assert spy.calls == 2
    ids = [f"chr1:{100 + c}" for c in cols]
    np.testing.assert_array_equal(ds.sel(cpg=ids).beta.values, beta[:, cols])


def test_row_reads_and_slices_use_beta(filled, monkeypatch):
    store, beta = filled
    spy = Spy(monkeypatch)
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    np.testing.assert_array_equal(ds.beta.values, beta)
    np.testing.assert_array_equal(ds.beta.isel(cpg=slice(10, 20)).values, beta[:, 10:20])
    np.testing.assert_array_equal(ds.coverage.isel(cpg=[3, 200]).values > 0, ~np.isnan(beta[:, [3, 200]]))
    assert spy.calls == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_reads_of_the_copy_equal_beta(filled, seed):
    store, beta = filled
    rng = np.random.default_rng(seed)
    committed = np.array([i for i, s in enumerate(store.commit.rows) if s is not None])
    pick = rng.integers(0, len(committed), rng.integers(1, 20))
    cols = rng.integers(0, N_CPGS, rng.integers(1, 60))
    got = read_by_cpg(store.array("beta_by_cpg"), committed[pick], cols, block=4)
    np.testing.assert_array_equal(got, beta[pick][:, cols])


def test_a_dask_backed_read_uses_the_copy_too(filled):
    store, beta = filled
    ds = xr.open_dataset(store.storage.root, engine="methylzarr", chunks={})
    np.testing.assert_array_equal(ds.beta.isel(cpg=[1, 140, 299]).values, beta[:, [1, 140, 299]])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 22), min_size=1, max_size=12),
    st.lists(st.integers(0, 99), min_size=1, max_size=30),
    st.sampled_from([(4, 16, 32), (2, 8, 8), (3, 5, 100)]),
)
def test_plan_gather_places_every_cell(rows, cols, grid):
    """Applying the plan to chunks cut from a dense matrix gives matrix[rows][:, cols]."""
    block, chunk, width = grid
    n_rows, n_cols = 24, 100
    dense = np.arange(n_rows * n_cols, dtype=np.float32).reshape(n_rows, n_cols)
    padded = np.full((n_rows, -(-n_cols // width) * width), np.nan, np.float32)
    padded[:, :n_cols] = dense
    plans, inverse = plan_gather(np.array(rows), np.array(cols), block=block, chunk=chunk, width=width)
    out = np.full((len(rows), len(np.unique(cols))), -1, np.float32)
    for p in plans:
        base = p.shard * width
        cells = np.stack(
            [
                padded[p.block * block : (p.block + 1) * block, base + c * chunk : base + (c + 1) * chunk]
                for c in p.chunks
            ]
        )
        out[np.ix_(p.out_rows, np.arange(p.cols.start, p.cols.stop))] = cells[p.slot, :, p.offset][:, p.in_block].T
    np.testing.assert_array_equal(out[:, inverse], dense[rows][:, cols])


def test_the_copy_is_chosen_for_few_cpgs_only():
    kwargs = {"chunk": 64, "block": 8, "main_chunk": 65536}
    few = np.sort(np.random.default_rng(0).choice(2_000_000, 1000, replace=False))
    many = np.sort(np.random.default_rng(0).choice(2_000_000, 50_000, replace=False))
    for codec in ("zstd", "raw"):
        assert by_cpg_cheaper(256, 32, few, codec=codec, **kwargs)
        assert not by_cpg_cheaper(256, 32, many, codec=codec, **kwargs)
        assert not by_cpg_cheaper(256, 32, np.arange(0, 2_000_000, 40), codec=codec, **kwargs)
        assert not by_cpg_cheaper(0, 0, few, codec=codec, **kwargs)
    # At 200,000 CpGs, 1,000 of them touch a quarter of the copy's chunks, and beta's last inner
    # chunk holds only 3,392 CpGs: beta is cheaper (measured: 0.19 s against 0.22 s).
    rng = np.random.default_rng(7)
    assert not by_cpg_cheaper(
        256, 32, np.sort(rng.choice(200_000, 1000, replace=False)), codec="zstd", n_cpgs=200_000, **kwargs
    )
    # One sample: one main chunk per CpG against one copy chunk (8 rows) per CpG, with its own overhead.
    assert not by_cpg_cheaper(1, 1, few[:3], codec="zstd", chunk=64, block=8, main_chunk=16)


# -- the store's rules --------------------------------------------------------------------------------
def test_appends_never_rewrite_existing_shards_of_the_copy(filled):
    store, _ = filled
    before = shard_hashes(store)
    assert any(k.startswith("beta_by_cpg.zarr/c/") for k in before)
    fill(store, batches=((6, 9),), prefix="N")
    after = shard_hashes(store)
    assert {k: after[k] for k in before} == before
    assert any(k.startswith("beta_by_cpg.zarr/c/") for k in set(after) - set(before))
    records = [
        json.loads((store.storage.root / "blocks" / name).read_text())
        for name in sorted(p.name for p in (store.storage.root / "blocks").iterdir())
    ]
    recorded = {k for r in records for k in r.get("beta_by_cpg", {})}
    assert recorded == {k for k in after if k.startswith("beta_by_cpg.zarr/")}
    assert store.verify().ok


def test_an_interrupted_append_reopens_at_the_last_commit_and_is_reclaimed(filled):
    store, beta = filled
    before = shard_hashes(store)

    class Crash(Exception):
        pass

    # The copy's new shards are written (after beta's and coverage's), then the writer dies.
    faulty = FaultyStorage(store.storage, "blocks/*", fault=Crash)
    with pytest.raises(Crash):
        fill(MethylStore.open(faulty), batches=((5, 8),), prefix="N")
    assert any(key.startswith("beta_by_cpg.zarr/c/") for key in faulty.writes)
    reopened = MethylStore.open(store.storage)
    assert len(reopened.sample_ids) == 12
    orphans = [key for key, _ in reopened.gc(dry_run=True).removed if key.startswith("beta_by_cpg.zarr/c/")]
    assert orphans  # what the dead writer left of the copy is reclaimable
    report = reopened.verify()
    assert report.ok and any("uncommitted row" in n for n in report.notes)
    more = fill(reopened, batches=((5, 8),), prefix="N")  # the next append reclaims it and writes the rows again
    assert {k: v for k, v in shard_hashes(reopened).items() if k in before} == before
    ds = xr.open_dataset(reopened.storage.root, engine="methylzarr")
    np.testing.assert_array_equal(
        ds.beta.isel(cpg=[0, 150, 299]).values, np.concatenate([beta, more])[:, [0, 150, 299]]
    )
    assert reopened.verify().ok


def test_verify_finds_a_damaged_shard_of_the_copy(filled):
    store, _ = filled
    key = next(k for k in shard_hashes(store) if k.startswith("beta_by_cpg.zarr/c/"))
    path = store.storage.root / key
    data = bytearray(path.read_bytes())
    data[3] ^= 0xFF
    path.write_bytes(bytes(data))
    report = store.verify()
    assert not report.ok
    assert any(key in p and "differs from what was written" in p for p in report.problems)
    assert any(key in p and ("differs from beta.zarr" in p or "does not decode" in p) for p in report.problems)


def test_verify_finds_a_copy_whose_values_differ_from_beta(tmp_path):
    """A shard that is whole (its chunk's checksum and its record rewritten to match) but holds other
    values than beta."""
    import google_crc32c

    store = MethylStore.create(tmp_path / "s.methyl.zarr", cpg_ids=cpg_table(), layout=layout("raw"))
    beta, cov = make_block(4, 1)
    store.append("B", list("abcd"), beta, cov)
    key = "beta_by_cpg.zarr/c/0/0"
    path = store.storage.root / key
    data = bytearray(path.read_bytes())
    data[0:4] = np.float32(0.123).tobytes()  # the first cell of the first stored chunk (at offset 0)
    chunk = 4 * 16 * 4  # a raw chunk: 4 rows x 16 CpGs of float32, then its crc32c
    data[chunk : chunk + 4] = google_crc32c.value(bytes(data[:chunk])).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    record_path = store.storage.root / "blocks" / "00000000.json"
    record = json.loads(record_path.read_text())
    record["beta_by_cpg"][key] = {"bytes": len(data), "sha256": hashlib.sha256(bytes(data)).hexdigest()}
    record_path.write_text(json.dumps(record))
    report = store.verify()
    assert any("differs from beta.zarr" in p for p in report.problems), report.problems


# -- S3: zarr's own reading of the copy ---------------------------------------------------------------
def test_an_s3_store_reads_the_copy_through_zarr(moto_server, monkeypatch):
    uri = f"s3://{moto_server.new_bucket()}/s.methyl.zarr"
    store = MethylStore.create(uri, cpg_ids=cpg_table(), layout=layout(), storage_options=moto_server.options)
    beta = fill(store, batches=((5, 1), (3, 2)))
    used = []
    real = bycpg.read_by_cpg
    monkeypatch.setattr("xr_methyl.dataset.backend.read_by_cpg", lambda *a, **k: used.append(1) or real(*a, **k))
    ds = xr.open_dataset(uri, engine="methylzarr", storage_options=moto_server.options)
    cols = [0, 17, 128, 299, 17]
    np.testing.assert_array_equal(ds.beta.isel(sample=[6, 0, 2], cpg=cols).values, beta[[6, 0, 2]][:, cols])
    assert used and bycpg.ByCpgReader.for_array(store.array("beta_by_cpg")) is None
    assert any(k.startswith("beta_by_cpg.zarr/c/") for k, _ in store.storage.walk())
    assert store.verify().ok


# -- the command line ---------------------------------------------------------------------------------
def test_init_takes_the_option(warehouse, tmp_path, capsys):
    path = tmp_path / "c.methyl.zarr"
    assert (
        cli(["init", str(path), "--warehouse", str(warehouse.path), "--by-cpg-chunk", "64", "--by-cpg-codec", "raw"])
        == 0
    )
    assert MethylStore.open(path).layout.by_cpg_chunk == 64
    capsys.readouterr()
    assert cli(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "CpG-major copy of beta in chunks of 64 CpGs (raw)" in out and "its CpG-major copy" in out
    assert zarr.open_array(path / "beta_by_cpg.zarr", mode="r").chunks == (8, 64)
    assert cli(["init", str(tmp_path / "bad"), "--warehouse", str(warehouse.path), "--by-cpg-chunk", "-3"]) == 1
    assert "by_cpg_chunk=-3" in capsys.readouterr().err


def test_a_shard_of_many_chunks_is_encoded_on_threads_and_read_back_by_zarr(tmp_path):
    n = 70_000  # 1,094 chunks of 64 in the copy's one shard: compressed on a few threads
    store = MethylStore.create(
        tmp_path / "s.methyl.zarr", cpg_ids=[f"c{i}" for i in range(n)], layout=Layout(by_cpg_chunk=64)
    )
    rng = np.random.default_rng(4)
    beta = rng.random((3, n), dtype=np.float32)
    beta[rng.random(beta.shape) < 0.5] = np.nan
    store.append("B", ["a", "b", "c"], beta, np.ones((3, n), np.uint16))
    np.testing.assert_array_equal(store.array("beta_by_cpg")[:3], beta)
    cols = np.sort(rng.choice(n, 100, replace=False))
    np.testing.assert_array_equal(
        read_by_cpg(store.array("beta_by_cpg"), np.array([2, 0]), cols, block=8), beta[[2, 0]][:, cols]
    )


def test_the_loader_writes_the_copy_under_a_memory_budget(warehouse, truth, tmp_path):
    """Ingest through the Loader (RowRange.write, as on dask workers), in pieces of whole shards."""
    from xr_methyl import Loader

    layout = Layout(sample_block=4, cpg_chunk=256, cpg_shard=1024, by_cpg_chunk=32)
    store = MethylStore.create(tmp_path / "c.methyl.zarr", warehouse=warehouse, layout=layout)
    ids = list(truth.beta.index[:10])
    Loader(store, warehouse, max_memory=64 << 10).ingest(ids, progress=False)
    ds = xr.open_dataset(store.storage.root, engine="methylzarr")
    cols = [0, 31, 32, 1023, 1024, 2999]
    want = truth.beta.loc[list(ds.sample.values)].to_numpy(np.float32)[:, cols]
    np.testing.assert_array_equal(ds.beta.isel(cpg=cols).values, want)
    np.testing.assert_array_equal(
        read_by_cpg(store.array("beta_by_cpg"), np.arange(store.commit.n_rows), cols, block=4)[
            [i for i, s in enumerate(store.commit.rows) if s]
        ],
        want,
    )
    assert store.verify().ok
