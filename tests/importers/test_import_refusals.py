"""Bad input is refused naming file, line and column, and nothing of the batch is committed."""

import gzip

import numpy as np
import pandas as pd
import pytest
from pipeline_files import (
    naive_cpgs,
    random_calls,
    random_genome,
    write_bedmethyl,
    write_beta_matrix,
    write_bismark_cov,
    write_bismark_report,
    write_fasta,
    write_methyldackel,
    write_methylkit,
)

from xr_methyl import DataError, LocalWarehouse
from xr_methyl.importers import ImportFormatError, build_axis, get_format, import_batch
from xr_methyl.importers.writer import iceberg_table

TABLES = ("sample_batch_map", "beta", "coverage", "cpgs")


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    genome = random_genome(np.random.default_rng(21), {"chr1": 1500, "chr2": 700})
    path = tmp_path_factory.mktemp("genome") / "genome.fa"
    write_fasta(path, genome)
    return path, naive_cpgs(genome)


@pytest.fixture
def warehouse(tmp_path, genome):
    """A warehouse with an axis and one batch already imported."""
    wh = LocalWarehouse(tmp_path / "warehouse")
    build_axis(wh, fasta=genome[0])
    path = tmp_path / "A1.CpG_report.txt"
    write_bismark_report(path, random_calls(np.random.default_rng(0), genome[1]), genome[1])
    import_batch(wh, get_format("bismark-report"), [path], batch_id="A")
    return wh


def state(wh):
    """Each table's current snapshot and row count, and every file under the warehouse."""
    tables = {}
    for name in TABLES:
        table = iceberg_table(wh, name)
        tables[name] = (table.current_snapshot().snapshot_id, table.scan().to_arrow().num_rows)
    return tables, sorted(p for p in wh.warehouse_dir.rglob("*") if p.is_file())


def _lines(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return f.read().splitlines(keepends=True)


def _rewrite(path, lines):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as f:
        f.writelines(lines)


def _set_field(path, line, column, value, *, sep="\t"):
    """Put ``value`` into 1-based ``column`` of 1-based ``line``."""
    lines = _lines(path)
    fields = lines[line - 1].rstrip("\n").split(sep)
    fields[column - 1] = value
    lines[line - 1] = sep.join(fields) + "\n"
    _rewrite(path, lines)


def _good_and_bad(tmp_path, genome, write, suffix):
    calls = random_calls(np.random.default_rng(5), genome[1])
    good, bad = tmp_path / f"B1{suffix}", tmp_path / f"B2{suffix}"
    write(good, calls)
    write(bad, calls)
    return good, bad


# (format, writer, file suffix, line, column, new value, what the message says)
BAD_FIELDS = [
    ("bismark-cov", write_bismark_cov, ".bismark.cov.gz", 5, 5, "x", "'x' is not a whole number"),
    ("bismark-cov", write_bismark_cov, ".bismark.cov", 7, 6, "-2", "counts must be >= 0"),
    ("bismark-cov", write_bismark_cov, ".bismark.cov", 3, 2, "0", "1-based"),
    ("bismark-report", None, ".CpG_report.txt.gz", 4, 3, "*", "strand must be '+' or '-'"),
    ("bedmethyl", write_bedmethyl, ".bed", 6, 10, "999", "Nvalid_cov must equal"),
    ("methylkit", write_methylkit, ".txt", 9, 6, "120.00", "freqC is a percentage"),
    ("methyldackel", write_methyldackel, "_CpG.bedGraph", 2, 3, "99999", "end must be start + 1"),
]


@pytest.mark.parametrize(
    "fmt,write,suffix,line,column,value,says", BAD_FIELDS, ids=[f"{c[0]}-{c[6][:12]}" for c in BAD_FIELDS]
)
def test_a_bad_field_is_refused_and_nothing_committed(
    fmt, write, suffix, line, column, value, says, warehouse, genome, tmp_path
):
    if write is None:

        def write(path, calls):
            write_bismark_report(path, calls, genome[1])

    good, bad = _good_and_bad(tmp_path, genome, write, suffix)
    _set_field(bad, line, column, value)
    before = state(warehouse)

    with pytest.raises(ImportFormatError) as caught:
        import_batch(warehouse, get_format(fmt), [good, bad], batch_id="B", workers=1)

    err = caught.value
    assert (err.path, err.line, err.column) == (str(bad), line, column)
    message = str(err)
    assert f"{bad}, line {line}, column {column}" in message and says in message
    assert "nothing of batch 'B' was committed" in message
    assert state(warehouse) == before  # same snapshots, same rows, and the written data files are gone


def test_a_line_with_a_missing_column(warehouse, genome, tmp_path):
    good, bad = _good_and_bad(tmp_path, genome, lambda p, c: write_bismark_report(p, c, genome[1]), ".CpG_report.txt")
    lines = _lines(bad)
    lines[10] = "\t".join(lines[10].split("\t")[:6]) + "\n"
    _rewrite(bad, lines)
    before = state(warehouse)

    with pytest.raises(ImportFormatError, match=r"line 11: expected 7 tab-separated columns.*found 6"):
        import_batch(warehouse, get_format("bismark-report"), [good, bad], batch_id="B")
    assert state(warehouse) == before


def test_an_error_deep_in_a_gzipped_file_names_its_line(warehouse, genome, tmp_path, monkeypatch):
    from xr_methyl.importers import text

    monkeypatch.setattr(text, "BLOCK_SIZE", 512)  # the bad line is many record batches in
    good, bad = _good_and_bad(
        tmp_path, genome, lambda p, c: write_bismark_report(p, c, genome[1]), ".CpG_report.txt.gz"
    )
    lines = _lines(bad)
    line = len(lines) - 3
    _set_field(bad, line, 4, "-1")
    before = state(warehouse)

    with pytest.raises(ImportFormatError) as caught:
        import_batch(warehouse, get_format("bismark-report"), [good, bad], batch_id="A")  # a re-import, too
    assert (caught.value.line, caught.value.column) == (line, 4)
    assert state(warehouse) == before  # batch A keeps what it had


def test_records_out_of_order_are_refused(warehouse, genome, tmp_path):
    _, bad = _good_and_bad(tmp_path, genome, write_bismark_cov, ".bismark.cov")
    lines = _lines(bad)
    lines[20], lines[21] = lines[21], lines[20]
    _rewrite(bad, lines)

    with pytest.raises(ImportFormatError, match=r"line 22, column 2 \(start\).*comes after.*sort"):
        import_batch(warehouse, get_format("bismark-cov"), [bad], batch_id="B")


def test_a_chromosome_split_in_two_blocks_is_refused(warehouse, genome, tmp_path):
    _, bad = _good_and_bad(tmp_path, genome, write_bismark_cov, ".bismark.cov")
    lines = _lines(bad)
    first_chr2 = next(i for i, line in enumerate(lines) if line.startswith("chr2"))
    _rewrite(bad, lines[:5] + lines[first_chr2:] + lines[5:first_chr2])

    with pytest.raises(ImportFormatError, match=rf"line {len(lines) - first_chr2 + 6},.*'chr1' appears again"):
        import_batch(warehouse, get_format("bismark-cov"), [bad], batch_id="B")


def test_a_bad_beta_in_a_matrix(warehouse, genome, tmp_path):
    cpgs = genome[1].iloc[:4]
    (tmp_path / "m.csv").write_text(
        "probe_id,chrom,pos\n" + "".join(f"p{i},{c},{p}\n" for i, (c, p) in enumerate(zip(cpgs.chrom, cpgs.pos)))
    )
    matrix = pd.DataFrame({"X1": [0.1, 0.2, 0.3, 0.4], "X2": [0.5, 0.6, 1.7, 0.8]}, index=[f"p{i}" for i in range(4)])
    write_beta_matrix(tmp_path / "betas.csv", matrix)
    fmt = get_format("array", manifest=tmp_path / "m.csv")

    with pytest.raises(ImportFormatError, match=r"betas.csv, line 4, column 3 \(sample X2\): '1.7': a beta must lie"):
        import_batch(warehouse, fmt, [tmp_path / "betas.csv"], batch_id="B")
    matrix.iloc[2, 1] = 0.7
    write_beta_matrix(tmp_path / "betas.csv", matrix)
    _set_field(tmp_path / "betas.csv", 3, 2, "high", sep=",")
    with pytest.raises(ImportFormatError, match=r"line 3, column 2 \(sample X1\): 'high' is not a number"):
        import_batch(warehouse, fmt, [tmp_path / "betas.csv"], batch_id="B")


def test_a_strandless_cytosine_needs_the_axis(genome, tmp_path):
    wh = LocalWarehouse(tmp_path / "no-axis")
    _, bad = _good_and_bad(tmp_path, genome, write_bismark_cov, ".bismark.cov")

    with pytest.raises(ImportFormatError, match=r"line 1: this record gives a single cytosine.*xr-methyl axis"):
        import_batch(wh, get_format("bismark-cov"), [bad], batch_id="B")
    assert iceberg_table(wh, "beta").current_snapshot() is None


def test_a_sample_of_another_batch_is_refused_before_reading(warehouse, genome, tmp_path):
    path = tmp_path / "A1.bismark.cov"
    path.write_text("this is not read\n")
    before = state(warehouse)

    with pytest.raises(DataError, match=r"'A1' in 'A'.*re-import that batch without it"):
        import_batch(warehouse, get_format("bismark-cov"), [path], batch_id="B")
    assert state(warehouse) == before


def test_a_file_the_sheet_does_not_name(warehouse, genome, tmp_path):
    _, bad = _good_and_bad(tmp_path, genome, write_bismark_cov, ".bismark.cov")
    (tmp_path / "sheet.csv").write_text("sample_id,file\nZ1,elsewhere.cov\n")

    with pytest.raises(ImportFormatError, match=r"sheet.csv: no row of the sample sheet names the file"):
        import_batch(warehouse, get_format("bismark-cov"), [bad], batch_id="B", sample_sheet=tmp_path / "sheet.csv")


def test_a_truncated_gzip_file(warehouse, genome, tmp_path):
    good, bad = _good_and_bad(tmp_path, genome, write_bismark_cov, ".bismark.cov.gz")
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    before = state(warehouse)

    with pytest.raises(ImportFormatError, match=rf"{bad.name}: cannot be read \(a damaged or truncated file\?\)"):
        import_batch(warehouse, get_format("bismark-cov"), [good, bad], batch_id="B")
    assert state(warehouse) == before
