"""Stores on S3 (moto's server): the same layout, append rule, commit point, lock and errors as on disk.

No AWS credentials: moto's ThreadedMotoServer on a free port, dummy credentials
for the session (the ``moto_server`` fixture of conftest.py).  The store tests that do not depend on local
paths also run on S3 (tests/store/test_store.py's ``any_store``); these are what S3 adds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
from dask_support import two_worker_client

from xr_methyl import Layout, Loader, MethylStore, StoreExistsError, StoreNotFoundError
from xr_methyl.errors import StoreConflictError, StoreLockedError
from xr_methyl.storage.leases import process_identity
from xr_methyl.storage.s3 import S3Storage
from xr_methyl.testing.faults import stray_files
from xr_methyl.testing.faulty_storage import FaultyStorage

IDS = ["S0002", "S0005", "S0011"]
#: Objects an append replaces by design (the commit, the write-ahead sidecars, the arrays' shape).
REPLACED_BY_AN_APPEND = {
    "sample_ids.json",
    "samples.json",
    "ingested_batches.json",
    "provenance.json",
    "beta.zarr/zarr.json",
    "coverage.zarr/zarr.json",
}


@pytest.fixture
def bucket(moto_server):
    return moto_server.new_bucket()


@pytest.fixture
def s3_store(moto_server, bucket, warehouse):
    return MethylStore.create(
        f"s3://{bucket}/cohort.methyl.zarr", warehouse=warehouse, storage_options=moto_server.options
    )


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def put_lock(storage: S3Storage, **fields) -> None:
    record = {**process_identity(), "token": "someone-else", "lease_seconds": 120, **fields}
    storage.write_json("write.lock", record)


# -- create, open, read ------------------------------------------------------------------------------------
def test_create_writes_the_same_layout_as_on_disk(moto_server, bucket, tmp_path):
    cpgs = pa.table(
        {
            "cpg_id": [f"chr1:{100 + i}" for i in range(100)],
            "chrom": ["chr1"] * 100,
            "pos": pa.array(range(100, 200), pa.int64()),
        }
    )
    layout = Layout(sample_block=4, chunk_rows=4, cpg_chunk=16, cpg_shard=64)
    local = MethylStore.create(tmp_path / "s.methyl.zarr", cpg_ids=cpgs, layout=layout)
    remote = MethylStore.create(
        f"s3://{bucket}/deep/prefix/s.methyl.zarr", cpg_ids=cpgs, layout=layout, storage_options=moto_server.options
    )
    assert remote.storage.uri == f"s3://{bucket}/deep/prefix/s.methyl.zarr"
    assert dict(remote.storage.walk()).keys() == dict(local.storage.walk()).keys()  # no marker, no lock left
    for key, _ in local.storage.walk():
        if key != "manifest.json":
            assert remote.storage.read_bytes(key) == local.storage.read_bytes(key), key
    m_local, m_remote = (json.loads(s.storage.read_bytes("manifest.json")) for s in (local, remote))
    assert {**m_local, "created_at": None} == {**m_remote, "created_at": None}
    assert moto_server.keys(bucket) == [f"deep/prefix/s.methyl.zarr/{k}" for k, _ in sorted(local.storage.walk())]


def test_open_dataset_and_ensure_equal_the_pandas_pivot(moto_server, s3_store, truth):
    uri = s3_store.storage.uri
    ds = xr.open_dataset(uri, engine="methylzarr", storage_options=moto_server.options)
    assert ds.sizes["sample"] == 0 and ds.attrs["methylzarr_store"] == uri
    wanted = ["S0013", "S0002", "S0007", "S0019"]
    sub = ds.methyl.ensure(wanted, progress=False)  # ingests through the storage it was opened with
    assert list(sub.sample.values) == wanted
    np.testing.assert_array_equal(sub.beta.values, truth.beta.loc[wanted].to_numpy())
    np.testing.assert_array_equal(sub.coverage.values, truth.coverage.loc[wanted].to_numpy())
    assert list(sub.batch_id.values) == list(truth.samples.loc[wanted, "batch_id"])
    np.testing.assert_array_equal(sub.age.values, truth.samples.loc[wanted, "age"].to_numpy())

    again = xr.open_dataset(uri, engine="methylzarr", storage_options=moto_server.options)
    assert sorted(again.sample.values) == sorted(wanted)
    picked = again.sel(sample=["S0019", "S0002"], cpg=list(truth.beta.columns[[7, 2999, 40]]))
    np.testing.assert_array_equal(
        picked.beta.values, truth.beta.loc[["S0019", "S0002"], list(truth.beta.columns[[7, 2999, 40]])]
    )
    assert again.methyl.region("chr2", 0, 10**9).sizes["cpg"] == int((again.chrom == "chr2").sum())
    store = MethylStore.open(uri, storage_options=moto_server.options)
    report = store.verify(cells=100, seed=2)
    assert report.ok, report.problems
    assert store.info()["bytes"]["total"] == sum(n for _, n in store.storage.walk())
    assert stray_files(store.storage) == []


def test_appends_never_rewrite_or_read_existing_objects(moto_server, s3_store, monkeypatch):
    import zarr.storage

    Loader(s3_store).ingest(IDS, progress=False)
    before = s3_store.storage.objects()
    assert any("/c/" in key for key in before)  # shards to protect
    time.sleep(1.1)  # Last-Modified has one-second resolution: a rewrite now would change it

    reads: list[str] = []
    real_get = zarr.storage.ObjectStore.get

    async def logged_get(self, key, *args, **kwargs):
        reads.append(f"{self.store.prefix}/{key}")
        return await real_get(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.ObjectStore, "get", logged_get)
    got = Loader(MethylStore.open(s3_store.storage)).ingest(["S0016", "S0003", "S0001", "S0010"], progress=False)
    monkeypatch.undo()
    assert len(got.batches) == 3  # a new batch and second parts of two batches already stored: new blocks each

    after = s3_store.storage.objects()
    kept = {k: v for k, v in before.items() if k not in REPLACED_BY_AN_APPEND}
    assert {k: after[k] for k in kept} == kept  # same ETag, Last-Modified and size: never rewritten
    assert len(after) > len(before)
    # No existing shard was read (zarr asks for each new shard before writing it: answered 404).
    root = s3_store.storage.prefix + "/"
    assert not [r for r in reads if r.removeprefix(root) in kept]
    assert [r for r in reads if "/c/" in r]  # (the log does see the new shards' look-ups)
    np.testing.assert_array_equal(
        MethylStore.open(s3_store.storage).read("beta", IDS), Loader(s3_store).load(IDS, progress=False).beta.values
    )


# -- the commit is a compare-and-swap ----------------------------------------------------------------------
def test_a_stale_writers_commit_fails_and_loses_nothing(s3_store, truth):
    """Writer A loses its lock mid-append (taken over as dead); B commits; A's commit must fail."""
    Loader(s3_store).ingest(["S0001"], progress=False)
    storage = s3_store.storage

    def meanwhile(key):  # A has written its shards and block records; its sidecars come next
        storage.remove("write.lock")  # as a takeover of a lock judged dead would
        Loader(MethylStore.open(storage)).ingest(["S0009", "S0016"], progress=False)

    faulty = FaultyStorage(storage, "ingested_batches.json", fault=meanwhile)
    with pytest.raises(StoreConflictError, match="changed under the write lock.*not committed"):
        Loader(MethylStore.open(faulty)).ingest(["S0004", "S0005"], progress=False)
    assert faulty.fired
    final = MethylStore.open(s3_store.storage)
    assert sorted(final.sample_ids) == ["S0001", "S0009", "S0016"]  # B's commit kept whole
    np.testing.assert_array_equal(final.read("beta", ["S0009", "S0016"]), truth.beta.loc[["S0009", "S0016"]])
    assert final.verify().ok
    Loader(final).ingest(["S0004", "S0005"], progress=False)  # a re-run completes
    assert sorted(MethylStore.open(s3_store.storage).sample_ids) == ["S0001", "S0004", "S0005", "S0009", "S0016"]
    assert stray_files(s3_store.storage) == []


WRITER = """
import sys
from xr_methyl import Loader, LocalWarehouse, MethylStore
store, warehouse, endpoint, *ids = sys.argv[1:]
print("ready", flush=True)
ds = Loader(MethylStore.open(store, storage_options={"endpoint_url": endpoint}), LocalWarehouse(warehouse)).load(
    ids, progress=False)
assert list(ds.sample.values) == ids and ds.beta.values.shape[0] == len(ids)
print("done", flush=True)
"""


def test_two_writer_processes_with_overlapping_samples(moto_server, s3_store, warehouse, truth):
    requests = [["S0001", "S0002", "S0009", "S0016", "S0017"], ["S0017", "S0009", "S0010", "S0002", "S0018"]]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, s3_store.storage.uri, str(warehouse.path), moto_server.endpoint, *ids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ids in requests
    ]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0 and "done" in out, err[-2000:]
    final = MethylStore.open(s3_store.storage)
    wanted = sorted(set().union(*map(set, requests)))
    assert sorted(final.sample_ids) == wanted and len(final.sample_ids) == len(set(final.sample_ids))
    assert sum(map(len, final.batches.values())) == len(wanted)
    np.testing.assert_array_equal(final.read("beta", wanted), truth.beta.loc[wanted].to_numpy())
    np.testing.assert_array_equal(final.read("coverage", wanted), truth.coverage.loc[wanted].to_numpy())
    assert final.verify().ok and stray_files(final.storage) == []


# -- the lock ------------------------------------------------------------------------------------------
def test_a_dead_writers_lock_is_taken_over(s3_store):
    storage = s3_store.storage
    put_lock(storage, pid=dead_pid())  # this host, a pid that is gone: at once
    with storage.lock("write.lock", timeout=0.5) as lock:
        assert lock.held() and lock.broken[0]["token"] == "someone-else"
    assert not storage.exists("write.lock")

    # Another host: when its lease runs out by the server's clock (Date - Last-Modified, whole seconds,
    # so an age can read up to a second long; the lease leaves room for that and a slow machine).
    put_lock(storage, host="elsewhere", pid=1, lease_seconds=3)
    with pytest.raises(StoreLockedError, match="pid 1 on elsewhere"), storage.lock("write.lock", timeout=0.2):
        pass
    time.sleep(4.2)
    with storage.lock("write.lock", timeout=0.5) as lock:
        assert lock.broken[0]["host"] == "elsewhere"

    put_lock(storage, pid=os.getpid())  # a live holder is waited for, and left alone
    with pytest.raises(StoreLockedError), storage.lock("write.lock", timeout=0.2):
        pass
    assert storage.read_json("write.lock")["token"] == "someone-else"
    storage.remove("write.lock")


def test_the_lock_is_refreshed_and_released_only_while_ours(s3_store):
    storage = s3_store.storage
    lock = storage.lock("write.lock", timeout=1, lease=0.4)
    with lock:
        first = storage.head("write.lock")["ETag"]
        time.sleep(0.35)
        assert storage.head("write.lock")["ETag"] != first  # each heartbeat writes a new version
        assert lock.held()
    assert not storage.exists("write.lock")

    with storage.lock("write.lock", timeout=1) as lock:
        put_lock(storage, pid=os.getpid(), token="the-new-holder")  # as if taken over meanwhile
        with pytest.raises(StoreLockedError, match="lost the write lock"):
            lock.check()
    assert storage.read_json("write.lock")["token"] == "the-new-holder"  # release did not delete it
    storage.remove("write.lock")


HOLD = """
import sys, time
from xr_methyl.storage.s3 import S3Storage
with S3Storage(sys.argv[1], {"endpoint_url": sys.argv[2]}).lock("write.lock", timeout=5):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_holding_the_lock_does_not_block_the_next(moto_server, s3_store, truth):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, s3_store.storage.uri, moto_server.endpoint], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)  # not reaped yet: a zombie
        t0 = time.perf_counter()
        Loader(MethylStore.open(s3_store.storage)).ingest(IDS, progress=False)
        assert time.perf_counter() - t0 < 30
    finally:
        holder.kill()
        holder.wait()
    np.testing.assert_array_equal(MethylStore.open(s3_store.storage).read("beta", IDS), truth.beta.loc[IDS])


# -- interrupted appends and creates -----------------------------------------------------------------------
class Crash(BaseException):  # passes every `except Exception`, as a kill would
    pass


@pytest.mark.parametrize("fail_at", ["shard", "blocks/", "provenance.json"])  # the other steps: test_store.py [s3-*]
def test_an_interrupted_append_reopens_at_the_previous_commit(s3_store, truth, fail_at):
    Loader(s3_store).ingest(IDS, progress=False)
    committed = s3_store.storage.objects()
    # "shard": the first shard is written, the second fails
    faulty = FaultyStorage(
        s3_store.storage,
        "*.zarr/c/*" if fail_at == "shard" else f"{fail_at}*",
        nth=2 if fail_at == "shard" else 1,
        fault=Crash,
    )
    new = ["S0016", "S0017", "S0018"]
    with pytest.raises(Crash):
        Loader(MethylStore.open(faulty)).ingest(new, progress=False)

    reopened = MethylStore.open(s3_store.storage)
    assert reopened.sample_ids == IDS
    np.testing.assert_array_equal(reopened.read("beta", IDS), truth.beta.loc[IDS].to_numpy())
    after = s3_store.storage.objects()
    assert {k: after[k] for k in committed if k not in REPLACED_BY_AN_APPEND} == {
        k: v for k, v in committed.items() if k not in REPLACED_BY_AN_APPEND
    }
    assert not s3_store.storage.exists("write.lock")
    Loader(reopened).ingest(new, progress=False)  # a re-run completes over what the crash left
    final = MethylStore.open(s3_store.storage)
    assert final.sample_ids[: len(IDS)] == IDS and sorted(final.sample_ids) == sorted(IDS + new)
    np.testing.assert_array_equal(final.read("beta", new), truth.beta.loc[new].to_numpy())
    assert final.verify().ok and stray_files(final.storage) == []


def test_gc_reclaims_what_interrupted_writers_leave_on_s3(s3_store, monkeypatch):
    import xr_methyl.store.gc as gc_module

    Loader(s3_store).ingest(IDS, progress=False)
    with pytest.raises(Crash):  # shards and block records written, then the writer dies
        Loader(MethylStore.open(FaultyStorage(s3_store.storage, "ingested_batches.json", fault=Crash))).ingest(
            ["S0016", "S0017"], progress=False
        )
    storage = s3_store.storage
    storage.write_atomic(".probe-0123456789ab.tmp", b"probe")  # a writability check killed between PUT and DELETE
    put_lock(storage, pid=dead_pid())
    stray = stray_files(storage)
    assert any("/c/" in k for k in stray) and any(k.startswith("blocks/") for k in stray) and "write.lock" in stray

    monkeypatch.setattr(gc_module, "STALE_TEMP_SECONDS", 1.0)
    time.sleep(2.2)  # the probe is now older than that, by the server's clock
    dry = MethylStore.open(storage).gc(dry_run=True)
    assert dry.removed and stray_files(storage) != []  # a dry run removes nothing ...
    assert dry.broken_locks  # ... but, like any writer, takes over the lock of a dead one
    report = MethylStore.open(storage).gc()
    assert report.bytes > 0
    assert ".probe-0123456789ab.tmp" in {key for key, _ in report.removed}
    assert stray_files(storage) == [] and MethylStore.open(storage).gc().removed == []
    after = MethylStore.open(storage)
    assert after.sample_ids == IDS and after.verify().ok


KILLED_CREATE = """
import sys, time
from xr_methyl import MethylStore
from xr_methyl.storage.s3 import S3Storage
from xr_methyl.testing.faulty_storage import FaultyStorage
uri, endpoint, warehouse = sys.argv[1:]
def half_way(key):  # beta.zarr is created; coverage.zarr is next
    print("half-way", flush=True)
    time.sleep(60)
MethylStore.create(FaultyStorage(S3Storage(uri, {"endpoint_url": endpoint}), "coverage.zarr/zarr.json", fault=half_way),
                   warehouse=warehouse)
"""


def test_an_interrupted_create_leaves_no_visible_store(moto_server, bucket, warehouse, monkeypatch):
    import xr_methyl.store as store_module

    uri, opts = f"s3://{bucket}/c.methyl.zarr", moto_server.options
    faulty = FaultyStorage(S3Storage(uri, opts), "ingested_batches.json", fault=Crash)  # both arrays are created
    with pytest.raises(Crash):
        MethylStore.create(faulty, warehouse=warehouse)
    assert any(key.startswith("coverage.zarr/") for key in faulty.writes)
    assert moto_server.keys(bucket) == []  # everything it wrote was removed, the lock released

    # A creator killed outright leaves its objects, its marker and its lock: nothing opens there, and
    # the next create takes over the dead creator's lock and clears what it left.
    creator = subprocess.Popen(
        [sys.executable, "-c", KILLED_CREATE, uri, moto_server.endpoint, str(warehouse.path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert creator.stdout.readline().strip() == "half-way"
        creator.send_signal(signal.SIGKILL)
        creator.wait()
    finally:
        creator.kill()
    left = moto_server.keys(bucket)
    assert any(k.endswith("/.owner.json") for k in left) and any(k.endswith("/write.lock") for k in left)
    with pytest.raises(StoreNotFoundError, match="interrupted create"):
        MethylStore.open(uri, storage_options=opts)
    assert MethylStore.reclaim_create(uri, storage_options=opts, dry_run=True).removed
    created = MethylStore.create(uri, warehouse=warehouse, storage_options=opts)
    assert created.verify().ok and stray_files(created.storage) == []
    created.storage.remove("")

    # The same leftovers, cleared by gc (a dry run first).
    storage = S3Storage(uri, opts)
    storage.write_json(".owner.json", {**process_identity(), "pid": dead_pid()})
    storage.write_atomic("cpg_ids.npy", b"half")
    put_lock(storage, pid=dead_pid())
    assert MethylStore.reclaim_create(uri, storage_options=opts, dry_run=True).removed
    assert storage.exists("cpg_ids.npy")
    report = MethylStore.reclaim_create(uri, storage_options=opts)
    assert report.removed and moto_server.keys(bucket) == []

    # A create that is still running (its lock held by a live process) is never cleared.
    other = S3Storage(f"s3://{bucket}/busy.methyl.zarr", opts)
    other.write_json(".owner.json", process_identity())
    put_lock(other, pid=os.getpid())
    monkeypatch.setattr(store_module, "CREATE_LOCK_TIMEOUT", 0.3)
    with pytest.raises(StoreExistsError, match="holds the write lock"):
        MethylStore.create(other.uri, warehouse=warehouse, storage_options=opts)
    with pytest.raises(StoreLockedError):
        MethylStore.reclaim_create(other.uri, storage_options=opts, lock_timeout=0.3)
    assert other.exists(".owner.json")


# -- bad input ------------------------------------------------------------------------------------------
def test_bad_locations_get_clear_errors(moto_server, bucket, warehouse):
    opts = moto_server.options
    for call in (
        lambda: MethylStore.open("s3://no-such-bucket-xr/s", storage_options=opts),
        lambda: MethylStore.create("s3://no-such-bucket-xr/s", cpg_ids=["a"], storage_options=opts),
        lambda: xr.open_dataset("s3://no-such-bucket-xr/s", engine="methylzarr", storage_options=opts),
    ):
        with pytest.raises(StoreNotFoundError, match="bucket 'no-such-bucket-xr' does not exist"):
            call()
    with pytest.raises(StoreNotFoundError, match="no methylzarr store at"):
        MethylStore.open(f"s3://{bucket}/empty", storage_options=opts)
    storage = S3Storage(f"s3://{bucket}/other", opts)
    storage.write_atomic("data.csv", b"a,b\n")  # a prefix holding something else
    with pytest.raises(StoreNotFoundError, match="no manifest.json: it is not a methylzarr store"):
        MethylStore.open(storage.uri, storage_options=opts)
    with pytest.raises(StoreExistsError, match="never overwrites"):
        MethylStore.create(storage.uri, cpg_ids=["a"], storage_options=opts)
    assert storage.read_bytes("data.csv") == b"a,b\n" and len(moto_server.keys(bucket, "other")) == 1
    S3Storage(f"s3://{bucket}", opts).write_atomic("a-file", b"x")  # a file instead of a prefix
    with pytest.raises(StoreNotFoundError, match="is a file"):
        MethylStore.open(f"s3://{bucket}/a-file", storage_options=opts)
    with pytest.raises(StoreExistsError, match="a file"):
        MethylStore.create(f"s3://{bucket}/a-file", cpg_ids=["a"], storage_options=opts)
    with pytest.raises(ValueError, match="'password' is not understood"):
        MethylStore.open(f"s3://{bucket}/x", storage_options={"password": "p"})
    with pytest.raises(ValueError, match="expected s3://<bucket>/<prefix>"):
        MethylStore.open("s3:///nobucket")
    with pytest.raises(ValueError, match="only local paths, file:// and s3://"):
        MethylStore.open("gs://bucket/x")
    with pytest.raises(ValueError, match="storage_options are for s3://"):
        MethylStore.open("/tmp/x", storage_options=opts)
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        S3Storage("s3://no-such-bucket-xr/s", opts).check_writable()


def test_a_store_that_cannot_be_written_is_refused_before_the_warehouse_is_paid(s3_store, monkeypatch):
    """moto enforces no policies: S3's answer to a PUT without permission is put in its place."""
    import errno

    from botocore.exceptions import ClientError

    from xr_methyl import StoreWriteError

    def denied(**kwargs):
        raise ClientError(
            {
                "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            },
            "PutObject",
        )

    monkeypatch.setattr(s3_store.storage.client, "put_object", denied)
    with pytest.raises(PermissionError, match="access denied to s3://.*probe"):
        s3_store.storage.check_writable()
    loader = Loader(s3_store)
    with pytest.raises(StoreWriteError, match="not writable by this user") as caught:
        loader.ingest(IDS, progress=False)
    assert caught.value.errno == errno.EACCES and loader.last_report.batches == []
    monkeypatch.undo()
    assert MethylStore.open(s3_store.storage).sample_ids == []


SECRET = "FAKEs3cr3tKeyValue0123456789"


def test_credentials_in_storage_options_never_reach_the_store(moto_server, bucket, warehouse):
    opts = {**moto_server.options, "aws_access_key_id": "AKIAFAKEFAKE", "aws_secret_access_key": SECRET}
    store = MethylStore.create(f"s3://{bucket}/s.methyl.zarr", warehouse=warehouse, storage_options=opts)
    ds = xr.open_dataset(store.storage.uri, engine="methylzarr", storage_options=opts)
    assert ds.methyl.ensure(["S0001"], progress=False).beta.values.shape[0] == 1
    assert SECRET not in repr(store) + repr(store.storage) + json.dumps(ds.attrs) + str(ds)
    for key, _ in store.storage.walk():
        assert SECRET.encode() not in store.storage.read_bytes(key), key


def test_the_command_line_on_s3(moto_server, bucket, warehouse, truth, capsys):
    from xr_methyl.cli import main

    uri = f"s3://{bucket}/cli.methyl.zarr"
    option = ["-o", f"endpoint_url={moto_server.endpoint}"]

    def cli(*args):  # in this process (test_cli.py runs the installed command): the arguments are what is tested
        code = main([*map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = cli("init", uri, "--warehouse", warehouse.path, *option)
    assert code == 0 and "created s3://" in out, err
    code, out, err = cli("ensure", uri, "S0003", "S0012", "--no-progress", *option)
    assert code == 0 and "2 ingested" in out, err
    code, out, _ = cli("info", uri, "--json", *option)
    assert json.loads(out)["samples"] == 2 and json.loads(out)["path"] == uri
    code, out, err = cli("verify", uri, "--against-warehouse", 20, *option)
    assert code == 0 and out.startswith("healthy"), out + err
    S3Storage(uri, moto_server.options).write_atomic(".probe-0123456789ab.tmp", b"probe")  # a killed check left it
    code, out, _ = cli("gc", uri, "--dry-run", *option)
    assert code == 0 and "would remove 0 item(s)" in out  # too young to be judged a leftover
    code, out, _ = cli("gc", uri, *option)
    assert code == 0 and "removed 0 item(s)" in out
    code, _, err = cli("info", f"s3://{bucket}/nothing", *option)
    assert code == 1 and "no methylzarr store at" in err
    code, _, err = cli("info", uri, "-o", "endpoint_url")
    assert code == 1 and "expected KEY=VALUE" in err
    np.testing.assert_array_equal(
        MethylStore.open(uri, storage_options=moto_server.options).read("beta", ["S0003", "S0012"]),
        truth.beta.loc[["S0003", "S0012"]].to_numpy(),
    )


# -- dask workers read and write the S3 store with no shared local state ----------------------------------
@pytest.fixture(scope="module")
def client(tmp_path_factory):
    pytest.importorskip("distributed")
    # The workers get a CpG-axis cache of their own: they must download the axis, not find the client's.
    with two_worker_client(env={"XR_METHYL_CACHE": str(tmp_path_factory.mktemp("worker-cache"))}) as client:
        yield client


def test_a_dask_cluster_fills_and_reads_the_s3_store(client, moto_server, s3_store, truth):
    import distributed

    ids = ["S0000", "S0003", "S0009", "S0010", "S0017", "S0019"]
    report = Loader(s3_store).ingest(ids, client=client, progress=False)  # workers write whole shards
    assert sorted(report.ingested) == sorted(ids)
    ds = xr.open_dataset(s3_store.storage.uri, engine="methylzarr", chunks={}, storage_options=moto_server.options)
    masked = ds.methyl.mask(min_coverage=5)
    with distributed.get_task_stream(client) as stream:
        on_cluster = client.compute(masked.mean("cpg")).result()
        top = ds.methyl.select_features("age", 10, method="spearman", min_samples=4, cpgs_per_task=700)
    assert {task["worker"] for task in stream.data} == set(client.scheduler_info()["workers"])
    order = list(ds.sample.values)
    beta = truth.beta.loc[order].to_numpy(np.float64)
    coverage = truth.coverage.loc[order].to_numpy()
    np.testing.assert_allclose(on_cluster.values, np.nanmean(np.where(coverage >= 5, beta, np.nan), axis=1), rtol=1e-5)
    import dask

    with dask.config.set(scheduler="synchronous"):
        local = ds.methyl.select_features("age", 10, method="spearman", min_samples=4, cpgs_per_task=700)
    assert list(top.cpg.values) == list(local.cpg.values)
    caches = client.run(lambda: sorted(os.listdir(os.path.join(os.environ["XR_METHYL_CACHE"], "cpg_axis"))))
    assert all(len(found) == 1 for found in caches.values())  # each worker downloaded the axis itself
    assert MethylStore.open(s3_store.storage).verify().ok
