"""The SQL text the Athena warehouse sends: quoting, splitting to Athena's limits, output directories.

Pure functions, checked by parsing what they build with sqlglot's athena
dialect (an independent SQL parser) rather than by comparing strings.
"""

from __future__ import annotations

import random

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from xr_methyl.errors import DataError
from xr_methyl.testing.athena_standin import hive_escape, parse_unload
from xr_methyl.warehouse.athena_sql import (
    MAX_PARTITIONS,
    MAX_QUERY_BYTES,
    athena_cost,
    batch_of_partition,
    check_identifier,
    plan_unloads,
    quote_identifier,
    quote_literal,
    resolve_sql,
    split_for_resolve,
)

INJECTIONS = [
    "x' OR '1'='1",
    "a'); DROP TABLE beta; --",
    "'; DROP TABLE beta; --",
    "x'' OR ''1''=''1",
    "\\'; SELECT 1; --",
    "x\\' OR 1=1 --",
    "/* */' OR 1=1 /*",
    "$$ OR 1=1 $$",
    "x'\u2019 OR '1'='1",
    '" OR "1"="1',
    "%(sample)s",
    "?",
]
ODD_BATCHES = [
    "B1",
    "plate 2/A=1%",
    "é 漢",
    "..",
    "../x",
    "a/b",
    "batch_id=0",
    "back\\slash",
    'say "hi"',
    "50%",
    "a%20b",
    "%2F",
    "x?y#z*{w}[v]^:",
]

# Any id check_sql_ids accepts: printable, no surrounding whitespace, no surrogates.
ids = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda s: s == s.strip() and "\ufffe" not in s and "\uffff" not in s
)


def _string_literals(tree: exp.Expression) -> list[str]:
    return [lit.this for lit in tree.find_all(exp.Literal) if lit.is_string]


@settings(max_examples=300, deadline=None)
@given(ids)
def test_a_quoted_literal_is_one_string_holding_exactly_the_id(value):
    tree = sqlglot.parse_one(f"SELECT {quote_literal(value)} AS x", read="athena")
    assert isinstance(tree, exp.Select)
    literal = tree.expressions[0].this
    assert isinstance(literal, exp.Literal) and literal.is_string and literal.this == value


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_ids_stay_data_in_the_resolve_query(evil):
    sql = resolve_sql("methylation", "sample_batch_map", ["S1", evil])
    statements = sqlglot.parse(sql, read="athena")
    assert len(statements) == 1 and isinstance(statements[0], exp.Select)
    where = statements[0].args["where"].this
    assert isinstance(where, exp.In) and where.this.name == "sample_id"
    # Exactly the two ids, as two literals, and nothing else in the WHERE clause.
    assert [(type(e), e.this) for e in where.expressions] == [(exp.Literal, "S1"), (exp.Literal, evil)]
    assert [t.name for t in statements[0].find_all(exp.Table)] == ["sample_batch_map"]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_ids_stay_data_in_an_unload(evil):
    (unload,) = plan_unloads("methylation", "beta", "beta", "s3://bucket/u/", {evil: ["S1", evil], "B1": [evil]})
    select, location, options = parse_unload(unload.sql)
    assert location == "s3://bucket/u/part-00000/"
    assert options == {"format": "PARQUET", "compression": "SNAPPY", "partitioned_by": ["batch_id"]}
    (tree,) = sqlglot.parse(select, read="athena")
    assert [t.name for t in tree.find_all(exp.Table)] == ["beta"]
    literals = sorted(_string_literals(tree))
    assert literals == sorted([evil, "B1", evil, "S1", evil, "B1", evil])


def test_identifiers_are_plain_names_only():
    assert quote_identifier("sample_batch_map") == '"sample_batch_map"'
    for bad in ['beta"; DROP TABLE x; --', "a b", "", "1abc", "x.y"]:
        with pytest.raises(ValueError, match="letters, digits and underscores"):
            check_identifier(bad)


@pytest.mark.parametrize("bad", ["", " S1", "S1\n", "a\x00b", "\ud800", "x" * 1025])
def test_ids_sql_cannot_hold_are_refused(bad):
    with pytest.raises(DataError):
        resolve_sql("db", "sample_batch_map", [bad])


def _pairs(unloads):
    out = []
    for u in unloads:
        out += [(b, s) for b, members in u.batches.items() for s in members]
    return out


def test_thousands_of_long_ids_split_under_athenas_limits():
    rng = random.Random(5)
    batches = {
        f"plate-{b:04d}-{'x' * rng.randrange(0, 30)}": [
            f"sample-{b:04d}-{i:03d}-{'y' * 24}'" for i in range(rng.randrange(1, 120))
        ]
        for b in range(400)
    }
    n_pairs = sum(map(len, batches.values()))
    assert n_pairs > 20_000
    unloads = plan_unloads("methylation", "beta", "beta", "s3://bucket/run/", batches)
    assert 2 < len(unloads) < 20
    for u in unloads:
        assert len(u.sql.encode()) <= MAX_QUERY_BYTES
        assert len(u.batches) <= MAX_PARTITIONS
    # parsing 256 KiB of SQL is slow: one statement is enough to show they are well formed
    select, location, _ = parse_unload(unloads[0].sql)
    assert location == unloads[0].location
    (tree,) = sqlglot.parse(select, read="athena")
    assert len(_string_literals(tree)) == 2 * len(unloads[0].batches) + sum(map(len, unloads[0].batches.values()))
    # every pair exactly once, each part with its own empty prefix
    expected = [(b, s) for b, members in batches.items() for s in members]
    assert sorted(_pairs(unloads)) == sorted(expected)
    assert len({u.location for u in unloads}) == len(unloads)
    # the byte budget is used well: no statement but the last is far below it
    assert all(len(u.sql.encode()) > MAX_QUERY_BYTES * 0.9 for u in unloads[:-1] if len(u.batches) < MAX_PARTITIONS)


def test_one_huge_batch_is_split_over_several_unloads():
    members = [f"S{i:06d}-{'z' * 30}" for i in range(12_000)]
    unloads = plan_unloads("db", "beta", "beta", "s3://b/r/", {"P1": members}, max_bytes=50_000)
    assert len(unloads) >= 9
    assert all(list(u.batches) == ["P1"] and len(u.sql.encode()) <= 50_000 for u in unloads)
    assert sorted(_pairs(unloads)) == sorted(("P1", s) for s in members)


def test_partition_limit_counts_batches():
    batches = {f"B{i:03d}": ["S1", "S2"] for i in range(250)}
    unloads = plan_unloads("db", "coverage", "coverage", "s3://b/r/", batches)
    assert [len(u.batches) for u in unloads] == [100, 100, 50]
    plans = plan_unloads("db", "beta", "beta", "s3://b/r/", batches, max_partitions=7)
    assert [len(u.batches) for u in plans][:2] == [7, 7]


def test_batches_whose_directories_could_be_confused_never_share_an_unload():
    unloads = plan_unloads("db", "beta", "beta", "s3://b/r/", {"a b": ["S1"], "a%20b": ["S2"], "c": ["S3"]})
    for u in unloads:
        assert not {"a b", "a%20b"} <= set(u.batches)


def test_resolve_ids_split_under_the_limit():
    many = [f"{'s' * 200}{i:05d}" for i in range(3000)]
    runs = split_for_resolve(many)
    assert len(runs) >= 3 and [s for r in runs for s in r] == many
    assert all(len(resolve_sql("db", "sample_batch_map", r).encode()) <= MAX_QUERY_BYTES for r in runs)


@pytest.mark.parametrize("batch", ODD_BATCHES)
def test_output_directories_map_back_to_their_batch(batch):
    assert batch_of_partition("batch_id=" + hive_escape(batch), ODD_BATCHES) == batch
    # a writer that escapes nothing (or everything) is read right too, when unambiguous
    if "/" not in batch:
        assert batch_of_partition("batch_id=" + batch, [batch, "other"]) == batch


@pytest.mark.parametrize(
    "directory", ["batch_id=", "batch_id=nope", "other=B1", "batch_id=B1/..", "../batch_id=B1", "batch_id=%FF"]
)
def test_unexpected_output_directories_are_refused(directory):
    with pytest.raises(ValueError):
        batch_of_partition(directory, ["B1", "..", "a/b"])


def test_cost_is_athenas_list_price():
    assert athena_cost(0) == athena_cost(None) == pytest.approx(5 * 10 / 2**20)  # the 10 MiB minimum
    assert athena_cost(2**40) == pytest.approx(5.0)
    assert athena_cost(2**40 + 1) == pytest.approx(5.0 * (2**40 + 2**20) / 2**40)  # whole MiB, rounded up
