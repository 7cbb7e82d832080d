"""The methylzarr store: two Zarr v3 arrays plus sidecars, with one commit point.

:class:`MethylStore` is the store's face: creating and opening it (the CpG
axis is fixed at creation and checked at open), what is committed, reading
rows, appending batches and housekeeping.  The work is done by the modules
beside it, one concern each:

* :mod:`~xr_methyl.store.layout`: the format (files, :class:`Layout`, the
  typed :class:`~xr_methyl.store.layout.Manifest`, codecs, array creation);
* :mod:`~xr_methyl.store.commit`: the commit protocol (lock, reserve, block
  records and write-ahead sidecars, the conditional commit), on its own;
* :mod:`~xr_methyl.store.append`: the all-or-nothing write path (whole new
  shards of beta, coverage and the CpG-major copy);
* :mod:`~xr_methyl.store.gc`: reclaiming what interrupted writers left;
* :mod:`~xr_methyl.store.verify`: checking a store against itself and its
  warehouse;
* :mod:`~xr_methyl.store.cpg_axis`: the CpG axis and its look-up tables.

Where a store's bytes live (a directory, an S3 prefix) is :mod:`xr_methyl.storage`'s business.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import numpy as np

from xr_methyl.errors import CorruptStoreError, StoreExistsError, StoreNotFoundError
from xr_methyl.redact import redact
from xr_methyl.storage import Storage, json_bytes, open_storage
from xr_methyl.storage.leases import OWNER_FILE
from xr_methyl.store.append import RowRange, by_cpg_spec, check_block, write_region
from xr_methyl.store.commit import Commit, PendingAppend, appending, committed_provenance, read_commit
from xr_methyl.store.cpg_axis import NEVER_CHANGE, CpgAxis, axis_from, file_hashes, mismatch, open_axis
from xr_methyl.store.gc import GcReport, collect, reclaim_create
from xr_methyl.store.layout import (
    ARRAY_KEYS,
    BATCHES,
    BETA,
    BETA_BY_CPG,
    COVERAGE,
    COVERAGE_DTYPES,
    CPG_IDS,
    LOCK,
    MANIFEST,
    SAMPLE_IDS,
    SAMPLES,
    Layout,
    Manifest,
    by_cpg_compressor,
    compressors,
    create_array,
    parse_json,
)

__all__ = ["Commit", "GcReport", "Layout", "Manifest", "MethylStore", "PendingAppend", "RowRange"]

log = logging.getLogger(__name__)

#: How long a create waits for the write lock of an S3 prefix (another create running there).
CREATE_LOCK_TIMEOUT = 60.0


class MethylStore:
    """A methylzarr store: create it once, then append batches of samples.

    Use :meth:`create` or :meth:`open`; the constructor is internal.
    """

    def __init__(self, storage: Storage, manifest: Manifest, axis: CpgAxis) -> None:
        self.storage = storage
        self.manifest = manifest
        self.cpg_axis = axis
        self.layout = manifest.layout
        self.coverage_dtype = np.dtype(manifest.coverage_dtype)
        self.commit = read_commit(storage, self.layout.sample_block)
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
            :class:`xr_methyl.storage.s3.S3Storage`); never written to the store.
        """
        from xr_methyl.warehouse import open_warehouse

        storage = open_storage(path, storage_options)
        _refuse_existing(storage)
        if coverage_dtype not in COVERAGE_DTYPES:
            raise ValueError(f"coverage_dtype={coverage_dtype!r}: expected one of {', '.join(COVERAGE_DTYPES)}")
        wh = open_warehouse(warehouse) if warehouse is not None else None
        axis = axis_from(cpg_ids, wh)
        layout = (layout or Layout()).for_axis(len(axis))
        codecs = compressors(coverage_dtype)
        axis_files = axis.axis_files()
        manifest = Manifest(
            n_cpgs=len(axis),
            cpg_ids_sha256=axis.sha256,
            axis_files=file_hashes(axis_files),  # sha256 of each file: the key of remote stores' axis cache
            has_loci=axis.has_loci,
            layout=layout,
            coverage_dtype=coverage_dtype,
            compression={name: [codec.to_dict() for codec in chain] for name, chain in codecs.items()},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            # describe() must hold no secret; redact anyway, since the manifest is shared with every reader.
            warehouse=redact(wh.describe()) if wh is not None else None,
        )

        # Locally: build the whole store in a hidden sibling, then rename it into place.  On S3:
        # build it in place under the write lock, its manifest written last with If-None-Match.
        # Either way a crash or an error part-way leaves nothing that opens at `path`.
        with storage.creating(manifest_key=MANIFEST, lock_key=LOCK, timeout=CREATE_LOCK_TIMEOUT) as (staged, publish):
            for key, data in axis_files.items():
                staged.write_atomic(key, data)
            for name, dtype, fill in ((BETA, "float32", np.nan), (COVERAGE, coverage_dtype, 0)):
                create_array(staged, name, len(axis), layout, dtype, fill, codecs[name.removesuffix(".zarr")])
            if layout.by_cpg_chunk:
                create_array(
                    staged,
                    BETA_BY_CPG,
                    len(axis),
                    layout,
                    "float32",
                    np.nan,
                    by_cpg_compressor(layout),
                    chunks=(layout.sample_block, layout.by_cpg_chunk),
                    shards=(layout.sample_block, layout.by_cpg_shard(len(axis))),
                )
            staged.write_json(BATCHES, {})
            staged.write_json(SAMPLES, {})
            staged.write_json(SAMPLE_IDS, [])
            publish(MANIFEST, json_bytes(manifest.to_json()))  # the create's commit
        log.info("created store %s with %d CpGs", storage.uri, len(axis))
        store = cls(
            storage,
            manifest,
            open_axis(storage, manifest.axis_files, ids_sha256=manifest.cpg_ids_sha256, data=axis_files, check=False),
        )
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
        :func:`xr_methyl.store.cpg_axis.check_files`).  S3 stores are mapped from a
        local copy checked the same way (see :func:`xr_methyl.store.cpg_axis.open_remote`).
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
        manifest = Manifest.from_json(parse_json(storage, MANIFEST, raw, dict), where=f"{storage.uri}/{MANIFEST}")
        axis = open_axis(storage, manifest.axis_files, ids_sha256=manifest.cpg_ids_sha256, check=check_axis)
        if len(axis) != manifest.n_cpgs or axis.has_loci != manifest.has_loci:
            raise CorruptStoreError(
                f"{storage.uri}/{CPG_IDS} does not match the manifest ({len(axis)} vs {manifest.n_cpgs} CpGs); "
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
        if digest != self.manifest.cpg_ids_sha256:
            raise CorruptStoreError(
                f"{self.storage.uri}/{CPG_IDS} does not match the manifest (sha256 {digest[:12]}... vs "
                f"{self.manifest.cpg_ids_sha256[:12]}...); the CpG axis of a store must never change"
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
        self.commit = read_commit(self.storage, self.layout.sample_block, for_write=for_write)
        return self.commit

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
            arr = zarr.open_array(
                self.storage.zarr_store(key, read_only=not writable), mode="r+" if writable else "r", zarr_format=3
            )
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
        from xr_methyl.zarrio.rowread import read_rows

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
        check_block(batch_id, sample_ids, beta, coverage, n_cpgs=self.n_cpgs, coverage_dtype=self.coverage_dtype)
        with self.appending([(batch_id, sample_ids)], metadata=metadata, lock_timeout=lock_timeout) as pending:
            (rows,) = pending.rows
            if not rows.sample_ids:
                return []
            keep = [sample_ids.index(s) for s in rows.sample_ids]
            if len(keep) < len(sample_ids):
                beta, coverage = beta[keep], coverage[keep]
            written = write_region(
                self.storage, rows.start, 0, beta, coverage, self.layout.sample_block, by_cpg_spec(self)
            )
            pending.commit(rows, provenance=provenance, shards=written)
        return list(rows.sample_ids)

    def appending(
        self,
        batches: Sequence[tuple[str, Sequence[str]]],
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        lock_timeout: float = 600.0,
    ) -> AbstractContextManager[PendingAppend]:
        """Hold the write lock and reserve rows for ``batches``; commit each with ``pending.commit(range)``.

        A context manager yielding a :class:`PendingAppend` whose ``rows`` are
        one :class:`RowRange` per batch (samples already committed left out),
        written from any process and committed in order; see
        :func:`xr_methyl.store.commit.appending` for the protocol.
        """
        return appending(self, batches, metadata=metadata, lock_timeout=lock_timeout)

    # -- provenance -----------------------------------------------------------------------

    @property
    def provenance(self) -> dict[str, list[dict[str, Any]]]:
        """``{batch_id: [entry, ...]}``: one entry per committed append that recorded its cost."""
        return committed_provenance(self.storage, self.commit)

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

    def shard_keys(self, name: str, block: int, arr=None) -> list[str]:
        """Store keys of the shard objects of one block of ``"beta"``, ``"coverage"`` or ``"beta_by_cpg"``."""
        arr = arr if arr is not None else self.array(name)
        n_col = math.ceil(self.n_cpgs / arr.shards[1])
        prefix = ARRAY_KEYS[name]
        return [f"{prefix}/{arr.metadata.encode_chunk_key((block, j))}" for j in range(n_col)]

    # -- housekeeping ---------------------------------------------------------------------
    def gc(self, *, warehouse=None, dry_run: bool = False, lock_timeout: float = 60.0) -> GcReport:
        """Reclaim everything that interrupted writers left behind; return what was (or would be) removed.

        See :func:`xr_methyl.store.gc.collect`: under the write lock, what
        interrupted appends left past the commit and sidecar entries of
        uncommitted samples; staging of interrupted creates; with
        ``warehouse``, its abandoned export staging.  Committed data is never
        touched.  ``dry_run`` only reports; ``lock_timeout`` is how long to wait
        for a running writer.
        """
        return collect(self, warehouse=warehouse, dry_run=dry_run, lock_timeout=lock_timeout)

    @classmethod
    def reclaim_create(
        cls,
        location,
        *,
        storage_options: Mapping[str, Any] | None = None,
        dry_run: bool = False,
        lock_timeout: float = 60.0,
    ) -> GcReport:
        """Remove what an interrupted create of ``location`` left, when no store opens there.

        See :func:`xr_methyl.store.gc.reclaim_create`.
        """
        return reclaim_create(location, storage_options=storage_options, dry_run=dry_run, lock_timeout=lock_timeout)

    def verify(self, *, warehouse=None, cells: int = 0, seed: int | None = None):
        """Check the store against itself and, with ``cells > 0``, against the warehouse.

        See :func:`xr_methyl.store.verify.verify_store`; returns a ``VerifyReport``.
        """
        from xr_methyl.store.verify import verify_store

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
            "layout": self.manifest.layout.to_json(),
            "coverage_dtype": self.manifest.coverage_dtype,
            "warehouse": self.manifest.warehouse,
            "created_at": self.manifest.created_at,
            "warehouse_cost": self.cost(),
            "bytes": {
                **{name: self.storage.size(ARRAY_KEYS[name]) for name in self.array_names},
                "total": self.storage.size(),
            },
        }


def _refuse_existing(storage: Storage) -> None:
    kind = storage.kind()  # on S3 this also refuses a bucket that does not exist
    if kind == "missing":
        return
    # On S3 what an interrupted create left (its marker), or a lock alone, is cleared by the create.
    if (
        kind == "dir"
        and not storage.is_local
        and not storage.exists(MANIFEST)
        and (storage.exists(OWNER_FILE) or set(storage.list_dir("")) <= {LOCK})
    ):
        return
    what = (
        "a methylzarr store"
        if kind == "dir" and storage.exists(MANIFEST)
        else "a file"
        if kind == "file"
        else "something"
    )
    raise StoreExistsError(
        f"{storage.uri} already holds {what}; MethylStore.create never overwrites. "
        "Open it with MethylStore.open, or choose a new path."
    )


def _not_a_store(storage: Storage) -> StoreNotFoundError:
    """Why there is no manifest at ``storage``: nothing there, a file, or something else."""
    kind = storage.kind()
    if kind == "missing":
        return StoreNotFoundError(
            f"no methylzarr store at {storage.uri}; create one with "
            f"MethylStore.create({storage.uri!r}, warehouse=...) (its CpG axis comes from the "
            "warehouse's cpgs table, or give cpg_ids=)",
            location=storage.uri,
        )
    if kind == "file":
        what = "a directory" if storage.is_local else "a prefix holding objects"
        return StoreNotFoundError(f"{storage.uri} is a file, not a methylzarr store ({what})")
    hint = ""
    if storage.exists(OWNER_FILE):
        hint = (
            " It holds what an interrupted create left: `xr-methyl gc STORE` (MethylStore.reclaim_create) "
            "or a new MethylStore.create clears it."
        )
    return StoreNotFoundError(f"{storage.uri} has no {MANIFEST}: it is not a methylzarr store.{hint}")


def _check_ids(storage: Storage, manifest: Manifest, axis: CpgAxis) -> None:
    """Refuse an axis read into memory whose ids differ from the manifest's ``cpg_ids_sha256``."""
    digest = axis.sha256
    if digest != manifest.cpg_ids_sha256:
        raise CorruptStoreError(
            f"{mismatch(storage.uri, CPG_IDS, 'ids', digest, manifest.cpg_ids_sha256)}. {NEVER_CHANGE}"
        )
