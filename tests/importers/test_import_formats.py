"""Each format, written as its tool writes it, imported and read back through a store against pandas."""

import numpy as np
import pandas as pd
import pytest
from pipeline_files import (
    assert_matches,
    ensured,
    naive_cpgs,
    random_calls,
    random_genome,
    truth_beta,
    truth_coverage,
    write_bedmethyl,
    write_beta_matrix,
    write_bismark_cov,
    write_bismark_report,
    write_fasta,
    write_illumina_manifest,
    write_methyldackel,
    write_methylkit,
)

from xr_methyl import LocalWarehouse
from xr_methyl.importers import build_axis, get_format, import_batch

LENGTHS = {"chr1": 2500, "chr2": 1500, "chrX": 800}


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    rng = np.random.default_rng(7)
    genome = random_genome(rng, LENGTHS)
    path = tmp_path_factory.mktemp("genome") / "genome.fa.gz"
    write_fasta(path, genome, width=50)
    return genome, path, naive_cpgs(genome)


@pytest.fixture
def axis_warehouse(tmp_path, genome):
    wh = LocalWarehouse(tmp_path / "warehouse")
    build_axis(wh, fasta=genome[1])
    return wh


def _write(kind, path, calls, cpgs, genome):
    writers = {
        "cov": lambda: write_bismark_cov(path, calls),
        "cov-merged": lambda: write_bismark_cov(path, calls, merged=True),
        "cpg-report": lambda: write_bismark_report(path, calls, cpgs),
        "cx-report": lambda: write_bismark_report(path, calls, cpgs, genome=genome),
        "bedmethyl": lambda: write_bedmethyl(path, calls),
        "bedmethyl-mixed": lambda: write_bedmethyl(path, calls, mixed_delimiters=True),
        "bedmethyl-combined": lambda: write_bedmethyl(path, calls, combined=True),
        "methylkit": lambda: write_methylkit(path, calls),
        "methyldackel": lambda: write_methyldackel(path, calls),
        "methyldackel-merged": lambda: write_methyldackel(path, calls, merge_context=True),
    }
    writers[kind]()


CASES = [
    ("bismark-cov", "cov", ".bismark.cov.gz"),
    ("bismark-cov", "cov-merged", ".merged_CpG_evidence.cov"),
    ("bismark-report", "cpg-report", ".CpG_report.txt.gz"),
    ("bismark-report", "cx-report", ".CX_report.txt"),
    ("bedmethyl", "bedmethyl", ".bed.gz"),
    ("bedmethyl", "bedmethyl-mixed", ".bedmethyl"),
    ("bedmethyl", "bedmethyl-combined", ".bed"),
    ("methylkit", "methylkit", "_CpG.methylKit"),
    ("methyldackel", "methyldackel", "_CpG.bedGraph"),
    ("methyldackel", "methyldackel-merged", "_CpG.bedGraph.gz"),
]


@pytest.mark.parametrize("fmt,kind,suffix", CASES, ids=[c[1] for c in CASES])
def test_format_values_through_the_store(fmt, kind, suffix, genome, axis_warehouse, tmp_path):
    seq, _, cpgs = genome
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    samples = ["P01", "P02"]
    calls = {s: random_calls(rng, cpgs) for s in samples}
    files = []
    for s in samples:
        path = tmp_path / f"{s}{suffix}"
        _write(kind, path, calls[s], cpgs, seq)
        files.append(path)
    sheet = tmp_path / "samples.csv"
    sheet.write_text("sample_id,age,sex\nP01,41.5,F\nP02,63,M\n")

    report = import_batch(axis_warehouse, get_format(fmt), files, batch_id="run1", sample_sheet=sheet)

    assert report.samples == samples
    assert set(report.snapshots) == {"beta", "coverage", "sample_batch_map"}
    beta, coverage, ds = ensured(axis_warehouse, tmp_path / "cohort.methyl.zarr", samples)
    assert_matches(
        beta, {s: truth_beta(calls[s]) for s in samples}, coverage, {s: truth_coverage(calls[s]) for s in samples}
    )
    assert report.counts.sites == sum(len(truth_beta(calls[s])) for s in samples)
    assert report.counts.off_axis == 0
    assert ds.age.values.tolist() == [41.5, 63.0] and ds.sex.values.tolist() == ["F", "M"]
    assert ds.batch_id.values.tolist() == ["run1", "run1"]


@pytest.mark.parametrize("strand", ["+", "-"])
def test_one_strand_of_a_cpg_report(strand, genome, axis_warehouse, tmp_path):
    _, _, cpgs = genome
    calls = random_calls(np.random.default_rng(3), cpgs)
    path = tmp_path / "S1.CpG_report.txt"
    write_bismark_report(path, calls, cpgs)

    report = import_batch(axis_warehouse, get_format("bismark-report"), [path], batch_id="b", strands=strand)

    assert report.counts.records == 2 * len(cpgs)  # the report lists both strands of every CpG
    assert report.counts.other_strand == len(cpgs)
    beta, coverage, _ = ensured(axis_warehouse, tmp_path / "s.methyl.zarr", ["S1"])
    assert_matches(
        beta, {"S1": truth_beta(calls, strands=strand)}, coverage, {"S1": truth_coverage(calls, strands=strand)}
    )


def test_merge_sums_both_strands_of_each_cpg(genome, axis_warehouse, tmp_path):
    """The merge against a hand-made case: + and - of one CpG add up; a lone strand stands alone."""
    _, _, cpgs = genome
    a, b = cpgs.iloc[10], cpgs.iloc[11]
    calls = pd.DataFrame(
        {
            "chrom": [a.chrom, a.chrom, b.chrom],
            "pos": [a.pos, a.pos, b.pos],
            "strand": ["+", "-", "-"],
            "methylated": [3, 1, 2],
            "unmethylated": [1, 3, 0],
            "other": [0, 0, 0],
        }
    )
    path = tmp_path / "S1.CpG_report.txt"
    write_bismark_report(path, calls, cpgs)

    import_batch(axis_warehouse, get_format("bismark-report"), [path], batch_id="b")

    beta, coverage, _ = ensured(axis_warehouse, tmp_path / "s.methyl.zarr", ["S1"])
    ida, idb = f"{a.chrom}:{a.pos}", f"{b.chrom}:{b.pos}"
    assert beta.loc["S1", ida] == pytest.approx(0.5) and coverage.loc["S1", ida] == 8
    assert beta.loc["S1", idb] == pytest.approx(1.0) and coverage.loc["S1", idb] == 2
    assert beta.loc["S1"].notna().sum() == 2


def test_array_matrix_with_illumina_manifest(genome, axis_warehouse, tmp_path):
    _, _, cpgs = genome
    rng = np.random.default_rng(5)
    placed = cpgs.sample(60, random_state=1).reset_index(drop=True)
    probes = pd.DataFrame(
        {"probe_id": [f"cg{i:08d}" for i in range(len(placed))], "chrom": placed.chrom, "pos": placed.pos}
    )
    # EPIC v2 style replicate probes of one CpG, unplaced probes, and a probe the manifest lacks
    probes.loc[len(probes)] = ["cg00000003_BC21", placed.chrom[3], placed.pos[3]]
    probes.loc[len(probes)] = ["ch.1.100R", None, np.nan]
    probes.loc[len(probes)] = ["cg99999999", "chr1", 0]
    write_illumina_manifest(tmp_path / "manifest.csv", probes)
    samples = ["A1", "A2", "A3"]
    matrix = pd.DataFrame(rng.random((len(probes) + 1, 3)), columns=samples, index=list(probes.probe_id) + ["rs1234"])
    matrix[matrix > 0.9] = np.nan
    matrix.iloc[0, 0] = 0.0
    matrix.iloc[1, 1] = 1.0
    write_beta_matrix(tmp_path / "betas.csv", matrix)

    fmt = get_format("array", manifest=tmp_path / "manifest.csv", chrom_prefix="chr")
    report = import_batch(axis_warehouse, fmt, [tmp_path / "betas.csv"], batch_id="array1")

    assert set(report.snapshots) == {"beta", "sample_batch_map"}  # no coverage rows for arrays
    beta, coverage, _ = ensured(axis_warehouse, tmp_path / "a.methyl.zarr", samples)
    ids = probes.chrom + ":" + probes.pos.astype("Int64").astype(str)
    long = matrix.iloc[: len(probes)].assign(cpg=ids.to_numpy())
    long = long[probes.pos.fillna(0).to_numpy() > 0]
    expected = long.groupby("cpg")[samples].mean()  # the replicate probes: the mean of what they measured
    assert_matches(beta, {s: expected[s].dropna() for s in samples})
    assert (coverage.to_numpy() == 0).all()
    assert report.counts.unplaced == 3 * 3  # two unplaced probes and one the manifest lacks, 3 samples each


def test_array_tsv_with_plain_manifest(axis_warehouse, genome, tmp_path):
    _, _, cpgs = genome
    placed = cpgs.iloc[:5]
    (tmp_path / "probes.tsv").write_text(
        "probe_id\tchrom\tpos\n"
        + "".join(f"p{i}\t{c}\t{p}\n" for i, (c, p) in enumerate(zip(placed.chrom, placed.pos)))
    )
    matrix = pd.DataFrame({"X1": [0.1, 0.2, np.nan, 0.4, 0.5]}, index=[f"p{i}" for i in range(5)])
    write_beta_matrix(tmp_path / "betas.tsv", matrix, sep="\t")

    import_batch(
        axis_warehouse, get_format("array", manifest=tmp_path / "probes.tsv"), [tmp_path / "betas.tsv"], batch_id="a"
    )

    beta, _, _ = ensured(axis_warehouse, tmp_path / "a.methyl.zarr", ["X1"])
    expected = pd.Series(matrix.X1.to_numpy(), index=placed.chrom + ":" + placed.pos.astype(str)).dropna()
    assert_matches(beta, {"X1": expected})


def test_files_from_the_sample_sheet_and_in_parallel(genome, axis_warehouse, tmp_path):
    _, _, cpgs = genome
    rng = np.random.default_rng(9)
    calls = {f"S{i}": random_calls(rng, cpgs) for i in range(5)}
    (tmp_path / "in").mkdir()
    for i, c in enumerate(calls.values()):
        write_bismark_cov(tmp_path / "in" / f"lane{i}_bismark_bt2.deduplicated.bismark.cov.gz", c)
    rows = "".join(
        f"{s},in/lane{i}_bismark_bt2.deduplicated.bismark.cov.gz,{20 + i},b{i % 2}\n" for i, s in enumerate(calls)
    )
    (tmp_path / "sheet.csv").write_text("sample_id,file,age,batch_id\n" + rows)

    report = import_batch(
        axis_warehouse, get_format("bismark-cov"), [], batch_id="b0", sample_sheet=tmp_path / "sheet.csv", workers=3
    )

    assert report.samples == ["S0", "S2", "S4"]  # the sheet's rows of batch b0
    beta, _, ds = ensured(axis_warehouse, tmp_path / "s.methyl.zarr", report.samples)
    assert_matches(beta, {s: truth_beta(calls[s]) for s in report.samples})
    assert ds.age.values.tolist() == [20, 22, 24]


@pytest.mark.parametrize("fmt,kind,suffix", [c for c in CASES if c[1] in ("cpg-report", "cov", "bedmethyl-mixed")])
def test_strands_merge_across_record_batches(fmt, kind, suffix, genome, axis_warehouse, tmp_path, monkeypatch):
    """Blocks of a few lines: the two strands of many CpGs arrive in different record batches."""
    from xr_methyl.importers import text

    monkeypatch.setattr(text, "BLOCK_SIZE", 300)
    seq, _, cpgs = genome
    calls = random_calls(np.random.default_rng(11), cpgs, absent=0.1)
    path = tmp_path / f"S1{suffix}"
    _write(kind, path, calls, cpgs, seq)

    report = import_batch(axis_warehouse, get_format(fmt), [path], batch_id="b")

    assert report.counts.records > 500  # in some 50 record batches of 300 bytes
    beta, coverage, _ = ensured(axis_warehouse, tmp_path / "s.methyl.zarr", ["S1"])
    assert_matches(beta, {"S1": truth_beta(calls)}, coverage, {"S1": truth_coverage(calls)})
