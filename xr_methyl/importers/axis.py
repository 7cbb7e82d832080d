"""The reference CpG axis: the warehouse's ``cpgs`` table built from a genome, a probe manifest, or the imports.

Every id follows :mod:`xr_methyl.importers.ids` (``chrom:pos``, the 1-based C
of the CpG on the + strand), the convention the importers write, so a store
created from this table places every imported site on its axis.

* :func:`fasta_cpgs` streams every ``CG`` of a FASTA file (plain, gzip, bzip2
  or zstd; soft-masked lower case counts; a CpG split by a line break counts),
  one chromosome after the other, in a few blocks of memory.
* :func:`build_axis` writes such rows into ``cpgs``, replacing its content in
  one Iceberg commit; from a FASTA, from a probe manifest, or from the distinct
  ids already imported into ``beta`` (the union of all imported sites).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from xr_methyl.errors import DataError, WarehouseError
from xr_methyl.importers.array import read_manifest
from xr_methyl.importers.batch import ROWS_PER_WRITE, as_iceberg
from xr_methyl.importers.ids import ID_PATTERN, cpg_ids
from xr_methyl.importers.text import open_bytes
from xr_methyl.importers.writer import (
    DataFileSink,
    all_files,
    commit_failed,
    ensure_tables,
    iceberg_table,
    read_columns,
    replace_files,
)
from xr_methyl.warehouse import IcebergWarehouse

CPGS = pa.schema([("cpg_id", pa.string()), ("chrom", pa.string()), ("pos", pa.int64())])
_C, _G = ord("C"), ord("G")
_UPPER = 0xDF  # clears the lower-case bit of ASCII letters
_WHITESPACE = b"\r\n \t"


def _cpg_batch(chrom: str, pos: np.ndarray) -> pa.RecordBatch:
    chroms = pa.repeat(pa.scalar(chrom, pa.string()), len(pos))
    return pa.RecordBatch.from_arrays([cpg_ids(chroms, pos), chroms, pa.array(pos, pa.int64())], schema=CPGS)


def fasta_cpgs(path: str | os.PathLike, *, block_size: int = 16 << 20) -> Iterator[pa.RecordBatch]:
    """Every CpG of a FASTA file as record batches of (``cpg_id``, ``chrom``, ``pos``), in file order.

    ``chrom`` is the first word of each header line; ``pos`` is the 1-based
    position of the C.  Memory holds about two blocks of ``block_size`` bytes.
    """
    path = Path(path)
    chrom: str | None = None
    offset = 0  # bases of the current sequence before this block
    last = 0  # the previous base (upper case), to find a CG across blocks and lines
    rest = b""  # an incomplete last line, kept for the next block
    with open_bytes(path) as f:
        while True:
            block = f.read(block_size)
            data = rest + block
            if block:
                cut = data.rfind(b"\n") + 1
                if cut == 0 and not data.startswith(b">"):
                    cut = len(data)  # within one long sequence line: no need to wait for its end
                data, rest = data[:cut], data[cut:]
            else:
                rest = b""
            start = 0
            while start < len(data):
                header = data.find(b">", start) if data[start : start + 1] != b">" else start
                if header != start:
                    # sequence lines up to the next header (or the end of the data)
                    end = len(data) if header < 0 else header
                    seq = data[start:end].translate(None, _WHITESPACE)
                    if seq:
                        if chrom is None:
                            raise DataError(f"{path}: sequence before the first '>' header line; is this a FASTA file?")
                        bases = np.frombuffer(seq, dtype=np.uint8) & _UPPER
                        hits = np.flatnonzero((bases[:-1] == _C) & (bases[1:] == _G)) + offset + 1
                        if last == _C and bases[0] == _G:
                            hits = np.concatenate([[offset], hits])
                        offset += len(bases)
                        last = int(bases[-1])
                        if len(hits):
                            yield _cpg_batch(chrom, hits)
                    start = end
                    continue
                newline = data.find(b"\n", start)
                line = data[start + 1 : (len(data) if newline < 0 else newline)].decode("utf-8", "replace").split()
                if not line:
                    raise DataError(f"{path}: a '>' header line without a sequence name")
                chrom, offset, last = line[0], 0, 0
                start = len(data) if newline < 0 else newline + 1
            if not block:
                break
    if chrom is None:
        raise DataError(f"{path}: no '>' header line; is this a FASTA file?")


@dataclass
class AxisReport:
    """What :func:`build_axis` wrote into ``cpgs``."""

    source: str
    n_cpgs: int
    n_chroms: int
    snapshot: int | None
    seconds: float

    def summary(self) -> str:
        return (
            f"cpgs: {self.n_cpgs:,} CpGs on {self.n_chroms} sequence(s) from {self.source} in "
            f"{self.seconds:.1f} s (snapshot {self.snapshot})"
        )


def _imported_sites(wh: IcebergWarehouse) -> Iterator[pa.RecordBatch]:
    """The distinct CpG ids of ``beta``, parsed into (chrom, pos), sorted; DuckDB spills to disk if it must."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        con.register("src", read_columns(wh, "beta", ["cpg_id"]))
        con.execute("CREATE TEMP TABLE ids AS SELECT DISTINCT CAST(cpg_id AS VARCHAR) AS cpg_id FROM src")
        pattern = ID_PATTERN.pattern
        bad = con.execute("SELECT cpg_id FROM ids WHERE NOT regexp_full_match(cpg_id, ?) LIMIT 1", [pattern]).fetchone()
        if bad is not None:
            raise DataError(
                f"beta holds the CpG id {bad[0]!r}, which does not follow the convention "
                "'<chrom>:<1-based position>'; build the axis from a FASTA or a manifest instead"
            )
        literal = "'" + pattern.replace("'", "''") + "'"  # our own constant, not input
        reader = con.sql(
            f"SELECT cpg_id, regexp_extract(cpg_id, {literal}, 1) AS chrom, "
            f"CAST(regexp_extract(cpg_id, {literal}, 2) AS BIGINT) AS pos FROM ids ORDER BY chrom, pos"
        ).to_arrow_reader(1 << 20)
        for batch in reader:
            yield pa.RecordBatch.from_arrays([c.cast(f.type) for c, f in zip(batch.columns, CPGS)], schema=CPGS)
    finally:
        con.close()


def build_axis(
    warehouse: IcebergWarehouse | str | os.PathLike,
    *,
    fasta: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    chrom_prefix: str = "",
    from_imported: bool = False,
    replace: bool = False,
) -> AxisReport:
    """Fill the warehouse's ``cpgs`` table from one source, in one Iceberg commit.

    Parameters
    ----------
    warehouse
        An Iceberg warehouse (or its path or URI); missing tables are created.
    fasta
        Every CpG of this reference genome (see :func:`fasta_cpgs`).
    manifest
        Every placed probe of this array manifest (see :func:`xr_methyl.importers.read_manifest`);
        ``chrom_prefix`` as there.
    from_imported
        The distinct CpG ids already in ``beta`` (ids must follow the ``chrom:pos`` convention).
    replace
        Replace a ``cpgs`` table that already has rows (stores created from it keep their own axis).

    Returns
    -------
    AxisReport
    """
    sources = [s for s in (fasta is not None, manifest is not None, from_imported) if s]
    if len(sources) != 1:
        raise ValueError("give exactly one source of the axis: fasta=..., manifest=... or from_imported=True")
    started = time.perf_counter()
    wh = as_iceberg(warehouse)
    ensure_tables(wh)
    table = iceberg_table(wh, "cpgs")
    old = all_files(table)
    if old and not replace:
        raise WarehouseError(
            f"the cpgs table of {wh.describe()} already has rows; pass replace=True (--replace) to "
            "replace them (stores already created keep their own axis)"
        )
    if fasta is not None:
        source, batches = f"FASTA {Path(fasta).name}", fasta_cpgs(fasta)
    elif manifest is not None:
        sites = read_manifest(manifest, chrom_prefix=chrom_prefix).sites()
        source, batches = f"manifest {Path(manifest).name}", iter(sites.to_batches())
    else:
        source, batches = "the imported sites", _imported_sites(wh)
    sink = DataFileSink(table)
    n_cpgs, chroms, parts, buffered = 0, set(), [], 0
    try:
        for batch in batches:
            parts.append(batch)
            buffered += batch.num_rows
            n_cpgs += batch.num_rows
            if buffered >= ROWS_PER_WRITE:
                rows = pa.Table.from_batches(parts, schema=CPGS)
                chroms.update(rows["chrom"].unique().to_pylist())
                sink.write(rows)
                parts, buffered = [], 0
        if parts:
            rows = pa.Table.from_batches(parts, schema=CPGS)
            chroms.update(rows["chrom"].unique().to_pylist())
            sink.write(rows)
        try:
            snapshot = replace_files(table, old, sink.files, {"axis": source, "cpgs": n_cpgs})
        except Exception as err:
            raise commit_failed(err, table, "the axis build") from err
        sink.files = []
    finally:
        sink.discard()
    return AxisReport(
        source=source, n_cpgs=n_cpgs, n_chroms=len(chroms), snapshot=snapshot, seconds=time.perf_counter() - started
    )
