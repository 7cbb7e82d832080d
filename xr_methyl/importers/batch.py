"""Import one batch: read the files (in parallel, streaming), write data files, commit each table once.

The steps, each finished before the next starts:

1. check the inputs: files, sample sheet, sample ids, and that no sample
   belongs to another batch already (nothing read yet);
2. read every file, on ``workers`` threads, into Iceberg data files of
   ``beta`` and ``coverage`` (a bad line stops all of them, deletes what
   they wrote and raises naming file, line and column);
3. commit ``beta``, ``coverage`` and ``sample_batch_map``, each in one commit
   that replaces the batch (see :mod:`xr_methyl.importers.writer`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.errors import DataError, WarehouseError
from xr_methyl.importers.base import Format, ImportFormatError, RowError
from xr_methyl.importers.calls import CallCounts, CallStream, ReferenceSites
from xr_methyl.importers.samplesheet import SampleSheet, assign_samples, read_sample_sheet
from xr_methyl.importers.text import located_row_error
from xr_methyl.importers.writer import (
    DataFileSink,
    batch_files,
    commit_failed,
    ensure_tables,
    iceberg_table,
    read_columns,
    replace_files,
    rewrite_table,
)
from xr_methyl.warehouse import IcebergWarehouse, check_ids, open_warehouse

log = logging.getLogger(__name__)

#: Rows a file's reader buffers before writing them out as data files.
ROWS_PER_WRITE = 1_000_000


class ImportInputWarning(UserWarning):
    """An import went through, but something in its input deserves a look (sites off the axis, an empty file)."""


@dataclass
class FileReport:
    """What one input file gave."""

    path: str
    samples: list[str]
    counts: CallCounts
    seconds: float


@dataclass
class ImportReport:
    """What :func:`import_batch` did.

    ``snapshots`` maps each table to the id of the snapshot the import
    committed (absent when it had nothing to change).
    """

    format: str
    batch_id: str
    samples: list[str]
    files: list[FileReport] = field(default_factory=list)
    snapshots: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def counts(self) -> CallCounts:
        total = CallCounts()
        for f in self.files:
            total.add(f.counts)
        return total

    def summary(self) -> str:
        c = self.counts
        lines = [
            f"batch {self.batch_id}: {len(self.samples)} sample(s) from {len(self.files)} {self.format} file(s) "
            f"in {self.seconds:.1f} s; {c.records:,} records -> {c.sites:,} rows"
        ]
        dropped = {
            "not on a CpG": c.not_cpg,
            "other strand": c.other_strand,
            "zero coverage": c.zero_coverage,
            "missing value": c.missing,
            "probe without locus": c.unplaced,
        }
        shown = ", ".join(f"{n:,} {what}" for what, n in dropped.items() if n)
        if shown:
            lines.append(f"  not imported: {shown}")
        if c.off_axis:
            lines.append(f"  {c.off_axis:,} rows are not on the warehouse's CpG axis")
        lines.append("  committed: " + (", ".join(f"{t} snapshot {s}" for t, s in self.snapshots.items()) or "nothing"))
        return "\n".join(lines)


def as_iceberg(warehouse: IcebergWarehouse | str | os.PathLike) -> IcebergWarehouse:
    """The warehouse to write into; only Iceberg warehouses (embedded or a pyiceberg catalog) can be written."""
    wh = open_warehouse(warehouse)
    if not isinstance(wh, IcebergWarehouse):
        raise WarehouseError(
            f"{type(wh).__name__} is read-only here: imports write Iceberg tables through their catalog; give "
            "the catalog of the same tables (a local path, or glue://<database>?region=... for Glue)"
        )
    return wh


def load_reference(wh: IcebergWarehouse) -> ReferenceSites | None:
    """The warehouse's ``cpgs`` table as :class:`ReferenceSites` (None when it is empty)."""
    if iceberg_table(wh, "cpgs").current_snapshot() is None:
        return None
    sites = ReferenceSites.from_batches(read_columns(wh, "cpgs", ["chrom", "pos"], dictionary_columns=["chrom"]))
    return sites if len(sites) else None


class _SampleWriter:
    """Buffers one reader's rows and writes them as data files of beta (and coverage) every few million rows."""

    def __init__(self, batch_id: str, beta: DataFileSink, coverage: DataFileSink | None) -> None:
        self.batch_id = batch_id
        self.beta, self.coverage = beta, coverage
        self.parts: list[pa.Table] = []
        self.rows = 0

    def add(self, rows: pa.Table) -> None:
        if rows.num_rows:
            self.parts.append(rows)
            self.rows += rows.num_rows
            if self.rows >= ROWS_PER_WRITE:
                self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        rows = pa.concat_tables(self.parts)
        self.parts, self.rows = [], 0
        batch = pa.repeat(pa.scalar(self.batch_id), rows.num_rows)
        keys = {"batch_id": batch, "sample_id": rows["sample_id"], "cpg_id": rows["cpg_id"]}
        self.beta.write(pa.table({**keys, "beta": rows["beta"]}))
        if self.coverage is not None:
            self.coverage.write(pa.table({**keys, "coverage": rows["coverage"]}))


def _read_file(
    fmt: Format,
    path: Path,
    sample_id: str | None,
    writer: _SampleWriter,
    *,
    strands: str,
    reference: ReferenceSites | None,
    stop: threading.Event,
) -> FileReport:
    started = time.perf_counter()
    counts = CallCounts()
    try:
        if fmt.multi_sample:
            samples = fmt.samples(path)
            for rows in fmt.sites(path, counts, reference):
                if stop.is_set():
                    break
                writer.add(rows)
        else:
            samples = [sample_id]
            stream = CallStream(
                strands=strands, reference=reference, position_column=fmt.position_column, counts=counts
            )
            sample = pa.scalar(sample_id)
            for calls in fmt.read(path):
                if stop.is_set():
                    break
                rows = stream.push(calls)
                writer.add(rows.append_column("sample_id", pa.repeat(sample, rows.num_rows)))
            rows = stream.finish()
            writer.add(rows.append_column("sample_id", pa.repeat(sample, rows.num_rows)))
        writer.flush()
    except RowError as err:
        raise located_row_error(path, fmt.layout(path), err) from None
    return FileReport(str(path), samples, counts, time.perf_counter() - started)


def _check_membership(current: pa.Table, batch_id: str, samples: Sequence[str]) -> None:
    """Refuse samples that ``sample_batch_map`` already puts in another batch."""
    if current.num_rows == 0:
        return
    elsewhere = current.filter(
        pc.and_(
            pc.is_in(current["sample_id"], value_set=pa.array(list(samples))),
            pc.not_equal(current["batch_id"], batch_id),
        )
    )
    if elsewhere.num_rows:
        first = elsewhere.slice(0, 1).to_pylist()[0]
        raise DataError(
            f"{elsewhere.num_rows} sample(s) already belong to another batch, e.g. {first['sample_id']!r} "
            f"in {first['batch_id']!r}; a sample belongs to one batch: re-import that batch without it, "
            "or use another sample id"
        )


def _commit_samples(
    wh: IcebergWarehouse, batch_id: str, samples: list[str], sheet: SampleSheet | None, summary: dict[str, Any]
) -> int:
    """Replace the batch's rows of ``sample_batch_map`` (a small table: rewritten whole, in one commit)."""
    table = iceberg_table(wh, "sample_batch_map")
    current = table.scan().to_arrow()
    current = current.cast(
        pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in current.schema])
    )
    _check_membership(current, batch_id, samples)
    new = pa.table({"sample_id": pa.array(samples, pa.string())})
    if sheet is not None:
        new = sheet.rows.take(pc.index_in(new["sample_id"], value_set=sheet.rows["sample_id"]))
    new = new.append_column("batch_id", pa.repeat(pa.scalar(batch_id), new.num_rows))
    existing = {f.name: f for f in current.schema}
    for f in new.schema:
        if f.name in existing and f.name not in ("sample_id", "batch_id"):
            try:
                column = new[f.name].cast(existing[f.name].type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise DataError(
                    f"sample sheet column {f.name!r} ({f.type}) does not fit sample_batch_map's "
                    f"{existing[f.name].type} column: {err}"
                ) from None
            new = new.set_column(new.schema.get_field_index(f.name), f.name, column)
    kept = current.filter(pc.not_equal(current["batch_id"], batch_id))
    schema = pa.unify_schemas([kept.schema, new.schema])
    rows = pa.concat_tables([_with_columns(kept, schema), _with_columns(new, schema)])
    return rewrite_table(table, rows, {**summary, "what": f"the import of batch {batch_id!r}"})


def _with_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with every column of ``schema`` (nulls where it has none), in its order."""
    return pa.table(
        {
            f.name: table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema
        }
    )


def import_batch(
    warehouse: IcebergWarehouse | str | os.PathLike,
    fmt: Format,
    files: Sequence[str | os.PathLike] = (),
    *,
    batch_id: str,
    sample_sheet: str | os.PathLike | None = None,
    strands: str = "merge",
    workers: int | None = None,
) -> ImportReport:
    """Import files of one format as batch ``batch_id`` of an Iceberg warehouse, replacing the batch if present.

    Parameters
    ----------
    warehouse
        A :class:`~xr_methyl.LocalWarehouse` or :class:`~xr_methyl.IcebergWarehouse`, or its path or URI. Missing
        tables are created (with the sample sheet's metadata columns).
    fmt
        The format (an object of :mod:`xr_methyl.importers`; see :func:`xr_methyl.importers.get_format`).
    files
        Input files (gzip, bzip2 or zstd compressed or not).  May be empty when the sample sheet has a
        ``file`` column.
    batch_id
        The batch; its rows in ``beta``, ``coverage`` and ``sample_batch_map`` are replaced.
    sample_sheet
        CSV with ``sample_id`` [, ``file``, ``batch_id``] and metadata columns (see
        :mod:`xr_methyl.importers.samplesheet`).
    strands
        ``"merge"`` (sum both strands of a CpG), ``"+"`` or ``"-"`` (keep one strand's records).
    workers
        Files read at once (threads); default: the number of CPUs, at most the number of files.

    Returns
    -------
    ImportReport
        Per file: records read, rows written, what was left out and why; the snapshots committed.

    Raises
    ------
    ImportFormatError
        A line the format does not allow: names the file, line and column; nothing of the batch is committed.
    DataError
        A sample already in another batch, two files of one sample, a bad sample id.
    """
    started = time.perf_counter()
    (batch_id,) = check_ids([batch_id], what="batch id")
    wh = as_iceberg(warehouse)
    sheet = read_sample_sheet(sample_sheet, batch_id=batch_id) if sample_sheet is not None else None
    if fmt.multi_sample:
        paths = [Path(f) for f in files] or (
            [] if sheet is None or sheet.files is None else list(dict.fromkeys(sheet.files.values()))
        )
        if not paths:
            raise ValueError("no input files given")
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"input file not found: {str(p)!r}")
        jobs = [(p, None) for p in paths]
        samples = [s for p in paths for s in check_ids(fmt.samples(p))]
        if len(set(samples)) != len(samples):
            repeated = sorted({s for s in samples if samples.count(s) > 1})
            raise DataError(f"sample(s) {repeated[:10]} appear in more than one column or file")
        if sheet is not None:
            unknown = sorted(set(samples) - set(sheet.sample_ids))
            if unknown:
                raise ImportFormatError(sheet.path, None, None, f"no row for sample(s) {unknown[:10]} of the matrix")
    else:
        jobs = assign_samples(files, fmt, sheet)
        samples = [s for _, s in jobs]

    ensure_tables(wh, sheet.metadata_schema if sheet is not None else None)
    current = iceberg_table(wh, "sample_batch_map").scan(selected_fields=("sample_id", "batch_id")).to_arrow()
    _check_membership(
        current.cast(pa.schema([("sample_id", pa.string()), ("batch_id", pa.string())])), batch_id, samples
    )
    reference = load_reference(wh)
    beta = DataFileSink(iceberg_table(wh, "beta"), batch_id=batch_id)
    coverage = None if fmt.multi_sample else DataFileSink(iceberg_table(wh, "coverage"), batch_id=batch_id)
    report = ImportReport(format=fmt.name, batch_id=batch_id, samples=samples)
    stop = threading.Event()
    try:
        n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="xr-methyl-import") as pool:
            futures = [
                pool.submit(
                    _read_file,
                    fmt,
                    p,
                    s,
                    _SampleWriter(batch_id, beta, coverage),
                    strands=strands,
                    reference=reference,
                    stop=stop,
                )
                for p, s in jobs
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                stop.set()
                for f in futures:
                    f.cancel()
            wait(futures)
            failed = next((f.exception() for f in futures if not f.cancelled() and f.exception() is not None), None)
            if failed is not None:
                raise failed
            report.files = [f.result() for f in futures]
        summary = {
            "format": fmt.name,
            "batch_id": batch_id,
            "samples": len(samples),
            "files": [Path(p).name for p, _ in jobs],
        }
        for name, sink in (
            ("beta", beta),
            ("coverage", coverage or DataFileSink(iceberg_table(wh, "coverage"), batch_id=batch_id)),
        ):
            table = sink.table
            try:
                snapshot = replace_files(table, batch_files(table, batch_id), sink.files, summary)
            except Exception as err:
                if isinstance(err, (WarehouseError, DataError)):
                    raise
                raise commit_failed(err, table, f"the import of batch {batch_id!r}") from err
            sink.files = []  # committed: no longer ours to delete
            if snapshot is not None:
                report.snapshots[name] = snapshot
        snapshot = _commit_samples(wh, batch_id, samples, sheet, summary)
        if snapshot is not None:
            report.snapshots["sample_batch_map"] = snapshot
    except ImportFormatError as err:
        err.batch = batch_id
        raise
    finally:
        beta.discard()
        if coverage is not None:
            coverage.discard()
    report.seconds = time.perf_counter() - started
    for f in report.files:
        if f.counts.sites == 0:
            warnings.warn(
                f"{f.path}: no CpG rows imported ({f.counts.records:,} records read)", ImportInputWarning, stacklevel=2
            )
        elif f.counts.off_axis:
            warnings.warn(
                f"{f.path}: {f.counts.off_axis:,} of {f.counts.sites:,} rows are not on the warehouse's "
                "CpG axis: another genome build, or another chromosome naming or coordinate convention?",
                ImportInputWarning,
                stacklevel=2,
            )
    log.info("%s", report.summary())
    return report
