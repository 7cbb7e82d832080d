"""The one interface every warehouse implements.

A warehouse holds the long tables (one row per sample x CpG) and offers exactly
two things to the loader, the same two that Athena offers in production:

1. resolve sample ids to their batch (and metadata), and
2. export the long rows of given (batch, sample) pairs of one value table as
   Parquet files partitioned by batch, the way ``UNLOAD ... partitioned_by``
   lays them out, to be streamed as Arrow record batches.

The loader never branches on which warehouse it has.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from xr_methyl.errors import DataError

#: The long value tables, in the order the loader exports them.
VALUE_TABLES: tuple[str, ...] = ("beta", "coverage")

#: Schema metadata key under which a warehouse's ``resolve_samples`` may report the
#: queries it ran (JSON list of {query_id, bytes_scanned, ...}), for the store's provenance.
PROVENANCE_KEY = b"xr_methyl.queries"

#: Columns of every exported Parquet file (``batch_id`` is the partition, in the path).
#: Both tables export ``value`` as double: it holds every coverage count exactly, and
#: the scatter checks that coverage values are whole numbers within the store's dtype.
EXPORT_SCHEMA = pa.schema([("sample_id", pa.string()), ("cpg_id", pa.string()), ("value", pa.float64())])

# Ids reach SQL only as parameters, but an id that cannot be a real sample id
# (empty, padded with whitespace, control characters) is a typo worth reporting.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_ids(ids: Iterable[object], *, what: str = "sample id") -> list[str]:
    """Return ``ids`` as a list of str, or raise naming the first bad one.

    Unicode and quotes are fine (ids only ever reach SQL as parameters);
    non-strings, empty strings, surrounding whitespace and control characters
    are not.
    """
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"expected a sequence of {what}s, got a single {type(ids).__name__} {ids!r}; wrap it in a list")
    out = []
    for i, value in enumerate(ids):
        if not isinstance(value, str):
            raise TypeError(f"{what} at position {i} is {type(value).__name__} {value!r}; {what}s must be str")
        if not value or value != value.strip() or _CONTROL.search(value):
            raise DataError(
                f"{what} at position {i} is {value!r}: {what}s must be non-empty, without surrounding "
                "whitespace or control characters"
            )
        out.append(value)
    return out


def report_duplicate_samples(rows: pa.Table, where: str) -> None:
    """Raise a :class:`DataError` naming samples with several rows in ``sample_batch_map``.

    ``rows`` has ``sample_id`` and ``batch_id`` columns; ``where`` names the table.
    """
    by_sample: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for s, b in zip(rows["sample_id"].to_pylist(), rows["batch_id"].to_pylist()):
        by_sample.setdefault(s, set()).add(b)
        counts[s] = counts.get(s, 0) + 1
    multi = {s: sorted(b, key=str) for s, b in by_sample.items() if len(b) > 1}
    if multi:
        shown = "; ".join(f"{s!r} -> {b}" for s, b in list(multi.items())[:10])
        raise DataError(
            f"{len(multi)} sample(s) mapped to more than one batch in {where}: {shown}; "
            "each sample must belong to exactly one batch: fix sample_batch_map"
        )
    dup = [s for s, n in counts.items() if n > 1]
    if dup:
        raise DataError(f"sample(s) {dup[:10]} have conflicting metadata rows in {where}; keep one row per sample")


@dataclass
class Export:
    """Long rows of one value table, written as Parquet partitioned by batch.

    ``files[batch_id]`` lists the Parquet files of one batch; each file has the
    columns of :data:`EXPORT_SCHEMA` (``value`` may be any numeric type).
    ``filesystem`` is a ``pyarrow.fs.FileSystem`` that reads them.  ``cleanup``
    removes the staging location; call :meth:`close` (or use ``with``) once the
    batches are committed.  ``provenance`` records what the export cost (query
    ids, bytes scanned, ...) and is kept with the batch in the store.

    An export may also point at the warehouse's own files, read in place
    (``IcebergWarehouse.plan_export``): then the values are in ``value_column``
    and, with ``whole_batches``, the files hold every sample of their batch, so
    the reader keeps only the requested ones.
    """

    table: str
    files: dict[str, list[str]]
    filesystem: Any
    cleanup: Callable[[], None] = lambda: None
    provenance: dict[str, Any] = field(default_factory=dict)
    value_column: str = "value"
    whole_batches: bool = False

    def dataset(self, batch_id: str):
        """A ``pyarrow.dataset.Dataset`` over one batch's files (empty if the batch has no rows)."""
        import pyarrow.dataset as pads

        return pads.dataset(self.files.get(batch_id, []), format="parquet", filesystem=self.filesystem)

    def read(self, batch_id: str, *, batch_size: int = 1 << 20) -> Iterator[pa.RecordBatch]:
        """Stream one batch's rows as record batches; never loads a file whole."""
        yield from self.dataset(batch_id).to_batches(batch_size=batch_size)

    def close(self) -> None:
        self.cleanup()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class Warehouse(Protocol):
    """What the loader needs from a warehouse of long methylation tables."""

    def describe(self) -> str:
        """A URI that reopens this warehouse with :func:`xr_methyl.warehouse.open_warehouse`.

        Recorded in the store's manifest, so it must never contain a secret.
        """

    def cpgs(self) -> pa.Table:
        """The ``cpgs`` table (``cpg_id`` string, ``chrom`` string, ``pos`` int64) in genome order."""

    def resolve_samples(self, sample_ids: Sequence[str]) -> pa.Table:
        """Rows of ``sample_batch_map`` for the known ids among ``sample_ids``.

        Columns: ``sample_id``, ``batch_id`` and every further (metadata) column
        of the table.  Unknown ids are simply absent; the caller reports them.
        """

    def export(self, table: str, batches: Mapping[str, Sequence[str]]) -> Export:
        """Export the long rows of ``table`` ("beta" or "coverage") for the given
        ``{batch_id: [sample_id, ...]}`` in one query, partitioned by batch."""

    def plan_export(self, table: str, batches: Mapping[str, Sequence[str]]) -> Export | None:
        """The warehouse's own files of these batches, to be read in place (no staged copy), or None.

        A warehouse whose files cannot be read directly (a query engine's, or
        files that need merging) returns None, and the loader calls
        :meth:`export` instead.
        """

    def reclaim_exports(self, *, dry_run: bool = False) -> list[tuple[str, int]]:
        """Remove export staging that killed exporters left; return (location, bytes) of each.

        ``xr-methyl gc --warehouse`` calls it; a warehouse that leaves nothing
        it can find returns an empty list.  With ``dry_run`` only report.
        """
