"""The CpG axis from a FASTA (against a naive regex), from a manifest, and from the imported sites."""

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pipeline_files import (
    assert_matches,
    ensured,
    naive_cpgs,
    random_calls,
    random_genome,
    truth_beta,
    write_bismark_cov,
    write_fasta,
    write_illumina_manifest,
    write_methyldackel,
)

from xr_methyl import DataError, LocalWarehouse, WarehouseError
from xr_methyl.importers import build_axis, fasta_cpgs, get_format, import_batch
from xr_methyl.importers.writer import iceberg_table


def _axis(batches) -> pd.DataFrame:
    table = pa.Table.from_batches(list(batches))
    return table.to_pandas()


@pytest.fixture(scope="module")
def genome():
    genome = random_genome(np.random.default_rng(13), {"chr1": 3000, "chr2": 1200, "chrUn_KI270302v1": 400})
    genome["chrM"] = "acgtCG" + "ATGC" * 10 + "C"  # ends in C ...
    genome["chr_empty"] = ""  # a record without sequence
    genome["chr22"] = "GCGTTcg"  # ... and the next one starts with G: no CpG across them
    return genome


@pytest.mark.parametrize(
    "width,block_size,compressed,crlf",
    [(60, 16 << 20, False, False), (7, 64, True, False), (1, 5, False, True), (80, 1000, True, True)],
)
def test_fasta_cpgs_equal_a_regex_count(genome, tmp_path, width, block_size, compressed, crlf):
    path = tmp_path / ("g.fa.gz" if compressed else "g.fa")
    write_fasta(path, genome, width=width)
    if crlf:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as f:
            data = f.read().replace(b"\n", b"\r\n")
        with opener(path, "wb") as f:
            f.write(data)

    found = _axis(fasta_cpgs(path, block_size=block_size))

    expected = naive_cpgs(genome)
    assert len(expected) > 300
    pd.testing.assert_frame_equal(found[["chrom", "pos"]], expected, check_dtype=False)
    assert (found.cpg_id == found.chrom + ":" + found.pos.astype(str)).all()


def test_not_a_fasta(tmp_path):
    (tmp_path / "x.fa").write_text("ACGT\n>chr1\nCG\n")
    with pytest.raises(DataError, match="sequence before the first '>'"):
        list(fasta_cpgs(tmp_path / "x.fa"))
    (tmp_path / "y.fa").write_text("")
    with pytest.raises(DataError, match="no '>' header line"):
        list(fasta_cpgs(tmp_path / "y.fa"))


def test_build_axis_from_fasta_and_replace(genome, tmp_path):
    write_fasta(tmp_path / "g.fa.gz", genome)
    wh = LocalWarehouse(tmp_path / "wh")

    report = build_axis(wh, fasta=tmp_path / "g.fa.gz")

    cpgs = wh.cpgs().to_pandas()
    expected = naive_cpgs(genome)
    assert report.n_cpgs == len(expected) and report.n_chroms == expected.chrom.nunique()
    assert sorted(zip(cpgs.chrom, cpgs.pos)) == sorted(zip(expected.chrom, expected.pos))
    with pytest.raises(WarehouseError, match="already has rows; pass replace=True"):
        build_axis(wh, fasta=tmp_path / "g.fa.gz")
    smaller = {"chr1": genome["chr1"][:500]}
    write_fasta(tmp_path / "small.fa", smaller)
    snapshots = len(iceberg_table(wh, "cpgs").metadata.snapshots)

    build_axis(wh, fasta=tmp_path / "small.fa", replace=True)

    assert len(iceberg_table(wh, "cpgs").metadata.snapshots) == snapshots + 1
    assert wh.cpgs()["pos"].to_pylist() == naive_cpgs(smaller).pos.tolist()


def test_build_axis_from_a_manifest(tmp_path):
    probes = pd.DataFrame(
        {
            "probe_id": ["cg01", "cg02", "cg02_BC21", "cg03", "ch04"],
            "chrom": ["chr1", "chr2", "chr2", "chrX", None],
            "pos": [100, 50, 50, 7, np.nan],
        }
    )
    write_illumina_manifest(tmp_path / "manifest.csv.gz", probes)
    wh = LocalWarehouse(tmp_path / "wh")

    build_axis(wh, manifest=tmp_path / "manifest.csv.gz", chrom_prefix="chr")

    assert wh.cpgs().to_pylist() == [
        {"cpg_id": "chr1:100", "chrom": "chr1", "pos": 100},
        {"cpg_id": "chr2:50", "chrom": "chr2", "pos": 50},
        {"cpg_id": "chrX:7", "chrom": "chrX", "pos": 7},
    ]


def test_build_axis_from_the_imported_sites(genome, tmp_path):
    """CpG-level files need no reference: import, then take the union of their sites as the axis."""
    cpgs = naive_cpgs(genome)
    rng = np.random.default_rng(3)
    calls = {"S1": random_calls(rng, cpgs), "S2": random_calls(rng, cpgs)}
    write_bismark_cov(tmp_path / "S1.merged_CpG_evidence.cov", calls["S1"], merged=True)
    write_methyldackel(tmp_path / "S2_CpG.bedGraph", calls["S2"], merge_context=True)
    wh = LocalWarehouse(tmp_path / "wh")
    import_batch(wh, get_format("bismark-cov"), [tmp_path / "S1.merged_CpG_evidence.cov"], batch_id="b1")
    import_batch(wh, get_format("methyldackel"), [tmp_path / "S2_CpG.bedGraph"], batch_id="b2")

    report = build_axis(wh, from_imported=True)

    union = set(truth_beta(calls["S1"]).index) | set(truth_beta(calls["S2"]).index)
    assert report.n_cpgs == len(union) and set(wh.cpgs()["cpg_id"].to_pylist()) == union
    beta, _, _ = ensured(wh, tmp_path / "s.methyl.zarr", ["S1", "S2"])
    assert_matches(beta, {s: truth_beta(c) for s, c in calls.items()})


def test_build_axis_from_imported_refuses_foreign_ids(tmp_path):
    from xr_methyl.synthetic import build_cohort

    wh = LocalWarehouse(tmp_path / "wh")
    build_cohort(wh, n_samples=2, n_cpgs=50, batch_size=2, n_age_cpgs=5)
    table = iceberg_table(wh, "beta")
    table.append(
        pa.table({"batch_id": ["X"], "sample_id": ["S9"], "cpg_id": ["cg0001"], "beta": [0.5]}).cast(
            table.schema().as_arrow()
        )
    )

    with pytest.raises(DataError, match="'cg0001', which does not follow the convention"):
        build_axis(wh, from_imported=True, replace=True)
