"""Long rows -> (row, column) positions, record batch by record batch.

Mapping string CpG ids to column positions is the whole cost of going from long
to wide.  CpG ids are found in a numpy hash table over the store's axis
(:class:`~xr_methyl.ingest.hashing.CpgLookup`, built once per locator), read straight
from the Arrow buffers; sample ids, a handful per batch, are read as Parquet
dictionary indices and mapped through a tiny table.  pyarrow decodes the next
record batches in its own threads meanwhile.  No Python object is made per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from xr_methyl.errors import WarehouseError
from xr_methyl.ingest.hashing import CpgLookup
from xr_methyl.store.cpg_axis import CpgAxis


@dataclass
class Located:
    """One record batch of located long rows."""

    rows: np.ndarray  # int32 row in the block
    cols: np.ndarray  # int64 CpG column (-1: not on the axis)
    values: np.ndarray  # float64 (NaN for null) or int64


class Locator:
    """Locates exported long rows on the store's CpG axis and a block's samples.

    Keep one per store and loader: the hash table over the axis is built once
    (about a second per 2 M CpGs) and reused by every batch.
    """

    def __init__(self, axis: CpgAxis) -> None:
        self._axis = axis
        self._lookup: CpgLookup | None = None

    @property
    def axis(self) -> CpgAxis:
        return self._axis

    @property
    def lookup(self) -> CpgLookup:
        if self._lookup is None:
            self._lookup = CpgLookup(np.asarray(self._axis.ids))
        return self._lookup

    def close(self) -> None:
        self._lookup = None

    def locate(
        self,
        dataset,
        sample_ids: Sequence[str],
        *,
        value_column: str = "value",
        other_samples: str = "error",
        row_range: slice | None = None,
        batch_rows: int = 1 << 20,
    ) -> Iterator[Located]:
        """Stream the rows of a pyarrow dataset (columns sample_id, cpg_id, value) as positions.

        Rows of samples outside ``sample_ids`` are an error of the export
        (:class:`WarehouseError`) with ``other_samples="error"``, and are left out with
        ``"drop"`` (for files holding whole batches); rows whose cpg_id is not
        on the axis come back with ``col = -1`` for the caller to count and drop.
        With ``row_range``, only rows of those block rows are located (the
        others are dropped before their ids are looked up).
        """
        if other_samples not in ("error", "drop"):
            raise ValueError(f"other_samples={other_samples!r}: expected 'error' or 'drop'")
        row_of = {s: i for i, s in enumerate(sample_ids)}
        lookup = self.lookup
        for batch in _batches(dataset, ["sample_id", "cpg_id", value_column], batch_rows):
            rows = _rows(batch.column(0), row_of)
            values = batch.column(2)
            cpg = batch.column(1)
            if other_samples == "error" and (rows < 0).any():
                raise WarehouseError(
                    f"the export holds {int((rows < 0).sum())} row(s) of samples that were not requested; "
                    "the warehouse's export must return exactly the requested (batch, sample) pairs"
                )
            wanted = rows >= 0 if row_range is None else (rows >= row_range.start) & (rows < row_range.stop)
            if not wanted.all():
                keep = np.flatnonzero(wanted)
                if not len(keep):
                    continue
                rows, cpg, values = rows[keep], cpg.take(pa.array(keep)), values.take(pa.array(keep))
            yield Located(rows=rows, cols=lookup.columns(cpg), values=_values_to_numpy(values))

    def duplicates(self, dataset, *, limit: int = 5) -> list[tuple[str, str, int]]:
        """Example (sample_id, cpg_id, count) of pairs with more than one row (for error messages)."""
        import duckdb

        con = duckdb.connect()
        try:
            con.register("export_rows", dataset)
            return con.execute(
                "SELECT sample_id, cpg_id, count(*) AS n FROM export_rows GROUP BY ALL HAVING count(*) > 1 "
                "ORDER BY sample_id, cpg_id LIMIT ?",
                [limit],
            ).fetchall()
        finally:
            con.close()


def _batches(dataset, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns``; Parquet's sample_id is read as dictionary indices.

    Parquet files are read one row group after another, the next record batch
    decoded in a thread while the caller locates this one.  The dataset scanner
    reads ahead without bound when its consumer is slower than the disk (over a
    GiB for a 32-sample batch, whatever ``batch_readahead`` says), so memory
    would grow with the batch; this way it stays about two record batches.
    """
    import pyarrow.dataset as pads

    if not (isinstance(dataset, pads.FileSystemDataset) and isinstance(dataset.format, pads.ParquetFileFormat)):
        yield from dataset.to_batches(columns=columns, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1)
        return
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    # Coalesced reads pay off on object stores; on a local disk they only buffer more.
    pre_buffer = not isinstance(dataset.filesystem, pafs.LocalFileSystem)

    def read() -> Iterator[pa.RecordBatch]:
        for path in dataset.files:
            with dataset.filesystem.open_input_file(path) as source:
                parquet = pq.ParquetFile(source, read_dictionary=["sample_id"], pre_buffer=pre_buffer)
                yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)

    yield from _read_ahead(read())


def _read_ahead(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The same batches, the next one produced in a thread while the caller works on this one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="xr_methyl-parquet") as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch


def _rows(sample: pa.Array, row_of: dict[str, int]) -> np.ndarray:
    """Row of each sample id in the block (-1 for other samples), via its dictionary when it has one."""
    if not pa.types.is_dictionary(sample.type):
        sample = sample.dictionary_encode()
    table = np.array([row_of.get(s, -1) for s in sample.dictionary.to_pylist()] + [-1], dtype=np.int32)
    codes = sample.indices.fill_null(len(table) - 1).to_numpy(zero_copy_only=False)
    return table[codes]


def _values_to_numpy(value: pa.Array) -> np.ndarray:
    if pa.types.is_floating(value.type) or value.null_count:
        # NULLs become NaN, which the block stores as missing (NaN beta, 0 coverage).
        return value.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return value.to_numpy()
