"""Housekeeping: reclaim what interrupted writers left, never touching committed data.

:func:`reclaim` runs under the write lock at the start of every append (what
interrupted appends left past the commit) and, ``deep``, from :func:`collect`
(``xr-methyl gc``), which also drops sidecar entries of uncommitted samples
and, outside the lock, staging of interrupted creates and, given a warehouse,
its abandoned export staging.  :func:`reclaim_create` clears what an
interrupted create left where no store opens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xr_methyl.storage import open_storage
from xr_methyl.storage.leases import OWNER_FILE
from xr_methyl.store.commit import Commit, committed_provenance, write_control
from xr_methyl.store.layout import ARRAY_KEYS, BATCHES, BLOCKS, LOCK, MANIFEST, PROVENANCE, SAMPLES, read_json

if TYPE_CHECKING:
    from xr_methyl.store import MethylStore

log = logging.getLogger(__name__)

#: Temporary files written without the write lock are left alone for this long.
STALE_TEMP_SECONDS = 60.0


@dataclass
class GcReport:
    """What :func:`collect` (``MethylStore.gc``) removed (or, with ``dry_run``, would remove)."""

    removed: list[tuple[str, int]]  # (store key or path, bytes)
    broken_locks: list[dict | None]  # records of dead writers whose locks were taken over
    dry_run: bool = False

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.removed)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        text = f"{verb} {len(self.removed)} item(s), {self.bytes:,} bytes"
        if self.broken_locks:
            text += f"; took over {len(self.broken_locks)} lock(s) of dead writers"
        return text


def reclaim(store: MethylStore, commit: Commit, *, deep: bool = False, dry_run: bool = False) -> list[tuple[str, int]]:
    """Remove what interrupted appends left past the commit; return the (key, bytes) removed.

    Call with the write lock held.  Always: shard objects of blocks past
    the commit (and the arrays' shape shrunk back to the commit), their
    block records, temporary files in the store's top level and the
    arrays' top level.  ``deep`` also walks the arrays for zarr's
    temporary ``*.partial`` files and drops sidecar entries of uncommitted
    samples.
    """
    removed: list[tuple[str, int]] = []

    def drop(key: str) -> None:
        removed.append((key, store.storage.size(key)))
        if not dry_run:
            store.storage.remove(key)

    n_blocks = commit.n_rows // store.layout.sample_block
    for name in store.array_names:
        prefix = ARRAY_KEYS[name]
        for entry in store.storage.list_dir(f"{prefix}/c"):
            if not entry.isdigit() or int(entry) >= n_blocks:
                drop(f"{prefix}/c/{entry}")
        for entry in store.storage.list_dir(prefix):
            if entry.endswith(".partial"):
                drop(f"{prefix}/{entry}")
        if deep:
            gone = [key for key, _ in removed]
            for key, _ in list(store.storage.walk(prefix)):
                if key.endswith(".partial") and not any(key == g or key.startswith(g + "/") for g in gone):
                    drop(key)
        arr = store.array(name, writable=not dry_run)
        if arr.shape[0] > commit.n_rows:
            log.info("%s: reclaiming %d uncommitted row(s)", name, arr.shape[0] - commit.n_rows)
            removed.append((f"{prefix}/zarr.json#rows {commit.n_rows}-{arr.shape[0] - 1}", 0))
            if not dry_run:
                arr.resize((commit.n_rows, store.n_cpgs))
    for entry in store.storage.list_dir(BLOCKS):
        index = entry.removesuffix(".json")
        if not index.isdigit() or int(index) >= n_blocks:
            drop(f"{BLOCKS}/{entry}")
    for entry in store.storage.list_dir(""):
        # Sidecar temporaries are written under the lock we hold: stale.  Lock
        # temporaries and writability probes are written without it: only old ones.
        unlocked = entry.startswith((f".{LOCK}.", ".probe-"))
        stale_temp = entry.startswith(".") and entry.endswith(".tmp")
        if (stale_temp or entry.startswith(f".{LOCK}.broken-") or entry == OWNER_FILE) and (
            not unlocked or (store.storage.age(entry) or 0.0) > STALE_TEMP_SECONDS
        ):
            drop(entry)
    if deep:
        sidecars = [(BATCHES, commit.batches), (SAMPLES, commit.samples)]
        if store.storage.exists(PROVENANCE):
            sidecars.append((PROVENANCE, committed_provenance(store.storage, commit)))
        for key, clean in sidecars:
            if read_json(store.storage, key, dict) != clean:
                removed.append((f"{key}#uncommitted entries", 0))
                if not dry_run:
                    write_control(store.storage, key, clean, commit)
    return removed


def collect(store: MethylStore, *, warehouse=None, dry_run: bool = False, lock_timeout: float = 60.0) -> GcReport:
    """Reclaim everything that interrupted writers left behind; return what was (or would be) removed.

    Under the write lock (so a running append is never disturbed; a lock
    left by a dead writer is taken over): shard objects, block records and
    zarr shape of rows past the commit, temporary files of interrupted
    atomic writes, sidecar entries of uncommitted samples.  Without it:
    staging directories of interrupted creates of this store whose creator
    is gone, and, given a warehouse, its export staging directories whose
    exporter is gone (``Warehouse.reclaim_exports``).  Committed data is
    never touched.

    Parameters
    ----------
    warehouse
        Also reclaim this warehouse's abandoned export staging (a
        ``Warehouse``, URI or path); ``None`` leaves warehouses alone.
    dry_run
        Only report what would be removed.
    lock_timeout
        Seconds to wait for a running writer to finish.
    """
    with store.storage.lock(LOCK, timeout=lock_timeout) as lock:
        commit = store.refresh(for_write=True)
        removed = reclaim(store, commit, deep=True, dry_run=dry_run)
    removed.extend(store.storage.reclaim_staging(dry_run=dry_run, manifest_key=MANIFEST, lock_key=LOCK))
    if warehouse is not None:
        from xr_methyl.warehouse import open_warehouse

        removed.extend(open_warehouse(warehouse).reclaim_exports(dry_run=dry_run))
    report = GcReport(removed=removed, broken_locks=lock.broken, dry_run=dry_run)
    log.info("gc %s: %s", store.storage.uri, report.summary())
    return report


def reclaim_create(
    location, *, storage_options: Mapping[str, Any] | None = None, dry_run: bool = False, lock_timeout: float = 60.0
) -> GcReport:
    """Remove what an interrupted create of ``location`` left, when no store opens there.

    Locally: hidden staging siblings whose creator is gone.  On S3: the
    objects under the prefix (it has the create marker and no manifest),
    taken under the write lock so that a running create is left alone.
    """
    storage = open_storage(location, storage_options)
    removed = storage.reclaim_staging(dry_run=dry_run, manifest_key=MANIFEST, lock_key=LOCK, timeout=lock_timeout)
    report = GcReport(removed=removed, broken_locks=[], dry_run=dry_run)
    log.info("gc %s: %s", storage.uri, report.summary())
    return report
