"""The all-or-nothing write path: rows reserved past the commit, written in whole new shards.

A :class:`RowRange` is a batch's reserved rows (see
:func:`xr_methyl.store.commit.appending`); :meth:`RowRange.write` writes a
region of it, from any process, with :func:`write_region`: one sample block
per zarr write, so that every write covers whole shards and zarr never reads
back or rewrites one (the last block padded with empty rows), plus the
CpG-major copy of beta (:func:`write_by_cpg`).  Each shard object written is
recorded with its size and sha256 as it is written (:func:`recording_store`),
for the block records of the commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from xr_methyl.errors import DataError
from xr_methyl.storage import Storage
from xr_methyl.store.layout import BETA, BETA_BY_CPG, COVERAGE, has_chunk_checksum


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
        return write_region(self.storage, self.start + row, col, beta, coverage, self.block, self.by_cpg)


def write_region(
    storage: Storage,
    start: int,
    col: int,
    beta: np.ndarray,
    coverage: np.ndarray,
    block: int,
    by_cpg: tuple[int, int, str, bool] | None = None,
) -> dict[str, dict | None]:
    """Write rows ``start:`` x columns ``col:`` of the arrays, one sample block per write, padding the last.

    Returns each shard object written, by store key: its size and sha256 (None
    when zarr removed it as all fill value), so that the commit records them
    without reading them back.  ``by_cpg`` (chunk, shard width, codec, checksum): also
    write the CpG-major copy of beta, its shards encoded here (:func:`write_by_cpg`).
    """
    import zarr

    written: dict[str, dict | None] = {}
    for key, data, fill in ((BETA, beta, np.nan), (COVERAGE, coverage, 0)):
        recording = recording_store(storage.zarr_store(key, read_only=False), key, written)
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
        write_by_cpg(storage, start, col, beta, block, by_cpg, written)
    return written


def write_by_cpg(
    storage: Storage,
    start: int,
    col: int,
    beta: np.ndarray,
    block: int,
    by_cpg: tuple[int, int, str, bool],
    written: dict[str, dict | None],
) -> None:
    """Write the CpG-major copy of ``beta`` at rows ``start:`` x columns ``col:``: whole new shards.

    zarr-python spends tens of microseconds on each inner chunk it writes, and
    this copy has tens of thousands per shard: each shard is encoded by
    :func:`xr_methyl.zarrio.bycpg.encode_shard` (plain Zarr v3 sharding) and
    stored as one object through the array's zarr store, as zarr would store
    it.  A shard of fill values only is not written (zarr does the same).
    """
    from xr_methyl.zarrio.bycpg import encode_shard
    from xr_methyl.zarrio.internals import set_object

    chunk, shard, codec, checksum = by_cpg
    store = recording_store(storage.zarr_store(BETA_BY_CPG, read_only=False), BETA_BY_CPG, written)
    width = beta.shape[1]
    for lo in range(0, len(beta), block):
        piece = beta[lo : lo + block]
        if len(piece) < block:  # the batch's last block: pad with empty rows
            piece = np.concatenate([piece, np.full((block - len(piece), width), np.nan, np.float32)])
        for c in range(0, width, shard):
            data = encode_shard(piece[:, c : c + shard], chunk=chunk, width=shard, codec=codec, checksum=checksum)
            if data is not None:
                key = f"c/{(start + lo) // block}/{(col + c) // shard}"
                set_object(store, key, data)


def by_cpg_spec(store) -> tuple[int, int, str, bool] | None:
    """(inner chunk width, shard width, codec, checksum) of a store's CpG-major copy of beta; None without one.

    ``checksum``: whether its inner chunks end in a crc32c, as its ``zarr.json`` says (copies
    created before the checksums keep being written without).
    """
    layout = store.layout
    if not layout.by_cpg_chunk:
        return None
    checksum = has_chunk_checksum(store.array("beta_by_cpg"))
    return layout.by_cpg_chunk, layout.by_cpg_shard(store.n_cpgs), layout.by_cpg_codec, checksum


def recording_store(store, prefix: str, written: dict[str, dict | None]):
    """``store`` wrapped so that every chunk object written or deleted through it is noted in ``written``."""
    from xr_methyl.zarrio.internals import watched_store

    def note_set(key: str, data: bytes) -> None:
        if not key.endswith("zarr.json"):
            written[f"{prefix}/{key}"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def note_delete(key: str) -> None:
        written[f"{prefix}/{key}"] = None

    return watched_store(store, after_set=note_set, after_delete=note_delete)


def check_block(
    batch_id: str,
    sample_ids: list[str],
    beta: np.ndarray,
    coverage: np.ndarray,
    *,
    n_cpgs: int,
    coverage_dtype: np.dtype,
) -> None:
    """Refuse a block that :meth:`MethylStore.append <xr_methyl.store.MethylStore.append>` cannot take, saying why."""
    if not isinstance(batch_id, str) or not batch_id:
        raise DataError(f"batch id {batch_id!r}: expected a non-empty string")
    if len(set(sample_ids)) != len(sample_ids) or not sample_ids:
        raise DataError(f"batch {batch_id!r}: sample ids must be non-empty and unique, got {sample_ids[:10]}")
    shape = (len(sample_ids), n_cpgs)
    if beta.shape != shape or beta.dtype != np.float32:
        raise DataError(f"beta block of batch {batch_id!r} is {beta.dtype}{beta.shape}; expected float32{shape}")
    if coverage.shape != shape or coverage.dtype != coverage_dtype:
        raise DataError(
            f"coverage block of batch {batch_id!r} is {coverage.dtype}{coverage.shape}; "
            f"expected {coverage_dtype}{shape}"
        )
    with np.errstate(invalid="ignore"):
        bad_rows = np.flatnonzero(((beta < 0) | (beta > 1)).any(axis=1))
    if len(bad_rows):
        raise DataError(
            f"beta of sample {sample_ids[bad_rows[0]]!r} (batch {batch_id!r}) lies outside [0, 1]; "
            "betas are methylated fractions"
        )
