"""Long rows -> (row, column) positions: a DuckDB hash join against the store's axes.

Mapping string CpG ids to column positions is the whole cost of going from long
to wide (hash look-ups per record batch in Arrow or pandas are several times
slower than one hash join), so it is done as a join inside DuckDB, in-process,
over the exported Parquet files.  The result streams out as record batches of
integer positions and values; no Python object is made per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from xr_methyl.cpg_axis import CpgAxis
from xr_methyl.errors import WarehouseError


@dataclass
class Located:
    """One record batch of located long rows."""

    rows: np.ndarray  # int32 row in the block
    cols: np.ndarray  # int32 CpG column
    values: np.ndarray  # float64 (NaN for null) or int64


class Locator:
    """Joins exported long rows to the store's CpG axis and a block's samples.

    Keep one per store and loader: the axis is handed to DuckDB once (zero-copy
    from Arrow) and reused by every query.  Not for use by several threads at once.
    """

    def __init__(self, axis: CpgAxis, *, threads: int | None = None) -> None:
        import duckdb

        self._con = duckdb.connect()
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")
        self._axis = pa.table({"cpg_id": axis.to_arrow(), "col": pa.array(np.arange(len(axis), dtype=np.int32))})
        self._con.register("cpg_axis", self._axis)

    def close(self) -> None:
        self._con.close()

    def locate(self, dataset, sample_ids: Sequence[str], *, batch_rows: int = 1 << 20) -> Iterator[Located]:
        """Stream the rows of a pyarrow dataset (columns sample_id, cpg_id, value) as positions.

        Rows of samples outside ``sample_ids`` are an error of the export and
        raise :class:`WarehouseError`; rows whose cpg_id is not on the axis come back
        with ``col = -1`` for the caller to count and drop.
        """
        samples = pa.table({"sample_id": pa.array(list(sample_ids), pa.string()),
                            "row": pa.array(np.arange(len(sample_ids), dtype=np.int32))})
        con = self._con
        con.register("export_rows", dataset)
        con.register("block_samples", samples)
        reader = None
        try:
            reader = con.sql(
                """
                SELECT s.row, coalesce(a.col, -1) AS col, e.value
                FROM export_rows e
                LEFT JOIN block_samples s ON e.sample_id = s.sample_id
                LEFT JOIN cpg_axis a ON e.cpg_id = a.cpg_id
                """
            ).to_arrow_reader(batch_rows)
            for batch in reader:
                row = batch.column(0)
                if row.null_count:
                    raise WarehouseError(
                        f"the export holds {row.null_count} row(s) of samples that were not requested; "
                        "the warehouse's export must return exactly the requested (batch, sample) pairs"
                    )
                yield Located(
                    rows=row.to_numpy(),
                    cols=batch.column(1).to_numpy(),
                    values=_values_to_numpy(batch.column(2)),
                )
        finally:
            if reader is not None:
                reader.close()
            con.unregister("export_rows")
            con.unregister("block_samples")

    def duplicates(self, dataset, *, limit: int = 5) -> list[tuple[str, str, int]]:
        """Example (sample_id, cpg_id, count) of pairs with more than one row (for error messages)."""
        con = self._con
        try:
            con.register("export_rows", dataset)
            return con.execute(
                "SELECT sample_id, cpg_id, count(*) AS n FROM export_rows GROUP BY ALL HAVING count(*) > 1 "
                "ORDER BY sample_id, cpg_id LIMIT ?",
                [limit],
            ).fetchall()
        finally:
            con.unregister("export_rows")


def _values_to_numpy(value: pa.Array) -> np.ndarray:
    if pa.types.is_floating(value.type) or value.null_count:
        # Nulls become NaN, which the block's range check reports.
        return value.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return value.to_numpy()
