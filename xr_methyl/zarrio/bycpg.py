"""The CpG-major companion of beta: a second copy whose inner chunks are (sample block, a few CpGs).

With the main layout (inner chunks of one row x 65,536 CpGs) a read of a few
hundred scattered CpGs decodes every inner chunk of every row it asks for: it
costs a full read.  A store created with ``Layout(by_cpg_chunk=w)`` also keeps
``beta_by_cpg.zarr``, the same values in inner chunks of ``sample_block`` rows x
``w`` CpGs (one shard high, so the append rule holds: each append writes whole
new shards of it, beside those of beta).  A read of few CpGs then touches
about one small chunk per CpG and sample block.

* :func:`encode_shard` builds one of its shards (plain Zarr v3 sharding: the
  chunks, each ending in its crc32c, then the index of little-endian (offset,
  length) pairs and its crc32c), many times faster than zarr-python writing its
  many small chunks.
* :func:`plan_gather` (pure) says which chunks of which shards hold the wanted
  cells and where each lands in the result.
* :class:`ByCpgReader` reads a local store's shards: per shard the index once,
  then the wanted chunks with ``pread`` (checked, decoded if compressed) into slots of
  one buffer, then one numpy gather into the result; threads across shards.
* :func:`read_by_cpg` uses it, or zarr's own selection (S3 stores, other
  codecs): the same values either way.
* :func:`by_cpg_cheaper` decides, from the request alone, whether the
  companion or the main array is cheaper to read.

Only numpy (and xr_methyl's own light modules) is imported at module level: the xarray backend
imports this module.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import numpy as np

from xr_methyl.errors import CorruptStoreError
from xr_methyl.zarrio.integrity import (
    VERIFY_HINT,
    InnerCodecs,
    checksum_mismatch,
    decode_failure,
)

#: Codecs of the companion's inner chunks: stored as they are, or zstd (level 3).
CODECS = ("raw", "zstd")
#: Offset and length of an inner chunk that was never written (all fill value).
EMPTY = 2**64 - 1
#: Seconds per inner chunk read from the copy (pread, Python, gather) and per cell it holds
#: (copy, or zstd decode); the same for a main inner chunk (zstd decode of 1 x 65,536 cells).
#: Measured on 2 cores, warm page cache, 64 samples x 2 M CpGs: a raw 8 x 64 chunk ~4 us, a
#: zstd one ~7 us, a main chunk ~200 us; the crossover there is ~10,000 CpGs (raw) and
#: ~8,000 (zstd), where every main chunk is touched anyway.
CHUNK_SECONDS = 3e-6
CELL_SECONDS = {"raw": 2e-9, "zstd": 8e-9}
MAIN_CHUNK_SECONDS = 5e-6
MAIN_CELL_SECONDS = 3e-9


def shard_width(cpg_shard: int, chunk: int, n_cpgs: int) -> int:
    """Width in CpGs of the companion's shards: the main array's, rounded up to whole chunks.

    Rounding up only happens when the axis is one main shard wide (a main shard
    narrower than the axis is a whole number of companion chunks: see
    :meth:`xr_methyl.store.Layout.for_axis`).
    """
    return cpg_shard if cpg_shard % chunk == 0 or n_cpgs > cpg_shard else math.ceil(cpg_shard / chunk) * chunk


def encode_shard(values: np.ndarray, *, chunk: int, width: int, codec: str, checksum: bool = True) -> bytes | None:
    """One shard of the companion: ``values`` (sample block x up to ``width`` CpGs, float32) encoded.

    Inner chunks that are all NaN (the fill value) are not stored; None when
    every chunk is.  ``checksum``: each chunk ends in the crc32c of its encoded
    bytes (the inner codecs end in ``crc32c``; False for copies created before).
    The result is plain Zarr v3 sharding (index at the end, crc32c), as zarr
    itself would write it with the companion's codecs.
    """
    import google_crc32c

    rows, n = values.shape
    n_chunks = width // chunk
    used = math.ceil(n / chunk)
    if used * chunk != n:  # the axis ends inside a chunk: pad it with the fill value
        values = np.concatenate([values, np.full((rows, used * chunk - n), np.nan, np.float32)], axis=1)
    # (chunk, row, column within the chunk): each chunk's cells contiguous, in C order.
    cells = np.ascontiguousarray(values.reshape(rows, used, chunk).transpose(1, 0, 2), dtype="<f4")
    stored = np.flatnonzero(~np.isnan(cells).all(axis=(1, 2)))
    if not len(stored):
        return None
    if codec == "raw":
        parts = [cells[j].tobytes() for j in stored] if checksum else [cells[stored].tobytes()]
        lengths = np.full(len(stored), rows * chunk * 4, dtype=np.uint64)
    elif codec == "zstd":
        parts = _compress_chunks(cells, stored)
        lengths = np.fromiter(map(len, parts), dtype=np.uint64, count=len(parts))
    else:
        raise ValueError(f"companion codec {codec!r}: expected one of {', '.join(CODECS)}")
    if checksum:
        crc = google_crc32c.value
        parts = [part + crc(part).to_bytes(4, "little") for part in parts]
        lengths += 4
    index = np.full((1, n_chunks, 2), EMPTY, dtype="<u8")
    index[0, stored, 1] = lengths
    index[0, stored, 0] = np.cumsum(lengths) - lengths
    body = index.tobytes()
    return b"".join([*parts, body, np.uint32(google_crc32c.value(body)).tobytes()])


def _compress_chunks(cells: np.ndarray, stored: np.ndarray) -> list[bytes]:
    """zstd (level 3) frames of the chunks ``cells[stored]``, in order, on a few threads.

    zstandard releases the GIL while it compresses: two threads take ~0.6x the
    time of one on a shard of 8 x 2 M CpGs (31,250 chunks).
    """
    import zstandard

    flat = memoryview(cells).cast("B")
    size = cells[0].nbytes
    wanted = stored.tolist()

    def compress(lo: int, hi: int) -> list[bytes]:
        one = zstandard.ZstdCompressor(level=3).compress  # a compressor is not shared between threads
        return [one(flat[j * size : (j + 1) * size]) for j in wanted[lo:hi]]

    workers = min(4, os.cpu_count() or 1)
    if workers == 1 or len(wanted) < 1024:
        return compress(0, len(wanted))
    from concurrent.futures import ThreadPoolExecutor

    step = -(-len(wanted) // (workers * 4))
    with ThreadPoolExecutor(workers, thread_name_prefix="xr_methyl-encode") as pool:
        pieces = [pool.submit(compress, lo, lo + step) for lo in range(0, len(wanted), step)]
        return [frame for piece in pieces for frame in piece.result()]


@dataclass(frozen=True)
class ShardGather:
    """What to read from one companion shard and where its values land in the result.

    ``chunks``: the shard's inner chunks to read (ascending).  Rows: the result
    rows ``out_rows`` take rows ``in_block`` of the block.  Columns: the result
    columns ``cols`` (a slice of the sorted distinct columns) take, for each,
    column ``offset`` of the chunk in slot ``slot`` of ``chunks``.
    """

    block: int
    shard: int
    chunks: np.ndarray
    out_rows: np.ndarray
    in_block: np.ndarray
    cols: slice
    slot: np.ndarray
    offset: np.ndarray


def plan_gather(
    rows: np.ndarray, cols: np.ndarray, *, block: int, chunk: int, width: int
) -> tuple[list[ShardGather], np.ndarray]:
    """Plan ``A[rows][:, cols]`` on the companion's grid; ``rows`` and ``cols`` in any order, repeats allowed.

    Returns the per-shard gathers, which fill a result over the sorted distinct
    columns, and ``inverse``: result column ``j`` is that result's column
    ``inverse[j]``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    distinct, inverse = np.unique(np.asarray(cols, dtype=np.int64), return_inverse=True)
    blocks, in_block = np.divmod(rows, block)
    order = np.argsort(blocks, kind="stable")
    block_ids, starts = np.unique(blocks[order], return_index=True)
    row_groups = np.split(order, starts[1:])
    shard_of = distinct // width
    shard_ids, col_starts = np.unique(shard_of, return_index=True)
    col_stops = [*col_starts[1:], len(distinct)]
    plans = []
    for s, c0, c1 in zip(shard_ids.tolist(), col_starts.tolist(), col_stops):
        local = distinct[c0:c1] - s * width
        chunk_of = local // chunk
        chunks, slot = np.unique(chunk_of, return_inverse=True)
        offset = local - chunk_of * chunk
        for b, group in zip(block_ids.tolist(), row_groups):
            plans.append(ShardGather(b, s, chunks, group, in_block[group], slice(c0, c1), slot, offset))
    return plans, inverse.reshape(-1)


def by_cpg_cheaper(
    n_rows: int,
    n_blocks: int,
    cols: np.ndarray,
    *,
    chunk: int,
    block: int,
    main_chunk: int,
    codec: str,
    n_cpgs: int | None = None,
) -> bool:
    """Whether reading ``cols`` of ``n_rows`` rows (in ``n_blocks`` blocks) from the companion is cheaper.

    Estimates both from the inner chunks each would read and their measured
    costs (:data:`CHUNK_SECONDS`, :data:`CELL_SECONDS`, :data:`MAIN_CHUNK_SECONDS`, ...);
    ``cols`` sorted or not.  ``n_cpgs`` (the axis length) counts the main
    array's last inner chunk at its true width.
    """
    cols = np.asarray(cols)
    if not len(cols) or not n_rows:
        return False
    by_chunks = len(np.unique(cols // chunk))
    main_chunks = np.unique(cols // main_chunk)
    main_cells = len(main_chunks) * main_chunk
    if n_cpgs is not None and (main_chunks[-1] + 1) * main_chunk > n_cpgs:
        main_cells -= (main_chunks[-1] + 1) * main_chunk - n_cpgs
    by_cost = n_blocks * by_chunks * (CHUNK_SECONDS + block * chunk * CELL_SECONDS[codec])
    return by_cost < n_rows * (len(main_chunks) * MAIN_CHUNK_SECONDS + main_cells * MAIN_CELL_SECONDS)


def read_by_cpg(array, rows: np.ndarray, cols: np.ndarray, *, block: int) -> np.ndarray:
    """``array[rows][:, cols]`` of the companion (rows and columns in any order, repeats allowed).

    A local store's shards are read by :class:`ByCpgReader`; anything else by
    zarr (blocks of rows as slices, the columns as a list).
    """
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    reader = ByCpgReader.for_array(array) if len(rows) and len(cols) else None
    if reader is not None:
        return reader.read(rows, cols)
    from xr_methyl.zarrio.rowread import read_rows

    return read_rows(array, rows, cols, chunk_rows=block)


def _zstd_errors() -> tuple[type[Exception], ...]:
    """What the zstd decoders raise for bytes they cannot decode (zstandard's, else numcodecs')."""
    try:
        import zstandard

        return (zstandard.ZstdError, RuntimeError, ValueError)
    except ImportError:
        return (RuntimeError, ValueError)


class ByCpgReader:
    """Cells of the companion's shards in local files: the wanted inner chunks only, gathered at once.

    Handles exactly what :func:`encode_shard` (or zarr, with the same codecs)
    writes: 2-D float32, one inner chunk per shard row, codecs ``bytes``
    (little-endian) alone or + ``zstd``, each + ``crc32c`` or not (checked
    here), the index at the end with its crc32c.  :meth:`for_array` says None
    for anything else.
    """

    def __init__(self, array, root: str, codecs: InnerCodecs) -> None:
        self.array = array
        self.root = root
        self.codecs = codecs
        self.block, self.width = array.metadata.chunk_grid.chunk_shape
        self.chunk = array.metadata.codecs[0].chunk_shape[1]
        self.n_chunks = self.width // self.chunk
        self.chunk_bytes = self.block * self.chunk * 4
        self.fill = np.full(self.block * self.chunk, array.metadata.fill_value, dtype="<f4").tobytes()
        self._local = threading.local()
        self._decode_errors = _zstd_errors()

    @classmethod
    def for_array(cls, array) -> ByCpgReader | None:
        """A reader for ``array``, or None if its layout, codecs or store are not the ones handled here."""
        try:
            from xr_methyl.zarrio.rowread import local_sharding

            found = local_sharding(array)
            if found is None or np.dtype(array.dtype) != np.float32:
                return None
            sharding, root = found
            if sharding.chunk_shape[0] != array.metadata.chunk_grid.chunk_shape[0]:
                return None
            if sharding.index_location.value != "end":
                return None
            codecs = InnerCodecs.of(sharding)
            if codecs is None or codecs.compressor not in (None, "zstd"):
                return None
            return cls(array, root, codecs)
        except (ImportError, AttributeError, TypeError, ValueError):  # another zarr: let zarr read
            return None

    def read(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``array[rows][:, cols]``: rows and columns in any order, repeats allowed."""
        from concurrent.futures import ThreadPoolExecutor

        plans, inverse = plan_gather(rows, cols, block=self.block, chunk=self.chunk, width=self.width)
        distinct = int(inverse.max()) + 1 if len(inverse) else 0  # plan_gather's sorted distinct columns
        out = np.empty((len(rows), distinct), dtype=np.float32)
        workers = max(1, min(len(plans), os.cpu_count() or 1))
        if workers == 1:
            for plan in plans:
                self._gather(plan, out)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="xr_methyl-bycpg") as pool:
                for done in [pool.submit(self._gather, plan, out) for plan in plans]:
                    done.result()
        if distinct == len(cols) and np.array_equal(inverse, np.arange(len(cols))):
            return out
        return out[:, inverse]

    def _gather(self, plan: ShardGather, out: np.ndarray) -> None:
        """Read one shard's wanted chunks into slots of one buffer, then place its cells with one gather."""
        path = os.path.join(self.root, self.array.metadata.encode_chunk_key((plan.block, plan.shard)))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # a shard of fill values only is never written
            out[np.ix_(plan.out_rows, np.arange(plan.cols.start, plan.cols.stop))] = np.frombuffer(self.fill, "<f4")[0]
            return
        try:
            index = self._index(fd, path)
            where = index[plan.chunks]
            fill = self.fill
            decode = self._decoder() if self.codecs.compressor else None
            parts = [
                fill if o == EMPTY else self._chunk(fd, path, plan.chunks[k], o, n, decode)
                for k, (o, n) in enumerate(where.tolist())
            ]
            data = b"".join(parts)
        finally:
            os.close(fd)
        cells = np.frombuffer(data, dtype="<f4").reshape(len(parts), self.block, self.chunk)
        values = cells[plan.slot, :, plan.offset]  # (columns, rows of the block)
        rows, in_block = plan.out_rows, plan.in_block
        whole = np.arange(self.block)
        if len(rows) == self.block and np.array_equal(in_block, whole) and np.array_equal(rows - rows[0], whole):
            out[rows[0] : rows[0] + self.block, plan.cols] = values.T  # a whole block, in order
        else:
            out[np.ix_(rows, np.arange(plan.cols.start, plan.cols.stop))] = values[:, in_block].T

    def _chunk(self, fd: int, path: str, j: int, offset: int, length: int, decode) -> bytes:
        """Inner chunk ``j`` of a shard (``length`` bytes at ``offset``), checked and decoded."""
        raw = os.pread(fd, length, offset)
        data = self.codecs.payload(raw) if len(raw) == length else None
        if data is not None and decode is not None:
            try:
                data = decode(data)
            except self._decode_errors as err:
                raise decode_failure(f"{path}: inner chunk (0, {j})", err) from err
        if data is None or len(data) != self.chunk_bytes:  # thousands of chunks per read: name it only here
            where = f"{path}: inner chunk (0, {j})"
            if len(raw) != length:
                raise CorruptStoreError(f"{where} is truncated ({len(raw)} of {length} bytes); {VERIFY_HINT}")
            if data is None:
                raise checksum_mismatch(where)
            raise CorruptStoreError(
                f"{where} holds {len(data)} bytes once decoded, not {self.chunk_bytes}; {VERIFY_HINT}"
            )
        return data

    def _decoder(self):
        """A zstd decoder for this thread (zstandard's, with a reused context, if installed)."""
        decode = getattr(self._local, "decode", None)
        if decode is None:
            try:
                import zstandard

                decode = zstandard.ZstdDecompressor().decompress
            except ImportError:
                import numcodecs

                decode = numcodecs.Zstd().decode
            self._local.decode = decode
        return decode

    def _index(self, fd: int, path: str) -> np.ndarray:
        """(offset, length) of each inner chunk of one shard, checked against its crc32c."""
        from xr_methyl.zarrio.rowread import read_shard_index

        return read_shard_index(fd, path, self.n_chunks * 16 + 4)
