"""The write lock's recovery, gc of everything interrupted writers leave, and bounded growth under crashes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from xr_methyl import Loader, LocalWarehouse, MethylStore
from xr_methyl.errors import StoreLockedError
from xr_methyl.storage.leases import process_identity
from xr_methyl.storage.local import LocalStorage, WriteLock
from xr_methyl.testing.faults import stray_files
from xr_methyl.testing.faulty_storage import FaultyStorage

IDS = ["S0002", "S0005", "S0011"]


def lock_path(store):
    return store.storage.root / "write.lock"


def write_holder(path, **fields):
    path.write_text(json.dumps({**process_identity(), "token": "someone-else", **fields}))


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(store):
    write_holder(lock_path(store), pid=dead_pid())
    with store.storage.lock("write.lock", timeout=0.5) as lock:
        assert lock.held() and len(lock.broken) == 1
    assert not lock_path(store).exists()


def test_a_zombie_or_a_reused_pid_counts_as_dead(store):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)  # exited, not reaped: kill(pid, 0) still succeeds
    try:
        write_holder(lock_path(store), pid=zombie.pid)
        with store.storage.lock("write.lock", timeout=0.5) as lock:
            assert lock.broken
    finally:
        zombie.wait()
    write_holder(lock_path(store), pid=os.getpid(), pid_start="1")  # our pid, another process's start time
    with store.storage.lock("write.lock", timeout=0.5) as lock:
        assert lock.broken


def test_a_live_holder_is_waited_for_and_named(store):
    write_holder(lock_path(store), pid=os.getpid(), acquired_at="2026-01-01T00:00:00Z")
    with (
        pytest.raises(StoreLockedError, match=f"pid {os.getpid()} on .* since 2026-01-01"),
        store.storage.lock("write.lock", timeout=0.2),
    ):
        pass
    assert json.loads(lock_path(store).read_text())["token"] == "someone-else"  # left alone


def test_a_holder_on_another_host_keeps_its_lease_until_it_runs_out(store):
    write_holder(lock_path(store), host="elsewhere", pid=1, lease_seconds=30)
    with pytest.raises(StoreLockedError), store.storage.lock("write.lock", timeout=0.2):
        pass
    old = time.time() - 31
    os.utime(lock_path(store), (old, old))  # no heartbeat for longer than the lease
    with store.storage.lock("write.lock", timeout=0.2) as lock:
        assert lock.broken[0]["host"] == "elsewhere"


def test_a_lock_file_created_but_never_filled(store):
    lock_path(store).write_text("")
    with pytest.raises(StoreLockedError, match="unreadable"), store.storage.lock("write.lock", timeout=0.2):
        pass
    old = time.time() - 60
    os.utime(lock_path(store), (old, old))
    with store.storage.lock("write.lock", timeout=0.2) as lock:
        assert lock.broken == [None]


def test_the_holder_refreshes_its_lease(store):
    lock = WriteLock(lock_path(store), timeout=1, lease=0.2)
    with lock:
        old = time.time() - 100
        os.utime(lock_path(store), (old, old))
        time.sleep(0.3)
        assert time.time() - lock_path(store).stat().st_mtime < 1


def test_a_writer_that_lost_its_lock_does_not_commit(store):
    Loader(store).ingest(["S0001"], progress=False)

    def taken_over(key):  # after the shards and block records, before the write-ahead sidecars
        write_holder(lock_path(store), pid=os.getpid(), token="the-new-holder")  # as a wrongful takeover would

    faulty = FaultyStorage(store.storage, "ingested_batches.json", fault=taken_over)
    with pytest.raises(StoreLockedError, match="lost the write lock"):
        Loader(MethylStore.open(faulty)).ingest(IDS, progress=False)
    assert faulty.fired
    lock_path(store).unlink()
    assert MethylStore.open(store.storage.root).sample_ids == ["S0001"]


HOLD = """
import sys, time
from xr_methyl.storage.local import LocalStorage
with LocalStorage(sys.argv[1]).lock("write.lock", timeout=5):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_while_holding_the_lock_does_not_block_the_next(store, truth):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store.storage.root)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)  # not reaped yet: a zombie for now
    t0 = time.perf_counter()
    Loader(MethylStore.open(store.storage.root)).ingest(IDS, progress=False)
    assert time.perf_counter() - t0 < 30
    holder.wait()
    np.testing.assert_array_equal(
        MethylStore.open(store.storage.root).read("beta", IDS), truth.beta.loc[IDS].to_numpy()
    )


def leave_crash_debris(store, warehouse_staging):
    """What SIGKILLed writers leave: temporaries, a dead lock, staging folders of a create and an export."""
    root = store.storage.root
    (root / ".samples.json.abc123.tmp").write_text("{half")
    (root / "beta.zarr" / "zarr.deadbeef.partial").write_text("{")
    write_holder(root / "write.lock", pid=dead_pid())
    creating = root.parent / f".{root.name}.creating-0badf00d"
    creating.mkdir()
    write_holder(creating / ".owner.json", pid=dead_pid())
    export = warehouse_staging / "xr-methyl-export-dead"
    (export / "beta").mkdir(parents=True)
    (export / "beta" / "x.parquet").write_bytes(b"PAR1")
    write_holder(export / ".owner.json", pid=dead_pid())
    live = warehouse_staging / "xr-methyl-export-live"  # a running export of this process: kept
    live.mkdir()
    (live / ".owner.json").write_text(json.dumps(process_identity()))
    return creating, export, live


def test_gc_reclaims_everything_interrupted_writers_leave_and_nothing_else(store, warehouse, truth, tmp_path):
    Loader(store).ingest(IDS, progress=False)
    committed = MethylStore.open(store.storage.root)

    class Crash(Exception):
        pass

    faulty = FaultyStorage(store.storage, "ingested_batches.json", fault=Crash)  # shards and block records written
    with pytest.raises(Crash):
        Loader(MethylStore.open(faulty)).ingest(["S0016", "S0017"], progress=False)
    staging = tmp_path / "staging"
    creating, export, live = leave_crash_debris(store, staging)
    assert stray_files(store.storage.root)  # orphan rows, block record, temporaries, lock

    wh = LocalWarehouse(warehouse.path, staging_dir=staging)
    dry = MethylStore.open(store.storage.root).gc(warehouse=wh, dry_run=True)
    assert dry.removed and stray_files(store.storage.root)  # a dry run removes nothing...
    assert dry.broken_locks  # ...but, like any writer, takes over the lock of a dead one
    report = MethylStore.open(store.storage.root).gc(warehouse=wh)
    removed = {key for key, _ in report.removed}
    assert {str(creating), str(export)} <= removed and str(live) not in removed
    assert report.bytes > 0
    assert stray_files(store.storage.root) == []
    assert not creating.exists() and not export.exists() and live.exists()
    after = MethylStore.open(store.storage.root)
    assert after.sample_ids == committed.sample_ids and after.verify().ok
    np.testing.assert_array_equal(after.read("beta", IDS), truth.beta.loc[IDS].to_numpy())
    assert MethylStore.open(store.storage.root).gc().removed == []  # nothing left to do


def test_repeated_crashes_never_grow_the_store(store):
    """Crash the same ingest at a different point each time; after each re-run the store has the same bytes."""
    Loader(store).ingest(IDS, progress=False)
    root = store.storage.root

    class Kill(BaseException):  # passes every `except Exception` of ours, as a kill would
        pass

    sizes = []
    for crash_after in range(1, 5):  # the append makes 4 zarr writes: resize and shard, per array
        faulty = FaultyStorage(LocalStorage(root), "*.zarr/*", nth=crash_after, fault=Kill)
        with pytest.raises(Kill):
            Loader(MethylStore.open(faulty)).ingest(["S0016", "S0017", "S0018"], progress=False)
        (root / f".samples.json.crash{crash_after}.tmp").write_text("x" * 1000)  # what a kill mid-write leaves
        (root / "write.lock").unlink(missing_ok=True)
        Loader(MethylStore.open(root)).ingest(["S0016", "S0017", "S0018"], progress=False)
        # provenance.json records when each batch was ingested: its length may vary by a digit
        sizes.append(LocalStorage(root).size() - LocalStorage(root).size("provenance.json"))
        assert stray_files(root) == []
        # Undo the ingest so that the next round crashes the same append again.
        s = MethylStore.open(root)
        rows = s.commit.rows[: s.commit.rows.index("S0016")]
        s.storage.write_json("sample_ids.json", rows)
    assert len(set(sizes)) == 1, sizes
    # and the provenance of the crashed attempts did not pile up: one entry per committed append
    provenance = MethylStore.open(root).provenance
    assert sum(len(entries) for entries in provenance.values()) == len({*MethylStore.open(root).batches})


def test_gc_from_the_command_line(store):
    root = store.storage.root
    (root / ".samples.json.leftover.tmp").write_text("x")
    run = [sys.executable, "-m", "xr_methyl.cli", "gc", str(root)]
    dry = subprocess.run([*run, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "would remove 1 item(s)" in dry.stdout
    assert (root / ".samples.json.leftover.tmp").exists()
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "removed 1 item(s)" in done.stdout
    assert not (root / ".samples.json.leftover.tmp").exists()
