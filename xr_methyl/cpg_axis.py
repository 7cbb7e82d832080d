"""The CpG axis of a store: ids (and their genomic loci), fixed at creation.

Ids are kept as a fixed-width byte array (``cpg_ids.npy``), which is compact,
loads without pickle and hashes in one pass; the loci (chromosome, position)
sit beside it in ``cpg_loci.npz`` when known.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.errors import CorruptStoreError, DataError


@dataclass(frozen=True, eq=False)
class CpgAxis:
    """CpG ids in store column order, with optional loci.

    ``ids`` is a 1-D ``S`` (ASCII bytes) array; ``chrom_names[chrom_codes[i]]``
    and ``pos[i]`` give the locus of column ``i`` when ``has_loci``.
    """

    ids: np.ndarray
    chrom_names: np.ndarray | None = None
    chrom_codes: np.ndarray | None = None
    pos: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_loci(self) -> bool:
        return self.pos is not None

    @property
    def sha256(self) -> str:
        """Hash of the ids in order; recorded in the manifest and checked at every open."""
        digest = hashlib.sha256(self.ids.dtype.str.encode() + b"\0")
        digest.update(np.ascontiguousarray(self.ids).data)
        return digest.hexdigest()

    def labels(self) -> np.ndarray:
        """The ids as a unicode array, for xarray coordinates."""
        return self.ids.astype(f"U{self.ids.dtype.itemsize}")

    def chrom(self) -> np.ndarray:
        assert self.chrom_names is not None and self.chrom_codes is not None
        return self.chrom_names[self.chrom_codes]

    def to_arrow(self) -> pa.Array:
        """The ids as an Arrow string array (for joins)."""
        ids = pa.array(self.ids, type=pa.binary())
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        return ids.cast(pa.string())

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_ids(cls, ids) -> CpgAxis:
        """An axis without loci from a sequence of id strings."""
        arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), type=pa.string())
        return cls(ids=_to_fixed_bytes(arr))

    @classmethod
    def from_table(cls, table: pa.Table) -> CpgAxis:
        """An axis with loci from a table of ``cpg_id``, ``chrom``, ``pos`` in axis order."""
        for column in ("cpg_id", "chrom", "pos"):
            if column not in table.column_names:
                raise DataError(f"CpG table lacks column {column!r}; expected cpg_id, chrom, pos")
        chrom = table.column("chrom").combine_chunks()
        if chrom.null_count:
            raise DataError(f"{chrom.null_count} CpG(s) have no chromosome; every CpG needs chrom and pos")
        encoded = pc.dictionary_encode(chrom.cast(pa.string()))
        names = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
        pos = table.column("pos")
        if pos.null_count:
            raise DataError(f"{pos.null_count} CpG(s) have no position; every CpG needs chrom and pos")
        return cls(
            ids=_to_fixed_bytes(table.column("cpg_id")),
            chrom_names=names,
            chrom_codes=codes,
            pos=pos.to_numpy().astype(np.int64),
        )

    # -- files ---------------------------------------------------------------------------
    def ids_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.save(buf, self.ids, allow_pickle=False)
        return buf.getvalue()

    def loci_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, chrom_names=self.chrom_names, chrom_codes=self.chrom_codes, pos=self.pos)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, ids: bytes, loci: bytes | None) -> CpgAxis:
        try:
            id_array = np.load(io.BytesIO(ids), allow_pickle=False)
            if loci is None:
                return cls(ids=id_array)
            with np.load(io.BytesIO(loci), allow_pickle=False) as z:
                return cls(ids=id_array, chrom_names=z["chrom_names"], chrom_codes=z["chrom_codes"], pos=z["pos"])
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise CorruptStoreError(f"cannot read the store's CpG axis files: {err}") from err


def _to_fixed_bytes(arr) -> np.ndarray:
    """Validate CpG ids and pack them into a fixed-width ASCII byte array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise DataError(f"CpG ids must be strings, got Arrow type {arr.type}")
    if len(arr) == 0:
        raise DataError("the CpG axis is empty; a store needs at least one CpG")
    if arr.null_count:
        raise DataError(f"{arr.null_count} CpG id(s) are null; every CpG needs an id")
    # ASCII without blanks or control characters keeps ids printable and lets the
    # axis live in a compact fixed-width byte array.
    ok = pc.match_substring_regex(arr, r"^[\x21-\x7e]+$")
    if not pc.all(ok).as_py():
        bad = arr.filter(pc.invert(ok))
        raise DataError(
            f"{len(bad)} CpG id(s) are not printable ASCII without spaces, e.g. {bad[0].as_py()!r}; "
            "rename them in the cpgs table"
        )
    packed = _pack_fixed_width(arr.cast(pa.large_string()))
    ordered = np.sort(packed)
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(repeated):
        dup = ordered[repeated[0]].decode()
        raise DataError(f"CpG id {dup!r} appears more than once; the CpG axis needs unique ids")
    return packed


def _pack_fixed_width(arr: pa.LargeStringArray) -> np.ndarray:
    """Copy Arrow strings into a NUL-padded ``S<width>`` array, column by column of
    characters, without creating a Python object per id."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    width = max(1, int(lengths.max()))
    packed = np.zeros((len(arr), width), dtype=np.uint8)
    for j in range(width):
        has = lengths > j
        packed[has, j] = data[starts[has] + j]
    return packed.view(f"S{width}").ravel()
