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
    "every sample by its batch": {b: [s for s, v in SAMPLES.items() if v[0] == b] for b in dict.fromkeys(
        v[0] for v in SAMPLES.values())},
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
