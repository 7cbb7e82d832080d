"""Filling one reserved batch: locate and scatter its long rows into wide blocks, write them in whole shards.

:func:`fill_rows` runs in any process (the loader's, or a dask worker's): it
gets a picklable :class:`~xr_methyl.store.append.RowRange`, the CpG axis and
the batch's files (:class:`Source`), and returns what it wrote for the commit.
Memory is bounded by ``max_memory``, not by the batch size or the CpG count: a
batch whose wide blocks exceed it is filled in units of whole shards
(:func:`plan_units`: a few sample blocks, or one sample block by a few CpG
shards), each unit one pass over the batch's files (rows outside the unit are
dropped before their ids are looked up, so only the Parquet decoding is
repeated; splitting the CpG axis repeats the look-ups of the batch's ids).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from xr_methyl.errors import DataError, UnknownCpgError
from xr_methyl.ingest._malloc import reuse_freed_memory
from xr_methyl.ingest.scatter import WideBlock
from xr_methyl.store import RowRange


@dataclass(frozen=True)
class Source:
    """The files of one batch of one value table, as a worker needs them (picklable)."""

    table: str
    files: tuple[str, ...]
    filesystem: object
    value_column: str
    whole_batches: bool

    @classmethod
    def of(cls, export, batch_id: str) -> Source:
        return cls(
            export.table,
            tuple(export.files.get(batch_id, [])),
            export.filesystem,
            export.value_column,
            export.whole_batches,
        )

    def dataset(self):
        import pyarrow.dataset as pads

        return pads.dataset(list(self.files), format="parquet", filesystem=self.filesystem)


# One locator (hash table over the axis, about 25 bytes per CpG) per process, for the last axis
# used: dask workers build it once per store, and at most one is kept (a new axis replaces it).
_LOCATORS: dict[tuple[str | None, int], object] = {}


def _locator(axis):
    from xr_methyl.ingest.locate import Locator

    key = (axis.source, len(axis))
    if key not in _LOCATORS or key[0] is None:
        _LOCATORS.clear()
        _LOCATORS[key] = Locator(axis)
    return _LOCATORS[key]


def plan_units(
    n_rows: int, n_cpgs: int, *, block: int, cpg_shard: int, bytes_per_cell: int, max_memory: int
) -> list[tuple[slice, slice]]:
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
    return [
        (slice(r, min(r + block, n_rows)), slice(c, min(c + width, n_cpgs)))
        for r in range(0, n_rows, block)
        for c in range(0, n_cpgs, width)
    ]


def fill_rows(
    rows: RowRange, axis, sources: dict[str, Source], *, max_memory: int, on_unknown_cpg: str, coverage_dtype: str
) -> dict:
    """Locate, scatter and write one reserved batch, unit by unit; runs in any process.

    Returns ``{"long_rows", "dropped", "seconds": {"scatter", "write"}, "shards"}`` (``shards``: the
    objects written, for the commit's block records).
    """
    with reuse_freed_memory():
        return _fill_units(
            rows,
            _locator(axis),
            sources,
            max_memory=max_memory,
            on_unknown_cpg=on_unknown_cpg,
            coverage_dtype=coverage_dtype,
        )


def _fill_units(
    rows: RowRange, locator, sources: dict[str, Source], *, max_memory: int, on_unknown_cpg: str, coverage_dtype: str
) -> dict:
    members = list(rows.sample_ids)
    dtypes = {"beta": np.dtype("float32"), "coverage": np.dtype(coverage_dtype)}
    bytes_per_cell = sum(d.itemsize + 1 for d in dtypes.values())  # values + the repeat check
    units = plan_units(
        len(members),
        rows.n_cpgs,
        block=rows.block,
        cpg_shard=rows.cpg_shard,
        bytes_per_cell=bytes_per_cell,
        max_memory=max_memory,
    )
    out = {"long_rows": 0, "dropped": 0, "seconds": {"scatter": 0.0, "write": 0.0}, "shards": {}}
    for row_range, col_range in units:
        t0 = time.perf_counter()
        blocks = {}
        for table, source in sources.items():
            blocks[table] = _scatter_unit(
                locator, source, rows.batch_id, members, row_range, col_range, dtypes[table], on_unknown_cpg, out
            )
        out["seconds"]["scatter"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        out["shards"].update(rows.write(row_range.start, col_range.start, blocks["beta"], blocks["coverage"]))
        out["seconds"]["write"] += time.perf_counter() - t0
        del blocks
    return out


def _scatter_unit(
    locator,
    source: Source,
    batch_id: str,
    members: list[str],
    row_range: slice,
    col_range: slice,
    dtype: np.dtype,
    on_unknown_cpg: str,
    out: dict,
) -> np.ndarray:
    """One unit's wide block of one table, from one pass over the batch's files."""
    table = source.table
    n_cols = col_range.stop - col_range.start
    block = WideBlock(table, members[row_range], n_cols, dtype)
    dataset = source.dataset()
    first_cols = col_range.start == 0  # count unknown ids once per row range
    seen = dropped_here = 0
    for located in locator.locate(
        dataset,
        members,
        value_column=source.value_column,
        other_samples="drop" if source.whole_batches else "error",
        row_range=row_range,
    ):
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
        raise DataError(
            f"{table} of batch {batch_id!r}: duplicate rows for (sample, cpg) pairs: {shown}; "
            "each sample has at most one row per CpG"
        ) from err
