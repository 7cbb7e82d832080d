"""The commit protocol: how an append stays all-or-nothing, and how a writer that lost its lock loses only its own work.

Rows are added in blocks of ``sample_block`` rows, one shard high, so an append
only ever writes whole new shards and never reads or rewrites an existing one
(a batch is padded with empty rows to fill its last block).  Under the write
lock (:meth:`Storage.lock <xr_methyl.storage.Storage.lock>`, a lease) the order is:

1. read the commit (:func:`read_commit`, noting the version of every control
   object), remove what interrupted appends left past it
   (:func:`~xr_methyl.store.gc.reclaim`) and grow the arrays' shape
   (``zarr.json``) for the new rows (:func:`appending`);
2. write the new shards past the committed rows, from any process
   (:meth:`RowRange.write <xr_methyl.store.append.RowRange.write>`);
3. write the block records (``blocks/<i>.json``: each shard's size and sha256),
   then ``ingested_batches.json``, ``samples.json`` and ``provenance.json`` with
   the new entries (write-ahead: readers ignore entries of uncommitted samples);
4. check the lock is still ours, then replace ``sample_ids.json`` in one atomic
   write: this is the commit (:func:`commit_rows`).

Steps 3 and 4 replace each object only if it is still the version read under
the write lock (:func:`write_control`; on S3 a ``PUT If-Match`` on its ETag, a
real compare-and-swap), so a writer that lost its lock can neither commit nor
overwrite a successor's sidecars.  Where a store's bytes live is
:mod:`xr_methyl.storage`'s business.

Everything a reader trusts is filtered through ``sample_ids.json``: rows past
its end, and sidecar entries for samples it does not list, are uncommitted and
invisible.  A crash before step 4 leaves the previous commit intact; the next
append deletes the orphaned shards and writes the rows again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xr_methyl.errors import CorruptStoreError, MethylError, StoreConflictError, StoreError, StoreWriteError
from xr_methyl.storage import Storage
from xr_methyl.store.append import RowRange, by_cpg_spec
from xr_methyl.store.layout import BATCHES, LOCK, PROVENANCE, SAMPLE_IDS, SAMPLES, block_record_key, read_json

if TYPE_CHECKING:
    from xr_methyl.store import MethylStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Commit:
    """What one read of ``sample_ids.json`` says is in the store."""

    rows: list[str | None]  # one entry per committed row, None for padding
    batches: dict[str, list[str]]  # committed samples of each batch
    samples: dict[str, dict[str, Any]]  # metadata of each committed sample
    #: Version tags (S3 ETags) of the control objects as read, None for an absent one: the
    #: conditions of the next writes, so that a writer never overwrites what another wrote since.
    tags: dict[str, str | None] = field(default_factory=dict, compare=False)

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def sample_ids(self) -> list[str]:
        return [s for s in self.rows if s is not None]

    @property
    def row_of(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.rows) if s is not None}


def read_commit(storage: Storage, sample_block: int, *, for_write: bool = False) -> Commit:
    """Read the commit point, then the sidecars (``for_write``: also the version of ``provenance.json``)."""
    # sample_ids.json first: the sidecars read after it can only be ahead of it.
    tags: dict[str, str | None] = {}
    rows = read_json(storage, SAMPLE_IDS, list, tags=tags)
    if not all(r is None or isinstance(r, str) for r in rows):
        raise CorruptStoreError(f"{storage.uri}/{SAMPLE_IDS} must be a list of sample ids or null")
    if len(rows) % sample_block:
        raise CorruptStoreError(
            f"{storage.uri}/{SAMPLE_IDS} has {len(rows)} rows, not a multiple of the "
            f"{sample_block}-row blocks the store appends"
        )
    committed = {r for r in rows if r is not None}
    if len(committed) != sum(r is not None for r in rows):
        raise CorruptStoreError(f"{storage.uri}/{SAMPLE_IDS} lists a sample twice")
    batches_doc = read_json(storage, BATCHES, dict, tags=tags)
    for batch, members in batches_doc.items():
        if not (isinstance(members, list) and all(isinstance(s, str) for s in members)):
            raise CorruptStoreError(
                f"{storage.uri}/{BATCHES}: batch {batch!r} holds {repr(members)[:60]}, expected a list of sample ids"
            )
    samples_doc = read_json(storage, SAMPLES, dict, tags=tags)
    for sample, meta in samples_doc.items():
        if not isinstance(meta, dict):
            raise CorruptStoreError(
                f"{storage.uri}/{SAMPLES}: sample {sample!r} holds {repr(meta)[:60]}, "
                "expected an object of its metadata"
            )
    if for_write:
        try:
            tags[PROVENANCE] = storage.read_tagged(PROVENANCE)[1]
        except FileNotFoundError:
            tags[PROVENANCE] = None
    batches = {}
    for batch, members in batches_doc.items():
        kept = [s for s in members if s in committed]
        if kept:
            batches[batch] = kept
    samples = {s: samples_doc.get(s, {}) for s in rows if s is not None}
    return Commit(rows=rows, batches=batches, samples=samples, tags=tags)


@contextmanager
def appending(
    store: MethylStore,
    batches: Sequence[tuple[str, Sequence[str]]],
    *,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    lock_timeout: float = 600.0,
) -> Iterator[PendingAppend]:
    """Hold the write lock, reserve rows for ``batches`` (in order) and commit them one by one.

    Samples already committed are left out of each batch's :class:`RowRange`;
    the rows of all batches are reserved at once (what interrupted appends
    left is reclaimed first).  Write each range's whole shards from any
    process (:meth:`RowRange.write`), then call ``pending.commit(range)`` in
    order (:func:`commit_rows`).  Ranges not committed when the block exits
    stay invisible, and the next append reclaims them.  An ``OSError`` while writing becomes a
    :class:`StoreWriteError` that says the store keeps its last commit.
    """
    from xr_methyl.store.gc import reclaim  # gc builds on this module's conditional writes

    store.verify_axis()
    before = len(store.commit.sample_ids)
    try:
        with store.storage.lock(LOCK, timeout=lock_timeout) as lock:
            commit = store.refresh(for_write=True)
            before = len(commit.sample_ids)
            taken = set(commit.row_of)
            start = commit.n_rows
            ranges = []
            by_cpg = by_cpg_spec(store)
            for batch_id, members in batches:
                kept = [s for s in dict.fromkeys(members) if s not in taken]
                if len(kept) < len(members):
                    log.info("batch %s: %d sample(s) were committed meanwhile", batch_id, len(members) - len(kept))
                taken.update(kept)
                n_rows = round_up(len(kept), store.layout.sample_block)
                ranges.append(
                    RowRange(
                        store.storage,
                        batch_id,
                        tuple(kept),
                        start,
                        n_rows,
                        store.n_cpgs,
                        store.layout.sample_block,
                        store.layout.cpg_shard,
                        by_cpg,
                    )
                )
                start += n_rows
            reclaim(store, commit)
            reserve_rows(store, commit.n_rows, start - commit.n_rows)
            yield PendingAppend(store, ranges, dict(metadata or {}), lock)
    except OSError as err:
        if isinstance(err, MethylError):
            raise
        what = ", ".join(repr(b) for b, _ in batches[:3]) + (" ..." if len(batches) > 3 else "")
        raise StoreWriteError(
            write_failure(store.storage.uri, f"appending batch {what}", err, before), errno=err.errno
        ) from err


def reserve_rows(store: MethylStore, start: int, n_rows: int) -> None:
    """Grow the arrays from ``start`` (the commit; :func:`~xr_methyl.store.gc.reclaim` has shrunk them back to it)
    to ``start + n_rows`` rows."""
    if not n_rows:
        return
    for name in store.array_names:
        store.array(name, writable=True).resize((start + n_rows, store.n_cpgs))


class PendingAppend:
    """Reserved row ranges of one :meth:`MethylStore.appending` block, committed in order."""

    def __init__(self, store: MethylStore, rows: list[RowRange], metadata: dict, lock) -> None:
        self.store = store
        self.rows = rows
        self.metadata = metadata
        self.lock = lock

    def commit(
        self,
        rows: RowRange,
        *,
        provenance: Mapping[str, Any] | None = None,
        shards: Mapping[str, dict | None] | None = None,
    ) -> None:
        """Commit a written range; ranges must be committed in the order they were reserved.

        ``provenance`` (JSON-able: the warehouse queries behind the batch) is
        kept with the batch in ``provenance.json``.  ``shards`` are what the
        range's writes returned (merged); without them the new shards are
        read back to record their hashes.
        """
        if rows.sample_ids:
            commit_rows(self.store, rows, self.metadata, provenance, self.lock, shards)


def commit_rows(
    store: MethylStore,
    rows: RowRange,
    metadata: Mapping[str, Mapping[str, Any]],
    provenance: Mapping[str, Any] | None,
    lock,
    shards: Mapping[str, dict | None] | None = None,
) -> None:
    """Commit one reserved, written range: block records and write-ahead sidecars, then sample_ids.json."""
    commit = store.commit
    if commit.n_rows != rows.start:
        raise StoreError(
            f"batch {rows.batch_id!r} starts at row {rows.start}, but {commit.n_rows} rows are "
            "committed: commit reserved batches in order"
        )
    sample_ids = list(rows.sample_ids)
    record_blocks(store, rows.start, rows.n_rows, shards)
    # Write-ahead sidecars: ignored by readers until sample_ids.json lists the samples.
    # Built from the commit, so entries of earlier interrupted appends are dropped.  Each is
    # written only if unchanged since the commit was read under the lock (S3: If-Match), so a
    # writer whose lock was taken over cannot overwrite what its successor wrote.
    log.debug("batch %s: writing sidecars", rows.batch_id)
    try:
        batches = {**commit.batches, rows.batch_id: [*commit.batches.get(rows.batch_id, []), *sample_ids]}
        write_control(store.storage, BATCHES, batches, commit)
        samples = dict(commit.samples)
        for s in sample_ids:
            samples[s] = {"batch_id": rows.batch_id, **dict(metadata.get(s, {}))}
        write_control(store.storage, SAMPLES, samples, commit)
        if provenance is not None:
            entries = committed_provenance(store.storage, commit)
            entries.setdefault(rows.batch_id, []).append({"samples": sample_ids, **dict(provenance)})
            write_control(store.storage, PROVENANCE, entries, commit)
        # Fencing: commit only while we still hold the lock and the commit is the one we built
        # on; the commit itself replaces sample_ids.json only if it is unchanged (S3: If-Match).
        lock.check()
        padding = [None] * (rows.n_rows - len(sample_ids))
        write_control(store.storage, SAMPLE_IDS, [*commit.rows, *sample_ids, *padding], commit)  # the commit
    except StoreConflictError as err:
        raise StoreConflictError(
            f"{err} The store changed under the write lock (another writer took it over); batch "
            f"{rows.batch_id!r} was not committed and the store keeps the other writer's commit "
            "(re-run to ingest it)"
        ) from err
    store.refresh(for_write=True)
    log.info("committed batch %s: %d sample(s)", rows.batch_id, len(sample_ids))


def write_control(storage: Storage, key: str, value: Any, commit: Commit) -> None:
    """Replace a control object only if it is as ``commit`` read it (absent if it was absent)."""
    if key not in commit.tags:
        raise StoreError(f"internal: {key} was written without having been read under the write lock")
    tag = commit.tags[key]
    storage.write_json(key, value, if_match=tag, if_absent=tag is None)


def record_blocks(store: MethylStore, start: int, n_rows: int, shards: Mapping[str, dict | None] | None = None) -> None:
    """Write ``blocks/<i>.json`` for each new block: the shard objects it holds, with sizes and sha256.

    Written ahead of the commit, like the other sidecars; ``verify`` uses
    them to tell a missing or damaged shard from one never written (zarr
    writes no object for a shard that is all fill value).  ``shards`` are the
    records the writes returned (see :func:`~xr_methyl.store.append.write_region`);
    without them the new shards are read back (on S3 that would download them all).
    """
    block = store.layout.sample_block
    arrays = {name: store.array(name) for name in store.array_names}
    for b in range(start // block, (start + n_rows) // block):
        record: dict[str, Any] = {"block": b, "rows": [b * block, (b + 1) * block]}
        for name, arr in arrays.items():
            record[name] = {}
            for key in store.shard_keys(name, b, arr):
                if shards is not None:
                    if shards.get(key):
                        record[name][key] = dict(shards[key])
                    continue  # not written (or deleted): all fill value
                try:
                    data = store.storage.read_bytes(key)
                except FileNotFoundError:
                    continue  # all fill value: zarr wrote nothing
                record[name][key] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        store.storage.write_json(block_record_key(b), record)


def committed_provenance(storage: Storage, commit: Commit) -> dict[str, list[dict[str, Any]]]:
    """``provenance.json`` without entries of appends that never committed."""
    if not storage.exists(PROVENANCE):
        return {}
    committed = commit.row_of
    out: dict[str, list[dict[str, Any]]] = {}
    for batch, entries in read_provenance(storage).items():
        kept = [e for e in entries if any(s in committed for s in e["samples"])]
        if kept:
            out[batch] = kept
    return out


def read_provenance(storage: Storage) -> dict[str, list[dict[str, Any]]]:
    """``provenance.json``, refused (naming the entry) unless every entry has the shape appends write."""
    doc = read_json(storage, PROVENANCE, dict)

    def refuse(batch: str, what: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"{storage.uri}/{PROVENANCE}: batch {batch!r}: {what}; the file is damaged "
            "(it only records what ingests cost: restore it from a copy of the store)"
        )

    for batch, entries in doc.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise refuse(batch, f"{repr(entries)[:60]} is not a list of entries")
        for entry in entries:
            samples, queries = entry.get("samples"), entry.get("queries", [])
            if not (isinstance(samples, list) and all(isinstance(s, str) for s in samples)):
                raise refuse(batch, f"an entry's samples are {repr(samples)[:60]}, expected a list of sample ids")
            if not (isinstance(queries, list) and all(isinstance(q, dict) for q in queries)):
                raise refuse(batch, f"an entry's queries are {repr(queries)[:60]}, expected a list of objects")
            for q in queries:
                for name in ("bytes_scanned", "dollars"):
                    value = q.get(name)
                    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                        raise refuse(batch, f"query {q.get('query_id')!r} has {name} {value!r}, expected a number")
    return doc


def write_failure(uri: str, doing: str, err: OSError, n_committed: int) -> str:
    """A message for an ``OSError`` met while writing: what failed, what is kept, what to do."""
    import errno as errnos

    reason = err.strerror or str(err) or type(err).__name__
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if err.errno == errnos.ENOSPC:
        fix = "free disk space, then re-run the same ensure (xr-methyl gc STORE reclaims what this attempt left)"
    elif err.errno in (errnos.EACCES, errnos.EPERM, errnos.EROFS):
        fix = (
            "the store is read-only or not writable by this user: cached samples can still be read; "
            "ingesting new ones needs write access"
        )
    else:
        fix = "fix the cause, then re-run the same ensure"
    return (
        f"could not write to the store {uri} while {doing}: {reason}{where}. The store keeps its last "
        f"commit ({n_committed} sample(s)); {fix}."
    )


def round_up(n: int, block: int) -> int:
    return -(-n // block) * block
