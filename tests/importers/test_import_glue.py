"""The importers and the axis builder on an Iceberg warehouse in Glue with its data in S3 (moto)."""

import numpy as np
import pandas as pd
import pytest
from aws_support import glue_warehouse
from pipeline_files import (
    assert_matches,
    ensured,
    naive_cpgs,
    random_calls,
    random_genome,
    truth_beta,
    truth_coverage,
    write_beta_matrix,
    write_bismark_cov,
    write_fasta,
)

from xr_methyl.importers import ImportFormatError, build_axis, get_format, import_batch
from xr_methyl.importers.writer import iceberg_table


def test_import_into_glue_on_moto(moto_server, tmp_path):
    moto = moto_server
    bucket = moto.new_bucket("imports")
    wh = glue_warehouse(moto, "imported", bucket=bucket)
    genome = random_genome(np.random.default_rng(31), {"chr1": 1500, "chr2": 600})
    write_fasta(tmp_path / "g.fa.gz", genome)
    cpgs = naive_cpgs(genome)
    assert build_axis(wh, fasta=tmp_path / "g.fa.gz").n_cpgs == len(cpgs)

    rng = np.random.default_rng(1)
    calls = {s: random_calls(rng, cpgs) for s in ("G1", "G2")}
    for s, c in calls.items():
        write_bismark_cov(tmp_path / f"{s}.bismark.cov.gz", c)
    (tmp_path / "sheet.csv").write_text("sample_id,age\nG1,30\nG2,70\n")
    files = [tmp_path / "G1.bismark.cov.gz", tmp_path / "G2.bismark.cov.gz"]
    import_batch(wh, get_format("bismark-cov"), files, batch_id="wgbs", sample_sheet=tmp_path / "sheet.csv")
    placed = cpgs.iloc[:20]
    (tmp_path / "probes.csv").write_text(
        "probe_id,chrom,pos\n" + "".join(f"p{i},{c},{p}\n" for i, (c, p) in enumerate(zip(placed.chrom, placed.pos)))
    )
    matrix = pd.DataFrame({"R1": np.linspace(0, 1, 20)}, index=[f"p{i}" for i in range(20)])
    write_beta_matrix(tmp_path / "betas.csv", matrix)
    import_batch(wh, get_format("array", manifest=tmp_path / "probes.csv"), [tmp_path / "betas.csv"], batch_id="array")

    # a re-import is one new snapshot per table; a refused one leaves tables and bucket as they were
    snapshots = len(iceberg_table(wh, "beta").metadata.snapshots)
    import_batch(wh, get_format("bismark-cov"), files, batch_id="wgbs", sample_sheet=tmp_path / "sheet.csv")
    assert len(iceberg_table(wh, "beta").metadata.snapshots) == snapshots + 1

    def objects():  # pyarrow leaves empty "directory" marker keys of new partitions; they hold no data
        return [k for k in moto.keys(bucket) if not k.endswith("/")]

    keys = objects()
    write_bismark_cov(tmp_path / "G3.bismark.cov.gz", calls["G1"])
    text = tmp_path / "bad.bismark.cov"
    write_bismark_cov(text, calls["G1"])
    lines = text.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("\t", " ", 1)
    text.write_text("".join(lines))
    with pytest.raises(ImportFormatError, match=r"bad.bismark.cov, line 4: expected 6 tab-separated columns"):
        import_batch(wh, get_format("bismark-cov"), [tmp_path / "G3.bismark.cov.gz", text], batch_id="later", workers=1)
    assert objects() == keys  # the data files written before the bad line were deleted

    beta, coverage, ds = ensured(wh, tmp_path / "s.methyl.zarr", ["G1", "G2", "R1"])
    assert_matches(
        beta.loc[["G1", "G2"]],
        {s: truth_beta(c) for s, c in calls.items()},
        coverage.loc[["G1", "G2"]],
        {s: truth_coverage(c) for s, c in calls.items()},
    )
    expected = pd.Series(matrix.R1.to_numpy(), index=placed.chrom + ":" + placed.pos.astype(str))
    assert_matches(beta.loc[["R1"]], {"R1": expected})
    assert ds.batch_id.values.tolist() == ["wgbs", "wgbs", "array"]
