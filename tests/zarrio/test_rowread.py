"""Reading lists of rows (xr_methyl.zarrio.rowread): the pure plan, then both readers against plain zarr."""

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, ShardingCodec, ZstdCodec

from xr_methyl.zarrio.rowread import LocalShardReader, plan_row_reads, read_rows


def apply_plan(plan, source: np.ndarray, n: int) -> np.ndarray:
    """What a reader following the plan puts in the result, from an in-memory array."""
    out = np.full((n, source.shape[1]), -1, dtype=source.dtype)
    for lo, hi, at in plan.direct:
        out[at : at + hi - lo] = source[lo:hi]
    for lo, hi, positions, offsets in plan.gathered:
        out[positions] = source[lo:hi][offsets]
    dst, src = plan.repeats
    out[dst] = out[src]
    return out


@given(st.lists(st.integers(0, 40), min_size=1, max_size=30), st.sampled_from([1, 2, 4, 8]))
@settings(max_examples=300, deadline=None)
def test_the_plan_puts_every_requested_row_in_its_place(rows, chunk_rows):
    rows = np.array(rows)
    source = np.arange(41 * 2).reshape(41, 2)
    plan = plan_row_reads(rows, chunk_rows)
    np.testing.assert_array_equal(apply_plan(plan, source, len(rows)), source[rows])
    # each distinct row is read once
    read = [r for lo, hi, _ in plan.direct for r in range(lo, hi)]
    read += [lo + int(o) for lo, _, _, offsets in plan.gathered for o in offsets]
    assert sorted(read) == sorted(set(rows.tolist()))


def test_one_row_chunks_read_ascending_stretches_straight_into_place():
    plan = plan_row_reads(np.array([5, 6, 7, 2, 3, 9, 6]), 1)
    assert plan.direct == [(5, 8, 0), (2, 4, 3), (9, 10, 5)]
    assert not plan.gathered
    assert plan.repeats[0].tolist() == [6] and plan.repeats[1].tolist() == [1]


def test_taller_chunks_read_runs_of_adjacent_chunks_together():
    plan = plan_row_reads(np.array([9, 1, 2, 30]), 8)
    assert [(lo, hi) for lo, hi, *_ in plan.gathered] == [(1, 10)]
    assert plan.direct == [(30, 31, 3)]


def make_array(path, data, *, shards=(4, 96), chunks=(1, 32), compressor=None, fill=np.nan, index_location="end"):
    """A sharded zarr v3 array holding ``data`` (NaN/fill cells included)."""
    codec = ShardingCodec(
        chunk_shape=chunks,
        codecs=[{"name": "bytes", "configuration": {"endian": "little"}}, compressor or ZstdCodec(level=3)],
        index_location=index_location,
    )
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=shards,
        serializer=codec,
        compressors=None,
        fill_value=fill,
    )
    arr[:] = data
    return zarr.open_array(str(path), mode="r")


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    values = rng.random((11, 250)).astype(np.float32)
    values[rng.random(values.shape) < 0.3] = np.nan
    values[8:11, :] = np.nan  # a whole shard of fill values: never written
    values[2, 32:64] = np.nan  # an inner chunk of fill values: not stored
    return values


@pytest.mark.parametrize("index_location", ["end", "start"])
def test_the_local_reader_reads_what_zarr_reads(tmp_path, data, index_location):
    arr = make_array(tmp_path / "a.zarr", data, index_location=index_location)
    assert LocalShardReader.for_array(arr) is not None
    rows = np.array([3, 9, 0, 1, 2, 10, 3, 7])
    for key in (slice(None), slice(5, 250), slice(32, 64), slice(95, 97), slice(200, 250), slice(10, 11)):
        np.testing.assert_array_equal(read_rows(arr, rows, key), data[rows][:, key])


def test_coverage_in_blosc_and_lists_of_cpgs_read_what_zarr_reads(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 500, (9, 200)).astype(np.uint16)
    arr = make_array(
        tmp_path / "c.zarr", data, compressor=BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=2), fill=0
    )
    assert LocalShardReader.for_array(arr) is not None
    rows = np.array([8, 0, 4, 4])
    np.testing.assert_array_equal(read_rows(arr, rows, slice(None)), data[rows])
    cols = np.array([199, 3, 64, 65])  # not sorted: zarr reads it
    np.testing.assert_array_equal(read_rows(arr, rows, cols), data[rows][:, cols])


def test_the_local_reader_reads_only_the_chunks_of_a_list_of_cpgs(tmp_path, data):
    arr = make_array(tmp_path / "a.zarr", data)
    rows = np.array([10, 2, 5, 2])
    # columns in the first and last shard only (none in the middle one), a repeat, the empty chunk
    # of row 2 (32-63), the last partial chunk and the unwritten shard of rows 8-10
    for cols in ([0, 1, 40, 40, 63, 95], [3, 200, 249], [249], list(range(0, 250, 7))):
        cols = np.array(cols)
        np.testing.assert_array_equal(read_rows(arr, rows, cols), data[rows][:, cols])


def test_layouts_the_local_reader_does_not_handle_are_read_by_zarr(tmp_path, data):
    tall = make_array(tmp_path / "tall.zarr", data, chunks=(2, 32))
    assert LocalShardReader.for_array(tall) is None
    unsharded = zarr.create_array(
        store=str(tmp_path / "plain.zarr"), shape=data.shape, dtype=data.dtype, chunks=(4, 64), fill_value=np.nan
    )
    unsharded[:] = data
    assert LocalShardReader.for_array(unsharded) is None
    rows = np.array([7, 2, 3, 2])
    for arr, chunk_rows in ((tall, 2), (unsharded, 4)):
        np.testing.assert_array_equal(read_rows(arr, rows, slice(None), chunk_rows=chunk_rows), data[rows])


def test_a_damaged_shard_index_is_an_error_not_wrong_values(tmp_path, data):
    arr = make_array(tmp_path / "a.zarr", data)
    shard = tmp_path / "a.zarr" / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # inside the index, before its checksum
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        read_rows(arr, np.array([1]), slice(None))
