"""SQL text for Athena, built by pure functions (no I/O, no AWS client).

Everything that turns ids into SQL lives here, so that one small module is the
whole injection surface and can be tested on its own:

* :func:`quote_literal` / :func:`quote_identifier`: the only ways a value or a
  name reaches SQL text.  Athena (Trino) ends a string literal only at a single
  quote, which is doubled inside; backslashes are not escapes.  Ids are first
  checked strictly (:func:`check_sql_ids`).
* :func:`plan_unloads`: split ``{batch_id: [sample_id, ...]}`` into UNLOAD
  statements that each stay within Athena's limits (100 partitions, a query
  string under 262,144 bytes).
* :func:`batch_of_partition`: map an UNLOAD output directory ``batch_id=<value>``
  back to the batch it holds, whatever escaping the writer applied.
* :func:`athena_cost`: what a query cost at Athena's list price.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from xr_methyl.errors import DataError
from xr_methyl.warehouse.base import check_ids

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_PARTITIONS",
    "MAX_QUERY_BYTES",
    "Unload",
    "athena_cost",
    "batch_of_partition",
    "check_identifier",
    "check_sql_ids",
    "cpgs_unload_sql",
    "plan_unloads",
    "quote_identifier",
    "quote_literal",
    "resolve_sql",
    "unload_sql",
]

#: Athena refuses a query string longer than this many bytes (UTF-8).
MAX_QUERY_BYTES = 262_144
#: Athena's UNLOAD (like CTAS) writes at most this many partitions per query.
MAX_PARTITIONS = 100
#: Longest id accepted (an Athena execution parameter may be 1024 characters long too).
MAX_ID_LENGTH = 1024
#: Athena's list price: dollars per TiB scanned, with a 10 MiB minimum per query.
DOLLARS_PER_TB = 5.0
MIN_BILLED_BYTES = 10 * 2**20

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that can never be part of an id: control characters (check_ids), and
# surrogates or U+FFFF-style non-characters that cannot be encoded as UTF-8 text.
_SURROGATE = re.compile(r"[\ud800-\udfff\ufffe\uffff]")


def check_identifier(name: str, *, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL name (letters, digits, ``_``), else raise.

    Database, table and column names come from configuration, not data, so
    only plain names are accepted (Athena lower-cases them anyway).
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or len(name) > 255:
        raise ValueError(f"{what} {name!r}: expected letters, digits and underscores, starting with a letter or _")
    return name


def quote_identifier(name: str) -> str:
    """``"name"``; ``name`` must pass :func:`check_identifier`."""
    return '"' + check_identifier(name) + '"'


def check_sql_ids(ids: Iterable[object], *, what: str = "sample id") -> list[str]:
    """:func:`~xr_methyl.warehouse.base.check_ids`, plus what SQL text needs.

    Ids are at most :data:`MAX_ID_LENGTH` characters and valid Unicode (no lone
    surrogates).  Quotes, semicolons, dashes, slashes and any other printable
    characters are fine: :func:`quote_literal` makes them plain data.
    """
    out = check_ids(ids, what=what)
    for i, value in enumerate(out):
        if len(value) > MAX_ID_LENGTH:
            raise DataError(f"{what} at position {i} is {len(value)} characters long; at most {MAX_ID_LENGTH} allowed")
        if _SURROGATE.search(value):
            raise DataError(f"{what} at position {i} is {value!r}: it holds a character that is not valid Unicode text")
    return out


def quote_literal(value: str) -> str:
    """A Trino/Athena string literal holding exactly ``value``.

    The only special character inside ``'...'`` is the single quote, written
    twice.  Callers pass ids checked by :func:`check_sql_ids`; the checks are
    repeated here because this is the last step before SQL text.
    """
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__} {value!r}")
    if not value or "\x00" in value or _SURROGATE.search(value):
        raise DataError(f"{value!r} cannot be written as an SQL string literal")
    return "'" + value.replace("'", "''") + "'"


def _in_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(quote_literal(v) for v in values) + ")"


# ------------------------------------------------------------------------ resolve


def resolve_sql(database: str, table: str, sample_ids: Sequence[str]) -> str:
    """``SELECT *`` of ``sample_batch_map`` for the given ids (checked, quoted)."""
    ids = check_sql_ids(sample_ids)
    return f'SELECT * FROM {quote_identifier(database)}.{quote_identifier(table)} WHERE "sample_id" IN {_in_list(ids)}'


def split_for_resolve(
    sample_ids: Sequence[str], *, max_bytes: int = MAX_QUERY_BYTES, reserve: int = 1024
) -> list[list[str]]:
    """Split ids into runs whose IN list keeps a resolve query under ``max_bytes``."""
    runs: list[list[str]] = [[]]
    size = 0
    for s in sample_ids:
        piece = len(quote_literal(s).encode()) + 2
        if runs[-1] and size + piece > max_bytes - reserve:
            runs.append([])
            size = 0
        runs[-1].append(s)
        size += piece
    return [r for r in runs if r]


# ------------------------------------------------------------------------- unload


@dataclass(frozen=True)
class Unload:
    """One UNLOAD statement and the (batch, samples) pairs it exports."""

    sql: str
    location: str  # s3://.../ ending in "/"
    batches: dict[str, list[str]]


def cpgs_unload_sql(database: str, table: str, location: str) -> str:
    """UNLOAD of the whole ``cpgs`` table (the CpG axis) to Parquet under ``location``."""
    if not location.startswith("s3://") or not location.endswith("/"):
        raise ValueError(f"unload location {location!r}: expected s3://bucket/prefix/ ending in '/'")
    return (
        'UNLOAD (SELECT CAST("cpg_id" AS varchar) AS "cpg_id", CAST("chrom" AS varchar) AS "chrom", '
        f'CAST("pos" AS bigint) AS "pos" FROM {quote_identifier(database)}.{quote_identifier(table)}) '
        f"TO {quote_literal(location)} WITH (format = 'PARQUET', compression = 'SNAPPY')"
    )


def _head(database: str, table: str, value_column: str) -> str:
    return (
        "UNLOAD (SELECT "
        'CAST("sample_id" AS varchar) AS "sample_id", '
        'CAST("cpg_id" AS varchar) AS "cpg_id", '
        f'CAST({quote_identifier(value_column)} AS double) AS "value", '
        # The partition column must come last.
        '"batch_id" '
        f"FROM {quote_identifier(database)}.{quote_identifier(table)} "
        'WHERE "batch_id" IN ('
    )


def _tail(location: str) -> str:
    return (
        f") TO {quote_literal(location)} "
        "WITH (format = 'PARQUET', compression = 'SNAPPY', partitioned_by = ARRAY['batch_id'])"
    )


def _batch_clause(batch_id: str, samples: Sequence[str]) -> str:
    return f'("batch_id" = {quote_literal(batch_id)} AND "sample_id" IN {_in_list(samples)})'


def unload_sql(
    database: str, table: str, value_column: str, location: str, batches: Mapping[str, Sequence[str]]
) -> str:
    """The UNLOAD of exactly the given (batch, sample) pairs of one value table.

    The ``batch_id IN (...)`` list lets Athena prune partitions; the per-batch
    clauses keep rows a sample may have under another batch out.
    """
    if not location.startswith("s3://") or not location.endswith("/"):
        raise ValueError(f"unload location {location!r}: expected s3://bucket/prefix/ ending in '/'")
    if not batches:
        raise ValueError("nothing to unload: no batches given")
    batch_list = ", ".join(quote_literal(b) for b in batches)
    clauses = " OR ".join(_batch_clause(b, s) for b, s in batches.items())
    return _head(database, table, value_column) + batch_list + ") AND (" + clauses + ")" + _tail(location)


def _ambiguous(a: str, b: str) -> bool:
    """Whether one output directory could be read as either batch (see batch_of_partition)."""
    return a != b and (unquote(a) == b or unquote(b) == a)


def plan_unloads(
    database: str,
    table: str,
    value_column: str,
    location: str,
    batches: Mapping[str, Sequence[str]],
    *,
    max_partitions: int = MAX_PARTITIONS,
    max_bytes: int = MAX_QUERY_BYTES,
) -> list[Unload]:
    """Split an export into UNLOADs that each respect Athena's limits.

    Each statement writes to its own sub-prefix ``<location>part-<n>/``, holds
    at most ``max_partitions`` batches and is at most ``max_bytes`` bytes long;
    a batch too big for one statement is split over several (its files are
    then listed together).  Every (batch, sample) pair is exported exactly once.
    Two batches whose output directories could be confused (``a b`` and
    ``a%20b``) never share a statement.
    """
    if max_partitions < 1:
        raise ValueError(f"max_partitions={max_partitions}: expected at least 1")
    batch_ids = check_sql_ids(list(batches), what="batch id")
    pairs = {b: list(dict.fromkeys(check_sql_ids(batches[b]))) for b in batch_ids}

    def part_location(n: int) -> str:
        return f"{location}part-{n:05d}/"

    # Fixed bytes of any statement (the longest part number is assumed), then exact
    # bytes per batch and per sample, built from the same pieces as unload_sql.
    fixed = len((_head(database, table, value_column) + ") AND (" + ")" + _tail(part_location(99999))).encode())
    budget = max_bytes - fixed
    plans: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] = {}
    used = 0

    def flush() -> None:
        nonlocal current, used
        if current:
            plans.append(current)
        current, used = {}, 0

    for b in batch_ids:
        samples = pairs[b]
        if not samples:
            continue
        lit = len(quote_literal(b).encode())
        # batch literal in the IN list (+ ", "), the clause around the samples (+ " OR ")
        batch_cost = lit + 2 + len(_batch_clause(b, []).encode()) + 4
        i = 0
        while i < len(samples):
            new_batch = b not in current
            if new_batch and (len(current) >= max_partitions or any(_ambiguous(b, other) for other in current)):
                flush()
            cost = batch_cost if b not in current else 0
            s_cost = len(quote_literal(samples[i]).encode()) + 2
            if used + cost + s_cost > budget:
                if not current:
                    raise DataError(
                        f"batch id {b!r} with sample id {samples[i]!r} does not fit in an Athena query of "
                        f"{max_bytes} bytes"
                    )
                flush()
                continue
            current.setdefault(b, []).append(samples[i])
            used += cost + s_cost
            i += 1
    flush()
    out = []
    for n, plan in enumerate(plans):
        where = part_location(n)
        sql = unload_sql(database, table, value_column, where, plan)
        assert len(sql.encode()) <= max_bytes, (len(sql.encode()), max_bytes)  # the budget is exact or above
        out.append(Unload(sql=sql, location=where, batches=plan))
    return out


# --------------------------------------------------------------- output directories

PARTITION_PREFIX = "batch_id="


def batch_of_partition(directory: str, batch_ids: Iterable[str]) -> str:
    """The batch whose rows an UNLOAD wrote under ``batch_id=<value>``.

    Athena escapes some characters of a partition value in the directory name
    Hive-style (``/`` as ``%2F``, ``%`` as ``%25``, ...).  The value is matched
    as written and percent-decoded against the batches of that statement;
    :func:`plan_unloads` keeps batches that both readings could confuse in
    separate statements, so exactly one must match.

    Raises
    ------
    ValueError
        If the name is not ``batch_id=<value>`` or matches no batch or several.
    """
    if not directory.startswith(PARTITION_PREFIX) or "/" in directory:
        raise ValueError(f"unexpected UNLOAD output directory {directory!r}; expected batch_id=<value>")
    value = directory[len(PARTITION_PREFIX) :]
    readings = {value} if value else set()
    try:
        readings.add(unquote(value, errors="strict"))
    except UnicodeDecodeError:  # not a percent-encoding of UTF-8: only the raw reading
        pass
    found = [b for b in dict.fromkeys(batch_ids) if b in readings]
    if len(found) != 1:
        raise ValueError(
            f"UNLOAD output directory {directory!r} matches {len(found)} of the requested batches {found[:3]}; "
            "expected exactly one"
        )
    return found[0]


def athena_cost(bytes_scanned: int | None) -> float:
    """Dollars at Athena's list price: $5 per TiB scanned, rounded up to whole MiB, 10 MiB minimum."""
    scanned = max(int(bytes_scanned or 0), 0)
    billed = max(-(-scanned // 2**20) * 2**20, MIN_BILLED_BYTES)
    return billed / 2**40 * DOLLARS_PER_TB
