"""AthenaWarehouse against the stand-in: failures, throttling, timeouts, splitting, cost, configuration.

The client is the unmodified PyAthena; the stand-in really runs the SQL and
enforces Athena's limits, so a statement that broke them would fail here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from aws_support import athena_for, start_standin
from test_warehouse_local import fill

from xr_methyl import AthenaWarehouse, Loader, LocalWarehouse, MethylStore, WarehouseError, open_warehouse


@pytest.fixture(scope="module")
def odd(tmp_path_factory, moto_server):
    local = LocalWarehouse(tmp_path_factory.mktemp("athena-odd"))
    fill(local)
    standin = start_standin(local, moto_server)
    yield local, standin
    standin.stop()


@pytest.fixture
def bucket(moto_server):
    return moto_server.new_bucket("t61")


@pytest.fixture
def athena(odd, moto_server, bucket):
    return athena_for(odd[1], moto_server, bucket)


def unload_keys(moto, bucket):
    return moto.keys(bucket, "unload/")


# ----------------------------------------------------------------- configuration


def test_uri_round_trip_and_no_credentials_anywhere(athena, tmp_path, odd):
    uri = athena.describe()
    assert uri.startswith("athena://methylation?") and "unload_location=s3://" in uri
    again = open_warehouse(uri)
    assert isinstance(again, AthenaWarehouse) and vars(again).keys() == vars(athena).keys()
    assert {k: v for k, v in vars(again).items() if not k.startswith("_")} == {
        k: v for k, v in vars(athena).items() if not k.startswith("_")
    }
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=athena)
    Loader(store).ingest(["S1"], progress=False)  # the store reopens the warehouse from its manifest
    written = b"".join(p.read_bytes() for p in (tmp_path / "s.zarr").glob("*.json"))
    assert b"testing" not in written and b"AWS_" not in written  # the environment's dummy credentials


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("athena://db?s3_staging_dir=s3://b/r/", "no unload_location"),
        ("athena://db?unload_location=s3://b/u/&s3_staging_dir=s3://b/r/&password=x", "unknown option 'password'"),
        ("athena://bad-name?unload_location=s3://b/u/&s3_staging_dir=s3://b/r/", "letters, digits"),
        ("athena://db?unload_location=/tmp/u&s3_staging_dir=s3://b/r/", "expected s3://"),
        ("athena://db?unload_location=s3://b/u/", "s3_staging_dir, work_group"),
        ("athena://db?unload_location=s3://b/u/&work_group=wg&table.beta=beta;drop", "letters, digits"),
    ],
)
def test_bad_uris_are_refused_with_the_reason(uri, message):
    with pytest.raises(WarehouseError, match=message):
        open_warehouse(uri)


def test_import_stays_light():
    code = (
        "import sys, xr_methyl; from xr_methyl import AthenaWarehouse, IcebergWarehouse;"
        "AthenaWarehouse('db', unload_location='s3://b/u/', work_group='wg');"
        "print(sorted(m for m in ('pyathena', 'boto3', 'botocore', 'pyiceberg', 'duckdb', 'moto', 'sqlglot')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- failures


def test_a_failed_query_names_its_id_and_athenas_reason(odd, moto_server, bucket):
    wh = athena_for(odd[1], moto_server, bucket, tables={"sample_batch_map": "no_such_table"})
    with pytest.raises(WarehouseError) as err:
        wh.resolve_samples(["S1"])
    failed = [q for q, ex in odd[1].executions.items() if ex.state == "FAILED" and "no_such_table" in ex.query]
    assert failed and failed[-1] in str(err.value)
    assert "FAILED: TABLE_NOT_FOUND" in str(err.value) and "no_such_table" in str(err.value)


def test_a_failed_unload_commits_nothing_and_leaves_no_files(odd, athena, moto_server, bucket, tmp_path):
    store = MethylStore.create(tmp_path / "s.zarr", warehouse=athena)
    # beta's UNLOAD succeeds; coverage's writes its files, then fails, as Athena can.
    original = odd[1]._unload

    def failing_coverage(ex):
        if '"coverage"' in ex.query:
            ex.fail_after_write = "HIVE_WRITER_CLOSE_ERROR: Error committing write to Hive"
        return original(ex)

    odd[1]._unload = failing_coverage
    try:
        with pytest.raises(
            WarehouseError,
            match=r"Athena query [0-9a-f-]{36} \(unload coverage 1/1\) FAILED: "
            "HIVE_WRITER_CLOSE_ERROR",
        ):
            Loader(store).ingest(["S1", "S2", "O'Brien"], progress=False)
    finally:
        odd[1]._unload = original
    assert MethylStore.open(store.storage.root).sample_ids == []
    assert unload_keys(moto_server, bucket) == []  # both exports' files removed


def test_throttled_calls_are_retried_with_backoff(odd, moto_server, bucket):
    standin = odd[1]
    before = standin.throttled
    standin.throttle_next = 3
    out = athena_for(standin, moto_server, bucket, retry_delay=0.02).resolve_samples(["S1"])
    assert out["sample_id"].to_pylist() == ["S1"] and standin.throttled - before == 3
    standin.throttle_next = 2
    with pytest.raises(WarehouseError, match="ThrottlingException"):
        athena_for(standin, moto_server, bucket, retry_attempts=1).resolve_samples(["S1"])
    standin.throttle_next = 0


def test_a_query_past_the_timeout_is_stopped(odd, moto_server, bucket):
    standin = odd[1]
    standin.hold_next = 30.0
    wh = athena_for(standin, moto_server, bucket, timeout=0.5)
    did_not_finish = r"Athena query ([0-9a-f-]{36}) \(resolve\) did not finish within 0.5 s"
    with pytest.raises(WarehouseError, match=did_not_finish) as err:
        wh.resolve_samples(["S1"])
    query_id = str(err.value).split()[2]
    deadline = time.monotonic() + 5  # the stand-in, like Athena, stops the query asynchronously
    while standin.executions[query_id].state != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert standin.executions[query_id].state == "CANCELLED"
    assert "StopQueryExecution" in standin.calls


def test_the_standin_enforces_athenas_limits(odd, athena):
    """Without splitting, these statements would fail: the tests of splitting below mean something."""
    from xr_methyl.warehouse.athena_sql import unload_sql

    three = {"B1": ["S1"], "..": ["S9"], "é 漢": ["'; DROP TABLE beta; --"]}
    odd[1].max_partitions = 2
    try:
        with pytest.raises(WarehouseError, match="HIVE_TOO_MANY_OPEN_PARTITIONS"):
            athena._run(unload_sql("methylation", "beta", "beta", athena.unload_location + "raw/", three), what="raw")
    finally:
        odd[1].max_partitions = 100
    with pytest.raises(WarehouseError, match="did not start.*262144"):
        athena._run(
            unload_sql(
                "methylation",
                "beta",
                "beta",
                athena.unload_location + "big/",
                {f"P{i}": ["S" * 1000] * 3 for i in range(101)},
            ),
            what="raw",
        )


# --------------------------------------------------------------------- splitting


N_PLATES, PER_PLATE, N_CPG = 230, 2, 6


@pytest.fixture(scope="module")
def many(tmp_path_factory, moto_server):
    """460 samples on 230 plates: exporting them all needs 3 UNLOADs (100 + 100 + 30 partitions)."""
    import pyarrow as pa

    local = LocalWarehouse(tmp_path_factory.mktemp("athena-many"))
    local.create_tables()
    samples = [f"S{i:04d}" for i in range(N_PLATES * PER_PLATE)]
    plate = {s: f"P{i // PER_PLATE:03d}" for i, s in enumerate(samples)}
    local.append("sample_batch_map", pa.table({"sample_id": samples, "batch_id": [plate[s] for s in samples]}))
    cpgs = [f"chr1:{10 * i}" for i in range(N_CPG)]
    local.append("cpgs", pa.table({"cpg_id": cpgs, "chrom": ["chr1"] * N_CPG, "pos": [10 * i for i in range(N_CPG)]}))
    rng = np.random.default_rng(8)
    rows = [(plate[s], s, c) for s in samples for c in cpgs if rng.random() < 0.8]
    beta = rng.random(len(rows)).round(6)
    local.append(
        "beta",
        pa.table(
            {
                "batch_id": [r[0] for r in rows],
                "sample_id": [r[1] for r in rows],
                "cpg_id": [r[2] for r in rows],
                "beta": beta,
            }
        ),
    )
    truth = {(r[0], r[1], r[2]): float(v) for r, v in zip(rows, beta)}
    standin = start_standin(local, moto_server)
    yield samples, plate, truth, standin
    standin.stop()


def exported(export) -> dict[tuple, float]:
    out = {}
    for batch_id in export.files:
        for r in export.dataset(batch_id).to_table().to_pylist():
            assert (batch_id, r["sample_id"], r["cpg_id"]) not in out
            out[(batch_id, r["sample_id"], r["cpg_id"])] = r["value"]
    return out


def test_hundreds_of_batches_respect_the_partition_limit(many, moto_server):
    samples, plate, truth, standin = many
    bucket = moto_server.new_bucket("many")
    wh = athena_for(standin, moto_server, bucket)
    resolved = wh.resolve_samples(samples)
    groups: dict[str, list[str]] = {}
    for s, b in zip(resolved["sample_id"].to_pylist(), resolved["batch_id"].to_pylist()):
        groups.setdefault(b, []).append(s)
    assert len(groups) == N_PLATES
    with wh.export("beta", groups) as export:
        assert [q["kind"] for q in export.provenance["queries"]] == [f"unload beta {n}/3" for n in (1, 2, 3)]
        assert [len(q["batches"]) for q in export.provenance["queries"]] == [100, 100, 30]
        assert exported(export) == truth
    assert unload_keys(moto_server, bucket) == []


def test_a_small_query_budget_splits_by_bytes(many, moto_server):
    samples, plate, truth, standin = many
    standin.max_query_bytes = 2048  # the stand-in refuses anything longer, as Athena does at 262,144
    try:
        wh = athena_for(standin, moto_server, moto_server.new_bucket("bytes"), max_query_bytes=2048)
        ids = samples[:200]
        resolved = wh.resolve_samples(ids)
        assert resolved["sample_id"].to_pylist() == ids
        assert len(json.loads(resolved.schema.metadata[b"xr_methyl.queries"])) >= 2  # the lookup was split too
        groups: dict[str, list[str]] = {}
        for s in ids:
            groups.setdefault(plate[s], []).append(s)
        with wh.export("beta", groups) as export:
            queries = export.provenance["queries"]
            assert len(queries) >= 3
            assert all(len(standin.executions[q["query_id"]].query.encode()) <= 2048 for q in queries)
            assert exported(export) == {k: v for k, v in truth.items() if k[1] in set(ids)}
    finally:
        standin.max_query_bytes = 262_144


# ------------------------------------------------------------------ cost, options


def test_info_shows_what_the_warehouse_cost(odd, athena, tmp_path):
    from xr_methyl.cli import main

    path = tmp_path / "s.zarr"
    store = MethylStore.create(path, warehouse=athena)
    Loader(store).ingest(["S1", "S2", "O'Brien"], progress=False)
    Loader(store).ingest(["S7"], progress=False)
    cost = MethylStore.open(path).cost()
    assert cost["queries"] == 6  # two ensures x (lookup + 2 UNLOADs)
    ran = {
        q
        for entries in MethylStore.open(path).provenance.values()
        for e in entries
        for q in [x["query_id"] for x in e["queries"]]
    }
    assert cost["bytes_scanned"] == sum(odd[1].executions[q].scanned for q in ran)
    assert cost["dollars"] == pytest.approx(6 * 5 * 10 / 2**20)  # each query below the 10 MiB minimum
    assert main(["info", str(path)]) == 0
    assert main(["info", str(path), "--json"]) == 0


def test_info_prints_the_totals(odd, athena, tmp_path, capsys):
    from xr_methyl.cli import main

    path = tmp_path / "s.zarr"
    Loader(MethylStore.create(path, warehouse=athena)).ingest(["S1"], progress=False)
    capsys.readouterr()
    main(["info", str(path)])
    assert "paid       3 warehouse queries" in capsys.readouterr().out
    main(["info", str(path), "--json"])
    assert json.loads(capsys.readouterr().out)["warehouse_cost"]["queries"] == 3


def test_keep_unload_keeps_the_files(odd, moto_server, bucket):
    wh = athena_for(odd[1], moto_server, bucket, keep_unload=True)
    with wh.export("beta", {"B1": ["S1"]}) as export:
        paths = export.files["B1"]
    assert paths and all(p.removeprefix(bucket + "/") in unload_keys(moto_server, bucket) for p in paths)
    assert "keep_unload=1" in wh.describe()
