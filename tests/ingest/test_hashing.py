"""The hash table that maps CpG ids to columns: exact, whatever the ids look like."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xr_methyl.ingest.hashing import CpgLookup

ids_strategy = st.lists(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30),
    min_size=1,
    max_size=200,
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(ids=ids_strategy, probes=st.lists(st.text(alphabet="abc:123!~", max_size=12), max_size=50))
def test_lookup_matches_a_dict(ids, probes):
    axis = np.array([s.encode() for s in ids], dtype=f"S{max(map(len, ids))}")
    lookup = CpgLookup(axis)
    queries = ids[::-1] + probes
    truth = {s: i for i, s in enumerate(ids)}
    got = lookup.columns(pa.array(queries, pa.string()))
    assert got.tolist() == [truth.get(q, -1) for q in queries]
    # large_string, a sliced array and a dictionary array give the same answers
    assert lookup.columns(pa.array(queries, pa.large_string()).slice(1)).tolist() == got[1:].tolist()
    assert lookup.columns(pa.array(queries).dictionary_encode()).tolist() == got.tolist()


def test_prefixes_longer_ids_nulls_and_empty_strings_are_not_confused():
    axis = np.array([b"chr1:1", b"chr1:10", b"chr1:100", b"chr1:1000000000"], dtype="S15")
    got = CpgLookup(axis).columns(
        pa.array(["chr1:1000000000", "chr1:10", "chr1:1", "chr1:1000000000X", "", None, "chr1:100", "chr1:1000"])
    )
    assert got.tolist() == [3, 1, 0, -1, -1, -1, 2, -1]


@pytest.mark.parametrize("n", [1, 7, 5000])
def test_every_axis_id_finds_its_own_column(n):
    ids = [f"chr{1 + i % 3}:{i * 37}" for i in range(n)]
    axis = np.array([s.encode() for s in ids])
    order = np.random.default_rng(n).permutation(n)
    got = CpgLookup(axis).columns(pa.array([ids[i] for i in order]))
    np.testing.assert_array_equal(got, order)
