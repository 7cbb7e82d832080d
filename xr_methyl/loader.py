"""The loader: make a store hold the samples asked for, paying the warehouse once.

``Loader.load(ids)``:

1. diff the ids against the store's committed samples;
2. resolve the missing ones to their batches (unknown ids fail here, before
   anything is written);
3. export each value table once for all missing batches;
4. per batch: locate and scatter the long rows into wide blocks, append, commit;
5. return the requested samples, in the requested order, as a lazy Dataset.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

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
from xr_methyl.scatter import WideBlock
from xr_methyl.store import MethylStore
from xr_methyl.warehouse import VALUE_TABLES, Warehouse, check_ids, open_warehouse

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
    """

    def __init__(
        self,
        store: MethylStore | str,
        warehouse: Warehouse | str | None = None,
        *,
        on_unknown_cpg: Literal["warn", "error", "ignore"] = "warn",
    ) -> None:
        if on_unknown_cpg not in ("warn", "error", "ignore"):
            raise ValueError(f"on_unknown_cpg={on_unknown_cpg!r}: expected 'warn', 'error' or 'ignore'")
        self.store = store if isinstance(store, MethylStore) else MethylStore.open(store)
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
        variables are dask arrays (``chunks``: a dict by dimension, default
        about 64 MiB of beta per chunk, one CpG shard wide).  Repeated ids are
        repeated in the result, as ``.sel`` does.
        """
        from xr_methyl.backend import open_store_dataset

        ids = check_ids(sample_ids)
        self.ingest(ids, progress=progress)
        # Select on the lazy backend arrays first, so each dask task reads its
        # samples with one orthogonal zarr selection.
        subset = open_store_dataset(self.store).sel(sample=ids)
        chunks = dict(chunks) if chunks else self.default_chunks()
        return subset.assign({name: var.chunk(chunks) for name, var in subset.data_vars.items()})

    def default_chunks(self) -> dict[str, int]:
        """About 64 MiB of float32 beta per chunk, one CpG shard wide."""
        width = self.store.layout.cpg_shard
        return {"sample": max(1, (64 << 20) // (4 * width)), "cpg": width}

    def ingest(self, sample_ids: Sequence[str], *, progress: bool = True) -> LoadReport:
        """Ingest whichever of ``sample_ids`` the store lacks; return what was done."""
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
        groups, metadata = self._resolve(wh, missing)
        report.seconds["resolve"] = time.perf_counter() - t0
        log.info("ingesting %d sample(s) in %d batch(es)", len(missing), len(groups))

        from xr_methyl.locate import Locator

        bar = _progress(progress, total=2 + len(groups), desc="xr_methyl ensure")
        locator = Locator(self.store.cpg_axis)
        exports = {}
        try:
            t0 = time.perf_counter()
            for table in VALUE_TABLES:
                bar.set_postfix_str(f"export {table}")
                log.debug("exporting %s of %d batch(es)", table, len(groups))
                exports[table] = self._export(wh, table, groups)
                bar.update(1)
            report.seconds["export"] = time.perf_counter() - t0
            t_scatter = t_write = 0.0
            for batch_id, members in groups.items():
                bar.set_postfix_str(f"batch {batch_id}: scatter")
                log.debug("batch %s: scattering %d sample(s)", batch_id, len(members))
                t0 = time.perf_counter()
                blocks = {table: self._scatter(locator, exports[table], table, batch_id, members, report)
                          for table in VALUE_TABLES}
                t_scatter += time.perf_counter() - t0
                bar.set_postfix_str(f"batch {batch_id}: write")
                t0 = time.perf_counter()
                added = self.store.append(batch_id, members, blocks["beta"], blocks["coverage"],
                                          metadata={s: metadata[s] for s in members})
                t_write += time.perf_counter() - t0
                report.ingested.extend(added)
                report.batches.append(batch_id)
                bar.update(1)
            report.seconds["scatter"] = t_scatter
            report.seconds["write"] = t_write
        finally:
            for export in exports.values():
                export.close()
            locator.close()
            bar.close()
        if report.dropped_unknown_cpg_rows and self.on_unknown_cpg == "warn":
            warnings.warn(
                f"dropped {report.dropped_unknown_cpg_rows} warehouse row(s) whose cpg_id is not on the store's "
                "CpG axis (pass on_unknown_cpg='error' to refuse them, or 'ignore' to drop them silently)",
                UnknownCpgWarning,
                stacklevel=3,
            )
        return report

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
            return wh.export(table, groups)
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
        return groups, metadata

    def _scatter(self, locator, export, table: str, batch_id: str, members: list[str], report: LoadReport):
        dtype = "float32" if table == "beta" else self.store.coverage_dtype
        block = WideBlock(table, members, self.store.n_cpgs, dtype)
        dataset = export.dataset(batch_id)
        seen = dropped_here = 0
        for located in locator.locate(dataset, members):
            known = located.cols >= 0
            dropped = int(len(known) - np.count_nonzero(known))
            seen += len(known)
            dropped_here += dropped
            if dropped:
                if self.on_unknown_cpg == "error":
                    raise UnknownCpgError(
                        f"{table} of batch {batch_id!r}: {dropped} warehouse row(s) have a cpg_id that is not on "
                        "the store's CpG axis; nothing of this batch was written"
                    )
                report.dropped_unknown_cpg_rows += dropped
                located.rows, located.cols, located.values = (
                    located.rows[known], located.cols[known], located.values[known])
            block.add(located.rows, located.cols, located.values)
            report.long_rows += len(located.rows)
        if seen and dropped_here == seen and self.on_unknown_cpg != "ignore":
            # Not one row on the axis: a store made for another CpG axis (or another warehouse).
            raise UnknownCpgError(
                f"{table} of batch {batch_id!r}: none of its {seen} warehouse row(s) has a cpg_id on the store's "
                f"CpG axis ({self.store.n_cpgs} CpGs, e.g. {self.store.cpg_axis.labels()[0]!r}); the store was "
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
