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

Memory is bounded by ``max_memory``, not by the batch size or the CpG count
(see :mod:`xr_methyl.ingest.fill`, which fills each batch in units of whole
shards).
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

from xr_methyl.errors import (
    MethylError,
    StoreWriteError,
    UnknownCpgWarning,
    UnknownSamplesError,
    WarehouseError,
)
from xr_methyl.ingest.fill import Source, fill_rows
from xr_methyl.redact import redact
from xr_methyl.store import MethylStore, RowRange
from xr_methyl.warehouse import VALUE_TABLES, Warehouse, check_ids, resolve
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
        self.store = (
            store if isinstance(store, MethylStore) else MethylStore.open(store, storage_options=storage_options)
        )
        self._warehouse = warehouse
        self.on_unknown_cpg = on_unknown_cpg
        self.last_report = LoadReport()

    @property
    def warehouse(self) -> Warehouse:
        """The warehouse given, else the one the store's manifest records (opened on first use)."""
        self._warehouse = resolve(self._warehouse, self.store)
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
            jobs = {b: {t: Source.of(exports[t], b) for t in VALUE_TABLES} for b in groups}
            options = {
                "max_memory": self.max_memory,
                "on_unknown_cpg": self.on_unknown_cpg,
                "coverage_dtype": str(self.store.coverage_dtype),
            }
            if client is None:
                for batch_id, members in groups.items():
                    bar.set_postfix_str(f"batch {batch_id}")
                    with self.store.appending([(batch_id, members)], metadata=metadata) as pending:
                        (rows,) = pending.rows
                        filled = None
                        if rows.sample_ids:
                            filled = fill_rows(rows, self.store.cpg_axis, jobs[batch_id], **options)
                            self._account(report, filled)
                        pending.commit(
                            rows,
                            provenance=_provenance(wh, batch_id, resolve_queries, exports),
                            shards=filled["shards"] if filled else None,
                        )
                    self._done(report, rows)
                    bar.update(1)
            else:
                with self.store.appending(list(groups.items()), metadata=metadata) as pending:
                    axis = self.store.cpg_axis
                    futures = [
                        client.submit(fill_rows, rows, axis, jobs[rows.batch_id], **options, pure=False)
                        for rows in pending.rows
                        if rows.sample_ids
                    ]
                    for rows, future in zip([r for r in pending.rows if r.sample_ids], futures):
                        bar.set_postfix_str(f"batch {rows.batch_id}")
                        filled = future.result()
                        self._account(report, filled)
                        pending.commit(
                            rows,
                            provenance=_provenance(wh, rows.batch_id, resolve_queries, exports),
                            shards=filled["shards"],
                        )
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
            from xr_methyl.store.commit import write_failure

            raise StoreWriteError(
                write_failure(
                    self.store.storage.uri,
                    f"preparing to ingest {n_missing} missing sample(s)",
                    err,
                    len(self.store.sample_ids),
                ),
                errno=err.errno,
            ) from err

    @staticmethod
    def _export(wh: Warehouse, table: str, groups: dict[str, list[str]]):
        """One export, with any failure of the warehouse's own turned into a WarehouseError."""
        try:
            # A warehouse whose files can be read in place needs no staged copy.
            return wh.plan_export(table, groups) or wh.export(table, groups)
        except MethylError:
            raise
        except Exception as err:
            n = sum(map(len, groups.values()))
            # The driver's message may quote a signed URL or a connection string.
            raise WarehouseError(
                redact(
                    f"exporting {table} of {n} sample(s) in {len(groups)} batch(es) from {wh.describe()} failed: "
                    f"{type(err).__name__}: {err}. Nothing was written to the store; re-run once the warehouse works."
                )
            ) from err

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
