"""The fault-injecting storage the crash tests use: it fails exactly the write it names, and only that one."""

import numpy as np
import pytest
import zarr

from xr_methyl.storage.local import LocalStorage
from xr_methyl.testing.faulty_storage import FaultyStorage


class Crash(Exception):
    pass


def test_the_nth_matching_write_fails_and_nothing_else(tmp_path):
    faulty = FaultyStorage(LocalStorage(tmp_path), "side/*.json", nth=2, fault=Crash)
    faulty.write_json("side/a.json", {"a": 1})
    faulty.write_json("other.json", {})  # does not match: not counted
    with pytest.raises(Crash):
        faulty.write_json("side/b.json", {"b": 2})
    faulty.write_json("side/c.json", {"c": 3})  # it fails once
    assert faulty.fired and faulty.writes == ["side/a.json", "other.json", "side/b.json", "side/c.json"]
    assert sorted(p.name for p in (tmp_path / "side").iterdir()) == ["a.json", "c.json"]


def test_a_callable_fault_runs_before_the_write_which_then_goes_ahead(tmp_path):
    seen = []

    def look(key):
        seen.append((key, (tmp_path / key).exists()))

    faulty = FaultyStorage(LocalStorage(tmp_path), "x.json", fault=look)
    faulty.write_atomic("x.json", b"{}")
    assert seen == [("x.json", False)] and (tmp_path / "x.json").read_bytes() == b"{}"


def test_writes_through_its_zarr_stores_are_counted_by_their_key_in_the_store(tmp_path):
    faulty = FaultyStorage(LocalStorage(tmp_path), "a.zarr/c/*", nth=2, fault=Crash)
    arr = zarr.create_array(
        store=faulty.zarr_store("a.zarr", read_only=False), shape=(4, 4), chunks=(1, 4), dtype="float32", zarr_format=3
    )
    arr[0] = np.arange(4)
    with pytest.raises(Crash):
        arr[1] = np.arange(4)
    assert faulty.writes == ["a.zarr/zarr.json", "a.zarr/c/0/0", "a.zarr/c/1/0"]
    assert not (tmp_path / "a.zarr" / "c" / "1").exists()
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[0], np.arange(4))
