"""The methylzarr store: two Zarr v3 arrays plus sidecars, with one commit point.

Layout of a store directory, or of the objects under an ``s3://`` prefix (format 2)::

    beta.zarr/             (rows, n_cpgs) float32, NaN = missing, sharded
    coverage.zarr/         (rows, n_cpgs) unsigned int, 0 = no coverage, same grid
    beta_by_cpg.zarr/      optional (Layout.by_cpg_chunk): beta again, in CpG-major inner chunks,
                           same shard grid (see :mod:`xr_methyl.bycpg`)
    cpg_ids.npy            the CpG axis, fixed at creation
    cpg_index/             loci and look-up tables of the axis, memory-mapped at open
                           (see :mod:`xr_methyl.cpg_axis`; format 1 had cpg_loci.npz instead)
    manifest.json          immutable facts: n_cpgs, sha256 of the axis, layout, warehouse
    ingested_batches.json  {batch_id: [sample_id, ...]}         (written ahead, see below)
    samples.json           per-sample metadata (batch, age, ...)   (written ahead)
    provenance.json        per batch: what each append cost (queries, bytes)  (written ahead)
    sample_ids.json        one entry per committed row; THE COMMIT POINT

How an append stays all-or-nothing
----------------------------------
Rows are added in blocks of ``sample_block`` rows, one shard high, so an append
only ever writes whole new shards and never reads or rewrites an existing one
(a batch is padded with empty rows to fill its last block).  The order is:

1. grow the arrays' shape (``zarr.json``) and write the new shards past the
   committed rows;
2. write ``ingested_batches.json`` and ``samples.json`` with the new entries;
3. replace ``sample_ids.json`` in one atomic write: this is the commit.

Steps 2 and 3 replace each object only if it is still the version read under
the write lock (on S3 a ``PUT If-Match`` on its ETag, a real compare-and-swap),
so a writer that lost its lock can neither commit nor overwrite a successor's
sidecars.  Where a store's bytes live is :mod:`xr_methyl.storage`'s business.

Everything a reader trusts is filtered through ``sample_ids.json``: rows past
its end, and sidecar entries for samples it does not list, are uncommitted and
invisible.  A crash before step 3 leaves the previous commit intact; the next
append deletes the orphaned shards and writes the rows again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from xr_methyl.cpg_axis import (
    INDEX_DIR,
    INDEX_FILES,
    NEVER_CHANGE,
    CpgAxis,
    file_hashes,
    mismatch,
    open_checked,
    open_remote,
)
from xr_methyl.errors import (
    CorruptStoreError,
    DataError,
    MethylError,
    StoreConflictError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
    StoreWriteError,
)
from xr_methyl.redact import redact
from xr_methyl.storage import OWNER_FILE, Storage, json_bytes, open_storage

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
#: Versions this code opens: format 1 kept the loci in cpg_loci.npz and had no cpg_index/.
READABLE_VERSIONS = (1, 2)

BETA = "beta.zarr"
COVERAGE = "coverage.zarr"
BETA_BY_CPG = "beta_by_cpg.zarr"
#: Store key of each array, by name.
ARRAY_KEYS = {"beta": BETA, "coverage": COVERAGE, "beta_by_cpg": BETA_BY_CPG}
CPG_IDS = "cpg_ids.npy"
CPG_LOCI = "cpg_loci.npz"
MANIFEST = "manifest.json"
SAMPLE_IDS = "sample_ids.json"
BATCHES = "ingested_batches.json"
SAMPLES = "samples.json"
PROVENANCE = "provenance.json"
LOCK = "write.lock"
BLOCKS = "blocks"

#: Temporary files written without the write lock are left alone for this long.
STALE_TEMP_SECONDS = 60.0
#: How long a create waits for the write lock of an S3 prefix (another create running there).
CREATE_LOCK_TIMEOUT = 60.0

COVERAGE_DTYPES = ("uint8", "uint16", "uint32")


@dataclass(frozen=True)
class Layout:
    """Chunk and shard shapes shared by both arrays.

    ``sample_block`` rows make one shard along the sample axis: the unit of an
    append.  ``cpg_shard`` columns make one shard along the CpG axis (bounding
    shard size, and so the memory a shard write needs); ``chunk_rows`` x
    ``cpg_chunk`` is the inner chunk, the unit of a read.

    The defaults were measured against the alternatives (64 samples x 2 M
    CpGs): one-row inner chunks let a training fold of scattered samples read
    only its own rows (8x fewer bytes than 8-row chunks), shards of 8 x 2**21
    keep every shard write at 64 MiB whatever the CpG count, and 65,536-wide
    rows compress best.

    ``by_cpg_chunk`` (opt-in; 0 = none) adds ``beta_by_cpg.zarr``, a CpG-major
    copy of beta with inner chunks of ``sample_block`` x ``by_cpg_chunk`` on the
    same shard grid, written by the same appends: reads of few scattered CpGs
    use it (see :mod:`xr_methyl.bycpg`).  ``by_cpg_codec`` is ``"zstd"`` (level
    3, the default) or ``"raw"`` (chunks stored as they are: faster appends and
    reads, about 2.4x the disk on WGBS-like data).
    """

    sample_block: int = 8
    chunk_rows: int = 1
    cpg_chunk: int = 65536
    cpg_shard: int = 2**21
    by_cpg_chunk: int = 0
    by_cpg_codec: str = "zstd"

    def for_axis(self, n_cpgs: int) -> Layout:
        """Shrink the CpG shard to the axis (whole chunks) and check the shapes fit together."""
        from xr_methyl.bycpg import CODECS

        for name in ("sample_block", "chunk_rows", "cpg_chunk", "cpg_shard"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"layout {name}={value!r}: expected a positive integer")
        by_cpg = self.by_cpg_chunk
        if not isinstance(by_cpg, int) or isinstance(by_cpg, bool) or by_cpg < 0:
            raise ValueError(f"layout by_cpg_chunk={by_cpg!r}: expected 0 (no CpG-major copy of beta) or a "
                             "positive integer (its inner chunks' width in CpGs, e.g. 64)")
        if self.by_cpg_codec not in CODECS:
            raise ValueError(f"layout by_cpg_codec={self.by_cpg_codec!r}: expected one of {', '.join(CODECS)}")
        if self.sample_block % self.chunk_rows:
            raise ValueError(
                f"layout sample_block={self.sample_block} must be a multiple of chunk_rows={self.chunk_rows}"
            )
        cpg_chunk = min(self.cpg_chunk, n_cpgs)
        cpg_shard = min(self.cpg_shard, math.ceil(n_cpgs / cpg_chunk) * cpg_chunk)
        if cpg_shard % cpg_chunk:
            raise ValueError(f"layout cpg_shard={self.cpg_shard} must be a multiple of cpg_chunk={self.cpg_chunk}")
        if by_cpg and cpg_shard < n_cpgs and cpg_shard % by_cpg:
            raise ValueError(f"layout by_cpg_chunk={by_cpg} must divide cpg_shard={cpg_shard} (the CpG-major copy "
                             "shares beta's shards), e.g. 64")
        return replace(self, cpg_chunk=cpg_chunk, cpg_shard=cpg_shard)

    def by_cpg_shard(self, n_cpgs: int) -> int:
        """Width in CpGs of the CpG-major copy's shards (see :func:`xr_methyl.bycpg.shard_width`)."""
        from xr_methyl.bycpg import shard_width

        return shard_width(self.cpg_shard, self.by_cpg_chunk, n_cpgs)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "sample_block": self.sample_block,
            "chunk_shape": [self.chunk_rows, self.cpg_chunk],
            "shard_shape": [self.sample_block, self.cpg_shard],
        }
        if self.by_cpg_chunk:  # absent from stores without the copy (and from those created before it)
            doc["by_cpg"] = {"chunk": self.by_cpg_chunk, "codec": self.by_cpg_codec}
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Layout:
        (chunk_rows, cpg_chunk), (sample_block, cpg_shard) = doc["chunk_shape"], doc["shard_shape"]
        by_cpg = doc.get("by_cpg") or {}
        return cls(int(sample_block), int(chunk_rows), int(cpg_chunk), int(cpg_shard),
                   int(by_cpg.get("chunk", 0)), str(by_cpg.get("codec", "zstd")))


@dataclass
class GcReport:
    """What :meth:`MethylStore.gc` removed (or, with ``dry_run``, would remove)."""

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


class MethylStore:
    """A methylzarr store: create it once, then append batches of samples.

    Use :meth:`create` or :meth:`open`; the constructor is internal.
    """

    def __init__(self, storage: Storage, manifest: dict[str, Any], axis: CpgAxis) -> None:
        self.storage = storage
        self.manifest = manifest
        self.cpg_axis = axis
        self.layout = Layout.from_json(manifest["layout"])
        self.coverage_dtype = np.dtype(manifest["coverage_dtype"])
        self.commit = self._read_commit()
        self._axis_verified = False

    def __repr__(self) -> str:
        return (
            f"<MethylStore {self.storage.uri!r}: {len(self.sample_ids)} samples x {self.n_cpgs} CpGs, "
            f"{len(self.commit.batches)} batches>"
        )

    # -- creating and opening -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        cpg_ids=None,
        warehouse=None,
        layout: Layout | None = None,
        coverage_dtype: str = "uint16",
        storage_options: Mapping[str, Any] | None = None,
    ) -> MethylStore:
        """Create an empty store whose CpG axis is fixed from now on.

        Parameters
        ----------
        path
            Directory to create, or an ``s3://bucket/prefix``; refused if a
            store or anything else is there (on S3, what an interrupted create
            left is cleared first).
        cpg_ids
            The CpG axis: a sequence of ids, or a table with ``cpg_id``, ``chrom``
            and ``pos``.  ``None`` takes the warehouse's ``cpgs`` table in genome order.
        warehouse
            The warehouse this store ingests from (a ``Warehouse``, URI or path);
            recorded in the manifest so that later opens can ingest without it.
        layout
            Chunk and shard shapes (see :class:`Layout`).
        coverage_dtype
            One of ``uint8``, ``uint16`` (default) or ``uint32``.
        storage_options
            For ``s3://`` stores: endpoint, region, credentials (see
            :class:`xr_methyl.s3storage.S3Storage`); never written to the store.
        """
        from xr_methyl.warehouse import open_warehouse

        storage = open_storage(path, storage_options)
        _refuse_existing(storage)
        if coverage_dtype not in COVERAGE_DTYPES:
            raise ValueError(f"coverage_dtype={coverage_dtype!r}: expected one of {', '.join(COVERAGE_DTYPES)}")
        wh = open_warehouse(warehouse) if warehouse is not None else None
        axis = _axis_from(cpg_ids, wh)
        layout = (layout or Layout()).for_axis(len(axis))
        compressors = _compressors(coverage_dtype)
        axis_files = axis.axis_files()
        manifest = {
            "format": "methylzarr",
            "format_version": FORMAT_VERSION,
            "n_cpgs": len(axis),
            "cpg_ids_sha256": axis.sha256,
            "axis_files": file_hashes(axis_files),  # sha256 of each file: the key of remote stores' axis cache
            "has_loci": axis.has_loci,
            "layout": layout.to_json(),
            "coverage_dtype": coverage_dtype,
            "compression": {name: [codec.to_dict() for codec in codecs] for name, codecs in compressors.items()},
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            # describe() must hold no secret; redact anyway, since the manifest is shared with every reader.
            "warehouse": redact(wh.describe()) if wh is not None else None,
        }

        # Locally: build the whole store in a hidden sibling, then rename it into place.  On S3:
        # build it in place under the write lock, its manifest written last with If-None-Match.
        # Either way a crash or an error part-way leaves nothing that opens at `path`.
        with storage.creating(manifest_key=MANIFEST, lock_key=LOCK, timeout=CREATE_LOCK_TIMEOUT) as (staged, publish):
            for key, data in axis_files.items():
                staged.write_atomic(key, data)
            for name, dtype, fill in ((BETA, "float32", np.nan), (COVERAGE, coverage_dtype, 0)):
                _create_array(staged, name, len(axis), layout, dtype, fill, compressors[name.removesuffix(".zarr")])
            if layout.by_cpg_chunk:
                _create_array(staged, BETA_BY_CPG, len(axis), layout, "float32", np.nan, _by_cpg_compressor(layout),
                              chunks=(layout.sample_block, layout.by_cpg_chunk),
                              shards=(layout.sample_block, layout.by_cpg_shard(len(axis))))
            staged.write_json(BATCHES, {})
            staged.write_json(SAMPLES, {})
            staged.write_json(SAMPLE_IDS, [])
            publish(MANIFEST, json_bytes(manifest))  # the create's commit
        log.info("created store %s with %d CpGs", storage.uri, len(axis))
        store = cls(storage, manifest, _open_axis(storage, manifest, data=axis_files, check=False))
        store._axis_verified = True
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None) -> MethylStore:
        """Open an existing store (a directory or an ``s3://bucket/prefix``), checking its CpG axis.

        Every file that labels the columns (``cpg_ids.npy`` and ``cpg_index/``)
        must hash as the manifest records, or the open is refused.  Locally the
        files are memory-mapped in place; files found right are remembered by
        their identity (inode, size, times) in a per-user cache, so only the first
        open after a change or a copy reads them through (see
        :func:`xr_methyl.cpg_axis.check_files`).  S3 stores are mapped from a
        local copy checked the same way (see :func:`xr_methyl.cpg_axis.open_remote`).
        ``storage_options`` configure S3 (see :meth:`create`).

        Raises
        ------
        StoreNotFoundError
            Nothing, or no store, at ``path``.
        CorruptStoreError
            A file of the store is damaged or does not match the manifest (the message names it).
        """
        return cls._open(path, storage_options=storage_options)

    @classmethod
    def _open(cls, path, *, storage_options: Mapping[str, Any] | None = None, check_axis: bool = True) -> MethylStore:
        """:meth:`open`; ``check_axis=False`` leaves the axis files unhashed (``verify`` hashes them itself)."""
        storage = open_storage(path, storage_options)
        try:
            raw = storage.read_bytes(MANIFEST)
        except StoreNotFoundError:  # no such bucket
            raise
        except (FileNotFoundError, NotADirectoryError):
            raise _not_a_store(storage) from None
        manifest = _parse_json(storage, MANIFEST, raw, dict)
        _check_manifest(storage, manifest)
        if manifest["format_version"] == 1:  # loci in an npz, no look-up tables: read in memory (built on demand)
            axis = CpgAxis.from_bytes(
                storage.read_bytes(CPG_IDS), storage.read_bytes(CPG_LOCI) if manifest.get("has_loci") else None
            )
        else:
            axis = _open_axis(storage, manifest, check=check_axis)
        if len(axis) != manifest["n_cpgs"] or axis.has_loci != bool(manifest.get("has_loci")):
            raise CorruptStoreError(
                f"{storage.uri}/{CPG_IDS} does not match the manifest ({len(axis)} vs {manifest['n_cpgs']} CpGs); "
                "the CpG axis of a store must never change"
            )
        if check_axis and axis.source is None and axis.remote is None:  # read into memory: hash what was read
            _check_ids(storage, manifest, axis)
        return cls(storage, manifest, axis)

    def verify_axis(self) -> None:
        """Check the sha256 of the CpG axis against the manifest (once per store object).

        Raises
        ------
        CorruptStoreError
            If ``cpg_ids.npy`` changed since the store was created.
        """
        if self._axis_verified:
            return
        digest = self.cpg_axis.sha256
        if digest != self.manifest["cpg_ids_sha256"]:
            raise CorruptStoreError(
                f"{self.storage.uri}/{CPG_IDS} does not match the manifest (sha256 {digest[:12]}... vs "
                f"{self.manifest['cpg_ids_sha256'][:12]}...); the CpG axis of a store must never change"
            )
        self._axis_verified = True

    # -- what is committed ----------------------------------------------------------------
    @property
    def n_cpgs(self) -> int:
        return len(self.cpg_axis)

    @property
    def sample_ids(self) -> list[str]:
        """Committed sample ids in row order."""
        return self.commit.sample_ids

    @property
    def batches(self) -> dict[str, list[str]]:
        return self.commit.batches

    def refresh(self, *, for_write: bool = False) -> Commit:
        """Re-read the commit point (another process may have appended).

        ``for_write`` (under the write lock) also notes the version of
        ``provenance.json``, which the next commit writes conditionally.
        """
        self.commit = self._read_commit(for_write=for_write)
        return self.commit

    def _read_commit(self, *, for_write: bool = False) -> Commit:
        # sample_ids.json first: the sidecars read after it can only be ahead of it.
        tags: dict[str, str | None] = {}
        rows = _read_json(self.storage, SAMPLE_IDS, list, tags=tags)
        if not all(r is None or isinstance(r, str) for r in rows):
            raise CorruptStoreError(f"{self.storage.uri}/{SAMPLE_IDS} must be a list of sample ids or null")
        if len(rows) % self.layout.sample_block:
            raise CorruptStoreError(
                f"{self.storage.uri}/{SAMPLE_IDS} has {len(rows)} rows, not a multiple of the "
                f"{self.layout.sample_block}-row blocks the store appends"
            )
        committed = {r for r in rows if r is not None}
        if len(committed) != sum(r is not None for r in rows):
            raise CorruptStoreError(f"{self.storage.uri}/{SAMPLE_IDS} lists a sample twice")
        batches_doc = _read_json(self.storage, BATCHES, dict, tags=tags)
        for batch, members in batches_doc.items():
            if not (isinstance(members, list) and all(isinstance(s, str) for s in members)):
                raise CorruptStoreError(f"{self.storage.uri}/{BATCHES}: batch {batch!r} holds {repr(members)[:60]}, "
                                        "expected a list of sample ids")
        samples_doc = _read_json(self.storage, SAMPLES, dict, tags=tags)
        for sample, meta in samples_doc.items():
            if not isinstance(meta, dict):
                raise CorruptStoreError(f"{self.storage.uri}/{SAMPLES}: sample {sample!r} holds {repr(meta)[:60]}, "
                                        "expected an object of its metadata")
        if for_write:
            try:
                tags[PROVENANCE] = self.storage.read_tagged(PROVENANCE)[1]
            except FileNotFoundError:
                tags[PROVENANCE] = None
        batches = {}
        for batch, members in batches_doc.items():
            kept = [s for s in members if s in committed]
            if kept:
                batches[batch] = kept
        samples = {s: samples_doc.get(s, {}) for s in rows if s is not None}
        return Commit(rows=rows, batches=batches, samples=samples, tags=tags)

    # -- arrays ---------------------------------------------------------------------------
    @property
    def array_names(self) -> tuple[str, ...]:
        """The store's arrays: ``beta``, ``coverage`` and, if the layout has it, ``beta_by_cpg``."""
        return ("beta", "coverage", "beta_by_cpg") if self.layout.by_cpg_chunk else ("beta", "coverage")

    def array(self, name: str, *, writable: bool = False):
        """The zarr array ``"beta"``, ``"coverage"`` or ``"beta_by_cpg"`` (all rows, committed or not)."""
        import zarr

        key = ARRAY_KEYS[name]
        try:
            # zarr_format=3: no look-ups of Zarr v2 metadata (one request each on S3)
            arr = zarr.open_array(self.storage.zarr_store(key, read_only=not writable), mode="r+" if writable else "r",
                                  zarr_format=3)
        except Exception as err:  # zarr raises several types for a missing or broken zarr.json
            raise CorruptStoreError(f"cannot open {self.storage.uri}/{key}: {err}") from err
        if arr.ndim != 2 or arr.shape[1] != self.n_cpgs or arr.shape[0] < self.commit.n_rows:
            raise CorruptStoreError(
                f"{self.storage.uri}/{key} has shape {arr.shape}, but the store has "
                f"{self.commit.n_rows} committed rows x {self.n_cpgs} CpGs"
            )
        return arr

    def read(self, name: str, sample_ids: Sequence[str], cpg_index=slice(None)) -> np.ndarray:
        """Eagerly read committed samples (in the given order) of ``"beta"`` or ``"coverage"``."""
        row_of = self.commit.row_of
        missing = [s for s in sample_ids if s not in row_of]
        if missing:
            from xr_methyl.errors import UnknownSamplesError

            raise UnknownSamplesError(missing, where=f"the store {self.storage.uri}")
        from xr_methyl.rowread import read_rows

        rows = np.array([row_of[s] for s in sample_ids], dtype=np.int64)
        return read_rows(self.array(name), rows, cpg_index, chunk_rows=self.layout.chunk_rows)

    # -- appending ------------------------------------------------------------------------
    def append(
        self,
        batch_id: str,
        sample_ids: Sequence[str],
        beta: np.ndarray,
        coverage: np.ndarray,
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        provenance: Mapping[str, Any] | None = None,
        lock_timeout: float = 600.0,
    ) -> list[str]:
        """Append one batch of samples and commit it; return the ids actually added.

        ``beta`` is ``(len(sample_ids), n_cpgs)`` float32 in [0, 1] with NaN for
        missing; ``coverage`` the same shape in the store's coverage dtype.
        Samples that another writer committed meanwhile are skipped.
        ``provenance`` (JSON-able: the warehouse queries that produced the
        batch, bytes scanned, cost) is kept with the batch in ``provenance.json``.
        """
        sample_ids = list(sample_ids)
        self._check_block(batch_id, sample_ids, beta, coverage)
        with self.appending([(batch_id, sample_ids)], metadata=metadata, lock_timeout=lock_timeout) as pending:
            (rows,) = pending.rows
            if not rows.sample_ids:
                return []
            keep = [sample_ids.index(s) for s in rows.sample_ids]
            if len(keep) < len(sample_ids):
                beta, coverage = beta[keep], coverage[keep]
            written = self._write_rows(rows.start, beta, coverage)
            pending.commit(rows, provenance=provenance, shards=written)
        return list(rows.sample_ids)

    @contextmanager
    def appending(
        self,
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
        order.  Ranges not committed when the block exits stay invisible, and
        the next append reclaims them.  An ``OSError`` while writing becomes a
        :class:`StoreWriteError` that says the store keeps its last commit.
        """
        self.verify_axis()
        before = len(self.commit.sample_ids)
        try:
            with self.storage.lock(LOCK, timeout=lock_timeout) as lock:
                commit = self.refresh(for_write=True)
                before = len(commit.sample_ids)
                taken = set(commit.row_of)
                start = commit.n_rows
                ranges = []
                by_cpg = self._by_cpg()
                for batch_id, members in batches:
                    kept = [s for s in dict.fromkeys(members) if s not in taken]
                    if len(kept) < len(members):
                        log.info("batch %s: %d sample(s) were committed meanwhile", batch_id,
                                 len(members) - len(kept))
                    taken.update(kept)
                    n_rows = _round_up(len(kept), self.layout.sample_block)
                    ranges.append(RowRange(self.storage, batch_id, tuple(kept), start, n_rows, self.n_cpgs,
                                           self.layout.sample_block, self.layout.cpg_shard, by_cpg))
                    start += n_rows
                self._reclaim(commit)
                self._reserve_rows(commit.n_rows, start - commit.n_rows)
                yield PendingAppend(self, ranges, dict(metadata or {}), lock)
        except OSError as err:
            if isinstance(err, MethylError):
                raise
            what = ", ".join(repr(b) for b, _ in batches[:3]) + (" ..." if len(batches) > 3 else "")
            raise StoreWriteError(_write_failure(self.storage.uri, f"appending batch {what}", err, before),
                                  errno=err.errno) from err

    def _reserve_rows(self, start: int, n_rows: int) -> None:
        """Grow the arrays from ``start`` (the commit; :meth:`_reclaim` has shrunk them back to it)
        to ``start + n_rows`` rows."""
        if not n_rows:
            return
        for name in self.array_names:
            self.array(name, writable=True).resize((start + n_rows, self.n_cpgs))

    def _commit_rows(
        self,
        rows: RowRange,
        metadata: Mapping[str, Mapping[str, Any]],
        provenance: Mapping[str, Any] | None,
        lock,
        shards: Mapping[str, dict | None] | None = None,
    ) -> None:
        """Commit one reserved, written range: block records and write-ahead sidecars, then sample_ids.json."""
        commit = self.commit
        if commit.n_rows != rows.start:
            raise StoreError(f"batch {rows.batch_id!r} starts at row {rows.start}, but {commit.n_rows} rows are "
                             "committed: commit reserved batches in order")
        sample_ids = list(rows.sample_ids)
        self._record_blocks(rows.start, rows.n_rows, shards)
        # Write-ahead sidecars: ignored by readers until sample_ids.json lists the samples.
        # Built from the commit, so entries of earlier interrupted appends are dropped.  Each is
        # written only if unchanged since the commit was read under the lock (S3: If-Match), so a
        # writer whose lock was taken over cannot overwrite what its successor wrote.
        log.debug("batch %s: writing sidecars", rows.batch_id)
        try:
            batches = {**commit.batches, rows.batch_id: [*commit.batches.get(rows.batch_id, []), *sample_ids]}
            self._write_control(BATCHES, batches, commit)
            samples = dict(commit.samples)
            for s in sample_ids:
                samples[s] = {"batch_id": rows.batch_id, **dict(metadata.get(s, {}))}
            self._write_control(SAMPLES, samples, commit)
            if provenance is not None:
                entries = self._committed_provenance(commit)
                entries.setdefault(rows.batch_id, []).append({"samples": sample_ids, **dict(provenance)})
                self._write_control(PROVENANCE, entries, commit)
            # Fencing: commit only while we still hold the lock and the commit is the one we built
            # on; the commit itself replaces sample_ids.json only if it is unchanged (S3: If-Match).
            lock.check()
            padding = [None] * (rows.n_rows - len(sample_ids))
            self._write_control(SAMPLE_IDS, [*commit.rows, *sample_ids, *padding], commit)  # the commit
        except StoreConflictError as err:
            raise StoreConflictError(
                f"{err} The store changed under the write lock (another writer took it over); batch "
                f"{rows.batch_id!r} was not committed and the store keeps the other writer's commit "
                "(re-run to ingest it)"
            ) from err
        self.refresh(for_write=True)
        log.info("committed batch %s: %d sample(s)", rows.batch_id, len(sample_ids))

    def _write_control(self, key: str, value: Any, commit: Commit) -> None:
        """Replace a control object only if it is as ``commit`` read it (absent if it was absent)."""
        if key not in commit.tags:
            raise StoreError(f"internal: {key} was written without having been read under the write lock")
        tag = commit.tags[key]
        self.storage.write_json(key, value, if_match=tag, if_absent=tag is None)

    def _check_block(self, batch_id: str, sample_ids: list[str], beta: np.ndarray, coverage: np.ndarray) -> None:
        if not isinstance(batch_id, str) or not batch_id:
            raise DataError(f"batch id {batch_id!r}: expected a non-empty string")
        if len(set(sample_ids)) != len(sample_ids) or not sample_ids:
            raise DataError(f"batch {batch_id!r}: sample ids must be non-empty and unique, got {sample_ids[:10]}")
        shape = (len(sample_ids), self.n_cpgs)
        if beta.shape != shape or beta.dtype != np.float32:
            raise DataError(f"beta block of batch {batch_id!r} is {beta.dtype}{beta.shape}; expected float32{shape}")
        if coverage.shape != shape or coverage.dtype != self.coverage_dtype:
            raise DataError(
                f"coverage block of batch {batch_id!r} is {coverage.dtype}{coverage.shape}; "
                f"expected {self.coverage_dtype}{shape}"
            )
        with np.errstate(invalid="ignore"):
            bad_rows = np.flatnonzero(((beta < 0) | (beta > 1)).any(axis=1))
        if len(bad_rows):
            raise DataError(
                f"beta of sample {sample_ids[bad_rows[0]]!r} (batch {batch_id!r}) lies outside [0, 1]; "
                "betas are methylated fractions"
            )

    def _write_rows(self, start: int, beta: np.ndarray, coverage: np.ndarray) -> dict[str, dict | None]:
        """Write whole new shards at rows ``start:`` (reserved past the committed rows); return what was written."""
        return _write_region(self.storage, start, 0, beta, coverage, self.layout.sample_block, self._by_cpg())

    def _by_cpg(self) -> tuple[int, int, str, bool] | None:
        """(inner chunk width, shard width, codec, checksum) of the CpG-major copy of beta; None without one.

        ``checksum``: whether its inner chunks end in a crc32c, as its ``zarr.json`` says (copies
        created before the checksums keep being written without).
        """
        layout = self.layout
        if not layout.by_cpg_chunk:
            return None
        checksum = _has_chunk_checksum(self.array("beta_by_cpg"))
        return layout.by_cpg_chunk, layout.by_cpg_shard(self.n_cpgs), layout.by_cpg_codec, checksum

    # -- provenance -----------------------------------------------------------------------
    def _committed_provenance(self, commit: Commit) -> dict[str, list[dict[str, Any]]]:
        """``provenance.json`` without entries of appends that never committed."""
        if not self.storage.exists(PROVENANCE):
            return {}
        committed = commit.row_of
        out: dict[str, list[dict[str, Any]]] = {}
        for batch, entries in _read_provenance(self.storage).items():
            kept = [e for e in entries if any(s in committed for s in e["samples"])]
            if kept:
                out[batch] = kept
        return out

    @property
    def provenance(self) -> dict[str, list[dict[str, Any]]]:
        """``{batch_id: [entry, ...]}``: one entry per committed append that recorded its cost."""
        return self._committed_provenance(self.commit)

    def cost(self) -> dict[str, Any]:
        """Totals over the committed provenance: queries (each counted once), bytes scanned, dollars."""
        queries: dict[str, dict[str, Any]] = {}
        for entries in self.provenance.values():
            for entry in entries:
                for q in entry.get("queries", []):
                    queries.setdefault(str(q.get("query_id")), q)
        return {
            "queries": len(queries),
            "bytes_scanned": sum(int(q.get("bytes_scanned") or 0) for q in queries.values()),
            "dollars": sum(float(q.get("dollars") or 0.0) for q in queries.values()),
        }

    def _record_blocks(self, start: int, n_rows: int, shards: Mapping[str, dict | None] | None = None) -> None:
        """Write ``blocks/<i>.json`` for each new block: the shard objects it holds, with sizes and sha256.

        Written ahead of the commit, like the other sidecars; :meth:`verify`
        uses them to tell a missing or damaged shard from one never written
        (zarr writes no object for a shard that is all fill value).  ``shards``
        are the records the writes returned (see :func:`_write_region`); without
        them the new shards are read back (on S3 that would download them all).
        """
        block = self.layout.sample_block
        arrays = {name: self.array(name) for name in self.array_names}
        for b in range(start // block, (start + n_rows) // block):
            record: dict[str, Any] = {"block": b, "rows": [b * block, (b + 1) * block]}
            for name, arr in arrays.items():
                record[name] = {}
                for key in self.shard_keys(name, b, arr):
                    if shards is not None:
                        if shards.get(key):
                            record[name][key] = dict(shards[key])
                        continue  # not written (or deleted): all fill value
                    try:
                        data = self.storage.read_bytes(key)
                    except FileNotFoundError:
                        continue  # all fill value: zarr wrote nothing
                    record[name][key] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            self.storage.write_json(block_record_key(b), record)

    def shard_keys(self, name: str, block: int, arr=None) -> list[str]:
        """Store keys of the shard objects of one block of ``"beta"``, ``"coverage"`` or ``"beta_by_cpg"``."""
        arr = arr if arr is not None else self.array(name)
        n_col = math.ceil(self.n_cpgs / arr.shards[1])
        prefix = ARRAY_KEYS[name]
        return [f"{prefix}/{arr.metadata.encode_chunk_key((block, j))}" for j in range(n_col)]

    def _reclaim(self, commit: Commit, *, deep: bool = False, dry_run: bool = False) -> list[tuple[str, int]]:
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
            removed.append((key, self.storage.size(key)))
            if not dry_run:
                self.storage.remove(key)

        n_blocks = commit.n_rows // self.layout.sample_block
        for name in self.array_names:
            prefix = ARRAY_KEYS[name]
            for entry in self.storage.list_dir(f"{prefix}/c"):
                if not entry.isdigit() or int(entry) >= n_blocks:
                    drop(f"{prefix}/c/{entry}")
            for entry in self.storage.list_dir(prefix):
                if entry.endswith(".partial"):
                    drop(f"{prefix}/{entry}")
            if deep:
                gone = [key for key, _ in removed]
                for key, _ in list(self.storage.walk(prefix)):
                    if key.endswith(".partial") and not any(key == g or key.startswith(g + "/") for g in gone):
                        drop(key)
            arr = self.array(name, writable=not dry_run)
            if arr.shape[0] > commit.n_rows:
                log.info("%s: reclaiming %d uncommitted row(s)", name, arr.shape[0] - commit.n_rows)
                removed.append((f"{prefix}/zarr.json#rows {commit.n_rows}-{arr.shape[0] - 1}", 0))
                if not dry_run:
                    arr.resize((commit.n_rows, self.n_cpgs))
        for entry in self.storage.list_dir(BLOCKS):
            index = entry.removesuffix(".json")
            if not index.isdigit() or int(index) >= n_blocks:
                drop(f"{BLOCKS}/{entry}")
        for entry in self.storage.list_dir(""):
            # Sidecar temporaries are written under the lock we hold: stale.  Lock
            # temporaries and writability probes are written without it: only old ones.
            unlocked = entry.startswith((f".{LOCK}.", ".probe-"))
            stale_temp = entry.startswith(".") and entry.endswith(".tmp")
            if (stale_temp or entry.startswith(f".{LOCK}.broken-") or entry == OWNER_FILE) and (
                not unlocked or (self.storage.age(entry) or 0.0) > STALE_TEMP_SECONDS
            ):
                drop(entry)
        if deep:
            sidecars = [(BATCHES, commit.batches), (SAMPLES, commit.samples)]
            if self.storage.exists(PROVENANCE):
                sidecars.append((PROVENANCE, self._committed_provenance(commit)))
            for key, clean in sidecars:
                if _read_json(self.storage, key, dict) != clean:
                    removed.append((f"{key}#uncommitted entries", 0))
                    if not dry_run:
                        self._write_control(key, clean, commit)
        return removed

    # -- housekeeping ---------------------------------------------------------------------
    def gc(self, *, warehouse=None, dry_run: bool = False, lock_timeout: float = 60.0) -> GcReport:
        """Reclaim everything that interrupted writers left behind; return what was (or would be) removed.

        Under the write lock (so a running append is never disturbed; a lock
        left by a dead writer is taken over): shard objects, block records and
        zarr shape of rows past the commit, temporary files of interrupted
        atomic writes, sidecar entries of uncommitted samples.  Without it:
        staging directories of interrupted creates of this store whose creator
        is gone, and, given a warehouse that offers ``reclaim_exports``, its
        export staging directories whose exporter is gone.  Committed data is
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
        with self.storage.lock(LOCK, timeout=lock_timeout) as lock:
            commit = self.refresh(for_write=True)
            removed = self._reclaim(commit, deep=True, dry_run=dry_run)
        removed.extend(self.storage.reclaim_staging(dry_run=dry_run, manifest_key=MANIFEST, lock_key=LOCK))
        if warehouse is not None:
            from xr_methyl.warehouse import open_warehouse

            wh = open_warehouse(warehouse)
            if hasattr(wh, "reclaim_exports"):
                removed.extend(wh.reclaim_exports(dry_run=dry_run))
        report = GcReport(removed=removed, broken_locks=lock.broken, dry_run=dry_run)
        log.info("gc %s: %s", self.storage.uri, report.summary())
        return report

    @classmethod
    def reclaim_create(cls, location, *, storage_options: Mapping[str, Any] | None = None, dry_run: bool = False,
                       lock_timeout: float = 60.0) -> GcReport:
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

    def verify(self, *, warehouse=None, cells: int = 0, seed: int | None = None):
        """Check the store against itself and, with ``cells > 0``, against the warehouse.

        See :func:`xr_methyl.verify.verify_store`; returns a ``VerifyReport``.
        """
        from xr_methyl.verify import verify_store

        return verify_store(self, warehouse=warehouse, cells=cells, seed=seed)

    # -- reporting ------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """A summary for ``xr-methyl info``."""
        return {
            "path": self.storage.uri,
            "samples": len(self.sample_ids),
            "rows": self.commit.n_rows,
            "batches": len(self.batches),
            "cpgs": self.n_cpgs,
            "layout": self.manifest["layout"],
            "coverage_dtype": self.manifest["coverage_dtype"],
            "warehouse": self.manifest.get("warehouse"),
            "created_at": self.manifest.get("created_at"),
            "warehouse_cost": self.cost(),
            "bytes": {**{name: self.storage.size(ARRAY_KEYS[name]) for name in self.array_names},
                      "total": self.storage.size()},
        }


@dataclass(frozen=True)
class RowRange:
    """Rows reserved for one batch past the commit point, written in whole shards from any process.

    Picklable: a dask worker writes its range while the reserving process
    holds the lock and commits ranges in order.
    """

    storage: Storage  # pickles as its location (and S3 options): a worker reopens it
    batch_id: str
    sample_ids: tuple[str, ...]
    start: int
    n_rows: int
    n_cpgs: int
    block: int
    cpg_shard: int
    #: (inner chunk width, shard width, codec, checksum) of the CpG-major copy of beta, None without one.
    by_cpg: tuple[int, int, str, bool] | None = None

    def write(self, row: int, col: int, beta: np.ndarray, coverage: np.ndarray) -> dict[str, dict | None]:
        """Write ``beta`` and ``coverage`` at (``row``, ``col``) of this range: whole shards only.

        ``row`` is a multiple of the sample block and ``col`` of the CpG shard;
        the block ends on a shard boundary or at the range's (padded) end.
        Returns the shard objects written (key -> bytes and sha256; None for
        one removed as all fill value), for ``PendingAppend.commit(shards=)``.
        """
        n, width = beta.shape
        if row % self.block or col % self.cpg_shard or (col + width != self.n_cpgs and width % self.cpg_shard):
            raise ValueError(f"a write at ({row}, {col}) of shape {beta.shape} does not cover whole shards")
        if row + n > len(self.sample_ids) or (n % self.block and row + n != len(self.sample_ids)):
            raise ValueError(f"a write of rows {row}:{row + n} does not fit batch {self.batch_id!r}")
        return _write_region(self.storage, self.start + row, col, beta, coverage, self.block, self.by_cpg)


class PendingAppend:
    """Reserved row ranges of one :meth:`MethylStore.appending` block, committed in order."""

    def __init__(self, store: MethylStore, rows: list[RowRange], metadata: dict, lock) -> None:
        self.store = store
        self.rows = rows
        self.metadata = metadata
        self.lock = lock

    def commit(self, rows: RowRange, *, provenance: Mapping[str, Any] | None = None,
               shards: Mapping[str, dict | None] | None = None) -> None:
        """Commit a written range; ranges must be committed in the order they were reserved.

        ``provenance`` (JSON-able: the warehouse queries behind the batch) is
        kept with the batch in ``provenance.json``.  ``shards`` are what the
        range's writes returned (merged); without them the new shards are
        read back to record their hashes.
        """
        if rows.sample_ids:
            self.store._commit_rows(rows, self.metadata, provenance, self.lock, shards)


def _write_region(storage: Storage, start: int, col: int, beta: np.ndarray, coverage: np.ndarray,
                  block: int, by_cpg: tuple[int, int, str, bool] | None = None) -> dict[str, dict | None]:
    """Write rows ``start:`` x columns ``col:`` of the arrays, one sample block per write, padding the last.

    Returns each shard object written, by store key: its size and sha256 (None
    when zarr removed it as all fill value), so that the commit records them
    without reading them back.  ``by_cpg`` (chunk, shard width, codec, checksum): also
    write the CpG-major copy of beta, its shards encoded here (:func:`_write_by_cpg`).
    """
    import zarr

    written: dict[str, dict | None] = {}
    for key, data, fill in ((BETA, beta, np.nan), (COVERAGE, coverage, 0)):
        recording = _recording_store(storage.zarr_store(key, read_only=False), key, written)
        arr = zarr.open_array(recording, mode="r+", zarr_format=3)
        width = data.shape[1]
        # One write per block of shard rows, so that every write covers whole
        # shards (zarr would otherwise read back and rewrite a shard).
        for lo in range(0, len(data), block):
            piece = data[lo : lo + block]
            if len(piece) < block:  # the batch's last block: pad with empty rows
                piece = np.concatenate([piece, np.full((block - len(piece), width), fill, data.dtype)])
            arr[start + lo : start + lo + block, col : col + width] = piece
    if by_cpg is not None:
        _write_by_cpg(storage, start, col, beta, block, by_cpg, written)
    return written


def _write_by_cpg(storage: Storage, start: int, col: int, beta: np.ndarray, block: int,
                  by_cpg: tuple[int, int, str, bool], written: dict[str, dict | None]) -> None:
    """Write the CpG-major copy of ``beta`` at rows ``start:`` x columns ``col:``: whole new shards.

    zarr-python spends tens of microseconds on each inner chunk it writes, and
    this copy has tens of thousands per shard: each shard is encoded by
    :func:`xr_methyl.bycpg.encode_shard` (plain Zarr v3 sharding) and stored as
    one object through the array's zarr store, as zarr would store it.  A shard
    of fill values only is not written (zarr does the same).
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from xr_methyl.bycpg import encode_shard

    chunk, shard, codec, checksum = by_cpg
    store = _recording_store(storage.zarr_store(BETA_BY_CPG, read_only=False), BETA_BY_CPG, written)
    prototype = default_buffer_prototype()
    width = beta.shape[1]
    for lo in range(0, len(beta), block):
        piece = beta[lo : lo + block]
        if len(piece) < block:  # the batch's last block: pad with empty rows
            piece = np.concatenate([piece, np.full((block - len(piece), width), np.nan, np.float32)])
        for c in range(0, width, shard):
            data = encode_shard(piece[:, c : c + shard], chunk=chunk, width=shard, codec=codec, checksum=checksum)
            if data is not None:
                key = f"c/{(start + lo) // block}/{(col + c) // shard}"
                sync(store.set(key, prototype.buffer.from_bytes(data)))


def _recording_store(store, prefix: str, written: dict[str, dict | None]):
    """``store`` wrapped so that every chunk object written or deleted through it is noted in ``written``."""
    from zarr.storage import WrapperStore

    class Recording(WrapperStore):
        def _with_store(self, inner):
            return Recording(inner)

        async def set(self, key, value) -> None:
            await self._store.set(key, value)
            if not key.endswith("zarr.json"):
                data = value.to_bytes()
                written[f"{prefix}/{key}"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

        async def delete(self, key) -> None:
            await self._store.delete(key)
            written[f"{prefix}/{key}"] = None

    return Recording(store)


def block_record_key(block: int) -> str:
    """Key of the shard record of one block (see :meth:`MethylStore._record_blocks`)."""
    return f"{BLOCKS}/{block:08d}.json"


def _write_failure(uri: str, doing: str, err: OSError, n_committed: int) -> str:
    """A message for an ``OSError`` met while writing: what failed, what is kept, what to do."""
    import errno as errnos

    reason = err.strerror or str(err) or type(err).__name__
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if err.errno == errnos.ENOSPC:
        fix = "free disk space, then re-run the same ensure (xr-methyl gc STORE reclaims what this attempt left)"
    elif err.errno in (errnos.EACCES, errnos.EPERM, errnos.EROFS):
        fix = ("the store is read-only or not writable by this user: cached samples can still be read; "
               "ingesting new ones needs write access")
    else:
        fix = "fix the cause, then re-run the same ensure"
    return (f"could not write to the store {uri} while {doing}: {reason}{where}. The store keeps its last "
            f"commit ({n_committed} sample(s)); {fix}.")


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _refuse_existing(storage: Storage) -> None:
    kind = storage.kind()  # on S3 this also refuses a bucket that does not exist
    if kind == "missing":
        return
    # On S3 what an interrupted create left (its marker), or a lock alone, is cleared by the create.
    if (kind == "dir" and not storage.is_local and not storage.exists(MANIFEST)
            and (storage.exists(OWNER_FILE) or set(storage.list_dir("")) <= {LOCK})):
        return
    what = ("a methylzarr store" if kind == "dir" and storage.exists(MANIFEST)
            else "a file" if kind == "file" else "something")
    raise StoreExistsError(
        f"{storage.uri} already holds {what}; MethylStore.create never overwrites. "
        "Open it with MethylStore.open, or choose a new path."
    )


def _not_a_store(storage: Storage) -> StoreNotFoundError:
    """Why there is no manifest at ``storage``: nothing there, a file, or something else."""
    kind = storage.kind()
    if kind == "missing":
        return StoreNotFoundError(f"no methylzarr store at {storage.uri}; create one with "
                                  f"MethylStore.create({storage.uri!r}, warehouse=...) (its CpG axis comes from the "
                                  "warehouse's cpgs table, or give cpg_ids=)", location=storage.uri)
    if kind == "file":
        what = "a directory" if storage.is_local else "a prefix holding objects"
        return StoreNotFoundError(f"{storage.uri} is a file, not a methylzarr store ({what})")
    hint = ""
    if storage.exists(OWNER_FILE):
        hint = (" It holds what an interrupted create left: `xr-methyl gc STORE` (MethylStore.reclaim_create) "
                "or a new MethylStore.create clears it.")
    return StoreNotFoundError(f"{storage.uri} has no {MANIFEST}: it is not a methylzarr store.{hint}")


def _open_axis(storage: Storage, manifest: Mapping[str, Any], *, data: Mapping[str, bytes] | None = None,
               check: bool = True) -> CpgAxis:
    """The CpG axis of a format 2 store, checked against the manifest unless ``check`` is false.

    Local stores are memory-mapped in place; S3 stores through the local cache
    (or, before per-file hashes were recorded, read into memory).
    """
    files = manifest.get("axis_files")
    if storage.is_local:
        if not check:
            return CpgAxis.open(storage.root)
        if not files:
            # Created before per-file hashes were recorded: the ids are checked against cpg_ids_sha256;
            # verify checks the look-up tables against the ids.
            return open_checked(storage.root, {CPG_IDS: ("ids", manifest["cpg_ids_sha256"])}, where=storage.uri)
        unrecorded = [name for name in INDEX_FILES
                      if f"{INDEX_DIR}/{name}" not in files and (storage.root / INDEX_DIR / name).exists()]
        if unrecorded:
            raise CorruptStoreError(
                f"{storage.uri}/{INDEX_DIR}/{unrecorded[0]} is not one of the CpG axis files the store was created "
                f"with ({MANIFEST} lists {', '.join(sorted(files))}); remove it or restore the store from a copy"
            )
        return open_checked(storage.root, {key: ("file", digest) for key, digest in files.items()}, where=storage.uri)
    if files:
        return open_remote(storage, files, data=data)
    # A store written before axis_files were recorded: no cache key to trust, so read it into memory.
    keys = [CPG_IDS, *(f"{INDEX_DIR}/{name}" for name in storage.list_dir(INDEX_DIR))]
    try:
        return CpgAxis.from_files({key: storage.read_bytes(key) for key in keys})
    except FileNotFoundError as err:
        raise CorruptStoreError(f"{storage.uri}: cannot read the store's CpG axis files: {err}") from err


def _check_ids(storage: Storage, manifest: Mapping[str, Any], axis: CpgAxis) -> None:
    """Refuse an axis read into memory whose ids differ from the manifest's ``cpg_ids_sha256``."""
    digest = axis.sha256
    if digest != manifest["cpg_ids_sha256"]:
        raise CorruptStoreError(f"{mismatch(storage.uri, CPG_IDS, 'ids', digest, manifest['cpg_ids_sha256'])}. "
                                f"{NEVER_CHANGE}")


def _check_manifest(storage: Storage, manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest that lacks a field this code reads, or holds a value of the wrong kind."""
    where = f"{storage.uri}/{MANIFEST}"
    version = manifest.get("format_version")
    if manifest.get("format") != "methylzarr" or version not in READABLE_VERSIONS:
        raise CorruptStoreError(
            f"{where} declares format {manifest.get('format')!r} version {version!r}; "
            f"this xr_methyl reads methylzarr versions {', '.join(map(str, READABLE_VERSIONS))}"
        )

    def bad(name: str, expected: str) -> CorruptStoreError:
        shown = repr(manifest[name])[:80] if name in manifest else "missing"
        return CorruptStoreError(f"{where}: {name} is {shown}, expected {expected}; the manifest is damaged "
                                 "(restore it from a copy of the store)")

    n_cpgs = manifest.get("n_cpgs")
    if not isinstance(n_cpgs, int) or isinstance(n_cpgs, bool) or n_cpgs < 1:
        raise bad("n_cpgs", "a positive number of CpGs")
    digest = manifest.get("cpg_ids_sha256")
    if not (isinstance(digest, str) and len(digest) == 64):
        raise bad("cpg_ids_sha256", "the sha256 of the CpG ids (64 hex digits)")
    files = manifest.get("axis_files")
    if files is not None and not (isinstance(files, dict) and CPG_IDS in files
                                  and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
        raise bad("axis_files", f"the sha256 of each CpG axis file, {CPG_IDS} included")
    if not isinstance(manifest.get("has_loci", False), bool):
        raise bad("has_loci", "true or false")
    if manifest.get("coverage_dtype") not in COVERAGE_DTYPES:
        raise bad("coverage_dtype", f"one of {', '.join(COVERAGE_DTYPES)}")
    try:
        layout = Layout.from_json(manifest["layout"])
        if layout != layout.for_axis(n_cpgs):
            raise ValueError("shapes larger than the axis")
    except (KeyError, TypeError, ValueError) as err:
        raise bad("layout", f"chunk_shape, shard_shape and sample_block of whole chunks ({err})") from None
    if not isinstance(manifest.get("warehouse"), (str, type(None))):
        raise bad("warehouse", "the URI of the warehouse, or null")


def _read_json(storage: Storage, key: str, kind: type, *, tags: dict[str, str | None] | None = None):
    try:
        raw, tag = storage.read_tagged(key)
    except StoreNotFoundError:
        raise
    except FileNotFoundError:
        raise CorruptStoreError(f"{storage.uri} is missing {key}; the store is incomplete") from None
    if tags is not None:
        tags[key] = tag
    return _parse_json(storage, key, raw, kind)


def _read_provenance(storage: Storage) -> dict[str, list[dict[str, Any]]]:
    """``provenance.json``, refused (naming the entry) unless every entry has the shape appends write."""
    doc = _read_json(storage, PROVENANCE, dict)

    def refuse(batch: str, what: str) -> CorruptStoreError:
        return CorruptStoreError(f"{storage.uri}/{PROVENANCE}: batch {batch!r}: {what}; the file is damaged "
                                 "(it only records what ingests cost: restore it from a copy of the store)")

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


def _parse_json(storage: Storage, key: str, raw: bytes, kind: type):
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise CorruptStoreError(f"{storage.uri}/{key} is not valid JSON ({err}); the file is corrupt") from err
    if not isinstance(value, kind):
        raise CorruptStoreError(f"{storage.uri}/{key} holds a {type(value).__name__}, expected a {kind.__name__}")
    return value


def _axis_from(cpg_ids, warehouse) -> CpgAxis:
    import pyarrow as pa

    if cpg_ids is None:
        if warehouse is None:
            raise StoreError("give cpg_ids or a warehouse: the CpG axis must be fixed when a store is created")
        return CpgAxis.from_table(warehouse.cpgs())
    if isinstance(cpg_ids, pa.Table):
        return CpgAxis.from_table(cpg_ids)
    if hasattr(cpg_ids, "columns") and "cpg_id" in getattr(cpg_ids, "columns", ()):  # a pandas DataFrame
        return CpgAxis.from_table(pa.Table.from_pandas(cpg_ids, preserve_index=False))
    axis = CpgAxis.from_ids([str(c) if isinstance(c, np.str_) else c for c in cpg_ids])
    if warehouse is None:
        return axis
    # Loci of the requested ids, from the warehouse's cpgs table.
    import pyarrow.compute as pc

    table = warehouse.cpgs()
    wanted = axis.to_arrow()
    where = pc.index_in(wanted, value_set=table.column("cpg_id").combine_chunks().cast(pa.string()))
    if where.null_count:
        unknown = wanted.filter(pc.is_null(where))
        raise DataError(
            f"{len(unknown)} cpg_id(s) are not in the warehouse's cpgs table, e.g. {unknown[0].as_py()!r}"
        )
    return CpgAxis.from_table(table.take(where))


def _compressors(coverage_dtype: str) -> dict[str, list]:
    """Codecs measured on WGBS-like data: plain zstd suits betas (a byte shuffle
    halves their ratio), while coverage counts compress a third better after a
    byte shuffle.  Each inner chunk ends in the crc32c of its compressed bytes,
    so that damaged bytes are an error, not wrong values (why crc32c rather than
    zstd's own checksum: see :mod:`xr_methyl.integrity`).  All are core Zarr v3
    codecs, readable by any v3 reader."""
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    return {
        "beta": [ZstdCodec(level=3), Crc32cCodec()],
        "coverage": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=np.dtype(coverage_dtype).itemsize),
                     Crc32cCodec()],
    }


def _by_cpg_compressor(layout: Layout) -> list:
    """The CpG-major copy's codecs: none (raw chunks) or zstd level 3, then a crc32c of each chunk."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=3), Crc32cCodec()] if layout.by_cpg_codec == "zstd" else [Crc32cCodec()]


def _has_chunk_checksum(array) -> bool:
    """Whether the inner chunks of a sharded array end in a crc32c (stores created before do not)."""
    from zarr.codecs import Crc32cCodec

    inner = getattr(array.metadata.codecs[0], "codecs", ())
    return bool(inner) and isinstance(inner[-1], Crc32cCodec)


def _create_array(storage: Storage, key: str, n_cpgs: int, layout: Layout, dtype, fill, compressors: list, *,
                  chunks: tuple[int, int] | None = None, shards: tuple[int, int] | None = None) -> None:
    import zarr

    zarr.create_array(
        store=storage.zarr_store(key, read_only=False),
        shape=(0, n_cpgs),
        dtype=dtype,
        chunks=chunks or (layout.chunk_rows, layout.cpg_chunk),
        shards=shards or (layout.sample_block, layout.cpg_shard),
        fill_value=fill,
        compressors=compressors,
        dimension_names=["sample", "cpg"],
        attributes={"_methylzarr": {"role": key.removesuffix(".zarr")}},
    )
