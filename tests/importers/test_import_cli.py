"""``xr-methyl axis`` and ``xr-methyl import``: what they print, and one line per user error."""

import numpy as np
from pipeline_files import (
    assert_matches,
    ensured,
    naive_cpgs,
    random_calls,
    random_genome,
    truth_beta,
    write_bedmethyl,
    write_fasta,
)

from xr_methyl import LocalWarehouse
from xr_methyl.cli import main


def test_axis_then_import_then_a_bad_file(tmp_path, capsys):
    genome = random_genome(np.random.default_rng(17), {"chr1": 1200, "chr2": 500})
    write_fasta(tmp_path / "g.fa", genome)
    cpgs = naive_cpgs(genome)
    calls = {s: random_calls(np.random.default_rng(i), cpgs) for i, s in enumerate(["N1", "N2"])}
    for s, c in calls.items():
        write_bedmethyl(tmp_path / f"{s}.bed.gz", c)
    (tmp_path / "sheet.csv").write_text("sample_id,file,sex\nN1,N1.bed.gz,F\nN2,N2.bed.gz,M\n")
    wh = str(tmp_path / "warehouse")

    assert main(["axis", "--warehouse", wh, "--fasta", str(tmp_path / "g.fa")]) == 0
    assert f"cpgs: {len(cpgs):,} CpGs on 2 sequence(s) from FASTA g.fa" in capsys.readouterr().out
    assert (
        main(
            ["import", "bedmethyl", "--warehouse", wh, "--batch", "ont1", "--sample-sheet", str(tmp_path / "sheet.csv")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("batch ont1: 2 sample(s) from 2 bedmethyl file(s)")
    assert "committed: beta snapshot" in out
    beta, _, ds = ensured(LocalWarehouse(wh), tmp_path / "s.methyl.zarr", ["N1", "N2"])
    assert_matches(beta, {s: truth_beta(c) for s, c in calls.items()})
    assert ds.sex.values.tolist() == ["F", "M"]

    (tmp_path / "N3.bed").write_text("chr1\t5\t6\tm\t3\t+\t5\t6\t255,0,0\t4 33.33 1 2 0 0 0 0 0\n")
    assert main(["import", "bedmethyl", str(tmp_path / "N3.bed"), "--warehouse", wh, "--batch", "ont2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"xr-methyl import: error: {tmp_path / 'N3.bed'}, line 1, column 10 (Nvalid_cov): '4': Nvalid_cov "
        "must equal Nmod + Ncanonical + Nother_mod (is this modkit's column layout?); nothing of batch "
        "'ont2' was committed"
    ]


def test_the_array_format_needs_a_manifest(tmp_path, capsys):
    (tmp_path / "b.csv").write_text('"","S1"\n"cg1",0.5\n')
    assert main(["import", "array", str(tmp_path / "b.csv"), "--warehouse", str(tmp_path / "w"), "--batch", "a"]) == 1
    assert "the array format needs the probe manifest" in capsys.readouterr().err
