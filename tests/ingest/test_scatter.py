"""The pure long -> wide scatter, tested directly (property tests) before any I/O layer."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xr_methyl.errors import DataError
from xr_methyl.ingest.scatter import WideBlock, scatter


@st.composite
def long_rows(draw, max_samples=6, max_cpgs=40):
    """A block size and a set of distinct (row, col) cells with betas, in random order."""
    n_samples = draw(st.integers(1, max_samples))
    n_cpgs = draw(st.integers(1, max_cpgs))
    cells = draw(st.sets(st.tuples(st.integers(0, n_samples - 1), st.integers(0, n_cpgs - 1)), max_size=60))
    cells = draw(st.permutations(sorted(cells)))
    values = draw(st.lists(st.floats(0, 1, width=32), min_size=len(cells), max_size=len(cells)))
    rows = np.array([r for r, _ in cells], dtype=np.int32)
    cols = np.array([c for _, c in cells], dtype=np.int32)
    return n_samples, n_cpgs, rows, cols, np.array(values, dtype=np.float64)


def reference_pivot(n_samples, n_cpgs, rows, cols, values, fill, dtype):
    """A deliberately naive cell-by-cell pivot to compare against."""
    out = np.full((n_samples, n_cpgs), fill, dtype=dtype)
    for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True):
        out[r, c] = v
    return out


@given(long_rows(), st.integers(1, 5))
@settings(max_examples=200, deadline=None)
def test_block_equals_naive_pivot_in_any_record_batching(case, n_parts):
    n_samples, n_cpgs, rows, cols, values = case
    block = WideBlock("beta", [f"S{i}" for i in range(n_samples)], n_cpgs)
    for part in np.array_split(np.arange(len(rows)), n_parts):
        block.add(rows[part], cols[part], values[part])
    got = block.finish()
    expected = reference_pivot(n_samples, n_cpgs, rows, cols, values, np.nan, np.float32)
    np.testing.assert_array_equal(got, expected)  # NaN where no row, exact float32 elsewhere
    assert got.dtype == np.float32
    assert np.count_nonzero(~np.isnan(got)) == len(rows)


@given(long_rows())
@settings(max_examples=100, deadline=None)
def test_coverage_block_is_exact_and_zero_filled(case):
    n_samples, n_cpgs, rows, cols, values = case
    counts = np.round(values * 1000).astype(np.int64)
    block = WideBlock("coverage", [f"S{i}" for i in range(n_samples)], n_cpgs, "uint16")
    block.add(rows, cols, counts.astype(np.float64))  # exports carry doubles
    expected = reference_pivot(n_samples, n_cpgs, rows, cols, counts, 0, np.uint16)
    np.testing.assert_array_equal(block.finish(), expected)


@given(long_rows(), st.data())
@settings(max_examples=100, deadline=None)
def test_any_repeated_cell_is_reported(case, data):
    n_samples, n_cpgs, rows, cols, values = case
    if len(rows) == 0:
        return
    i = data.draw(st.integers(0, len(rows) - 1))
    rows2, cols2 = np.append(rows, rows[i]), np.append(cols, cols[i])
    values2 = np.append(values, data.draw(st.floats(0, 1)))
    block = WideBlock("beta", [f"S{k}" for k in range(n_samples)], n_cpgs)
    split = data.draw(st.integers(0, len(rows2)))  # the repeat may land in another record batch
    block.add(rows2[:split], cols2[:split], values2[:split])
    block.add(rows2[split:], cols2[split:], values2[split:])
    with pytest.raises(DataError, match="repeat a \\(sample, cpg\\) pair"):
        block.finish()


@pytest.mark.parametrize("bad", [-0.01, 1.5, np.inf, -np.inf])
def test_out_of_range_beta_names_the_sample(bad):
    block = WideBlock("beta", ["S0", "S1"], 4)
    with pytest.raises(DataError, match="'S1'") as err:
        block.add(np.array([0, 1]), np.array([0, 2]), np.array([0.5, bad]))
    assert "[0, 1]" in str(err.value)


@pytest.mark.parametrize(
    ("dtype", "bad"),
    [
        ("uint16", 65536),
        ("uint8", 256),
        ("uint16", -1),
        ("uint16", 2.5),
        ("uint16", -0.5),
        ("uint16", np.inf),
        ("uint16", -np.inf),
    ],
)
def test_coverage_that_does_not_fit_the_dtype_names_the_sample(dtype, bad):
    block = WideBlock("coverage", ["S0", "S1"], 3, dtype)
    with pytest.raises(DataError, match="'S0'") as err:
        block.add(np.array([0, 1]), np.array([0, 0]), np.array([bad, 3.0]))
    assert dtype in str(err.value)
    # nothing was scattered: the block is still all empty
    assert not block.values.any()


@given(long_rows(), st.data())
@settings(max_examples=100, deadline=None)
def test_null_and_nan_are_stored_as_missing_and_still_count_as_rows(case, data):
    """A NaN (how NULLs arrive) is a NaN beta and a 0 coverage; a second row for its cell is still a repeat."""
    n_samples, n_cpgs, rows, cols, values = case
    null = np.array(data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows))), dtype=bool)
    ids = [f"S{k}" for k in range(n_samples)]
    beta, coverage = WideBlock("beta", ids, n_cpgs), WideBlock("coverage", ids, n_cpgs, "uint16")
    beta.add(rows, cols, np.where(null, np.nan, values))
    counts = np.round(values * 1000)
    coverage.add(rows, cols, np.where(null, np.nan, counts))
    np.testing.assert_array_equal(
        beta.finish(),
        reference_pivot(n_samples, n_cpgs, rows, cols, np.where(null, np.nan, values), np.nan, np.float32),
    )
    np.testing.assert_array_equal(
        coverage.finish(), reference_pivot(n_samples, n_cpgs, rows, cols, np.where(null, 0, counts), 0, np.uint16)
    )
    if null.any():
        i = int(np.argmax(null))
        block = WideBlock("beta", ids, n_cpgs)
        block.add(np.append(rows, rows[i]), np.append(cols, cols[i]), np.append(values, np.nan))
        with pytest.raises(DataError, match="repeat a \\(sample, cpg\\) pair"):
            block.finish()


def test_largest_coverage_of_the_dtype_is_kept_exactly():
    block = WideBlock("coverage", ["S0"], 2, "uint16")
    block.add(np.array([0]), np.array([1]), np.array([65535.0]))
    assert block.finish().tolist() == [[0, 65535]]


def test_scatter_is_plain_fancy_assignment():
    out = np.zeros((2, 3))
    scatter(out, np.array([1, 0]), np.array([2, 0]), np.array([7.0, 9.0]))
    assert out.tolist() == [[9.0, 0.0, 0.0], [0.0, 0.0, 7.0]]


def test_bad_block_arguments():
    with pytest.raises(ValueError, match="table 'gamma'"):
        WideBlock("gamma", ["S0"], 3)
    with pytest.raises(ValueError, match="unsigned"):
        WideBlock("coverage", ["S0"], 3, "int16")
    block = WideBlock("beta", ["S0"], 3)
    with pytest.raises(ValueError, match="differ in length"):
        block.add(np.array([0]), np.array([0, 1]), np.array([0.5]))
