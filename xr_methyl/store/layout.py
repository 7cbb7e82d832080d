"""The format of a methylzarr store: its files, their shapes and codecs, and the manifest.

Layout of a store directory, or of the objects under an ``s3://`` prefix (format 2)::

    beta.zarr/             (rows, n_cpgs) float32, NaN = missing, sharded
    coverage.zarr/         (rows, n_cpgs) unsigned int, 0 = no coverage, same grid
    beta_by_cpg.zarr/      optional (Layout.by_cpg_chunk): beta again, in CpG-major inner chunks,
                           same shard grid (see :mod:`xr_methyl.zarrio.bycpg`)
    cpg_ids.npy            the CpG axis, fixed at creation
    cpg_index/             loci and look-up tables of the axis, memory-mapped at open
                           (see :mod:`xr_methyl.store.cpg_axis`)
    manifest.json          immutable facts: n_cpgs, sha256 of the axis, layout, warehouse (:class:`Manifest`)
    ingested_batches.json  {batch_id: [sample_id, ...]}         (written ahead, see :mod:`~xr_methyl.store.commit`)
    samples.json           per-sample metadata (batch, age, ...)   (written ahead)
    provenance.json        per batch: what each append cost (queries, bytes)  (written ahead)
    sample_ids.json        one entry per committed row; THE COMMIT POINT
    blocks/NNNNNNNN.json   per block of rows: the shard objects its append wrote (bytes, sha256)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from xr_methyl.errors import CorruptStoreError, StoreNotFoundError
from xr_methyl.storage import Storage

FORMAT_VERSION = 2

BETA = "beta.zarr"
COVERAGE = "coverage.zarr"
BETA_BY_CPG = "beta_by_cpg.zarr"
#: Store key of each array, by name.
ARRAY_KEYS = {"beta": BETA, "coverage": COVERAGE, "beta_by_cpg": BETA_BY_CPG}
CPG_IDS = "cpg_ids.npy"
MANIFEST = "manifest.json"
SAMPLE_IDS = "sample_ids.json"
BATCHES = "ingested_batches.json"
SAMPLES = "samples.json"
PROVENANCE = "provenance.json"
LOCK = "write.lock"
BLOCKS = "blocks"

COVERAGE_DTYPES = ("uint8", "uint16", "uint32")

#: Fill value of each value array: what a cell holds without a warehouse row (NULL and NaN included).
FILL = {"beta": np.nan, "coverage": 0}


def fill_missing(table: str, values: np.ndarray) -> np.ndarray:
    """``values`` with NaN (a NULL or NaN in the warehouse) replaced by the table's fill value.

    A NULL or NaN value is stored as if the row were absent: NaN for beta, 0 for
    coverage.  Returns ``values`` itself when there is nothing to replace.
    """
    values = np.asarray(values)
    if table == "beta" or values.dtype.kind != "f":
        return values
    missing = np.isnan(values)
    return np.where(missing, FILL[table], values) if missing.any() else values


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
    use it (see :mod:`xr_methyl.zarrio.bycpg`).  ``by_cpg_codec`` is ``"zstd"`` (level
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
        from xr_methyl.zarrio.bycpg import CODECS

        for name in ("sample_block", "chunk_rows", "cpg_chunk", "cpg_shard"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"layout {name}={value!r}: expected a positive integer")
        by_cpg = self.by_cpg_chunk
        if not isinstance(by_cpg, int) or isinstance(by_cpg, bool) or by_cpg < 0:
            raise ValueError(
                f"layout by_cpg_chunk={by_cpg!r}: expected 0 (no CpG-major copy of beta) or a "
                "positive integer (its inner chunks' width in CpGs, e.g. 64)"
            )
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
            raise ValueError(
                f"layout by_cpg_chunk={by_cpg} must divide cpg_shard={cpg_shard} (the CpG-major copy "
                "shares beta's shards), e.g. 64"
            )
        return replace(self, cpg_chunk=cpg_chunk, cpg_shard=cpg_shard)

    def by_cpg_shard(self, n_cpgs: int) -> int:
        """Width in CpGs of the CpG-major copy's shards (see :func:`xr_methyl.zarrio.bycpg.shard_width`)."""
        from xr_methyl.zarrio.bycpg import shard_width

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
        return cls(
            int(sample_block),
            int(chunk_rows),
            int(cpg_chunk),
            int(cpg_shard),
            int(by_cpg.get("chunk", 0)),
            str(by_cpg.get("codec", "zstd")),
        )


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: what a store is, fixed when it is created and never rewritten.

    Read with :meth:`from_json`, which refuses another format or version and a
    field that is missing or of the wrong kind, naming it; :meth:`to_json`
    writes the same document the store has always had.
    """

    n_cpgs: int
    cpg_ids_sha256: str
    layout: Layout
    coverage_dtype: str
    #: sha256 of each file of the CpG axis (the key of remote stores' axis cache); empty in stores
    #: created before these were recorded.
    axis_files: dict[str, str] = field(default_factory=dict)
    has_loci: bool = False
    compression: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    #: The warehouse the store ingests from (a URI or path, redacted), None if none was given.
    warehouse: str | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "methylzarr",
            "format_version": self.format_version,
            "n_cpgs": self.n_cpgs,
            "cpg_ids_sha256": self.cpg_ids_sha256,
            "axis_files": dict(self.axis_files),
            "has_loci": self.has_loci,
            "layout": self.layout.to_json(),
            "coverage_dtype": self.coverage_dtype,
            "compression": self.compression,
            "created_at": self.created_at,
            "warehouse": self.warehouse,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, where: str) -> Manifest:
        """The manifest in ``doc`` (read from ``where``), refused if it lacks a field this code reads, holds a
        value of the wrong kind, or declares another format or version."""
        version = doc.get("format_version")
        if doc.get("format") != "methylzarr" or version != FORMAT_VERSION:
            raise CorruptStoreError(
                f"{where} declares format {doc.get('format')!r} version {version!r}; "
                f"this xr_methyl reads methylzarr version {FORMAT_VERSION}"
            )

        def bad(name: str, expected: str) -> CorruptStoreError:
            shown = repr(doc[name])[:80] if name in doc else "missing"
            return CorruptStoreError(
                f"{where}: {name} is {shown}, expected {expected}; the manifest is damaged "
                "(restore it from a copy of the store)"
            )

        n_cpgs = doc.get("n_cpgs")
        if not isinstance(n_cpgs, int) or isinstance(n_cpgs, bool) or n_cpgs < 1:
            raise bad("n_cpgs", "a positive number of CpGs")
        digest = doc.get("cpg_ids_sha256")
        if not (isinstance(digest, str) and len(digest) == 64):
            raise bad("cpg_ids_sha256", "the sha256 of the CpG ids (64 hex digits)")
        files = doc.get("axis_files")
        if files is not None and not (
            isinstance(files, dict)
            and CPG_IDS in files
            and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        ):
            raise bad("axis_files", f"the sha256 of each CpG axis file, {CPG_IDS} included")
        if not isinstance(doc.get("has_loci", False), bool):
            raise bad("has_loci", "true or false")
        if doc.get("coverage_dtype") not in COVERAGE_DTYPES:
            raise bad("coverage_dtype", f"one of {', '.join(COVERAGE_DTYPES)}")
        try:
            layout = Layout.from_json(doc["layout"])
            if layout != layout.for_axis(n_cpgs):
                raise ValueError("shapes larger than the axis")
        except (KeyError, TypeError, ValueError) as err:
            raise bad("layout", f"chunk_shape, shard_shape and sample_block of whole chunks ({err})") from None
        if not isinstance(doc.get("warehouse"), (str, type(None))):
            raise bad("warehouse", "the URI of the warehouse, or null")
        return cls(
            n_cpgs=n_cpgs,
            cpg_ids_sha256=digest,
            layout=layout,
            coverage_dtype=doc["coverage_dtype"],
            axis_files=dict(files or {}),
            has_loci=doc.get("has_loci", False),
            compression=dict(doc.get("compression") or {}),
            created_at=doc.get("created_at"),
            warehouse=doc.get("warehouse"),
            format_version=version,
        )


def block_record_key(block: int) -> str:
    """Key of the shard record of one block (see :func:`xr_methyl.store.commit.record_blocks`)."""
    return f"{BLOCKS}/{block:08d}.json"


def read_json(storage: Storage, key: str, kind: type, *, tags: dict[str, str | None] | None = None):
    try:
        raw, tag = storage.read_tagged(key)
    except StoreNotFoundError:
        raise
    except FileNotFoundError:
        raise CorruptStoreError(f"{storage.uri} is missing {key}; the store is incomplete") from None
    if tags is not None:
        tags[key] = tag
    return parse_json(storage, key, raw, kind)


def parse_json(storage: Storage, key: str, raw: bytes, kind: type):
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise CorruptStoreError(f"{storage.uri}/{key} is not valid JSON ({err}); the file is corrupt") from err
    if not isinstance(value, kind):
        raise CorruptStoreError(f"{storage.uri}/{key} holds a {type(value).__name__}, expected a {kind.__name__}")
    return value


def compressors(coverage_dtype: str) -> dict[str, list]:
    """Codecs measured on WGBS-like data: plain zstd suits betas (a byte shuffle
    halves their ratio), while coverage counts compress a third better after a
    byte shuffle.  Each inner chunk ends in the crc32c of its compressed bytes,
    so that damaged bytes are an error, not wrong values (why crc32c rather than
    zstd's own checksum: see :mod:`xr_methyl.zarrio.integrity`).  All are core Zarr v3
    codecs, readable by any v3 reader."""
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    return {
        "beta": [ZstdCodec(level=3), Crc32cCodec()],
        "coverage": [
            BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=np.dtype(coverage_dtype).itemsize),
            Crc32cCodec(),
        ],
    }


def by_cpg_compressor(layout: Layout) -> list:
    """The CpG-major copy's codecs: none (raw chunks) or zstd level 3, then a crc32c of each chunk."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=3), Crc32cCodec()] if layout.by_cpg_codec == "zstd" else [Crc32cCodec()]


def has_chunk_checksum(array) -> bool:
    """Whether the inner chunks of a sharded array end in a crc32c (stores created before do not)."""
    from zarr.codecs import Crc32cCodec

    inner = getattr(array.metadata.codecs[0], "codecs", ())
    return bool(inner) and isinstance(inner[-1], Crc32cCodec)


def create_array(
    storage: Storage,
    key: str,
    n_cpgs: int,
    layout: Layout,
    dtype,
    fill,
    compressors: list,
    *,
    chunks: tuple[int, int] | None = None,
    shards: tuple[int, int] | None = None,
) -> None:
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
