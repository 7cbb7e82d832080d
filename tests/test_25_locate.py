"""Locating long rows: CpG ids -> columns and sample ids -> rows, through DuckDB."""

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xr_methyl.cpg_axis import CpgAxis
from xr_methyl.errors import WarehouseError
from xr_methyl.locate import Locator


def rows_of(table):
    return pads.dataset(table)


@given(
    axis=st.lists(st.from_regex(r"[a-z0-9:]{1,12}", fullmatch=True), min_size=1, max_size=30, unique=True),
    data=st.data(),
)
@settings(max_examples=60, deadline=None)
def test_every_row_gets_its_position_or_minus_one(axis, data):
    samples = data.draw(st.lists(st.from_regex(r"S[0-9]{1,3}", fullmatch=True), min_size=1, max_size=4, unique=True))
    strangers = ["not-on-axis", "zz:0"]
    n = data.draw(st.integers(0, 40))
    sample_col = [data.draw(st.sampled_from(samples)) for _ in range(n)]
    cpg_col = [data.draw(st.sampled_from(axis + [s for s in strangers if s not in axis])) for _ in range(n)]
    values = [float(i) for i in range(n)]
    locator = Locator(CpgAxis.from_ids(axis))
    table = pa.table({"sample_id": sample_col, "cpg_id": cpg_col, "value": values})
    got = {}
    for located in locator.locate(rows_of(table), samples, batch_rows=7):
        for r, c, v in zip(located.rows, located.cols, located.values, strict=True):
            got[int(v)] = (int(r), int(c))
    locator.close()
    expected = {i: (samples.index(s), axis.index(c) if c in axis else -1)
                for i, (s, c) in enumerate(zip(sample_col, cpg_col, strict=True))}
    assert got == expected


def test_rows_of_unrequested_samples_are_a_warehouse_error():
    locator = Locator(CpgAxis.from_ids(["c1", "c2"]))
    table = pa.table({"sample_id": ["a", "b"], "cpg_id": ["c1", "c2"], "value": [0.1, 0.2]})
    with pytest.raises(WarehouseError, match="not requested"):
        list(locator.locate(rows_of(table), ["a"]))
    # the connection is usable again afterwards
    out = list(locator.locate(rows_of(table), ["a", "b"]))
    assert sorted(np.concatenate([o.cols for o in out]).tolist()) == [0, 1]


def test_null_values_come_back_as_nan_for_the_range_check():
    locator = Locator(CpgAxis.from_ids(["c1"]))
    table = pa.table({"sample_id": ["a"], "cpg_id": ["c1"], "value": pa.array([None], pa.float64())})
    (located,) = list(locator.locate(rows_of(table), ["a"]))
    assert np.isnan(located.values).all()


def test_duplicates_are_listed_for_error_messages():
    locator = Locator(CpgAxis.from_ids(["c1", "c2"]))
    table = pa.table({"sample_id": ["a", "a", "a", "b"], "cpg_id": ["c1", "c1", "c2", "c1"],
                      "value": [0.1, 0.2, 0.3, 0.4]})
    assert locator.duplicates(rows_of(table)) == [("a", "c1", 2)]
