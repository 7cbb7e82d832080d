"""Iceberg tables read straight from their catalog: pyiceberg plans, DuckDB reads.

:class:`IcebergWarehouse` works with any pyiceberg catalog (SQL, Glue, REST,
...): the long tables are read directly, with partition pruning on
``batch_id``, and no query engine bills anything.  The embedded default,
:class:`~xr_methyl.warehouse.local.LocalWarehouse`, is this class with a local
sqlite catalog.

The namespace (``methylation`` by default; the Glue database) holds
``sample_batch_map``, ``beta`` and ``coverage`` (partitioned by
identity(batch_id)) and ``cpgs``.

Reads plan the Iceberg scan with pyiceberg (which prunes partitions) and let
DuckDB read the planned Parquet files directly when they are plain local
files; otherwise (object storage, delete files, an evolved schema, a name
mapping) DuckDB reads pyiceberg's own Arrow stream.  :meth:`IcebergWarehouse.export`
is the analogue of Athena's ``UNLOAD ... partitioned_by``: one
``COPY ... PARTITION_BY`` per call into a local staging directory.

This module is imported whenever ``xr_methyl.warehouse`` is (and so whenever
xarray looks up engines): pyiceberg, duckdb and sqlalchemy are imported only
inside the methods that use them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from xr_methyl.errors import WarehouseError
from xr_methyl.warehouse.base import VALUE_TABLES, Export, check_ids, report_duplicate_samples

if TYPE_CHECKING:  # pragma: no cover - typing only
    import duckdb
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table as IcebergTable

__all__ = ["CATALOG_NAME", "NAMESPACE", "TABLE_SCHEMAS", "IcebergWarehouse", "chrom_sort_key"]

#: Name the catalog is opened under; pyiceberg stores it in every catalog row,
#: so tables created under another name are invisible.
CATALOG_NAME = "xr_methyl"
NAMESPACE = "methylation"

#: The required columns of each table, with the types ``create_tables`` gives them.
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "sample_batch_map": pa.schema([("sample_id", pa.string()), ("batch_id", pa.string())]),
    "beta": pa.schema(
        [("batch_id", pa.string()), ("sample_id", pa.string()), ("cpg_id", pa.string()), ("beta", pa.float64())]
    ),
    "coverage": pa.schema(
        [("batch_id", pa.string()), ("sample_id", pa.string()), ("cpg_id", pa.string()), ("coverage", pa.int64())]
    ),
    "cpgs": pa.schema([("cpg_id", pa.string()), ("chrom", pa.string()), ("pos", pa.int64())]),
}
_PARTITIONED = frozenset(VALUE_TABLES)  # identity(batch_id)

_DIGITS = re.compile(r"[0-9]+")
_SEX_AND_MITO = {"X": 0, "Y": 1, "M": 2, "MT": 2}
_PART_DIR = re.compile(r"batch_index=([0-9]+)")
_GLOB = re.compile(r"[*?\[\]{}]")
#: Name prefix of export staging directories (see :meth:`IcebergWarehouse.reclaim_exports`).
EXPORT_PREFIX = "xr-methyl-export-"
# URI schemes of IcebergWarehouse.from_uri -> pyiceberg catalog types.
_CATALOG_TYPES = {"glue": "glue", "rest": "rest", "sql": "sql", "hive": "hive", "dynamodb": "dynamodb"}
_REGION_KEYS = ("glue.region", "s3.region", "client.region")
# Property names that may hold a secret: never written out by describe().
_SECRET = re.compile(r"secret|token|password|credential|access-key|session|signing|auth", re.IGNORECASE)


def _strip_password(value: str) -> str:
    """Drop a password from a URI such as ``postgresql://user:pw@host/db``."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1@", value)


def chrom_sort_key(chrom: str) -> tuple[int, int, str]:
    """Sort key putting chromosomes in natural genome order.

    ``chr1 < chr2 < ... < chr10 < ... < chr22 < chrX < chrY < chrM``, then any
    other name alphabetically; the ``chr`` prefix is optional (``"7"`` sorts
    with ``"chr7"``).
    """
    name = chrom[3:] if chrom[:3].lower() == "chr" else chrom
    if _DIGITS.fullmatch(name):
        return (0, int(name), chrom)
    if name.upper() in _SEX_AND_MITO:
        return (1, _SEX_AND_MITO[name.upper()], chrom)
    return (2, 0, chrom)


def genome_order(cpgs: pa.Table) -> pa.Table:
    """Sort a ``cpgs`` table (``cpg_id``, ``chrom``, ``pos``) by chromosome (natural order), position, id."""
    import pyarrow.compute as pc

    # Rank the (few) distinct chromosome names in Python, sort the rows in Arrow.
    names = sorted((c for c in cpgs["chrom"].unique().to_pylist() if c is not None), key=chrom_sort_key)
    rank = pc.fill_null(pc.index_in(cpgs["chrom"], value_set=pa.array(names, pa.string())), len(names))
    order = pc.sort_indices(
        cpgs.append_column("_rank", rank),
        sort_keys=[("_rank", "ascending"), ("pos", "ascending"), ("cpg_id", "ascending")],
    )
    return cpgs.take(order).combine_chunks()


def _plain_strings(table: pa.Table) -> pa.Table:
    """Cast large_string / string_view columns to string (pyiceberg and DuckDB may return either)."""
    fields = [
        f.with_type(pa.string()) if pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type) else f
        for f in table.schema
    ]
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema.equals(table.schema) else table.cast(schema)


class IcebergWarehouse:
    """Iceberg tables in any pyiceberg catalog, read directly (pyiceberg + DuckDB).

    Creating the object is cheap: nothing is imported or contacted until a
    method needs it.

    Parameters
    ----------
    catalog
        Name the catalog is opened under (pyiceberg's ``load_catalog`` name).
    properties
        pyiceberg catalog properties, e.g. ``{"type": "glue", "glue.region":
        "eu-west-1"}`` or ``{"type": "rest", "uri": "https://..."}``.  Only
        non-secret properties are ever written out by :meth:`describe`;
        credentials should come from the environment (the AWS chain).
    namespace
        The namespace (Glue database) holding the four tables.
    staging_dir
        Where :meth:`export` creates its per-call staging directories; the
        system temporary directory by default.
    """

    def __init__(
        self,
        catalog: str = "default",
        *,
        properties: Mapping[str, str] | None = None,
        namespace: str = NAMESPACE,
        staging_dir: str | os.PathLike | None = None,
    ) -> None:
        self.catalog_name = catalog
        self.properties = {str(k): str(v) for k, v in (properties or {}).items()}
        self.namespace = namespace
        self.staging_dir = None if staging_dir is None else Path(os.path.abspath(os.fspath(staging_dir)))
        self._catalog_cache: Catalog | None = None

    def __repr__(self) -> str:
        return f"IcebergWarehouse({self.describe()!r})"

    def __getstate__(self) -> dict[str, Any]:
        # The catalog holds clients or engines: reopen it on the other side.
        return {**self.__dict__, "_catalog_cache": None}

    @classmethod
    def from_uri(cls, uri: str, *, staging_dir: str | os.PathLike | None = None) -> IcebergWarehouse:
        """Open ``glue://<database>?region=...``, ``rest://<namespace>?uri=...`` or ``sql://<namespace>?uri=...``.

        Query parameters are pyiceberg catalog properties (``glue.endpoint``,
        ``s3.endpoint``, ``warehouse``, ...); ``region`` sets the Glue and S3
        region, ``catalog`` the catalog name (default ``"default"``).
        """
        from urllib.parse import parse_qsl, urlsplit

        parts = urlsplit(uri)
        kind = parts.scheme.lower()
        if kind not in _CATALOG_TYPES:
            raise WarehouseError(
                f"unsupported Iceberg catalog URI {uri!r}; expected one of {sorted(_CATALOG_TYPES)}://"
            )
        namespace = parts.netloc + parts.path.rstrip("/")
        if not namespace:
            raise WarehouseError(f"{uri!r} names no namespace: expected {kind}://<namespace>?...")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        name = params.pop("catalog", "default")
        properties = {"type": _CATALOG_TYPES[kind]}
        region = params.pop("region", None)
        if region:
            properties.update(dict.fromkeys(_REGION_KEYS, region))
        properties.update(params)
        return cls(name, properties=properties, namespace=namespace, staging_dir=staging_dir)

    def describe(self) -> str:
        """A URI that reopens this warehouse, without any secret property."""
        from urllib.parse import urlencode

        kind = self.properties.get("type", "sql")
        scheme = {v: k for k, v in _CATALOG_TYPES.items()}.get(kind, kind)
        params = {"catalog": self.catalog_name} if self.catalog_name != "default" else {}
        properties = dict(self.properties)
        regions = {properties.get(k) for k in _REGION_KEYS}
        if len(regions) == 1 and None not in regions:  # what from_uri's region= sets
            params["region"] = regions.pop()
            for k in _REGION_KEYS:
                del properties[k]
        params.update(
            {k: _strip_password(v) for k, v in sorted(properties.items()) if k != "type" and not _SECRET.search(k)}
        )
        query = urlencode(params, safe=":/")
        return f"{scheme}://{self.namespace}" + (f"?{query}" if query else "")

    # ------------------------------------------------------------------ catalog

    def _make_catalog(self, *, create: bool) -> Catalog:
        from pyiceberg.catalog import load_catalog

        return load_catalog(self.catalog_name, **self.properties)

    def _hint(self) -> str:
        """How to create the tables, for error messages."""
        return f"{type(self).__name__}(...).create_tables()"

    def _catalog(self, *, create: bool = False) -> Catalog:
        if self._catalog_cache is None:
            try:
                self._catalog_cache = self._make_catalog(create=create)
            except WarehouseError:
                raise
            except Exception as err:  # pyiceberg raises many types for an unreachable catalog
                raise WarehouseError(f"cannot open the Iceberg catalog of {self.describe()}: {err}") from err
        return self._catalog_cache

    def _table(self, name: str) -> IcebergTable:
        from pyiceberg.exceptions import NoSuchTableError

        catalog = self._catalog()
        try:
            return catalog.load_table((self.namespace, name))
        except NoSuchTableError:
            pass
        if not catalog.namespace_exists(self.namespace):
            found = [".".join(ns) for ns in catalog.list_namespaces()]
            raise WarehouseError(
                f"the Iceberg catalog {self.catalog_name!r} of {self.describe()} has no namespace {self.namespace!r} "
                f"(namespaces: {found}); create the tables with {self._hint()} or xr_methyl.synthetic.build_cohort(...)"
            ) from None
        present = sorted(ident[-1] for ident in catalog.list_tables(self.namespace))
        raise WarehouseError(
            f"no table {self.namespace}.{name} in {self.describe()} (tables: {present}); create it with "
            f"{self._hint().removesuffix(')')}exist_ok=True)"
        ) from None

    def _require_columns(self, name: str, table: IcebergTable, columns: Sequence[str]) -> None:
        present = [f.name for f in table.schema().fields]
        missing = [c for c in columns if c not in present]
        if missing:
            raise WarehouseError(
                f"table {self.namespace}.{name} in {self.describe()} has no column(s) {missing} (columns: {present}); "
                f"it needs {list(TABLE_SCHEMAS[name].names)}: rename the column(s) in the warehouse or "
                "recreate the table"
            )

    # --------------------------------------------------------------- write side

    def create_tables(
        self,
        *,
        metadata_schema: pa.Schema | None = None,
        value_types: Mapping[str, pa.DataType] | None = None,
        exist_ok: bool = False,
    ) -> None:
        """Create the namespace and the four tables.

        Parameters
        ----------
        metadata_schema
            Further columns of ``sample_batch_map`` (e.g. ``age`` double,
            ``sex`` string).
        value_types
            Other numeric types for the value columns, e.g.
            ``{"beta": pa.float32(), "coverage": pa.int32()}``.
        exist_ok
            Leave tables that already exist as they are instead of raising.
        """
        schemas = dict(TABLE_SCHEMAS)
        for name, dtype in (value_types or {}).items():
            if name not in VALUE_TABLES:
                raise ValueError(f"value_types names table {name!r}; expected one of {sorted(VALUE_TABLES)}")
            if not (pa.types.is_floating(dtype) or pa.types.is_integer(dtype)):
                raise ValueError(f"value_types[{name!r}] is {dtype}; value columns must be a float or integer type")
            schemas[name] = schemas[name].set(schemas[name].get_field_index(name), pa.field(name, dtype))
        if metadata_schema is not None:
            base = schemas["sample_batch_map"]
            for field in metadata_schema:
                if field.name in base.names:
                    raise ValueError(
                        f"metadata_schema repeats the column {field.name!r} of sample_batch_map; "
                        "list only the further (metadata) columns"
                    )
            schemas["sample_batch_map"] = pa.schema(list(base) + list(metadata_schema))

        catalog = self._catalog(create=True)
        if not catalog.namespace_exists(self.namespace):
            catalog.create_namespace(self.namespace)
        for name, schema in schemas.items():
            if catalog.table_exists((self.namespace, name)):
                if exist_ok:
                    continue
                raise WarehouseError(
                    f"table {self.namespace}.{name} already exists in {self.describe()}; pass exist_ok=True "
                    "or use a new directory"
                )
            # Table and partition spec in one commit, so no reader sees an unpartitioned table.
            with catalog.create_table_transaction((self.namespace, name), schema=schema) as txn:
                if name in _PARTITIONED:
                    with txn.update_spec() as spec:
                        spec.add_identity("batch_id")

    def append(self, table_name: str, data: pa.Table) -> None:
        """Append an Arrow table to one of the four tables (cast to its Iceberg schema).

        ``data`` must have exactly the table's columns (in any order).
        """
        if table_name not in TABLE_SCHEMAS:
            raise ValueError(f"unknown table {table_name!r}; expected one of {sorted(TABLE_SCHEMAS)}")
        table = self._table(table_name)
        target = table.schema().as_arrow()
        missing = [n for n in target.names if n not in data.column_names]
        extra = [n for n in data.column_names if n not in target.names]
        if missing or extra:
            raise ValueError(
                f"data for {self.namespace}.{table_name} does not match its columns {target.names}: "
                f"missing {missing}, unexpected {extra}"
            )
        table.append(data.select(target.names).cast(target))

    # ---------------------------------------------------------------- read side

    def _plan(
        self, table: IcebergTable, columns: Sequence[str], batch_ids: Sequence[str] | None = None
    ) -> tuple[Any, list[str] | None, int]:
        """Plan a scan of ``columns`` of ``table`` (only the partitions of ``batch_ids`` if given).

        Returns ``(scan, paths, n_files)``: ``paths`` are the local Parquet files
        DuckDB may read directly, or None when it must read through pyiceberg.
        """
        from pyiceberg.expressions import AlwaysTrue, In
        from pyiceberg.io.pyarrow import PyArrowFileIO
        from pyiceberg.manifest import FileFormat

        row_filter = AlwaysTrue() if batch_ids is None else In("batch_id", list(batch_ids))
        scan = table.scan(row_filter=row_filter, selected_fields=tuple(columns))
        tasks = list(scan.plan_files())
        locations = [PyArrowFileIO.parse_location(t.file.file_path) for t in tasks]
        # Reading the files by column name is right only for plain local Parquet
        # files written under the one and only schema; anything else goes through pyiceberg.
        direct = (
            len(table.metadata.schemas) == 1
            and "schema.name-mapping.default" not in table.properties
            and all(not t.delete_files and t.file.file_format == FileFormat.PARQUET for t in tasks)
            and all(scheme == "file" for scheme, _, _ in locations)
            # DuckDB would expand glob characters in a path (from the warehouse directory's name).
            and not any(_GLOB.search(path) for _, _, path in locations)
        )
        return scan, ([path for _, _, path in locations] if direct else None), len(tasks)

    def _register_source(
        self,
        con: duckdb.DuckDBPyConnection,
        table: IcebergTable,
        columns: Sequence[str],
        batch_ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Make a relation ``src`` in ``con`` over ``columns`` of ``table``.

        Returns how it is read: ``{"reader": "parquet"|"pyiceberg", "data_files": n}``.
        """
        scan, paths, n_files = self._plan(table, columns, batch_ids)
        if n_files == 0:
            con.register("src", table.schema().select(*columns).as_arrow().empty_table())
        elif paths is not None:
            # hive_partitioning off: the batch_id=... directories must not override the column.
            con.read_parquet(paths, hive_partitioning=False).create_view("src")
        else:
            con.register("src", scan.to_arrow_batch_reader())
        return {"reader": "parquet" if paths is not None else "pyiceberg", "data_files": n_files}

    def cpgs(self) -> pa.Table:
        """The ``cpgs`` table (``cpg_id``, ``chrom``, ``pos`` int64) in genome order.

        Chromosomes in natural order (see :func:`chrom_sort_key`), then ``pos``,
        then ``cpg_id``.
        """
        import duckdb

        table = self._table("cpgs")
        self._require_columns("cpgs", table, ["cpg_id", "chrom", "pos"])
        con = duckdb.connect()
        try:
            self._register_source(con, table, ["cpg_id", "chrom", "pos"])
            out = con.sql(
                "SELECT CAST(cpg_id AS VARCHAR) AS cpg_id, CAST(chrom AS VARCHAR) AS chrom, "
                "CAST(pos AS BIGINT) AS pos FROM src"
            ).to_arrow_table()
        finally:
            con.close()
        return genome_order(_plain_strings(out))

    def resolve_samples(self, sample_ids: Sequence[str]) -> pa.Table:
        """Rows of ``sample_batch_map`` for the known ids among ``sample_ids``.

        Returns ``sample_id``, ``batch_id`` and every metadata column, in the
        order the ids were asked for; unknown ids are absent.

        Raises
        ------
        DataError
            If a requested sample is mapped to more than one batch (or has
            conflicting metadata rows).
        """
        import duckdb

        ids = list(dict.fromkeys(check_ids(sample_ids)))
        table = self._table("sample_batch_map")
        self._require_columns("sample_batch_map", table, ["sample_id", "batch_id"])
        names = [f.name for f in table.schema().fields]
        columns = ["sample_id", "batch_id"] + [n for n in names if n not in ("sample_id", "batch_id")]
        quoted = ", ".join('m."' + c.replace('"', '""') + '"' for c in columns)
        outer = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        con = duckdb.connect()
        try:
            self._register_source(con, table, columns)
            wanted = {"sample_id": pa.array(ids, pa.string()), "pos": pa.array(range(len(ids)), pa.int64())}
            con.register("wanted", pa.table(wanted))
            out = con.sql(
                f"SELECT {outer} FROM (SELECT DISTINCT w.pos AS _pos, {quoted} "
                "FROM src m JOIN wanted w ON m.sample_id = w.sample_id) ORDER BY _pos, batch_id"
            ).to_arrow_table()
        finally:
            con.close()
        out = _plain_strings(out)
        sample_col = out["sample_id"].to_pylist()
        if len(set(sample_col)) != len(sample_col):
            self._report_duplicates(out)
        return out

    def _report_duplicates(self, rows: pa.Table) -> None:
        report_duplicate_samples(rows, f"{self.namespace}.sample_batch_map of {self.describe()}")

    def export(self, table: str, batches: Mapping[str, Sequence[str]]) -> Export:
        """Export the long rows of ``table`` for ``{batch_id: [sample_id, ...]}``.

        One DuckDB ``COPY ... PARTITION_BY`` writes Parquet files
        (``sample_id``, ``cpg_id``, ``value`` double) into a fresh staging
        directory, one sub-directory per batch.  Ids reach SQL only as data
        (a registered Arrow table), never as SQL text.

        Returns
        -------
        Export
            ``files`` has every requested batch id (an empty list when it has
            no rows); ``cleanup`` removes the staging directory.
        """
        if table not in VALUE_TABLES:
            raise ValueError(f"unknown value table {table!r}; expected one of {sorted(VALUE_TABLES)}")
        batch_ids = check_ids(list(batches), what="batch id")
        pair_batch: list[str] = []
        pair_sample: list[str] = []
        pair_index: list[int] = []
        for i, batch_id in enumerate(batch_ids):
            # A repeated sample would duplicate its rows through the join.
            for sample_id in dict.fromkeys(check_ids(batches[batch_id])):
                pair_batch.append(batch_id)
                pair_sample.append(sample_id)
                pair_index.append(i)
        wanted_batches = list(dict.fromkeys(pair_batch))

        if self.staging_dir is not None:
            self.staging_dir.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=EXPORT_PREFIX, dir=self.staging_dir)
        cleanup = partial(shutil.rmtree, staging, ignore_errors=True)
        started = time.perf_counter()
        try:
            from xr_methyl.storage.leases import write_owner

            write_owner(Path(staging))  # a killed exporter leaves the directory; reclaim_exports reads this
            source: dict[str, Any] = {"reader": None, "data_files": 0}
            rows = 0
            if wanted_batches:
                rows, source = self._copy(table, wanted_batches, pair_batch, pair_sample, pair_index, staging)
            files = self._collect(staging, table, batch_ids)
        except BaseException:
            cleanup()
            raise
        provenance = {"engine": "duckdb", "rows": rows, "seconds": time.perf_counter() - started, **source}
        import pyarrow.fs

        return Export(
            table=table,
            files=files,
            filesystem=pyarrow.fs.LocalFileSystem(),
            cleanup=cleanup,
            provenance=provenance,
        )

    def reclaim_exports(self, *, dry_run: bool = False) -> list[tuple[str, int]]:
        """Remove export staging directories whose exporting process is gone.

        An export normally removes its staging directory when the loader closes
        it; a process killed mid-ingest cannot.  Each staging directory records
        its exporter (host, pid, start time); those of live exporters are kept.
        Returns (path, bytes) of each directory removed (or, with ``dry_run``,
        that would be).
        """
        from xr_methyl.storage.leases import OWNER_FILE, STAGING_LEASE_SECONDS, owner_alive
        from xr_methyl.storage.local import LocalStorage

        base = self.staging_dir or Path(tempfile.gettempdir())
        out: list[tuple[str, int]] = []
        for path in sorted(base.glob(EXPORT_PREFIX + "*")) if base.is_dir() else []:
            record = path / OWNER_FILE
            try:
                owner = json.loads(record.read_text())
            except (OSError, ValueError):
                owner = None
            if not path.is_dir() or owner_alive(
                owner, record if record.exists() else path, lease=STAGING_LEASE_SECONDS
            ):
                continue
            out.append((str(path), LocalStorage(path).size()))
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
        return out

    def plan_export(self, table: str, batches: Mapping[str, Sequence[str]]) -> Export | None:
        """The Iceberg data files of these batches, to be read in place: :meth:`export` without the copy.

        Partition pruning picks each batch's files; the files hold all samples
        of their batch (``whole_batches``) and the values under the table's own
        column name.  Returns None when the files cannot be read directly
        (delete files, an evolved schema, a name mapping, a remote location):
        use :meth:`export` then.
        """
        if table not in VALUE_TABLES:
            raise ValueError(f"unknown value table {table!r}; expected one of {sorted(VALUE_TABLES)}")
        started = time.perf_counter()
        ice = self._table(table)
        self._require_columns(table, ice, ["batch_id", "sample_id", "cpg_id", table])
        files: dict[str, list[str]] = {}
        for batch_id in check_ids(list(batches), what="batch id"):
            _, paths, _ = self._plan(ice, ["batch_id", "sample_id", "cpg_id", table], [batch_id])
            if paths is None:
                return None
            files[batch_id] = paths
        import pyarrow.fs

        provenance = {
            "engine": "direct",
            "seconds": time.perf_counter() - started,
            "data_files": sum(map(len, files.values())),
        }
        return Export(
            table=table,
            files=files,
            filesystem=pyarrow.fs.LocalFileSystem(),
            provenance=provenance,
            value_column=table,
            whole_batches=True,
        )

    def _copy(
        self,
        table: str,
        wanted_batches: list[str],
        pair_batch: list[str],
        pair_sample: list[str],
        pair_index: list[int],
        staging: str,
    ) -> tuple[int, dict[str, Any]]:
        import duckdb

        ice = self._table(table)
        self._require_columns(table, ice, ["batch_id", "sample_id", "cpg_id", table])
        from pyiceberg.types import DecimalType, DoubleType, FloatType, IntegerType, LongType

        dtype = ice.schema().find_field(table).field_type
        if not isinstance(dtype, (IntegerType, LongType, FloatType, DoubleType, DecimalType)):
            raise WarehouseError(
                f"column {table!r} of {self.namespace}.{table} in {self.describe()} has type {dtype}; "
                "expected a numeric type (double, float, long or int)"
            )
        con = duckdb.connect()
        try:
            # Row order inside a file is irrelevant to the loader; not keeping it saves memory.
            con.execute("SET preserve_insertion_order = false")
            source = self._register_source(con, ice, ["batch_id", "sample_id", "cpg_id", table], wanted_batches)
            pairs = pa.table(
                {
                    "batch_id": pa.array(pair_batch, pa.string()),
                    "sample_id": pa.array(pair_sample, pa.string()),
                    "batch_index": pa.array(pair_index, pa.int32()),
                }
            )
            con.register("pairs", pairs)
            # Partition on the batch's position, not its id: directory names stay
            # plain digits whatever characters the ids hold; _collect maps them back.
            result = con.execute(
                f"""
                COPY (
                    SELECT CAST(s.sample_id AS VARCHAR) AS sample_id,
                           CAST(s.cpg_id AS VARCHAR) AS cpg_id,
                           CAST(s."{table}" AS DOUBLE) AS value,
                           p.batch_index
                    FROM src AS s
                    JOIN pairs AS p ON s.batch_id = p.batch_id AND s.sample_id = p.sample_id
                ) TO ? (FORMAT PARQUET, PARTITION_BY (batch_index))
                """,
                [os.path.join(staging, table)],
            )
            rows = int(result.fetchone()[0])
        finally:
            con.close()
        return rows, source

    @staticmethod
    def _collect(staging: str, table: str, batch_ids: list[str]) -> dict[str, list[str]]:
        files: dict[str, list[str]] = {b: [] for b in batch_ids}
        root = os.path.join(staging, table)
        if not os.path.isdir(root):
            return files
        for entry in sorted(os.listdir(root)):
            match = _PART_DIR.fullmatch(entry)
            if match is None or int(match.group(1)) >= len(batch_ids):
                raise WarehouseError(f"unexpected entry {entry!r} in export staging directory {root}")
            folder = os.path.join(root, entry)
            files[batch_ids[int(match.group(1))]] = sorted(
                os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".parquet")
            )
        return files
