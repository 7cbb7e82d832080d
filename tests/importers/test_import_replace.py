"""Re-importing a batch replaces it: one new snapshot per table, the same rows, other batches untouched."""

import json

import numpy as np
import pyarrow.compute as pc
import pytest
from pipeline_files import (
    assert_matches,
    ensured,
    naive_cpgs,
    random_calls,
    random_genome,
    truth_beta,
    write_bismark_report,
    write_fasta,
)

from xr_methyl import LocalWarehouse
from xr_methyl.importers import build_axis, get_format, import_batch
from xr_methyl.importers.writer import SUMMARY_KEY, iceberg_table

TABLES = ("sample_batch_map", "beta", "coverage", "cpgs")


@pytest.fixture
def setup(tmp_path):
    genome = random_genome(np.random.default_rng(4), {"chr1": 2000, "chr3": 900})
    write_fasta(tmp_path / "g.fa", genome)
    cpgs = naive_cpgs(genome)
    wh = LocalWarehouse(tmp_path / "warehouse")
    build_axis(wh, fasta=tmp_path / "g.fa")
    rng = np.random.default_rng(8)
    calls = {s: random_calls(rng, cpgs) for s in ("A1", "A2", "B1")}
    for s, c in calls.items():
        write_bismark_report(tmp_path / f"{s}.CpG_report.txt.gz", c, cpgs)
    report = get_format("bismark-report")
    import_batch(wh, report, [tmp_path / "A1.CpG_report.txt.gz", tmp_path / "A2.CpG_report.txt.gz"], batch_id="A")
    import_batch(wh, report, [tmp_path / "B1.CpG_report.txt.gz"], batch_id="B")
    return wh, cpgs, calls, tmp_path


def counts(wh):
    """Rows and snapshots of each table."""
    out = {}
    for name in TABLES:
        table = iceberg_table(wh, name)
        out[name] = (table.scan().to_arrow().num_rows, len(table.metadata.snapshots))
    return out


def rows_of(wh, table, batch):
    rows = iceberg_table(wh, table).scan().to_arrow()
    rows = rows.filter(pc.equal(rows["batch_id"], batch))
    return rows.sort_by([(c, "ascending") for c in rows.column_names]).to_pylist()


def test_reimport_replaces_with_one_snapshot_per_table(setup):
    wh, _, _, tmp = setup
    before = counts(wh)
    b_rows = rows_of(wh, "beta", "B")
    a_rows = rows_of(wh, "beta", "A")

    report = import_batch(
        wh, get_format("bismark-report"), [tmp / "A1.CpG_report.txt.gz", tmp / "A2.CpG_report.txt.gz"], batch_id="A"
    )

    after = counts(wh)
    for name in ("sample_batch_map", "beta", "coverage"):
        assert after[name] == (before[name][0], before[name][1] + 1), name  # same rows, exactly one snapshot
    assert after["cpgs"] == before["cpgs"]
    assert rows_of(wh, "beta", "A") == a_rows and rows_of(wh, "beta", "B") == b_rows
    snapshot = iceberg_table(wh, "beta").current_snapshot()
    assert snapshot.snapshot_id == report.snapshots["beta"]
    assert json.loads(snapshot.summary[SUMMARY_KEY])["files"] == ["A1.CpG_report.txt.gz", "A2.CpG_report.txt.gz"]


def test_reimport_with_other_samples_and_metadata(setup):
    wh, cpgs, calls, tmp = setup
    b_rows = rows_of(wh, "beta", "B")
    calls["A2"] = random_calls(np.random.default_rng(99), cpgs)
    write_bismark_report(tmp / "A2.CpG_report.txt.gz", calls["A2"], cpgs)
    (tmp / "sheet.csv").write_text("sample_id,age,smoker\nA2,57,true\n")

    import_batch(
        wh, get_format("bismark-report"), [tmp / "A2.CpG_report.txt.gz"], batch_id="A", sample_sheet=tmp / "sheet.csv"
    )

    samples = iceberg_table(wh, "sample_batch_map").scan().to_arrow().sort_by("sample_id").to_pylist()
    assert samples == [
        {"sample_id": "A2", "batch_id": "A", "age": 57, "smoker": True},
        {"sample_id": "B1", "batch_id": "B", "age": None, "smoker": None},
    ]
    assert set(pc.unique(iceberg_table(wh, "beta").scan().to_arrow()["sample_id"]).to_pylist()) == {"A2", "B1"}
    assert rows_of(wh, "beta", "B") == b_rows
    beta, _, ds = ensured(wh, tmp / "s.methyl.zarr", ["A2", "B1"])
    assert_matches(beta, {s: truth_beta(calls[s]) for s in ("A2", "B1")})
    assert ds.age.values[0] == 57


def test_a_sample_moves_only_by_reimporting_its_batch(setup):
    wh, _, _, tmp = setup
    import_batch(wh, get_format("bismark-report"), [tmp / "A1.CpG_report.txt.gz"], batch_id="A")  # A2 leaves A

    import_batch(wh, get_format("bismark-report"), [tmp / "A2.CpG_report.txt.gz"], batch_id="C")

    samples = iceberg_table(wh, "sample_batch_map").scan().to_arrow().sort_by("sample_id").to_pylist()
    assert [(r["sample_id"], r["batch_id"]) for r in samples] == [("A1", "A"), ("A2", "C"), ("B1", "B")]
