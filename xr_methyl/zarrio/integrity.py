"""Damaged bytes or a bug? Which read failures become :class:`~xr_methyl.errors.CorruptStoreError`.

A shard of a store's arrays carries two checksums: zarr's shard index ends in a
crc32c, and (stores created since the inner chunks got theirs) every inner
chunk ends in the crc32c of its encoded bytes, the last codec of the inner
chain (zarr's ``crc32c`` codec, part of the Zarr v3 core: any v3 reader
checks it).  A read that meets bytes failing either checksum, a chunk that
does not decode, or a shard shorter than its index says raises
``CorruptStoreError`` naming the object and the inner chunk.  Anything else
(``TypeError``, ``IndexError`` from a bad indexer, ...) is a bug or a bad
request and propagates as itself; so does an ``OSError`` of the disk or the
network, which names its own cause.

Why crc32c and not zstd's frame checksum (``python -m benchmarks.checksums``:
CPU time per inner chunk of WGBS-like data, 2 cores, median of 31 rounds):
beta's 65,536-wide float32 chunks decode in ~270 us, a crc32c of the encoded
bytes adds 14-17 us and zstd's checksum of the decoded bytes 21-25 us; the
CpG-major copy's 8 x 64 chunks decode in ~4 us (zstd), crc32c adds ~0.7-1 us,
zstd's checksum ~0.1-0.3 us, but a read of 1,000 scattered CpGs x 256 samples
from the copy cost the same CPU time with either (within 3-8 % of none).
zstd's checksum exists only for zstd, while coverage is Blosc-compressed and
the copy may be raw; and it misses the few flipped bits that leave the
decoded values as they were (~0.3-0.6 % of single-bit flips, in unused
header bits and stream padding), where crc32c sees every byte.  Stores
written before keep their codec chains: readers follow each array's metadata.

xr_methyl's own readers (:mod:`xr_methyl.zarrio.rowread`, :mod:`xr_methyl.zarrio.bycpg`)
check as they read, with :class:`InnerCodecs`.  A read through zarr (S3
stores, other layouts) raises whatever zarr's codecs raise, without saying
where; :func:`read_checked` then looks at the chunks that read decodes
(:func:`locate_damage`) and raises ``CorruptStoreError`` only if one of them
is damaged, the original error otherwise.

Only numpy and :mod:`xr_methyl.errors` are imported at module level: the xarray backend imports
this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from xr_methyl.errors import CorruptStoreError

T = TypeVar("T")

#: Offset and length of an inner chunk that was never written (all fill value).
EMPTY = 2**64 - 1
#: crc32c of any bytes followed by their crc32c (little-endian), as zarr's crc32c codec stores it.
CRC32C_RESIDUE = 0x48674BC7
#: What every damage message ends with.
VERIFY_HINT = "run `xr-methyl verify STORE` to list every damaged shard"


@dataclass(frozen=True)
class InnerCodecs:
    """The codec chain of a shard's inner chunks, as xr_methyl writes it (and wrote it before).

    ``bytes`` (little-endian), then ``compressor`` (``"zstd"``, ``"blosc"`` or
    None), then a crc32c if ``checksum``.
    """

    compressor: str | None
    checksum: bool

    @classmethod
    def of(cls, sharding) -> InnerCodecs | None:
        """The inner chain of a zarr ``ShardingCodec``; None for a chain not listed above."""
        from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

        codecs = list(sharding.codecs)
        checksum = bool(codecs) and isinstance(codecs[-1], Crc32cCodec)
        if checksum:
            codecs.pop()
        if not codecs or not little_endian(codecs[0]):
            return None
        kinds = {ZstdCodec: "zstd", BloscCodec: "blosc"}
        if len(codecs) == 1:
            return cls(None, checksum)
        if len(codecs) == 2 and type(codecs[1]) in kinds:
            return cls(kinds[type(codecs[1])], checksum)
        return None

    def payload(self, raw: bytes) -> bytes | memoryview | None:
        """The encoded chunk in ``raw``, its checksum checked and stripped; None if it does not match."""
        import google_crc32c

        if not self.checksum:
            return raw
        # The crc32c of bytes followed by their own crc32c is a constant: one pass over the chunk as it
        # was read, no copy (0.5 us for a 2 KiB chunk, against 0.8 us slicing off the checksum first).
        if len(raw) < 4 or google_crc32c.value(raw) != CRC32C_RESIDUE:
            return None
        return memoryview(raw)[:-4]

    def decoder(self) -> Callable:
        """``decode(encoded, out=None)`` of the compressor (numcodecs), for one thread; identity without one."""
        import numcodecs

        if self.compressor is None:
            return lambda data, out=None: data
        return (numcodecs.Zstd() if self.compressor == "zstd" else numcodecs.Blosc()).decode


def little_endian(codec) -> bool:
    """Whether a zarr codec is the ``bytes`` codec, little-endian."""
    from zarr.codecs import BytesCodec

    return isinstance(codec, BytesCodec) and getattr(codec.endian, "value", codec.endian) in ("little", None)


def checksum_mismatch(where: str) -> CorruptStoreError:
    """The error for a chunk whose bytes do not match their crc32c."""
    return CorruptStoreError(
        f"{where} does not match its crc32c checksum: its bytes changed after they were written; {VERIFY_HINT}"
    )


def decode_failure(where: str, err: Exception) -> CorruptStoreError:
    """The error for a chunk whose codec refused its bytes (raise it ``from err``)."""
    return CorruptStoreError(f"{where} does not decode ({type(err).__name__}: {err}); {VERIFY_HINT}")


def check_shard_index(raw: bytes, name: str, n_bytes: int, size: int) -> np.ndarray:
    """A shard's index, (offset, length) pairs as rows, from its ``n_bytes`` bytes, checked against its crc32c."""
    import google_crc32c

    if len(raw) != n_bytes:
        raise CorruptStoreError(
            f"{name} is too short for a shard index ({size} bytes): the object is truncated; {VERIFY_HINT}"
        )
    body, crc = raw[:-4], raw[-4:]
    if np.uint32(google_crc32c.value(body)).tobytes() != crc:
        raise CorruptStoreError(f"{name}: the shard index does not match its checksum; {VERIFY_HINT}")
    return np.frombuffer(body, dtype="<u8").reshape(-1, 2)


def object_name(array, key: str) -> str:
    """Where the object ``key`` of a zarr array lives: a file path, an ``s3://`` URI, or zarr's own name."""
    from zarr.storage import LocalStore

    store_path = array.store_path
    path = f"{store_path.path}/{key}" if store_path.path else key
    store = store_path.store
    if isinstance(store, LocalStore):
        return os.path.join(str(store.root), path)
    inner = getattr(store, "store", None)  # zarr's ObjectStore: the obstore store
    bucket = (getattr(inner, "config", None) or {}).get("bucket")
    if bucket:
        prefix = getattr(inner, "prefix", None)
        return f"s3://{bucket}/{f'{prefix}/' if prefix else ''}{path}"
    return f"{store}/{path}"


def read_checked(array, rows, cols, read: Callable[[], T]) -> T:
    """``read()`` (a zarr read of ``array[rows, cols]``); a failure becomes ``CorruptStoreError`` only if
    the chunks it decodes are damaged (:func:`locate_damage`), otherwise it propagates as itself."""
    try:
        return read()
    except CorruptStoreError:
        raise
    except Exception as err:
        damage = locate_damage(array, rows, cols)
        if damage is None:
            raise
        raise CorruptStoreError(damage) from err


def locate_damage(array, rows, cols) -> str | None:
    """The first damaged inner chunk among those a read of ``array[rows, cols]`` decodes, described; or None.

    ``rows`` and ``cols``: an int, a slice or a list of positions each.  Reads
    the shard indexes and the chunks through the array's zarr store (ranged
    reads, concurrently), so it works on local and S3 stores alike.  None also
    when it cannot tell (an array not sharded the way xr_methyl shards, a
    selection it cannot read, a failing store).
    """
    try:
        return _locate(array, rows, cols)
    except CorruptStoreError as err:
        return str(err)
    except Exception:  # cannot tell: the read's own error stands
        return None


def _locate(array, rows, cols) -> str | None:
    import asyncio

    import zarr
    from zarr.abc.store import RangeByteRequest
    from zarr.codecs import ShardingCodec

    from xr_methyl.zarrio.internals import buffer_prototype, sync

    meta = array.metadata
    if (
        meta.zarr_format != 3
        or array.ndim != 2
        or len(meta.codecs) != 1
        or not isinstance(meta.codecs[0], ShardingCodec)
    ):
        return None
    sharding = meta.codecs[0]
    codecs = InnerCodecs.of(sharding)
    if codecs is None or [c.to_dict()["name"] for c in sharding.index_codecs] != ["bytes", "crc32c"]:
        return None
    shard_shape, inner = meta.chunk_grid.chunk_shape, sharding.chunk_shape
    per_shard = (shard_shape[0] // inner[0], shard_shape[1] // inner[1])
    index_bytes = per_shard[0] * per_shard[1] * 16 + 4
    at_end = sharding.index_location.value == "end"
    chunk_bytes = inner[0] * inner[1] * np.dtype(array.dtype).itemsize
    decode = codecs.decoder()
    prototype = buffer_prototype()
    by_shard: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r in _chunks_of(rows, array.shape[0], inner[0]).tolist():
        for c in _chunks_of(cols, array.shape[1], inner[1]).tolist():
            by_shard.setdefault((r // per_shard[0], c // per_shard[1]), []).append((r % per_shard[0], c % per_shard[1]))

    async def get(where, start: int, stop: int) -> bytes:
        async with limit:
            got = await where.get(prototype, RangeByteRequest(start, stop))
        return b"" if got is None else got.to_bytes()

    async def check_chunk(where, label: str, offset: int, length: int, size: int) -> str | None:
        if offset + length > size:
            return f"{label} runs past the end of the object ({size} bytes): it is truncated; {VERIFY_HINT}"
        data = codecs.payload(await get(where, offset, offset + length))
        if data is None:
            return str(checksum_mismatch(label))
        try:
            decoded = decode(data)
        except (RuntimeError, ValueError) as err:  # numcodecs' zstd and blosc refusing the bytes
            return str(decode_failure(label, err))
        if memoryview(decoded).nbytes != chunk_bytes:
            return f"{label} decodes to {memoryview(decoded).nbytes} bytes, not {chunk_bytes}; {VERIFY_HINT}"
        return None

    async def check_shard(shard: tuple[int, int], chunks: list[tuple[int, int]]) -> str | None:
        key = meta.encode_chunk_key(shard)
        name, where = object_name(array, key), array.store_path / key
        if not await where.exists():
            return None  # a shard of fill values only is never written
        size = await where.store.getsize(where.path)
        at = size - index_bytes if at_end else 0
        raw = await get(where, at, at + index_bytes) if at >= 0 else b""
        index = check_shard_index(raw, name, index_bytes, size).reshape(*per_shard, 2)
        found = await asyncio.gather(
            *(
                check_chunk(where, f"{name}: inner chunk ({r}, {c})", int(index[r, c, 0]), int(index[r, c, 1]), size)
                for r, c in chunks
                if index[r, c, 0] != EMPTY
            )
        )
        return next((f for f in found if f), None)

    async def check_all() -> str | None:
        found = await asyncio.gather(*(check_shard(shard, chunks) for shard, chunks in sorted(by_shard.items())))
        return next((f for f in found if f), None)

    limit = asyncio.Semaphore(int(zarr.config.get("async.concurrency") or 10))
    return sync(check_all())


def _chunks_of(selection, n: int, chunk: int) -> np.ndarray:
    """The chunk positions along one axis (length ``n``, chunks of ``chunk``) that a selection touches."""
    if isinstance(selection, slice):
        positions = np.arange(*selection.indices(n))
    else:
        positions = np.atleast_1d(np.asarray(selection, dtype=np.int64))
        positions = np.where(positions < 0, positions + n, positions)
    return np.unique(positions // chunk)
