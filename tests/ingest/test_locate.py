"""Locating long rows: CpG ids -> columns and sample ids -> rows, through DuckDB."""

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xr_methyl.errors import WarehouseError
from xr_methyl.ingest.locate import Locator
from xr_methyl.store.cpg_axis import CpgAxis


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
    expected = {
        i: (samples.index(s), axis.index(c) if c in axis else -1)
        for i, (s, c) in enumerate(zip(sample_col, cpg_col, strict=True))
    }
    assert got == expected


def test_rows_of_unrequested_samples_are_a_warehouse_error():
    locator = Locator(CpgAxis.from_ids(["c1", "c2"]))
    table = pa.table({"sample_id": ["a", "b"], "cpg_id": ["c1", "c2"], "value": [0.1, 0.2]})
    with pytest.raises(WarehouseError, match="not requested"):
        list(locator.locate(rows_of(table), ["a"]))
    # the connection is usable again afterwards
    out = list(locator.locate(rows_of(table), ["a", "b"]))
    assert sorted(np.concatenate([o.cols for o in out]).tolist()) == [0, 1]


def test_null_values_come_back_as_nan():
    locator = Locator(CpgAxis.from_ids(["c1"]))
    table = pa.table({"sample_id": ["a"], "cpg_id": ["c1"], "value": pa.array([None], pa.float64())})
    (located,) = list(locator.locate(rows_of(table), ["a"]))
    assert np.isnan(located.values).all()


def test_duplicates_are_listed_for_error_messages():
    locator = Locator(CpgAxis.from_ids(["c1", "c2"]))
    table = pa.table(
        {"sample_id": ["a", "a", "a", "b"], "cpg_id": ["c1", "c1", "c2", "c1"], "value": [0.1, 0.2, 0.3, 0.4]}
    )
    assert locator.duplicates(rows_of(table)) == [("a", "c1", 2)]


def test_parquet_files_are_read_file_by_file_with_the_same_rows(tmp_path):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    axis = [f"c{i}" for i in range(50)]
    tables = []
    for k in range(3):  # three files, several row groups each, the last file's columns in another order
        n = 230
        table = pa.table(
            {
                "sample_id": rng.choice(["a", "b", "c"], n),
                "cpg_id": rng.choice(axis, n),
                "value": np.arange(n, dtype=np.float64) + 1000 * k,
            }
        )
        if k == 2:
            table = table.select(["value", "cpg_id", "sample_id"])
        pq.write_table(table, tmp_path / f"part-{k}.parquet", row_group_size=40)
        tables.append(table)
    files = sorted(str(p) for p in tmp_path.glob("*.parquet"))
    locator = Locator(CpgAxis.from_ids(axis))
    got = {}
    for located in locator.locate(pads.dataset(files, format="parquet"), ["a", "b", "c"], batch_rows=25):
        got.update(
            {int(v): (int(r), int(c)) for r, c, v in zip(located.rows, located.cols, located.values, strict=True)}
        )
    expected = {}
    for table in tables:
        for s, c, v in zip(
            table["sample_id"].to_pylist(), table["cpg_id"].to_pylist(), table["value"].to_pylist(), strict=True
        ):
            expected[int(v)] = ("abc".index(s), axis.index(c))
    assert got == expected


def test_read_ahead_keeps_order_passes_errors_on_and_stops_when_the_reader_does():
    from xr_methyl.ingest.locate import _read_ahead

    produced = []

    def numbers(fail_at=None):
        for i in range(10):
            if i == fail_at:
                raise OSError("disk gone")
            produced.append(i)
            yield i

    assert list(_read_ahead(numbers())) == list(range(10))
    with pytest.raises(OSError, match="disk gone"):
        list(_read_ahead(numbers(fail_at=4)))
    produced.clear()
    reader = _read_ahead(numbers())
    assert [next(reader), next(reader)] == [0, 1]
    reader.close()
    assert produced == [0, 1, 2]  # one batch ahead at most, none after closing
