"""One conformance suite that every Warehouse implementation runs.

* ``embedded``: LocalWarehouse (pyiceberg sqlite catalog + DuckDB);
* ``glue``: IcebergWarehouse over a Glue catalog with data in S3, both moto's server;
* ``athena``: AthenaWarehouse (unmodified PyAthena) against the Athena stand-in,
  which runs the generated SQL on the embedded warehouse's Iceberg files and
  writes UNLOAD output to moto's S3.

The same tests: resolve, export exactly the requested (batch, sample) pairs,
odd and injection ids, batch ids that look like paths, cleanup, and
warehouse -> store -> xarray values equal to an independent pivot.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
import xarray as xr
from aws_support import athena_for, glue_warehouse, start_standin
from conftest import N_CPGS, N_SAMPLES, read_truth
from test_warehouse_local import CPG_ORDER, INJECTION, SAMPLES, _expected, fill

from xr_methyl import Loader, LocalWarehouse, MethylStore, Warehouse, open_warehouse
from xr_methyl.errors import DataError
from xr_methyl.synthetic import build_cohort

KINDS = ["embedded", "glue", "athena"]
EVIL = ["x' OR '1'='1", "a'); DROP TABLE beta; --"]


@dataclass
class Case:
    kind: str
    warehouse: Warehouse
    data: dict[str, pa.Table]  # the rows appended, for the expected answers
    standin: Any = None


@pytest.fixture(scope="module", params=KINDS)
def case(request, tmp_path_factory):
    kind = request.param
    if kind == "embedded":
        wh = LocalWarehouse(tmp_path_factory.mktemp("odd-embedded"))
        yield Case(kind, wh, fill(wh))
        return
    moto = request.getfixturevalue("moto_server")
    if kind == "glue":
        wh = glue_warehouse(moto, "odd_ids")
        yield Case(kind, wh, fill(wh))
        return
    local = LocalWarehouse(tmp_path_factory.mktemp("odd-athena"))
    data = fill(local)
    standin = start_standin(local, moto, rows_per_file=4)  # several files per batch
    try:
        yield Case(kind, athena_for(standin, moto, moto.new_bucket("athena")), data, standin)
    finally:
        standin.stop()


def read_export(export) -> dict[str, set[tuple]]:
    got = {}
    for batch_id in export.files:
        rows = []
        for record_batch in export.read(batch_id, batch_size=3):  # streamed in small record batches
            assert record_batch.schema.names == ["sample_id", "cpg_id", "value"]
            rows += [(r["sample_id"], r["cpg_id"], float(r["value"])) for r in record_batch.to_pylist()]
        assert len(rows) == len(set(rows)), f"duplicate rows exported for batch {batch_id!r}"
        got[batch_id] = set(rows)
    return got


def expected(case: Case, table: str, batches: dict[str, list[str]]) -> dict[str, set[tuple]]:
    out = _expected(case.data[table], table, batches)
    return {b: {(s, c, float(v)) for s, c, v in rows} for b, rows in out.items()}


def export_root(case: Case, export) -> str:
    """Where this export's files must all lie (and nothing else of it)."""
    if case.kind == "athena":
        return export.provenance["unload_location"].removeprefix("s3://")
    first = next(f for files in export.files.values() for f in files)
    return first.split("/beta/")[0].split("/coverage/")[0] + "/"


# --------------------------------------------------------------------- identity


def test_is_a_warehouse_that_reopens_from_its_uri_and_pickles(case):
    wh = case.warehouse
    assert isinstance(wh, Warehouse)
    again = open_warehouse(wh.describe())
    assert type(again) is type(wh) and again.describe() == wh.describe()
    assert pickle.loads(pickle.dumps(wh)).describe() == wh.describe()
    for secret in ("testing", "AWS_SECRET", "secret"):  # the dummy credentials of the environment
        assert secret not in wh.describe()


def test_cpgs_come_in_genome_order(case):
    out = case.warehouse.cpgs()
    assert out.column_names == ["cpg_id", "chrom", "pos"]
    assert out["cpg_id"].to_pylist() == CPG_ORDER
    assert out.schema.field("pos").type == pa.int64()


# ---------------------------------------------------------------------- resolve


def test_resolve_returns_known_ids_in_order_with_metadata(case):
    asked = ["S2", "O'Brien", "nope", INJECTION, "Zoë 漢字", "S2"]
    out = case.warehouse.resolve_samples(asked)
    assert out.column_names == ["sample_id", "batch_id", "age", "sex"]
    assert out.to_pylist() == [
        {"sample_id": s, "batch_id": SAMPLES[s][0], "age": SAMPLES[s][1], "sex": SAMPLES[s][2]}
        for s in ["S2", "O'Brien", INJECTION, "Zoë 漢字"]
    ]


@pytest.mark.parametrize("evil", EVIL)
def test_injection_ids_resolve_to_nothing(case, evil):
    assert case.warehouse.resolve_samples([evil]).num_rows == 0
    assert case.warehouse.resolve_samples([evil, "S1"])["sample_id"].to_pylist() == ["S1"]


# ----------------------------------------------------------------------- export

SELECTIONS = {
    "one batch": {"B1": ["S1", "S2"]},
    "stray rows of S1 under another batch": {"plate 2/A=1%": ["O'Brien", "S1"]},
    "every sample by its batch": {
        b: [s for s, v in SAMPLES.items() if v[0] == b] for b in dict.fromkeys(v[0] for v in SAMPLES.values())
    },
    "injection and quotes": {"B1": ["S1"], "é 漢": [INJECTION], INJECTION: ['x"y']},
}


@pytest.mark.parametrize("table", ["beta", "coverage"])
@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_export_holds_exactly_the_requested_pairs(case, table, selection):
    batches = SELECTIONS[selection]
    with case.warehouse.export(table, batches) as export:
        assert export.table == table and list(export.files) == list(batches)
        assert read_export(export) == expected(case, table, batches)


def test_injection_ids_export_nothing_and_change_nothing(case):
    batches = {"B1": [EVIL[0]], EVIL[1]: ["S1"], "S9": ["' OR 1=1 --"]}
    with case.warehouse.export("beta", batches) as export:
        assert read_export(export) == {b: set() for b in batches}
    # The tables are intact: the same export as before still finds every row.
    full = SELECTIONS["every sample by its batch"]
    with case.warehouse.export("beta", full) as export:
        assert read_export(export) == expected(case, "beta", full)


def test_batch_ids_never_leave_the_export_location(case):
    batches = {"..": ["S9"], "plate 2/A=1%": ["S1", "O'Brien"], "batch_index=0": ["S10"], "../..": ["S1"], "/": ["S1"]}
    with case.warehouse.export("coverage", batches) as export:
        root = export_root(case, export)
        paths = [f for files in export.files.values() for f in files]
        assert paths
        for path in paths:
            assert path.startswith(root) and "/../" not in path.removeprefix(root) and not path.endswith("/..")
        assert read_export(export) == expected(case, "coverage", batches)
    for bad in ["", " B1"]:
        with pytest.raises(DataError):
            case.warehouse.export("beta", {bad: ["S1"]})


def test_closing_an_export_removes_its_files(case):
    export = case.warehouse.export("beta", {"B1": ["S1"], "a%20b": ["S8"]})
    paths = [f for files in export.files.values() for f in files]
    fs: pafs.FileSystem = export.filesystem
    assert paths and all(info.type == pafs.FileType.File for info in fs.get_file_info(paths))
    export.close()
    assert all(info.type == pafs.FileType.NotFound for info in fs.get_file_info(paths))


def test_unknown_table_is_refused(case):
    with pytest.raises(ValueError, match="unknown value table 'cpgs'"):
        case.warehouse.export("cpgs", {"B1": ["S1"]})


# -------------------------------------------------------- warehouse -> store -> xarray


@pytest.fixture(scope="module")
def cohort_case(request, cohort):
    """The session's synthetic cohort behind each kind of warehouse, with its truth."""
    kind = request.param
    if kind == "embedded":
        yield LocalWarehouse(cohort.warehouse.path), read_truth(cohort.warehouse), None
        return
    moto = request.getfixturevalue("moto_server")
    if kind == "glue":
        wh = glue_warehouse(moto, "cohort")
        build_cohort(wh, n_samples=N_SAMPLES, n_cpgs=N_CPGS, batch_size=8, seed=21)
        yield wh, read_truth(wh), None
        return
    standin = start_standin(LocalWarehouse(cohort.warehouse.path), moto)
    try:
        yield athena_for(standin, moto, moto.new_bucket("e2e")), read_truth(cohort.warehouse), standin
    finally:
        standin.stop()


@pytest.mark.parametrize("cohort_case", KINDS, indirect=True)
def test_ensure_through_xarray_equals_an_independent_pivot(cohort_case, tmp_path):
    wh, truth, standin = cohort_case
    path = tmp_path / "cohort.methyl.zarr"
    MethylStore.create(path, warehouse=wh)
    assert MethylStore.open(path).manifest.warehouse == wh.describe()
    ds = xr.open_dataset(path, engine="methylzarr")
    ids = list(truth.samples.index[[7, 0, 19, 12, 8]])  # across three batches, out of order
    sub = ds.methyl.ensure(ids, progress=False)
    assert list(sub.sample.values) == ids
    np.testing.assert_array_equal(sub.beta.values, truth.beta.loc[ids].to_numpy())
    np.testing.assert_array_equal(sub.coverage.values, truth.coverage.loc[ids].to_numpy())
    np.testing.assert_allclose(sub.age.values, truth.samples.loc[ids, "age"].to_numpy())
    assert list(sub.batch_id.values) == list(truth.samples.loc[ids, "batch_id"])

    store = MethylStore.open(path)
    assert sorted(store.provenance) == sorted(set(truth.samples.loc[ids, "batch_id"]))
    queries = [q for entries in store.provenance.values() for e in entries for q in e["queries"]]
    if standin is None:
        assert queries == [] and store.cost()["queries"] == 0
    else:
        # one lookup and one UNLOAD per value table, each a query the stand-in really ran
        assert {q["query_id"] for q in queries} <= set(standin.executions)
        assert store.cost()["queries"] == 3
        query_ids = {q["query_id"] for q in queries}
        assert store.cost()["bytes_scanned"] == sum(standin.executions[q].scanned for q in query_ids)
    # the second call reads the cache only
    report = Loader(store, wh).ingest(ids, progress=False)
    assert report.ingested == [] and not report.warehouse_used
    if os.environ.get("XR_METHYL_KEEP"):  # pragma: no cover - debugging aid
        print(path)


# ------------------------------------------- a warehouse another pipeline wrote: NULL and NaN values

NAN, INF = float("nan"), float("inf")
PIPELINE_CPGS = [
    ("chr1:100", "chr1", 100),
    ("chr1:250", "chr1", 250),
    ("chr1:300", "chr1", 300),
    ("chr1:420", "chr1", 420),
    ("chr1:500", "chr1", 500),
    ("chr1:610", "chr1", 610),
    ("chr1:700", "chr1", 700),
    ("chr2:50", "chr2", 50),
]
C = [c for c, _, _ in PIPELINE_CPGS]  # chr2:50 has no row in either table
GOOD_BATCHES = {"A": "plate 1", "B": "plate 1", "C/7": "plate 2"}
GOOD_BETA = [  # (sample, cpg, beta); None is a NULL
    ("A", C[0], 0.25),
    ("A", C[1], None),
    ("A", C[2], NAN),
    ("A", C[3], 1.0),
    ("A", C[5], 0.0),
    ("B", C[0], None),
    ("B", C[1], NAN),
    ("B", C[2], None),
    ("B", C[6], None),  # every call of B failed
    ("C/7", C[0], 0.5),
    ("C/7", C[1], 0.125),
    ("C/7", C[2], None),
    ("C/7", C[3], 0.75),
    ("C/7", C[4], NAN),
    ("C/7", C[5], 0.3),
]
GOOD_COVERAGE = [  # (sample, cpg, coverage); None is a NULL
    ("A", C[0], 10),
    ("A", C[1], 7),
    ("A", C[2], None),
    ("A", C[3], None),
    ("A", C[4], 4),  # C[4]: coverage only
    ("B", C[0], 0),
    ("B", C[1], 3),
    ("B", C[6], None),  # B's C[2]: a NULL beta without a coverage row
    ("C/7", C[0], 12),
    ("C/7", C[1], 9),
    ("C/7", C[2], 2),
    ("C/7", C[3], 30),
    ("C/7", C[4], 1),
    ("C/7", C[5], None),
]
# Each refused sample in a batch of its own: (beta rows, coverage rows, what the error says).
REFUSED = {
    "neg beta": ([(C[0], 0.5), (C[1], -0.01)], [(C[0], 3)], r"\[0, 1\]"),
    "big beta": ([(C[0], 1.5), (C[1], None)], [(C[0], 3)], r"\[0, 1\]"),
    "inf beta": ([(C[0], INF)], [(C[0], 3)], r"\[0, 1\]"),
    "-inf beta": ([(C[0], -INF), (C[1], NAN)], [], r"\[0, 1\]"),
    "neg coverage": ([(C[0], 0.5)], [(C[0], None), (C[1], -1)], "whole number"),
    "NULL repeating a beta": ([(C[0], 0.5), (C[1], 0.5), (C[0], None)], [(C[0], 3)], r"duplicate.*'chr1:100'"),
}


def pipeline_tables(beta_rows, coverage_rows, batch_of: dict[str, str]) -> dict[str, pa.Table]:
    """The four tables as plain Arrow tables of the types the warehouse expects (NULLs as written)."""

    def long(rows, name, kind):
        return pa.table(
            {
                "batch_id": pa.array([batch_of[s] for s, _, _ in rows], pa.string()),
                "sample_id": pa.array([s for s, _, _ in rows], pa.string()),
                "cpg_id": pa.array([c for _, c, _ in rows], pa.string()),
                name: pa.array([v for _, _, v in rows], kind),
            }
        )

    return {
        "cpgs": pa.table(
            {
                "cpg_id": C,
                "chrom": [ch for _, ch, _ in PIPELINE_CPGS],
                "pos": pa.array([p for _, _, p in PIPELINE_CPGS], pa.int64()),
            }
        ),
        "sample_batch_map": pa.table({"sample_id": list(batch_of), "batch_id": list(batch_of.values())}),
        "beta": long(beta_rows, "beta", pa.float64()),
        "coverage": long(coverage_rows, "coverage", pa.int64()),
    }


def write_like_a_pipeline(catalog, namespace: str, tables: dict[str, pa.Table]) -> None:
    """Create and fill the tables with pyiceberg and pyarrow alone, without xr_methyl's helpers."""
    catalog.create_namespace(namespace)
    for name, data in tables.items():
        table = catalog.create_table((namespace, name), schema=data.schema)
        if name in ("beta", "coverage"):
            with table.update_spec() as spec:
                spec.add_identity("batch_id")
        table.append(data)


def pipeline_warehouse(path, beta_rows=GOOD_BETA, coverage_rows=GOOD_COVERAGE) -> LocalWarehouse:
    """A LocalWarehouse layout (sqlite catalog ``xr_methyl``, namespace ``methylation``) with the good samples
    and every refused one."""
    from pyiceberg.catalog.sql import SqlCatalog

    path.mkdir(parents=True)
    catalog = SqlCatalog("xr_methyl", uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/warehouse")
    write_like_a_pipeline(catalog, "methylation", all_tables(beta_rows, coverage_rows))
    return LocalWarehouse(path)


def all_tables(beta_rows, coverage_rows) -> dict[str, pa.Table]:
    beta, coverage = list(beta_rows), list(coverage_rows)
    batch_of = dict(GOOD_BATCHES)
    for i, (sample, (b, c, _)) in enumerate(REFUSED.items()):
        batch_of[sample] = f"refused {i}"
        beta += [(sample, cpg, v) for cpg, v in b]
        coverage += [(sample, cpg, v) for cpg, v in c]
    return pipeline_tables(beta, coverage, batch_of)


@pytest.fixture(scope="module", params=KINDS)
def pipeline(request, tmp_path_factory):
    """(warehouse, its kind) for a warehouse written by another pipeline, with NULL and NaN values."""
    kind = request.param
    if kind == "glue":
        from pyiceberg.catalog import load_catalog

        wh = glue_warehouse(request.getfixturevalue("moto_server"), "pipeline")
        write_like_a_pipeline(
            load_catalog(wh.catalog_name, **wh.properties), wh.namespace, all_tables(GOOD_BETA, GOOD_COVERAGE)
        )
        yield wh
        return
    local = pipeline_warehouse(tmp_path_factory.mktemp(f"pipeline-{kind}") / "wh")
    if kind == "embedded":
        yield local
        return
    moto = request.getfixturevalue("moto_server")
    standin = start_standin(local, moto, rows_per_file=5)
    try:
        yield athena_for(standin, moto, moto.new_bucket("pipeline"))
    finally:
        standin.stop()


def independent_pivot(beta_rows, coverage_rows, samples) -> tuple[np.ndarray, np.ndarray]:
    """pandas alone: NULL or NaN beta -> NaN, as a missing row; NULL or missing coverage -> 0."""
    import pandas as pd

    def wide(rows):
        frame = pd.DataFrame(rows, columns=["sample_id", "cpg_id", "value"]).astype({"value": "float64"})
        return frame.pivot(index="sample_id", columns="cpg_id", values="value").reindex(index=samples, columns=C)

    return (wide(beta_rows).to_numpy(np.float32), wide(coverage_rows).fillna(0).to_numpy(np.int64))


def test_null_and_nan_values_are_stored_as_missing(pipeline, tmp_path):
    path = tmp_path / "pipeline.methyl.zarr"
    MethylStore.create(path, warehouse=pipeline)
    ids = ["C/7", "A", "B"]
    sub = xr.open_dataset(path, engine="methylzarr").methyl.ensure(ids, progress=False)
    beta, coverage = independent_pivot(GOOD_BETA, GOOD_COVERAGE, ids)
    assert sub.beta.dtype == np.float32 and sub.coverage.dtype == np.uint16
    np.testing.assert_array_equal(sub.beta.values, beta)
    np.testing.assert_array_equal(sub.coverage.values, coverage)
    # A NULL beta keeps its coverage; a coverage-only row is a NaN beta with its coverage.
    a = sub.compute().sel(sample="A")
    assert np.isnan(a.beta.sel(cpg=C[1]).item()) and a.coverage.sel(cpg=C[1]).item() == 7
    assert np.isnan(a.beta.sel(cpg=C[4]).item()) and a.coverage.sel(cpg=C[4]).item() == 4
    assert a.beta.sel(cpg=C[3]).item() == 1.0 and a.coverage.sel(cpg=C[3]).item() == 0  # NULL coverage

    from xr_methyl.store.verify import verify_store

    report = verify_store(path, warehouse=pipeline, cells=400, seed=0)  # every one of the 24 cells, likely twice
    assert report.ok, report.problems
    # The same store against a warehouse that says otherwise in three cells: each is found.
    changed_beta = [(s, c, {("A", C[1]): 0.5, ("C/7", C[0]): None}.get((s, c), v)) for s, c, v in GOOD_BETA]
    changed_coverage = [(s, c, 3 if (s, c) == ("A", C[3]) else v) for s, c, v in GOOD_COVERAGE]
    other = pipeline_warehouse(tmp_path / "changed", changed_beta, changed_coverage)
    problems = verify_store(path, warehouse=other, cells=400, seed=0).problems
    for found in [
        f"beta of ('A', '{C[1]}'): store has nan, warehouse has 0.5",
        f"beta of ('C/7', '{C[0]}'): store has 0.5, warehouse has NULL",
        f"coverage of ('A', '{C[3]}'): store has 0, warehouse has 3.0",
    ]:
        assert found in problems, problems
    assert len(problems) == 3, problems


@pytest.mark.parametrize("sample", list(REFUSED))
def test_out_of_range_values_are_refused_naming_the_sample(pipeline, tmp_path, sample):
    path = tmp_path / "refused.methyl.zarr"
    MethylStore.create(path, warehouse=pipeline)
    Loader(path, pipeline).ingest(["A"], progress=False)
    with pytest.raises(DataError, match=REFUSED[sample][2]) as err:
        Loader(path, pipeline).ingest([sample], progress=False)
    assert repr(sample) in str(err.value)
    assert MethylStore.open(path).sample_ids == ["A"]  # nothing of the refused batch was written
