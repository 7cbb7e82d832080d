"""Crash safety: SIGKILLed writers at random moments, and injected failures at each step of an ingest."""

import errno
import hashlib

import numpy as np
import pytest

from xr_methyl import Loader, LocalWarehouse, MethylStore, WarehouseError
from xr_methyl.errors import StoreWriteError
from xr_methyl.ingest.scatter import WideBlock
from xr_methyl.storage.local import LocalStorage
from xr_methyl.testing.faults import run_trials, stray_files
from xr_methyl.testing.faulty_storage import FaultyStorage

FIRST = ["S0001", "S0009"]
MORE = ["S0003", "S0012", "S0017", "S0018"]


def test_random_sigkills_never_lose_or_corrupt_a_commit(tmp_path):
    lines = []
    summary = run_trials(8, workdir=tmp_path, seed=5, max_writers=2, out=lines.append)
    assert summary.failures == [], "\n".join(summary.failures)
    assert summary.trials == 8
    assert summary.killed >= 1  # the kills really happened
    assert summary.samples_checked > 0


def snapshot(path):
    """sha256 of every file of a store."""
    return {k: hashlib.sha256((path / k).read_bytes()).hexdigest() for k, _ in LocalStorage(path).walk()}


@pytest.fixture
def started(store, truth):
    """A store holding FIRST, and its files as committed."""
    Loader(store).ingest(FIRST, progress=False)
    return store, snapshot(store.storage.root)


def raise_on_call(n, exc, real=None):
    """A stand-in that calls ``real`` until its n-th call, which raises ``exc``."""
    calls = {"n": 0}

    def hook(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise exc
        return real(*args, **kwargs)

    return hook


def inject(monkeypatch, step, root):
    """Make one step of an ingest fail; return the error type and message the caller must see, and the
    location to open the store at (the store's storage wrapped to fail, for the steps that write it)."""
    enospc = OSError(errno.ENOSPC, "No space left on device")
    denied = PermissionError(errno.EACCES, "Permission denied")
    # The embedded warehouse's export reads its files in place (plan_export); fail there.
    if step == "warehouse export":
        monkeypatch.setattr(LocalWarehouse, "plan_export", raise_on_call(1, RuntimeError("IO Error: connection reset")))
        return WarehouseError, "exporting beta.*connection reset.*Nothing was written", root
    if step == "export ENOSPC":
        # the second table's export
        monkeypatch.setattr(LocalWarehouse, "plan_export", raise_on_call(2, enospc, LocalWarehouse.plan_export))
        return WarehouseError, "exporting coverage.*No space left", root
    if step == "scatter":
        monkeypatch.setattr(WideBlock, "add", raise_on_call(1, MemoryError("block too large")))
        return MemoryError, "block too large", root
    if step in ("chunk write ENOSPC", "chunk write EACCES"):
        # after one shard went through
        faulty = FaultyStorage(LocalStorage(root), "*.zarr/c/*", nth=2, fault=enospc if "ENOSPC" in step else denied)
        return (
            StoreWriteError,
            (
                "No space left.*keeps its last commit \\(2 sample"
                if "ENOSPC" in step
                else "Permission denied.*read-only or not writable"
            ),
            faulty,
        )
    target = {"block record write": "blocks/*", "sidecar write": "samples.json", "commit": "sample_ids.json"}[step]
    return (
        StoreWriteError,
        "No space left on device.*keeps its last commit",
        FaultyStorage(LocalStorage(root), target, fault=enospc),
    )


STEPS = [
    "warehouse export",
    "export ENOSPC",
    "scatter",
    "chunk write ENOSPC",
    "chunk write EACCES",
    "block record write",
    "sidecar write",
    "commit",
]


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_each_step_leaves_the_last_commit_and_says_why(started, truth, monkeypatch, step):
    store, committed_files = started
    root = store.storage.root
    kind, message, location = inject(monkeypatch, step, root)
    with pytest.raises(kind, match=message) as err:
        Loader(MethylStore.open(location)).ingest(MORE, progress=False)
    if kind is StoreWriteError:
        assert err.value.errno in (errno.ENOSPC, errno.EACCES) and isinstance(err.value, OSError)
    monkeypatch.undo()

    after = MethylStore.open(root)
    assert after.sample_ids == FIRST
    now = snapshot(root)
    assert {k: now.get(k) for k in committed_files if "/c/" in k} == {
        k: v for k, v in committed_files.items() if "/c/" in k
    }
    np.testing.assert_array_equal(after.read("beta", FIRST), truth.beta.loc[FIRST].to_numpy())
    assert after.verify().ok
    assert not (root / "write.lock").exists()
    # The same call, without the fault, completes it and leaves nothing stray.
    Loader(after).ingest(MORE, progress=False)
    final = MethylStore.open(root)
    np.testing.assert_array_equal(final.read("coverage", MORE), truth.coverage.loc[MORE].to_numpy())
    assert stray_files(root) == []


def test_a_store_that_cannot_be_written_fails_before_the_warehouse_is_paid(started, monkeypatch):
    store, committed_files = started
    exports = []
    monkeypatch.setattr(LocalWarehouse, "export", lambda *a, **k: exports.append(a) or pytest.fail("exported"))
    monkeypatch.setattr(
        LocalStorage, "check_writable", raise_on_call(1, PermissionError(errno.EROFS, "Read-only file system"))
    )
    with pytest.raises(StoreWriteError, match="Read-only file system.*cached samples can still be read"):
        Loader(MethylStore.open(store.storage.root)).ingest(MORE, progress=False)
    assert exports == []
    # Cached samples are still served.
    assert Loader(MethylStore.open(store.storage.root)).ingest(FIRST, progress=False).cached == 2
    assert snapshot(store.storage.root) == committed_files


REAL_FS = """
set -e
mount -t tmpfs -o size={size} tmpfs {mnt}
{prepare}
{python} - <<'PY'
import errno, sys
from xr_methyl import Loader, MethylStore
from xr_methyl.errors import StoreWriteError
try:
    Loader(MethylStore.open({store!r}), {warehouse!r}).ingest({ids!r}, progress=False)
except StoreWriteError as err:
    print("ERRNO", errno.errorcode[err.errno]); print("MESSAGE", err)
else:
    print("NO ERROR")
s = MethylStore.open({store!r}); print("SAMPLES", ",".join(s.sample_ids)); print("OK", s.verify().ok)
PY
"""


@pytest.mark.parametrize(("mode", "expected"), [("full", "ENOSPC"), ("read-only", "EROFS")])
def test_a_real_full_or_read_only_filesystem(own_cohort, tmp_path, mode, expected):
    """On a real tmpfs in a private mount namespace; skipped where mounts are not allowed."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    seed = tmp_path / "seed.zarr"
    Loader(MethylStore.create(seed, warehouse=own_cohort.warehouse)).ingest(["S0001"], progress=False)
    store = mnt / "s.zarr"
    size = "4m"
    if mode == "full":  # fill the disk, then free two pages: room to start an append, not to finish it
        prepare = (
            f"cp -r {seed} {store}; dd if=/dev/zero of={mnt}/filler bs=4k 2>/dev/null || true; "
            f"truncate -s -8k {mnt}/filler"
        )
    else:
        prepare = f"cp -r {seed} {store}; mount -o remount,ro {mnt}"
    script = REAL_FS.format(
        size=size,
        mnt=mnt,
        prepare=prepare,
        python=sys.executable,
        store=str(store),
        warehouse=str(own_cohort.warehouse.path),
        ids=["S0001", "S0002", "S0003", "S0004", "S0005", "S0006", "S0007"],
    )
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    if "mount:" in out.stderr or "unshare:" in out.stderr:
        pytest.skip(f"mounts are not allowed here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr
    assert f"ERRNO {expected}" in out.stdout, out.stdout + out.stderr
    assert "keeps its last commit (1 sample(s))" in out.stdout
    assert "SAMPLES S0001\n" in out.stdout and "OK True" in out.stdout
