"""The loader: make a store hold the samples asked for, paying the warehouse once.

``Loader.load(ids)``:

1. diff the ids against the store's committed samples;
2. resolve the missing ones to their batches (unknown ids fail here, before
   anything is written);
3. export each value table once for all missing batches (the embedded
   warehouse's own Parquet files are read in place, without a staged copy);
4. per batch: reserve its rows, locate and scatter the long rows into wide
   blocks and write them in whole shards, commit; one batch after another, or
   on dask workers in parallel with commits in order (``client=``);
5. return the requested samples, in the requested order, as a lazy Dataset.

Memory is bounded by ``max_memory``, not by the batch size or the CpG count:
a batch whose wide blocks exceed it is filled in units of whole shards (a few
sample blocks, or one sample block by a few CpG shards), each unit one pass
over the batch's files (rows outside the unit are dropped before their ids are
looked up, so only the Parquet decoding is repeated; splitting the CpG axis
repeats the look-ups of the batch's ids).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from xr_methyl.ingest._malloc import reuse_freed_memory
from xr_methyl.errors import (
    DataError,
    MethylError,
    StoreWriteError,
    UnknownCpgError,
    UnknownCpgWarning,
    UnknownSamplesError,
    WarehouseError,
)
from xr_methyl.redact import redact
from xr_methyl.ingest.scatter import WideBlock
from xr_methyl.store import MethylStore, RowRange
from xr_methyl.warehouse import VALUE_TABLES, Warehouse, check_ids, open_warehouse
from xr_methyl.warehouse.base import PROVENANCE_KEY

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What one ``load`` did, for logs, the CLI and tests."""

    requested: int = 0
    cached: int = 0
    ingested: list[str] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    long_rows: int = 0
    dropped_unknown_cpg_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def warehouse_used(self) -> bool:
        return bool(self.batches)


class Loader:
    """Fills a :class:`MethylStore` from a :class:`Warehouse`.

    Parameters
    ----------
    store
        The store to fill (or a path to open).
    warehouse
        Where missing samples come from; defaults to the one recorded in the
        store's manifest.  Only needed when something is missing.
    on_unknown_cpg
        What to do with warehouse rows whose cpg_id is not on the store's axis:
        ``"warn"`` (drop them with a warning giving the count), ``"error"`` or
        ``"ignore"``.
    max_memory
        Bytes the wide blocks of one batch may take at once (default 1 GiB);
        larger batches are filled in units of whole shards.  The hash table of
        the CpG axis (about 25 bytes per CpG) and about two Arrow record batches
        of a million long rows each (the Parquet files are read one row group
        after another, whatever the batch size) come on top.
    storage_options
        For a store given by an ``s3://`` location: endpoint, region, credentials.
    """

    def __init__(
        self,
        store: MethylStore | str,
        warehouse: Warehouse | str | None = None,
        *,
        on_unknown_cpg: Literal["warn", "error", "ignore"] = "warn",
        max_memory: int = 1 << 30,
        storage_options: dict | None = None,
    ) -> None:
        if on_unknown_cpg not in ("warn", "error", "ignore"):
            raise ValueError(f"on_unknown_cpg={on_unknown_cpg!r}: expected 'warn', 'error' or 'ignore'")
        if not isinstance(max_memory, int) or max_memory < 1:
            raise ValueError(f"max_memory={max_memory!r}: expected a positive number of bytes")
        self.max_memory = max_memory
        self.store = store if isinstance(store, MethylStore) else MethylStore.open(store, storage_options=storage_options)
        self._warehouse = warehouse
        self.on_unknown_cpg = on_unknown_cpg
        self.last_report = LoadReport()

    @property
    def warehouse(self) -> Warehouse:
        spec = self._warehouse if self._warehouse is not None else self.store.manifest.get("warehouse")
        if spec is None:
            raise DataError(
                f"the store {self.store.storage.uri} records no warehouse and none was given; "
                "pass warehouse= to ingest missing samples"
            )
        self._warehouse = open_warehouse(spec)
        return self._warehouse

    # -- the public step ------------------------------------------------------------------
    def load(self, sample_ids: Iterable[str], *, progress: bool = True, chunks=None):
        """Ensure the store holds ``sample_ids`` and return exactly those, in order.

        Returns a lazy ``xarray.Dataset`` with dims (sample, cpg) whose data
        variables are dask arrays (``chunks``: a dict by dimension; by default
        :meth:`default_chunks`, in the requested order: each task reads its
        samples' rows straight into place).  Repeated ids are repeated in the
        result, as ``.sel`` does.
        """
        from xr_methyl.dataset.backend import samples_dataset

        ids = check_ids(sample_ids)
        self.ingest(ids, progress=progress)
        committed = {s: i for i, s in enumerate(self.store.sample_ids)}
        positions = np.array([committed[s] for s in ids], dtype=np.int64)
        return samples_dataset(self.store, positions, dict(chunks) if chunks else self.default_chunks(len(ids)))

    def default_chunks(self, n_samples: int | None = None) -> dict[str, int]:
        """About 128 MiB of float32 beta per chunk, one CpG shard wide, split evenly over ``n_samples``."""
        width = self.store.layout.cpg_shard
        per_chunk = max(1, (128 << 20) // (4 * width))
        if n_samples:
            per_chunk = -(-n_samples // -(-n_samples // per_chunk))  # the same number of chunks, evened out
        return {"sample": per_chunk, "cpg": width}

    def ingest(self, sample_ids: Sequence[str], *, progress: bool = True, client=None) -> LoadReport:
        """Ingest whichever of ``sample_ids`` the store lacks; return what was done.

        With a ``dask.distributed.Client``, batches are located, scattered and
        written by its workers in parallel (each on its own whole shards) and
        committed here, in order, under the store's write lock.
        """
        ids = check_ids(sample_ids)
        report = LoadReport(requested=len(ids))
        self.last_report = report
        committed = set(self.store.refresh().sample_ids)
        missing = list(dict.fromkeys(s for s in ids if s not in committed))
        report.cached = len(set(ids)) - len(missing)
        if not missing:
            log.debug("all %d requested sample(s) are cached", len(ids))
            return report

        self._check_writable(len(missing))
        t0 = time.perf_counter()
        wh = self.warehouse
        groups, metadata, resolve_queries = self._resolve(wh, missing)
        report.seconds["resolve"] = time.perf_counter() - t0
        log.info("ingesting %d sample(s) in %d batch(es)", len(missing), len(groups))

        bar = _progress(progress, total=2 + len(groups), desc="xr_methyl ensure")
        exports = {}
        try:
            t0 = time.perf_counter()
            for table in VALUE_TABLES:
                bar.set_postfix_str(f"export {table}")
                log.debug("exporting %s of %d batch(es)", table, len(groups))
                exports[table] = self._export(wh, table, groups)
                bar.update(1)
            report.seconds["export"] = time.perf_counter() - t0
            jobs = {b: {t: _Source.of(exports[t], b) for t in VALUE_TABLES} for b in groups}
            options = {"max_memory": self.max_memory, "on_unknown_cpg": self.on_unknown_cpg,
                       "coverage_dtype": str(self.store.coverage_dtype)}
            if client is None:
                for batch_id, members in groups.items():
                    bar.set_postfix_str(f"batch {batch_id}")
                    with self.store.appending([(batch_id, members)], metadata=metadata) as pending:
                        (rows,) = pending.rows
                        filled = None
                        if rows.sample_ids:
                            filled = fill_rows(rows, self.store.cpg_axis, jobs[batch_id], **options)
                            self._account(report, filled)
                        pending.commit(rows, provenance=_provenance(wh, batch_id, resolve_queries, exports),
                                       shards=filled["shards"] if filled else None)
                    self._done(report, rows)
                    bar.update(1)
            else:
                with self.store.appending(list(groups.items()), metadata=metadata) as pending:
                    axis = self.store.cpg_axis
                    futures = [client.submit(fill_rows, rows, axis, jobs[rows.batch_id], **options, pure=False)
                               for rows in pending.rows if rows.sample_ids]
                    for rows, future in zip([r for r in pending.rows if r.sample_ids], futures):
                        bar.set_postfix_str(f"batch {rows.batch_id}")
                        filled = future.result()
                        self._account(report, filled)
                        pending.commit(rows, provenance=_provenance(wh, rows.batch_id, resolve_queries, exports),
                                       shards=filled["shards"])
                        self._done(report, rows)
                        bar.update(1)
        finally:
            for export in exports.values():
                export.close()
            bar.close()
        if report.dropped_unknown_cpg_rows and self.on_unknown_cpg == "warn":
            warnings.warn(
                f"dropped {report.dropped_unknown_cpg_rows} warehouse row(s) whose cpg_id is not on the store's "
                "CpG axis (pass on_unknown_cpg='error' to refuse them, or 'ignore' to drop them silently)",
                UnknownCpgWarning,
                stacklevel=3,
            )
        return report

    @staticmethod
    def _account(report: LoadReport, filled: dict) -> None:
        report.long_rows += filled["long_rows"]
        report.dropped_unknown_cpg_rows += filled["dropped"]
        for stage, seconds in filled["seconds"].items():
            report.seconds[stage] = report.seconds.get(stage, 0.0) + seconds

    @staticmethod
    def _done(report: LoadReport, rows: RowRange) -> None:
        report.ingested.extend(rows.sample_ids)
        report.batches.append(rows.batch_id)

    # -- steps ----------------------------------------------------------------------------
    def _check_writable(self, n_missing: int) -> None:
        """Fail before paying the warehouse if the store cannot take the new samples."""
        try:
            self.store.storage.check_writable()
        except OSError as err:
            from xr_methyl.store import _write_failure

            raise StoreWriteError(
                _write_failure(self.store.storage.uri, f"preparing to ingest {n_missing} missing sample(s)", err,
                               len(self.store.sample_ids)),
                errno=err.errno,
            ) from err

    @staticmethod
    def _export(wh: Warehouse, table: str, groups: dict[str, list[str]]):
        """One export, with any failure of the warehouse's own turned into a WarehouseError."""
        try:
            # A warehouse whose files can be read in place needs no staged copy.
            planned = getattr(wh, "plan_export", None)
            return (planned(table, groups) if planned else None) or wh.export(table, groups)
        except MethylError:
            raise
        except Exception as err:
            n = sum(map(len, groups.values()))
            # The driver's message may quote a signed URL or a connection string.
            raise WarehouseError(redact(
                f"exporting {table} of {n} sample(s) in {len(groups)} batch(es) from {wh.describe()} failed: "
                f"{type(err).__name__}: {err}. Nothing was written to the store; re-run once the warehouse works."
            )) from err

    def _resolve(self, wh: Warehouse, missing: list[str]):
        """Group missing samples by batch; fail on unknown ids before writing anything."""
        table = wh.resolve_samples(missing)
        # Warehouses that run billed queries list them in the schema metadata.
        raw = (table.schema.metadata or {}).get(PROVENANCE_KEY)
        queries = [{**q, "table": "sample_batch_map"} for q in json.loads(raw)] if raw else []
        found = table.column("sample_id").to_pylist()
        unknown = sorted(set(missing) - set(found))
        if unknown:
            raise UnknownSamplesError(unknown)
        records = {r["sample_id"]: r for r in table.to_pylist()}
        groups: dict[str, list[str]] = {}
        metadata: dict[str, dict] = {}
        for s in missing:  # request order within each batch
            record = dict(records[s])
            batch = record.pop("batch_id")
            record.pop("sample_id")
            groups.setdefault(batch, []).append(s)
            metadata[s] = {k: _json_safe(v) for k, v in record.items()}
        return groups, metadata, queries


@dataclass(frozen=True)
class _Source:
    """The files of one batch of one value table, as a worker needs them (picklable)."""

    table: str
    files: tuple[str, ...]
    filesystem: object
    value_column: str
    whole_batches: bool

    @classmethod
    def of(cls, export, batch_id: str) -> _Source:
        return cls(export.table, tuple(export.files.get(batch_id, [])), export.filesystem, export.value_column,
                   export.whole_batches)

    def dataset(self):
        import pyarrow.dataset as pads

        return pads.dataset(list(self.files), format="parquet", filesystem=self.filesystem)


# One locator (hash table over the axis) per process and axis: dask workers build it once.
_LOCATORS: dict[tuple[str | None, int], object] = {}


def _locator(axis):
    from xr_methyl.ingest.locate import Locator

    key = (axis.source, len(axis))
    if key not in _LOCATORS or key[0] is None:
        _LOCATORS.clear()
        _LOCATORS[key] = Locator(axis)
    return _LOCATORS[key]


def plan_units(n_rows: int, n_cpgs: int, *, block: int, cpg_shard: int, bytes_per_cell: int,
               max_memory: int) -> list[tuple[slice, slice]]:
    """Split a batch's (rows x CpGs) into units of whole shards whose wide blocks fit ``max_memory``.

    The whole batch when it fits; else as many sample blocks as fit, all CpGs
    wide; else one sample block by as many CpG shards as fit (at least one).
    """
    if n_rows * n_cpgs * bytes_per_cell <= max_memory:
        return [(slice(0, n_rows), slice(0, n_cpgs))]
    per_block_row = block * n_cpgs * bytes_per_cell
    if per_block_row <= max_memory:
        step = max_memory // per_block_row * block
        return [(slice(r, min(r + step, n_rows)), slice(0, n_cpgs)) for r in range(0, n_rows, step)]
    width = max(1, max_memory // (block * cpg_shard * bytes_per_cell)) * cpg_shard
    return [(slice(r, min(r + block, n_rows)), slice(c, min(c + width, n_cpgs)))
            for r in range(0, n_rows, block) for c in range(0, n_cpgs, width)]


def fill_rows(rows: RowRange, axis, sources: dict[str, _Source], *, max_memory: int, on_unknown_cpg: str,
              coverage_dtype: str) -> dict:
    """Locate, scatter and write one reserved batch, unit by unit; runs in any process.

    Returns ``{"long_rows", "dropped", "seconds": {"scatter", "write"}, "shards"}`` (``shards``: the
    objects written, for the commit's block records).
    """
    with reuse_freed_memory():
        return _fill_units(rows, _locator(axis), sources, max_memory=max_memory, on_unknown_cpg=on_unknown_cpg,
                           coverage_dtype=coverage_dtype)


def _fill_units(rows: RowRange, locator, sources: dict[str, _Source], *, max_memory: int, on_unknown_cpg: str,
                coverage_dtype: str) -> dict:
    members = list(rows.sample_ids)
    dtypes = {"beta": np.dtype("float32"), "coverage": np.dtype(coverage_dtype)}
    bytes_per_cell = sum(d.itemsize + 1 for d in dtypes.values())  # values + the repeat check
    units = plan_units(len(members), rows.n_cpgs, block=rows.block, cpg_shard=rows.cpg_shard,
                       bytes_per_cell=bytes_per_cell, max_memory=max_memory)
    out = {"long_rows": 0, "dropped": 0, "seconds": {"scatter": 0.0, "write": 0.0}, "shards": {}}
    for row_range, col_range in units:
        t0 = time.perf_counter()
        blocks = {}
        for table, source in sources.items():
            blocks[table] = _scatter_unit(locator, source, rows.batch_id, members, row_range, col_range,
                                          dtypes[table], on_unknown_cpg, out)
        out["seconds"]["scatter"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        out["shards"].update(rows.write(row_range.start, col_range.start, blocks["beta"], blocks["coverage"]))
        out["seconds"]["write"] += time.perf_counter() - t0
        del blocks
    return out


def _scatter_unit(locator, source: _Source, batch_id: str, members: list[str], row_range: slice, col_range: slice,
                  dtype: np.dtype, on_unknown_cpg: str, out: dict) -> np.ndarray:
    """One unit's wide block of one table, from one pass over the batch's files."""
    table = source.table
    n_cols = col_range.stop - col_range.start
    block = WideBlock(table, members[row_range], n_cols, dtype)
    dataset = source.dataset()
    first_cols = col_range.start == 0  # count unknown ids once per row range
    seen = dropped_here = 0
    for located in locator.locate(dataset, members, value_column=source.value_column,
                                  other_samples="drop" if source.whole_batches else "error", row_range=row_range):
        cols = located.cols
        known = cols >= 0
        dropped = int(len(known) - np.count_nonzero(known))
        seen += len(known)
        dropped_here += dropped
        if dropped and first_cols:
            if on_unknown_cpg == "error":
                raise UnknownCpgError(
                    f"{table} of batch {batch_id!r}: {dropped} warehouse row(s) have a cpg_id that is not on "
                    "the store's CpG axis; nothing of this batch was written"
                )
            out["dropped"] += dropped
        inside = known & (cols >= col_range.start) & (cols < col_range.stop)
        rows, values = located.rows, located.values
        if not inside.all():
            rows, cols, values = rows[inside], cols[inside], values[inside]
        block.add(rows - row_range.start, cols - col_range.start, values)
        out["long_rows"] += len(rows)
    if seen and dropped_here == seen and on_unknown_cpg != "ignore":
        # Not one row on the axis: a store made for another CpG axis (or another warehouse).
        raise UnknownCpgError(
            f"{table} of batch {batch_id!r}: none of its {seen} warehouse row(s) has a cpg_id on the store's "
            f"CpG axis ({len(locator.axis)} CpGs, e.g. {locator.axis.ids[0].decode()!r}); the store was "
            "created for another CpG axis. Create a store from this warehouse's cpgs table, or pass "
            "on_unknown_cpg='ignore' to store these samples empty. Nothing of this batch was written."
        )
    try:
        return block.finish()
    except DataError as err:
        examples = locator.duplicates(dataset)
        if not examples:
            raise
        shown = ", ".join(f"({s!r}, {c!r}) x{n}" for s, c, n in examples)
        raise DataError(f"{table} of batch {batch_id!r}: duplicate rows for (sample, cpg) pairs: {shown}; "
                        "each sample has at most one row per CpG") from err


def _provenance(wh: Warehouse, batch_id: str, resolve_queries: list[dict], exports: dict) -> dict:
    """What producing one batch cost: the queries behind it (shared with the other
    batches of the same ingest, so totals count each query id once) and how each
    value table was exported."""
    queries = list(resolve_queries)
    tables = {}
    for table, export in exports.items():
        details = dict(export.provenance)
        for q in details.pop("queries", []):
            if batch_id in q.get("batches", [batch_id]):
                queries.append({**{k: v for k, v in q.items() if k != "batches"}, "table": table})
        tables[table] = {k: _json_safe(v) for k, v in details.items() if k not in ("bytes_scanned", "dollars")}
    return {
        "warehouse": redact(wh.describe()),  # describe() holds no secret; redact anyway, as the manifest does
        "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "queries": queries,
        "bytes_scanned": sum(int(q.get("bytes_scanned") or 0) for q in queries),
        "dollars": sum(float(q.get("dollars") or 0.0) for q in queries),
        "exports": tables,
    }


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.generic,)):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class _NoProgress:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def _progress(enabled: bool, *, total: int, desc: str):
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step")
