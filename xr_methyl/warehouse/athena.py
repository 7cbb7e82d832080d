"""The production warehouse: Amazon Athena over the Iceberg tables, through PyAthena.

* ``resolve_samples``: one ``SELECT * FROM sample_batch_map WHERE sample_id IN (...)``
  (split only if the id list would pass Athena's query-length limit).
* ``export``: ``UNLOAD (SELECT ...) TO 's3://<unload location>/<fresh prefix>/part-N/'
  WITH (format = 'PARQUET', partitioned_by = ARRAY['batch_id'])``, as few statements
  as Athena's limits allow (:func:`~xr_methyl.warehouse.athena_sql.plan_unloads`).
  The files are found through each query's data manifest and streamed from S3
  with pyarrow; the prefix is removed when the export is closed (after the
  loader commits), unless ``keep_unload``.
* Every query's id, bytes scanned and estimated cost go into the export's
  provenance, which the loader keeps with the batch in the store.

SQL text is built only in :mod:`xr_methyl.warehouse.athena_sql`.  Credentials
come from the normal AWS chain (environment, profile, SSO, instance role) via
boto3 and are never written anywhere; :meth:`AthenaWarehouse.describe` holds
configuration only.  pyathena and boto3 are imported inside the methods.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from xr_methyl.errors import WarehouseError
from xr_methyl.warehouse.athena_sql import (
    MAX_PARTITIONS,
    MAX_QUERY_BYTES,
    athena_cost,
    batch_of_partition,
    check_identifier,
    check_sql_ids,
    cpgs_unload_sql,
    plan_unloads,
    resolve_sql,
    split_for_resolve,
)
from xr_methyl.warehouse.base import PROVENANCE_KEY, VALUE_TABLES, Export, report_duplicate_samples

__all__ = ["AthenaWarehouse"]

log = logging.getLogger(__name__)


_TABLES = ("sample_batch_map", "beta", "coverage", "cpgs")
# Options that describe() writes and from_uri() reads, with their types.
_OPTIONS: dict[str, type] = {
    "work_group": str,
    "s3_staging_dir": str,
    "region": str,
    "unload_location": str,
    "catalog": str,
    "endpoint_url": str,
    "s3_endpoint_url": str,
    "keep_unload": bool,
    "timeout": float,
    "poll_interval": float,
    "max_partitions": int,
    "max_query_bytes": int,
    "retry_attempts": int,
    "retry_delay": float,
}


class AthenaWarehouse:
    """Long methylation tables queried with Amazon Athena (PyAthena + boto3).

    Creating the object contacts nothing; the first query opens the connection.

    Parameters
    ----------
    database
        The Athena (Glue) database holding the tables.
    unload_location
        ``s3://bucket/prefix/`` under which each export UNLOADs into a fresh
        unique prefix.
    s3_staging_dir
        Athena's query result location (where the data manifests go); may be
        omitted when the work group has one.
    work_group, region, catalog
        Athena work group, AWS region, data catalog (``awsdatacatalog``).
    tables
        Other names for the tables, e.g. ``{"beta": "beta_v2"}``; the value
        columns keep their names (``beta``, ``coverage``).
    keep_unload
        Keep the UNLOAD output on S3 after the export is closed.
    timeout
        Seconds a query may run before it is stopped and an error raised.
    poll_interval
        Seconds between status polls.
    max_partitions, max_query_bytes
        Athena's limits per UNLOAD; exports are split to respect them.
    retry_attempts, retry_delay
        Attempts and base back-off (seconds, doubling) for throttled Athena API calls.
    endpoint_url, s3_endpoint_url
        Other endpoints for Athena and S3 (a VPC endpoint, or a local stand-in);
        ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` are honoured for S3 too.
    """

    def __init__(
        self,
        database: str,
        *,
        unload_location: str,
        s3_staging_dir: str | None = None,
        work_group: str | None = None,
        region: str | None = None,
        catalog: str = "awsdatacatalog",
        tables: Mapping[str, str] | None = None,
        keep_unload: bool = False,
        timeout: float = 1800.0,
        poll_interval: float = 1.0,
        max_partitions: int = MAX_PARTITIONS,
        max_query_bytes: int = MAX_QUERY_BYTES,
        retry_attempts: int = 8,
        retry_delay: float = 1.0,
        endpoint_url: str | None = None,
        s3_endpoint_url: str | None = None,
    ) -> None:
        self.database = check_identifier(database, what="database")
        if not unload_location.startswith("s3://") or len(unload_location) <= 5:
            raise ValueError(f"unload_location {unload_location!r}: expected s3://bucket/prefix/")
        self.unload_location = unload_location if unload_location.endswith("/") else unload_location + "/"
        if s3_staging_dir is None and work_group is None:
            raise ValueError("give s3_staging_dir, work_group (one with a result location), or both")
        if s3_staging_dir is not None and not s3_staging_dir.startswith("s3://"):
            raise ValueError(f"s3_staging_dir {s3_staging_dir!r}: expected s3://bucket/prefix/")
        self.s3_staging_dir = s3_staging_dir
        self.work_group = work_group
        self.region = region
        self.catalog = check_identifier(catalog, what="catalog")
        unknown = set(tables or {}) - set(_TABLES)
        if unknown:
            raise ValueError(f"tables names {sorted(unknown)}; expected some of {list(_TABLES)}")
        self.tables = {t: check_identifier((tables or {}).get(t, t), what=f"table name for {t}") for t in _TABLES}
        self.keep_unload = bool(keep_unload)
        if not timeout > 0 or not poll_interval > 0:
            raise ValueError(f"timeout={timeout!r}, poll_interval={poll_interval!r}: expected positive seconds")
        self.timeout = float(timeout)
        self.poll_interval = float(poll_interval)
        if not 1 <= max_partitions <= MAX_PARTITIONS or not 1024 <= max_query_bytes <= MAX_QUERY_BYTES:
            raise ValueError(
                f"max_partitions={max_partitions}, max_query_bytes={max_query_bytes}: expected at most "
                f"Athena's limits ({MAX_PARTITIONS}, {MAX_QUERY_BYTES})"
            )
        self.max_partitions = int(max_partitions)
        self.max_query_bytes = int(max_query_bytes)
        self.retry_attempts = max(1, int(retry_attempts))
        self.retry_delay = float(retry_delay)
        self.endpoint_url = endpoint_url
        self.s3_endpoint_url = s3_endpoint_url
        self._session = None
        self._connection = None

    def __repr__(self) -> str:
        return f"AthenaWarehouse({self.describe()!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Sessions and connections hold clients and credentials: rebuild them on the other side.
        return {**self.__dict__, "_session": None, "_connection": None}

    # ------------------------------------------------------------ configuration

    @classmethod
    def from_uri(cls, uri: str) -> AthenaWarehouse:
        """Open ``athena://<database>?unload_location=s3://...&s3_staging_dir=s3://...&region=...``.

        Further parameters: any constructor option (``work_group``, ``keep_unload``,
        ``timeout``, ...) and ``table.<name>=<other name>``.
        """
        from urllib.parse import parse_qsl, urlsplit

        parts = urlsplit(uri)
        if parts.scheme != "athena" or not parts.netloc or parts.path not in ("", "/"):
            raise WarehouseError(f"{uri!r}: expected athena://<database>?unload_location=s3://...&...")
        kwargs: dict[str, Any] = {}
        tables: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
            if key.startswith("table."):
                tables[key.removeprefix("table.")] = value
            elif key in _OPTIONS:
                kind = _OPTIONS[key]
                kwargs[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
            else:
                raise WarehouseError(
                    f"{uri!r}: unknown option {key!r}; expected one of {sorted(_OPTIONS)} or table.<name>"
                )
        if "unload_location" not in kwargs:
            raise WarehouseError(f"{uri!r} has no unload_location=s3://...")
        try:
            return cls(parts.netloc, tables=tables or None, **kwargs)
        except ValueError as err:
            raise WarehouseError(f"{uri!r}: {err}") from err

    def describe(self) -> str:
        """The ``athena://`` URI of this configuration (no credentials: they never are part of it)."""
        from urllib.parse import urlencode

        defaults = AthenaWarehouse.__init__.__kwdefaults__
        params: dict[str, str] = {}
        for key in _OPTIONS:
            value = getattr(self, key)
            if value is None or (key in defaults and value == defaults[key]):
                continue
            params[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        params.update({f"table.{t}": name for t, name in self.tables.items() if name != t})
        return f"athena://{self.database}?" + urlencode(params, safe=":/")

    # ------------------------------------------------------------------ clients

    def _boto_session(self):
        if self._session is None:
            import boto3

            self._session = boto3.session.Session(region_name=self.region)
        return self._session

    def _athena(self):
        if self._connection is None:
            import pyathena
            from botocore.config import Config
            from pyathena.util import RetryConfig

            self._connection = pyathena.connect(
                s3_staging_dir=self.s3_staging_dir if self.s3_staging_dir is not None else "",
                work_group=self.work_group if self.work_group is not None else "",
                region_name=self.region,
                schema_name=self.database,
                catalog_name=self.catalog,
                poll_interval=self.poll_interval,
                session=self._boto_session(),
                # Throttling is retried by PyAthena with exponential back-off and jitter;
                # botocore's own retries are off so that one policy (ours) decides.
                retry_config=RetryConfig(attempt=self.retry_attempts, multiplier=self.retry_delay, max_delay=60),
                config=Config(retries={"mode": "standard", "max_attempts": 1}),
                **({"endpoint_url": self.endpoint_url} if self.endpoint_url else {}),
            )
        return self._connection

    def _s3_endpoint(self) -> str | None:
        return self.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")

    def _s3(self):
        return self._boto_session().client("s3", endpoint_url=self._s3_endpoint())

    def _filesystem(self):
        """A pyarrow S3 filesystem with the boto3 session's credentials (held in memory only)."""
        from pyarrow.fs import S3FileSystem

        session = self._boto_session()
        credentials = session.get_credentials()
        kwargs: dict[str, Any] = {"region": session.region_name or "us-east-1"}
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
        endpoint = self._s3_endpoint()
        if endpoint:
            # pyarrow ignores AWS_ENDPOINT_URL*: pass the endpoint explicitly.
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        return S3FileSystem(**kwargs)

    # ------------------------------------------------------------------ queries

    def _run(self, sql: str, *, what: str) -> tuple[Any, dict[str, Any]]:
        """Run one statement; return PyAthena's result set and the query's cost record.

        Raises :class:`WarehouseError` naming the query id and Athena's reason if
        the query fails, is cancelled or outlives ``timeout`` (it is then stopped).
        """
        from pyathena.async_cursor import AsyncCursor
        from pyathena.model import AthenaQueryExecution

        cursor = self._athena().cursor(AsyncCursor)
        try:
            try:
                query_id, future = cursor.execute(sql)
            except Exception as err:  # refused before it ran (too long, throttled beyond retries, ...)
                raise WarehouseError(f"Athena did not start the {what} query on {self.describe()}: {err}") from err
            try:
                result = future.result(timeout=self.timeout)
            except concurrent.futures.TimeoutError:
                try:
                    cursor.cancel(query_id).result(timeout=60)
                except Exception as err:  # the timeout is the error to report
                    log.warning("could not stop Athena query %s: %s", query_id, err)
                raise WarehouseError(
                    f"Athena query {query_id} ({what}) did not finish within {self.timeout:g} s and was stopped; "
                    "raise the warehouse's timeout for bigger exports"
                ) from None
            except Exception as err:
                raise WarehouseError(f"lost track of Athena query {query_id} ({what}): {err}") from err
            record = {
                "query_id": query_id,
                "kind": what,
                "state": result.state,
                "bytes_scanned": int(result.data_scanned_in_bytes or 0),
                "dollars": athena_cost(result.data_scanned_in_bytes),
            }
            if result.state != AthenaQueryExecution.STATE_SUCCEEDED:
                raise WarehouseError(
                    f"Athena query {query_id} ({what}) {result.state}: "
                    f"{result.state_change_reason or 'no reason given'}"
                )
            log.info("Athena query %s (%s): %d bytes scanned", query_id, what, record["bytes_scanned"])
            return result, record
        finally:
            cursor.close()

    def cpgs(self) -> pa.Table:
        """The ``cpgs`` table in genome order (natural chromosome order, then position).

        Tens of millions of rows are too many for ``GetQueryResults`` pages, so
        the table is UNLOADed to Parquet and read from S3 like an export.
        """
        import pyarrow.parquet as pq

        from xr_methyl.warehouse.iceberg import genome_order

        run = f"{self.unload_location}cpgs-{uuid.uuid4().hex}/"
        try:
            result, _ = self._run(cpgs_unload_sql(self.database, self.tables["cpgs"], run), what="cpgs")
            files = self._read_manifest(result.data_manifest_location, result.query_id)
            if any(not f.startswith(run) for f in files):
                raise WarehouseError(f"UNLOAD of cpgs listed files outside {run}: {files[:3]}")
            fs = self._filesystem()
            schema = pa.schema([("cpg_id", pa.string()), ("chrom", pa.string()), ("pos", pa.int64())])
            parts = [pq.read_table(f.removeprefix("s3://"), filesystem=fs).cast(schema) for f in files]
            out = pa.concat_tables(parts) if parts else schema.empty_table()
        finally:
            self._remove_prefix(run)
        return genome_order(out)

    def resolve_samples(self, sample_ids: Sequence[str]) -> pa.Table:
        """Rows of ``sample_batch_map`` for the known ids, in the order asked.

        The queries run (normally one) are listed as JSON under the schema
        metadata key :data:`PROVENANCE_KEY`.
        """
        ids = list(dict.fromkeys(check_sql_ids(sample_ids)))
        records: list[dict[str, Any]] = []
        names: list[str] | None = None
        types: list[str] = []
        rows: list[tuple] = []
        table = self.tables["sample_batch_map"]
        for run in split_for_resolve(ids, max_bytes=self.max_query_bytes):
            result, record = self._run(resolve_sql(self.database, table, run), what="resolve")
            records.append(record)
            names = [d[0] for d in result.description or ()]
            types = [d[1] for d in result.description or ()]
            rows += result.fetchall()
        if names is None:  # nothing asked
            names, types = ["sample_id", "batch_id"], ["varchar", "varchar"]
        missing = [c for c in ("sample_id", "batch_id") if c not in names]
        if missing:
            raise WarehouseError(
                f"table {self.database}.{table} of {self.describe()} has no column(s) {missing} (columns: {names})"
            )
        position = {s: i for i, s in enumerate(ids)}
        sample_at = names.index("sample_id")
        rows.sort(key=lambda r: (position.get(r[sample_at], len(ids)), str(r[names.index("batch_id")])))
        rows = [r for r in rows if r[sample_at] in position]
        # sample_id and batch_id first, the metadata after, as every warehouse returns them.
        order = [sample_at, names.index("batch_id")] + [
            i for i, n in enumerate(names) if n not in ("sample_id", "batch_id")
        ]
        columns = {names[i]: _arrow_column([r[i] for r in rows], types[i]) for i in order}
        out = pa.table(columns)
        sample_col = out["sample_id"].to_pylist()
        if len(set(sample_col)) != len(sample_col):
            report_duplicate_samples(out, f"{self.database}.{table} of {self.describe()}")
        return out.replace_schema_metadata({PROVENANCE_KEY: json.dumps(records).encode()})

    def export(self, table: str, batches: Mapping[str, Sequence[str]]) -> Export:
        """UNLOAD the long rows of ``table`` for ``{batch_id: [sample_id, ...]}``.

        Returns
        -------
        Export
            ``files`` has every requested batch id (an empty list when it has
            no rows), as ``bucket/key`` paths of ``filesystem`` (pyarrow's S3);
            ``provenance`` lists every query with its bytes scanned and cost;
            ``close()`` removes the unload prefix unless ``keep_unload``.
        """
        if table not in VALUE_TABLES:
            raise ValueError(f"unknown value table {table!r}; expected one of {sorted(VALUE_TABLES)}")
        batch_ids = check_sql_ids(list(batches), what="batch id")
        pairs = {b: check_sql_ids(batches[b]) for b in batch_ids}
        # A fresh prefix per export: UNLOAD needs an empty one, and cleanup removes only it.
        run = f"{self.unload_location}{table}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex}/"
        plans = plan_unloads(
            self.database,
            self.tables[table],
            table,
            run,
            pairs,
            max_partitions=self.max_partitions,
            max_bytes=self.max_query_bytes,
        )

        def cleanup() -> None:
            if not self.keep_unload:
                self._remove_prefix(run)

        files: dict[str, list[str]] = {b: [] for b in batch_ids}
        records: list[dict[str, Any]] = []
        started = time.perf_counter()
        try:
            for n, plan in enumerate(plans):
                result, record = self._run(plan.sql, what=f"unload {table} {n + 1}/{len(plans)}")
                record["batches"] = list(plan.batches)
                records.append(record)
                for uri in self._read_manifest(result.data_manifest_location, record["query_id"]):
                    batch = self._batch_of_file(uri, plan.location, plan.batches)
                    files[batch].append(uri.removeprefix("s3://"))
        except BaseException:
            cleanup()  # Athena leaves the files of a failed UNLOAD behind
            raise
        provenance = {
            "engine": "athena",
            "queries": records,
            "bytes_scanned": sum(r["bytes_scanned"] for r in records),
            "dollars": sum(r["dollars"] for r in records),
            "unload_location": run,
            "seconds": time.perf_counter() - started,
        }
        return Export(table=table, files=files, filesystem=self._filesystem(), cleanup=cleanup, provenance=provenance)

    # ---------------------------------------------------------------------- S3

    def plan_export(self, table: str, batches: Mapping[str, Sequence[str]]) -> Export | None:
        """None: Athena's files are read through queries only (see :meth:`export`)."""
        return None

    def reclaim_exports(self, *, dry_run: bool = False) -> list[tuple[str, int]]:
        """Nothing to reclaim from here: an UNLOAD prefix is removed when its export closes.

        One left by a killed process is not tracked; an S3 lifecycle rule on
        ``unload_location`` clears such prefixes.
        """
        return []

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bucket, key

    def _read_manifest(self, location: str | None, query_id: str) -> list[str]:
        if not location:
            raise WarehouseError(f"Athena query {query_id} reports no DataManifestLocation; cannot find its files")
        bucket, key = self._split(location)
        body = self._s3().get_object(Bucket=bucket, Key=key)["Body"]
        try:
            text = body.read().decode("utf-8")
        finally:
            body.close()
        return [line.strip() for line in text.splitlines() if line.strip()]

    @staticmethod
    def _batch_of_file(uri: str, location: str, batch_ids) -> str:
        """The batch of one manifest entry, which must lie directly in a ``batch_id=`` folder of ``location``."""
        rest = uri.removeprefix(location) if uri.startswith(location) else None
        parts = rest.split("/") if rest else []
        if len(parts) != 2 or not parts[1] or parts[1] in (".", ".."):
            raise WarehouseError(f"UNLOAD listed {uri!r}, which is not a file in a batch_id= folder of {location}")
        try:
            return batch_of_partition(parts[0], batch_ids)
        except ValueError as err:
            raise WarehouseError(str(err)) from err

    def _remove_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (one of our fresh unload prefixes)."""
        if not prefix.startswith(self.unload_location) or prefix == self.unload_location:
            raise AssertionError(f"refusing to remove {prefix!r}: not a prefix of ours")
        bucket, key = self._split(prefix)
        s3 = self._s3()
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objects:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        except Exception as err:  # cleanup must not hide the result (or the error) it follows
            log.warning("could not remove the UNLOAD output %s: %s", prefix, err)


def _arrow_column(values: list, athena_type: str) -> pa.Array:
    """Values converted by PyAthena, as an Arrow array of the matching type."""
    kind = (athena_type or "varchar").lower().split("(")[0]
    if kind in ("varchar", "char", "string"):
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    if kind in ("double", "float", "real", "decimal"):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kind in ("bigint", "integer", "int", "smallint", "tinyint"):
        return pa.array(values, pa.int64())
    if kind == "boolean":
        return pa.array(values, pa.bool_())
    if kind == "date":
        return pa.array(values, pa.date32())
    if kind.startswith("timestamp"):
        return pa.array(values, pa.timestamp("us"))
    return pa.array([None if v is None else str(v) for v in values], pa.string())
