"""Writing imported rows into Iceberg: data files first, then one commit per table.

Rows are written as Iceberg data files while the input is still being read
(a few million rows at a time, so memory does not grow with the input); none
of them is visible until :func:`replace_files` commits them.  A replacement is
one Iceberg commit holding one ``overwrite`` snapshot that removes the old
files (the batch's partition of ``beta``/``coverage``, or a whole small table)
and adds the new ones: re-running an import replaces, never duplicates.  When
anything fails before the commit, the written files are deleted and the table
is as it was.

pyiceberg has no transaction over several tables, so a batch is three commits
(``beta``, ``coverage``, then ``sample_batch_map``, so that new samples become
visible only once their values are).  A process killed between them leaves the
tables at different versions of the batch; running the same import again
makes them agree.

This is the one module of the importers that talks to pyiceberg.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from xr_methyl.errors import WarehouseError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table as IcebergTable

    from xr_methyl.warehouse import IcebergWarehouse

#: Key of the snapshot summary property recording what an import or axis build wrote.
SUMMARY_KEY = "xr_methyl.import"


def iceberg_table(warehouse: IcebergWarehouse, name: str) -> IcebergTable:
    """The pyiceberg table ``name`` of the warehouse's namespace (a clear error when it is missing)."""
    return warehouse._table(name)


def read_columns(
    warehouse: IcebergWarehouse, name: str, columns: Sequence[str], *, dictionary_columns: Sequence[str] = ()
) -> pa.RecordBatchReader:
    """Stream ``columns`` of a table: its Parquet files read directly when they are plain local files
    (``dictionary_columns`` then come dictionary-encoded, as stored), else through pyiceberg."""
    import pyarrow.dataset as pads

    table = iceberg_table(warehouse, name)
    scan, paths, n_files = warehouse._plan(table, list(columns))
    if paths is None or n_files == 0:
        return scan.to_arrow_batch_reader()
    options = pads.ParquetReadOptions(dictionary_columns=set(dictionary_columns))
    dataset = pads.dataset(paths, format=pads.ParquetFileFormat(read_options=options))
    return dataset.scanner(columns=list(columns), batch_size=1 << 20).to_reader()


def write_data_files(
    table: IcebergTable,
    rows: pa.Table,
    *,
    metadata: Any = None,
    batch_id: str | None = None,
    write_uuid: uuid.UUID | None = None,
    counter: itertools.count | None = None,
) -> list[DataFile]:
    """Write ``rows`` (cast to the table's schema) as data files of ``table``; nothing is committed.

    With ``batch_id`` (a table partitioned by identity(batch_id) alone, every
    row of that batch) the rows go into one data file of that partition as
    they are, without pyiceberg's search for the partitions a table spans
    (which groups and copies the rows).
    """
    from pyiceberg.io.pyarrow import _dataframe_to_data_files, write_file
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
    from pyiceberg.table import WriteTask

    metadata = metadata if metadata is not None else table.metadata
    schema = metadata.schema()
    rows = rows.select(schema.as_arrow().names).cast(schema.as_arrow())
    if rows.num_rows == 0:
        return []
    write_uuid = write_uuid or uuid.uuid4()
    counter = counter or itertools.count()
    if batch_id is None:
        return list(
            _dataframe_to_data_files(
                table_metadata=metadata, df=rows, io=table.io, write_uuid=write_uuid, counter=counter
            )
        )
    spec = metadata.spec()
    key = PartitionKey(field_values=[PartitionFieldValue(spec.fields[0], batch_id)], partition_spec=spec, schema=schema)
    task = WriteTask(
        write_uuid=write_uuid, task_id=next(counter), schema=schema, record_batches=rows.to_batches(), partition_key=key
    )
    return list(write_file(table.io, metadata, iter([task])))


def ensure_tables(warehouse: IcebergWarehouse, metadata_schema: pa.Schema | None = None) -> None:
    """Create whichever of the four tables is missing (``sample_batch_map`` with ``metadata_schema``)."""
    from pyiceberg.exceptions import NoSuchNamespaceError

    catalog = warehouse._catalog(create=True)
    try:
        present = {ident[-1] for ident in catalog.list_tables(warehouse.namespace)}
    except NoSuchNamespaceError:
        present = set()
    if not {"sample_batch_map", "beta", "coverage", "cpgs"} <= present:
        warehouse.create_tables(metadata_schema=metadata_schema, exist_ok=True)


def _iceberg_type(dtype: pa.DataType):
    from pyiceberg.types import BooleanType, DoubleType, LongType, StringType

    if pa.types.is_integer(dtype):
        return LongType()
    if pa.types.is_floating(dtype):
        return DoubleType()
    if pa.types.is_boolean(dtype):
        return BooleanType()
    return StringType()


def rewrite_table(table: IcebergTable, rows: pa.Table, summary: dict[str, Any]) -> int:
    """Replace every row of a small table by ``rows``, in one commit; columns ``rows`` has and the table lacks
    are added to its schema in the same commit, columns it lacks are null."""
    old = all_files(table)
    existing = set(table.schema().as_arrow().names)
    written: list[DataFile] = []
    try:
        with table.transaction() as txn:
            added = [f for f in rows.schema if f.name not in existing]
            if added:
                with txn.update_schema() as update:
                    for f in added:
                        update.add_column(f.name, _iceberg_type(f.type))
            schema = txn.table_metadata.schema().as_arrow()
            full = pa.table(
                {
                    f.name: rows[f.name] if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
                    for f in schema
                }
            )
            written = write_data_files(table, full, metadata=txn.table_metadata)
            replace_files(table, old, written, summary, transaction=txn)
    except Exception as err:
        delete_files(table, written)
        raise commit_failed(err, table, summary.get("what", "the rewrite")) from err
    return table.current_snapshot().snapshot_id


def check_batch_partitioned(table: IcebergTable) -> None:
    """Refuse a table not partitioned by identity(batch_id) alone: an import replaces one batch's partition."""
    from pyiceberg.transforms import IdentityTransform

    spec = table.spec()
    source = table.schema().find_field("batch_id").field_id
    if (
        len(spec.fields) != 1
        or spec.fields[0].source_id != source
        or not isinstance(spec.fields[0].transform, IdentityTransform)
    ):
        raise WarehouseError(
            f"table {table.name()} is not partitioned by identity(batch_id) alone (spec: {spec}); an import replaces "
            "one batch's partition: create the tables with create_tables()"
        )


def delete_files(table: IcebergTable, files: Sequence[DataFile]) -> None:
    """Remove data files that were written but never committed (best effort)."""
    for data_file in files:
        try:
            table.io.delete(data_file.file_path)
        except Exception:  # noqa: BLE001 - an orphan file is harmless; the error that brought us here matters
            pass


def batch_files(table: IcebergTable, batch_id: str) -> list[DataFile]:
    """The data files of ``batch_id``'s partition; refuses a table not partitioned by identity(batch_id)."""
    from pyiceberg.expressions import EqualTo

    check_batch_partitioned(table)
    spec = table.spec()
    files = [task.file for task in table.scan(row_filter=EqualTo("batch_id", batch_id)).plan_files()]
    foreign = [f.file_path for f in files if f.spec_id != spec.spec_id or f.partition[0] != batch_id]
    if foreign:
        raise WarehouseError(
            f"table {table.name()} has data files of batch {batch_id!r} outside its batch_id partition "
            f"(e.g. {foreign[0]}); rewrite the table partitioned by batch_id before importing into it"
        )
    return files


def all_files(table: IcebergTable) -> list[DataFile]:
    """Every live data file of ``table``."""
    return [task.file for task in table.scan().plan_files()]


def replace_files(
    table: IcebergTable,
    old: Sequence[DataFile],
    new: Sequence[DataFile],
    summary: dict[str, Any],
    *,
    transaction: Any = None,
) -> int | None:
    """Commit one ``overwrite`` snapshot removing ``old`` and adding ``new``; return its id (None: nothing to do).

    With ``transaction`` (an open pyiceberg transaction of ``table``), the
    snapshot joins it and the caller commits.
    """
    if not old and not new:
        return None
    properties = {SUMMARY_KEY: json.dumps(summary, sort_keys=True)}

    def stage(txn: Any) -> None:
        with txn.update_snapshot(snapshot_properties=properties).overwrite() as snapshot:
            for data_file in old:
                snapshot.delete_data_file(data_file)
            for data_file in new:
                snapshot.append_data_file(data_file)

    if transaction is not None:
        stage(transaction)
        return None
    with table.transaction() as txn:
        stage(txn)
    return table.current_snapshot().snapshot_id


def commit_failed(err: Exception, table: IcebergTable, what: str) -> WarehouseError:
    """The error to raise when a commit to ``table`` lost to another writer (or failed otherwise)."""
    from pyiceberg.exceptions import CommitFailedException

    if isinstance(err, CommitFailedException):
        return WarehouseError(
            f"another writer changed {table.name()} while {what} ran ({err}); nothing of it was "
            "committed to that table: run it again"
        )
    return WarehouseError(f"committing {what} to {table.name()} failed: {err}")


class DataFileSink:
    """Collects data files written by several threads for one table; :meth:`discard` deletes them all.

    With ``batch_id``, every row written belongs to that batch's partition.
    """

    def __init__(self, table: IcebergTable, *, batch_id: str | None = None) -> None:
        if batch_id is not None:
            check_batch_partitioned(table)
        self.table = table
        self.batch_id = batch_id
        self.files: list[DataFile] = []
        self._lock = threading.Lock()
        self._uuid = uuid.uuid4()
        self._counter = itertools.count()

    def write(self, rows: pa.Table) -> None:
        written = write_data_files(
            self.table, rows, batch_id=self.batch_id, write_uuid=self._uuid, counter=self._counter
        )
        with self._lock:
            self.files.extend(written)

    def discard(self) -> None:
        with self._lock:
            files, self.files = self.files, []
        delete_files(self.table, files)
