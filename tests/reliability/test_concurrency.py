"""Concurrent writers in separate processes, and readers while they write."""

import time

import numpy as np
import xarray as xr

from xr_methyl import MethylStore
from xr_methyl.testing.faults import spawn_writer, stray_files

# Four overlapping requests over three batches: every sample is wanted by two writers or more.
REQUESTS = [
    ["S0001", "S0002", "S0009", "S0016"],
    ["S0002", "S0009", "S0010", "S0017"],
    ["S0016", "S0017", "S0001", "S0011"],
    ["S0010", "S0011", "S0002", "S0018"],
]


def test_four_writers_with_overlapping_samples_each_get_theirs_and_nothing_is_stored_twice(
    store, warehouse, truth, tmp_path
):
    root = store.storage.root
    reader_before = xr.open_dataset(root, engine="methylzarr")
    go = tmp_path / "go"
    staging = tmp_path / "staging"
    staging.mkdir()
    procs = [spawn_writer(root, warehouse.path, staging, ids, go=go) for ids in REQUESTS]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()  # all start at once
    seen_counts = set()
    while any(p.poll() is None for p in procs):
        # A reader opening the store mid-append sees whole commits only, each sample equal to the warehouse.
        ds = xr.open_dataset(root, engine="methylzarr")
        ids = list(ds.sample.values)
        seen_counts.add(len(ids))
        if ids:
            np.testing.assert_array_equal(ds.beta.values, truth.beta.loc[ids].to_numpy())
        time.sleep(0.05)
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0 and "done" in out, err  # each returned exactly its samples, in order

    final = MethylStore.open(root)
    wanted = sorted(set().union(*map(set, REQUESTS)))
    assert sorted(final.sample_ids) == wanted  # no commit lost, nothing extra
    assert len(final.sample_ids) == len(set(final.sample_ids))  # each stored once
    assert sum(len(v) for v in final.batches.values()) == len(wanted)
    np.testing.assert_array_equal(final.read("beta", wanted), truth.beta.loc[wanted].to_numpy())
    np.testing.assert_array_equal(final.read("coverage", wanted), truth.coverage.loc[wanted].to_numpy())
    assert final.verify().ok and stray_files(root) == []
    assert list(staging.iterdir()) == []  # every export cleaned up after itself
    # The reader that opened before the appends keeps its (empty) view; a new one sees everything.
    assert reader_before.sizes["sample"] == 0
    assert sorted(xr.open_dataset(root, engine="methylzarr").sample.values) == wanted
    assert max(seen_counts) <= len(wanted)
