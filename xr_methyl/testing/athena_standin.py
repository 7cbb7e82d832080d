"""An offline stand-in for Amazon Athena, for the tests and ``xr-methyl demo --athena``.

It speaks Athena's JSON API (``X-Amz-Target: AmazonAthena.<Operation>``) to the
unmodified boto3/PyAthena client and really runs the SQL it is sent:

* ``SELECT`` is parsed with sqlglot's ``athena`` dialect, its tables are
  replaced by the Iceberg tables of an :class:`xr_methyl.IcebergWarehouse`
  (read with pyiceberg, partitions pruned on ``batch_id IN (...)``), and it is
  transpiled to DuckDB and run there; results come back through
  ``GetQueryResults`` (paginated, first row = column labels, Athena type names).
* ``UNLOAD (SELECT ...) TO 's3://...' WITH (format = 'PARQUET', partitioned_by
  = ARRAY[...])``, which sqlglot parses only as an opaque command: its parts are
  found with sqlglot's tokenizer (so parentheses and semicolons inside string
  literals are data), the SELECT runs as above, and Parquet files are written
  Hive-style under ``<prefix>/batch_id=<escaped value>/`` into S3 (moto), with
  the data manifest ``<staging>/<query id>-manifest.csv`` that
  ``Statistics.DataManifestLocation`` points to.

Like Athena it refuses a query string over 262,144 bytes, an UNLOAD into a
non-empty prefix or with more than 100 partitions, a second statement, an
unknown database or table; it reports ``DataScannedInBytes`` (the bytes of the
data files read).  Failures can be injected: throttling of the next API calls,
a failure after an UNLOAD wrote its files, a query that runs until stopped.

``stop()`` (or leaving ``with standin:``) stops what runs: queries are
cancelled, the keep-alive connections of HTTP/1.1 clients are closed and every
thread is joined, so a stopped stand-in leaves no thread or socket behind.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MAX_QUERY_BYTES = 262_144
MAX_PARTITIONS = 100

# Characters Hive (and so Athena) escapes in a partition directory name.
_HIVE_ESCAPE = set(range(0x01, 0x20)) | {ord(c) for c in "\"#%'*/:=?\\\x7f{[]^"}


def hive_escape(value: str) -> str:
    return "".join(f"%{ord(c):02X}" if ord(c) in _HIVE_ESCAPE else c for c in value)


class QueryFailed(Exception):
    """A query ends FAILED with this message as its StateChangeReason."""


@dataclass
class Execution:
    query_id: str
    query: str
    database: str | None
    work_group: str
    output_location: str | None
    state: str = "QUEUED"
    reason: str | None = None
    submitted: float = field(default_factory=time.time)
    completed: float | None = None
    scanned: int = 0
    manifest: str | None = None
    statement_type: str = "DML"
    columns: list[tuple[str, str]] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    hold: float = 0.0
    fail_after_write: str | None = None


class AthenaStandIn:
    """Athena's API over an Iceberg warehouse, writing UNLOAD output to S3.

    Parameters
    ----------
    warehouse
        An ``IcebergWarehouse`` whose namespace plays the Athena database.
    database
        The database name queries use (``"db"."table"``).
    s3_endpoint
        Endpoint of the S3 (moto) server that UNLOAD writes to.
    """

    def __init__(
        self,
        warehouse,
        *,
        database: str,
        s3_endpoint: str,
        region: str = "us-east-1",
        max_partitions: int = MAX_PARTITIONS,
        max_query_bytes: int = MAX_QUERY_BYTES,
        rows_per_file: int = 5000,
    ) -> None:
        self.warehouse = warehouse
        self.database = database
        self.s3_endpoint = s3_endpoint
        self.region = region
        self.max_partitions = max_partitions
        self.max_query_bytes = max_query_bytes
        self.rows_per_file = rows_per_file
        self.executions: dict[str, Execution] = {}
        self.calls: list[str] = []
        self.throttled = 0
        # Injected failures, consumed by the next API call or query.
        self.throttle_next = 0
        self.hold_next: float = 0.0
        self.fail_next_unload_after_write: str | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._s3 = None

    # ------------------------------------------------------------------ server

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> AthenaStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                status, payload = standin.handle(target, json.loads(body or b"{}"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _ClosingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="athena-standin")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Cancel running queries, stop serving, close every connection and join every thread."""
        if self._server is None:
            return
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
        with self._lock:
            running = [ex for ex in self.executions.values() if ex.thread is not None]
        for ex in running:
            ex.cancel.set()
        for ex in running:
            ex.thread.join()
        self._server = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def s3(self):
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3", endpoint_url=self.s3_endpoint, region_name=self.region)
        return self._s3

    # --------------------------------------------------------------------- API

    def handle(self, target: str, request: dict) -> tuple[int, dict]:
        operation = target.rsplit(".", 1)[-1]
        with self._lock:
            self.calls.append(operation)
            if self.throttle_next > 0:
                self.throttle_next -= 1
                self.throttled += 1
                return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            return 400, {"__type": "InvalidRequestException", "Message": f"the stand-in does not implement {operation}"}
        try:
            return 200, handler(request)
        except KeyError as err:
            return 400, {"__type": "InvalidRequestException", "Message": f"QueryExecution {err} was not found"}
        except _InvalidRequest as err:
            return 400, {"__type": "InvalidRequestException", "Message": str(err), "AthenaErrorCode": "INVALID_INPUT"}

    def _op_StartQueryExecution(self, request: dict) -> dict:  # noqa: N802
        query = request["QueryString"]
        if len(query.encode()) > self.max_query_bytes:
            raise _InvalidRequest(
                f"1 validation error detected: Value at 'queryString' failed to satisfy constraint: "
                f"Member must have length less than or equal to {self.max_query_bytes}"
            )
        context = request.get("QueryExecutionContext", {})
        output = request.get("ResultConfiguration", {}).get("OutputLocation")
        if output is None:
            raise _InvalidRequest("No output location provided")
        ex = Execution(
            query_id=str(uuid.uuid4()),
            query=query,
            database=context.get("Database"),
            work_group=request.get("WorkGroup", "primary"),
            output_location=output if output.endswith("/") else output + "/",
        )
        with self._lock:
            ex.hold, self.hold_next = self.hold_next, 0.0
            if query.lstrip()[:6].upper() == "UNLOAD":
                ex.fail_after_write, self.fail_next_unload_after_write = self.fail_next_unload_after_write, None
            self.executions[ex.query_id] = ex
            ex.thread = threading.Thread(target=self._run, args=(ex,), daemon=True, name=f"athena-query-{ex.query_id}")
            ex.thread.start()
        return {"QueryExecutionId": ex.query_id}

    def _op_GetQueryExecution(self, request: dict) -> dict:  # noqa: N802
        ex = self.executions[request["QueryExecutionId"]]
        status: dict[str, Any] = {"State": ex.state, "SubmissionDateTime": ex.submitted}
        if ex.reason:
            status["StateChangeReason"] = ex.reason
            if ex.state == "FAILED":
                status["AthenaError"] = {
                    "ErrorCategory": 2,
                    "ErrorType": 1306,
                    "Retryable": False,
                    "ErrorMessage": ex.reason,
                }
        if ex.completed:
            status["CompletionDateTime"] = ex.completed
        statistics: dict[str, Any] = {
            "DataScannedInBytes": ex.scanned,
            "EngineExecutionTimeInMillis": int(1000 * ((ex.completed or time.time()) - ex.submitted)),
        }
        if ex.manifest:
            statistics["DataManifestLocation"] = ex.manifest
        return {
            "QueryExecution": {
                "QueryExecutionId": ex.query_id,
                "Query": ex.query,
                "StatementType": ex.statement_type,
                "ResultConfiguration": {"OutputLocation": f"{ex.output_location}{ex.query_id}.csv"},
                "QueryExecutionContext": {"Database": ex.database, "Catalog": "awsdatacatalog"},
                "Status": status,
                "Statistics": statistics,
                "WorkGroup": ex.work_group,
                "EngineVersion": {"SelectedEngineVersion": "AUTO", "EffectiveEngineVersion": "Athena engine version 3"},
            }
        }

    def _op_StopQueryExecution(self, request: dict) -> dict:  # noqa: N802
        ex = self.executions[request["QueryExecutionId"]]
        ex.cancel.set()
        return {}

    def _op_GetQueryResults(self, request: dict) -> dict:  # noqa: N802
        ex = self.executions[request["QueryExecutionId"]]
        if ex.state != "SUCCEEDED":
            raise _InvalidRequest(f"Query has not yet finished. Current state: {ex.state}")
        max_results = min(int(request.get("MaxResults", 1000)), 1000)
        start = int(request.get("NextToken") or 0)
        rows = []
        if ex.statement_type == "DML" and ex.columns:
            rows = [[name for name, _ in ex.columns], *ex.rows]  # Athena repeats the labels as the first row
        page = rows[start : start + max_results]
        out: dict[str, Any] = {
            "UpdateCount": 0,
            "ResultSet": {
                "Rows": [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in page],
                "ResultSetMetadata": {
                    "ColumnInfo": [
                        {
                            "CatalogName": "hive",
                            "SchemaName": "",
                            "TableName": "",
                            "Name": name,
                            "Label": name,
                            "Type": kind,
                            "Precision": 0,
                            "Scale": 0,
                            "Nullable": "UNKNOWN",
                            "CaseSensitive": kind == "varchar",
                        }
                        for name, kind in ex.columns
                    ]
                },
            },
        }
        if start + max_results < len(rows):
            out["NextToken"] = str(start + max_results)
        return out

    # --------------------------------------------------------------- execution

    def _run(self, ex: Execution) -> None:
        ex.state = "RUNNING"
        try:
            deadline = time.monotonic() + ex.hold
            while time.monotonic() < deadline and not ex.cancel.is_set():
                time.sleep(0.01)
            if ex.cancel.is_set():
                ex.state, ex.reason = "CANCELLED", "Query was cancelled by user"
                return
            if ex.database != self.database:
                raise QueryFailed(f"SCHEMA_NOT_FOUND: line 1:1: Schema '{ex.database}' does not exist")
            if ex.query.lstrip()[:6].upper() == "UNLOAD":
                self._unload(ex)
            else:
                self._select(ex)
            ex.state = "SUCCEEDED"
        except QueryFailed as err:
            ex.state, ex.reason = "FAILED", str(err)
        except Exception as err:  # an engine error: Athena reports it as the query's reason
            ex.state, ex.reason = "FAILED", f"GENERIC_INTERNAL_ERROR: {type(err).__name__}: {err}"
        finally:
            ex.completed = time.time()

    def _duckdb_query(self, select_sql: str, ex: Execution):
        """Parse an Athena SELECT, bind its tables to Iceberg scans, run it on DuckDB."""
        import duckdb
        import sqlglot
        from pyiceberg.expressions import AlwaysTrue, In
        from sqlglot import exp

        try:
            statements = [s for s in sqlglot.parse(select_sql, read="athena") if s is not None]
        except sqlglot.errors.ParseError as err:
            raise QueryFailed(f"SYNTAX_ERROR: {err}") from None
        if len(statements) != 1:
            raise QueryFailed(f"SYNTAX_ERROR: expected one statement, got {len(statements)}")
        tree = statements[0]
        if not isinstance(tree, exp.Select):
            raise QueryFailed(f"NOT_SUPPORTED: the stand-in runs SELECT and UNLOAD only, not {type(tree).__name__}")
        # Partition pruning, as Athena does for literal lists on the partition column.
        wanted: list[str] | None = None
        for node in tree.find_all(exp.In):
            if isinstance(node.this, exp.Column) and node.this.name == "batch_id":
                literals = [e.this for e in node.expressions if isinstance(e, exp.Literal) and e.is_string]
                wanted = literals if wanted is None else [b for b in wanted if b in literals]
        con = duckdb.connect()
        for table in list(tree.find_all(exp.Table)):
            db = table.db or ex.database
            if db != self.database:
                raise QueryFailed(f"SCHEMA_NOT_FOUND: Schema '{db}' does not exist")
            try:
                ice = self.warehouse._table(table.name)
            except Exception:
                raise QueryFailed(f"TABLE_NOT_FOUND: Table 'awsdatacatalog.{db}.{table.name}' does not exist") from None
            partitioned = any(f.name == "batch_id" for f in ice.spec().fields)
            row_filter = In("batch_id", wanted) if (wanted is not None and partitioned) else AlwaysTrue()
            scan = ice.scan(row_filter=row_filter)
            ex.scanned += sum(task.file.file_size_in_bytes for task in scan.plan_files())
            alias = f"t_{table.name}"
            con.register(alias, scan.to_arrow())
            table.set("this", exp.to_identifier(alias))
            table.set("db", None)
            table.set("catalog", None)
        return con.sql(tree.sql(dialect="duckdb")).to_arrow_table()

    def _select(self, ex: Execution) -> None:
        result = self._duckdb_query(ex.query, ex)
        ex.columns = [(f.name, _athena_type(f.type)) for f in result.schema]
        ex.rows = [[_varchar(v) for v in row.values()] for row in result.to_pylist()]

    def _unload(self, ex: Execution) -> None:
        select_sql, location, options = parse_unload(ex.query)
        if options.get("format", "").upper() != "PARQUET":
            raise QueryFailed(f"NOT_SUPPORTED: the stand-in writes PARQUET only, not {options.get('format')!r}")
        if not location.startswith("s3://"):
            raise QueryFailed(f"INVALID_TABLE_PROPERTY: location {location!r} is not an S3 location")
        bucket, _, prefix = location[5:].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        listing = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if listing.get("KeyCount", 0):
            raise QueryFailed(
                f"HIVE_PATH_ALREADY_EXISTS: Target directory for table '{ex.query_id}' already exists: {location}"
            )
        result = self._duckdb_query(select_sql, ex)
        partitioned_by = options.get("partitioned_by", [])
        if result.schema.names[len(result.schema.names) - len(partitioned_by) :] != partitioned_by:
            raise QueryFailed(
                "INVALID_TABLE_PROPERTY: Partition columns must be the last columns in the table "
                "and in the same order as partitioned_by"
            )
        data = result.drop_columns(partitioned_by) if partitioned_by else result
        groups: dict[str, np.ndarray] = {}  # partition directory -> its rows, in order
        if partitioned_by:
            # Grouped by Arrow, not row by row in Python: an UNLOAD may hold millions of rows.
            keyed = result.select(partitioned_by).append_column("_row", pa.array(np.arange(len(result))))
            grouped = keyed.group_by(partitioned_by, use_threads=False).aggregate([("_row", "list")])
            rows = grouped["_row_list"].combine_chunks()
            for i, key in enumerate(grouped.select(partitioned_by).to_pylist()):
                path = "".join(
                    f"{c}={'__HIVE_DEFAULT_PARTITION__' if v is None or v == '' else hive_escape(str(v))}/"
                    for c, v in key.items()
                )
                found = rows[i].values.to_numpy()
                groups[path] = found if path not in groups else np.sort(np.concatenate([groups[path], found]))
            groups = dict(sorted(groups.items(), key=lambda item: item[1][0]))  # in order of first row
        elif len(result):
            groups[""] = np.arange(len(result))
        if len(groups) > self.max_partitions:
            raise QueryFailed(
                f"HIVE_TOO_MANY_OPEN_PARTITIONS: Exceeded limit of {self.max_partitions} open writers for "
                f"partitions/buckets"
            )
        written = []
        for path, rows in groups.items():
            part = data.take(pa.array(rows))
            for n, lo in enumerate(range(0, max(len(part), 1), self.rows_per_file)):
                buffer = io.BytesIO()
                pq.write_table(
                    part.slice(lo, self.rows_per_file), buffer, compression=options.get("compression", "snappy").lower()
                )
                key = f"{prefix}{path}{ex.query_id}_{n:05d}_{uuid.uuid4().hex[:8]}"  # no extension, as Athena
                self.s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
                written.append(f"s3://{bucket}/{key}")
        out_bucket, _, out_prefix = ex.output_location[5:].partition("/")
        manifest_key = f"{out_prefix}{ex.query_id}-manifest.csv"
        self.s3.put_object(Bucket=out_bucket, Key=manifest_key, Body="".join(w + "\n" for w in written).encode())
        ex.statement_type = "DML"
        if ex.fail_after_write:
            # Athena leaves the files of a failed UNLOAD behind.
            raise QueryFailed(ex.fail_after_write)
        ex.manifest = f"s3://{out_bucket}/{manifest_key}"


class _InvalidRequest(Exception):
    pass


class _ClosingHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server whose ``server_close`` also ends the connections it holds open.

    HTTP/1.1 clients (botocore) keep their connections alive, each with a
    handler thread waiting for the next request: closing them lets those
    threads end, and ``server_close`` joins them (``block_on_close``).
    """

    daemon_threads = False
    block_on_close = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._closing = False
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        if not self._closing:  # a connection cut by server_close is no error
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        self._closing = True
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by its client
                pass
        super().server_close()


def parse_unload(query: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``UNLOAD (<select>) TO '<location>' WITH (<options>)`` into its parts.

    Uses sqlglot's tokenizer, so string literals (with any parentheses,
    quotes or semicolons inside) are single tokens.
    """
    import sqlglot
    from sqlglot.tokens import TokenType

    text = query.strip()
    if text.endswith(";"):
        text = text[:-1]
    rest = text[6:]
    try:
        tokens = sqlglot.tokenize(rest, read="athena")
    except sqlglot.errors.TokenError as err:
        raise QueryFailed(f"SYNTAX_ERROR: {err}") from None
    if not tokens or tokens[0].token_type != TokenType.L_PAREN:
        raise QueryFailed("SYNTAX_ERROR: expected ( after UNLOAD")
    depth = 0
    close = None
    for i, tok in enumerate(tokens):
        if tok.token_type == TokenType.L_PAREN:
            depth += 1
        elif tok.token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                close = i
                break
    if close is None:
        raise QueryFailed("SYNTAX_ERROR: unbalanced parentheses in UNLOAD")
    select_sql = rest[tokens[0].end + 1 : tokens[close].start]
    tail = tokens[close + 1 :]
    if any(t.token_type == TokenType.SEMICOLON for t in tail):
        raise QueryFailed("SYNTAX_ERROR: mismatched input ';': expected one statement")
    if len(tail) < 2 or tail[0].text.upper() != "TO" or tail[1].token_type != TokenType.STRING:
        raise QueryFailed("SYNTAX_ERROR: expected TO '<s3 location>' after UNLOAD (...)")
    location = tail[1].text
    options: dict[str, Any] = {}
    body = tail[2:]
    if body:
        if (
            body[0].text.upper() != "WITH"
            or body[1].token_type != TokenType.L_PAREN
            or body[-1].token_type != TokenType.R_PAREN
        ):
            raise QueryFailed("SYNTAX_ERROR: expected WITH (...) after the location")
        i, inner = 0, body[2:-1]
        while i < len(inner):
            key = inner[i].text.lower()
            if i + 2 >= len(inner) or inner[i + 1].token_type != TokenType.EQ:
                raise QueryFailed(f"SYNTAX_ERROR: expected {key} = <value>")
            if inner[i + 2].token_type == TokenType.STRING:
                options[key] = inner[i + 2].text
                i += 3
            elif inner[i + 2].text.upper() == "ARRAY" and inner[i + 3].token_type == TokenType.L_BRACKET:
                j, values = i + 4, []
                while inner[j].token_type != TokenType.R_BRACKET:
                    if inner[j].token_type == TokenType.STRING:
                        values.append(inner[j].text)
                    elif inner[j].token_type != TokenType.COMMA:
                        raise QueryFailed(f"SYNTAX_ERROR: unexpected {inner[j].text!r} in ARRAY[...]")
                    j += 1
                options[key] = values
                i = j + 1
            else:
                raise QueryFailed(f"SYNTAX_ERROR: unexpected {inner[i + 2].text!r} for {key}")
            if i < len(inner):
                if inner[i].token_type != TokenType.COMMA:
                    raise QueryFailed(f"SYNTAX_ERROR: unexpected {inner[i].text!r} in WITH (...)")
                i += 1
    return select_sql, location, options


def _athena_type(kind: pa.DataType) -> str:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "varchar"
    if pa.types.is_float64(kind):
        return "double"
    if pa.types.is_float32(kind):
        return "real"
    if pa.types.is_int64(kind):
        return "bigint"
    if pa.types.is_integer(kind):
        return "integer"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    return "varchar"


def _varchar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if hasattr(value, "isoformat") and hasattr(value, "hour"):
        return value.isoformat(sep=" ")
    return str(value)
