"""Input files written the way the pipelines write them, from a known truth.

Each writer takes per-strand calls (a DataFrame: ``chrom``, ``pos`` = the CpG's
C on + (1-based), ``strand`` '+'/'-', ``methylated``, ``unmethylated`` and, for
modkit, ``other`` = 5hmC calls) and writes one tool's exact column layout,
coordinates and number formatting; ``.gz`` paths are gzip-compressed.  The
tests compare what the importers make of these files with pandas computations
on the same calls.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd


def _open(path: Path):
    path = Path(path)
    return gzip.open(path, "wt", newline="") if path.suffix == ".gz" else open(path, "w", newline="")


def random_genome(rng: np.random.Generator, lengths: dict[str, int]) -> dict[str, str]:
    """Random sequences, CpG-rich enough for tests, some of them soft-masked (lower case)."""
    genome = {}
    for chrom, n in lengths.items():
        seq = rng.choice(list("ACGTACGTCGN"), size=n)
        masked = rng.random(n) < 0.2
        seq[masked] = np.char.lower(seq[masked])
        genome[chrom] = "".join(seq)
    return genome


def write_fasta(path: Path, genome: dict[str, str], *, width: int = 60) -> None:
    with _open(path) as f:
        for chrom, seq in genome.items():
            f.write(f">{chrom} synthetic test sequence\n")
            for i in range(0, len(seq), width):
                f.write(seq[i : i + width] + "\n")


def naive_cpgs(genome: dict[str, str]) -> pd.DataFrame:
    """Every CG by regex (overlapping matches cannot occur for CG): chrom, 1-based pos of the C."""
    rows = [(chrom, m.start() + 1) for chrom, seq in genome.items() for m in re.finditer("CG", seq.upper())]
    return pd.DataFrame(rows, columns=["chrom", "pos"])


def random_calls(
    rng: np.random.Generator, cpgs: pd.DataFrame, *, absent: float = 0.2, zero: float = 0.05, depth: int = 20
) -> pd.DataFrame:
    """Per-strand calls for a random subset of CpGs; some with zero coverage (reported, no reads)."""
    out = []
    for strand in "+-":
        keep = rng.random(len(cpgs)) >= absent
        part = cpgs[keep].copy()
        n = len(part)
        cov = rng.integers(1, depth, size=n)
        cov[rng.random(n) < zero] = 0
        part["methylated"] = rng.binomial(cov, rng.random(n))
        part["other"] = rng.binomial(cov - part["methylated"].to_numpy(), 0.1)
        part["unmethylated"] = cov - part["methylated"].to_numpy() - part["other"].to_numpy()
        part["strand"] = strand
        out.append(part)
    calls = pd.concat(out, ignore_index=True)
    return calls.sort_values(["chrom", "pos", "strand"], ignore_index=True)  # '+' sorts before '-'


def truth_beta(calls: pd.DataFrame, *, strands: str = "merge", count_other: bool = True) -> pd.Series:
    """beta per CpG id (``chrom:pos``), summing the kept strands; CpGs without reads are absent."""
    c = calls if strands == "merge" else calls[calls.strand == strands]
    u = c.unmethylated + (c.other if count_other else 0)
    g = pd.DataFrame({"id": c.chrom + ":" + c.pos.astype(str), "m": c.methylated, "n": c.methylated + u})
    g = g.groupby("id").sum()
    g = g[g.n > 0]
    return (g.m / g.n).rename("beta")


def truth_coverage(calls: pd.DataFrame, *, strands: str = "merge") -> pd.Series:
    c = calls if strands == "merge" else calls[calls.strand == strands]
    g = (
        pd.DataFrame({"id": c.chrom + ":" + c.pos.astype(str), "n": c.methylated + c.unmethylated + c.other})
        .groupby("id")
        .sum()
        .n
    )
    return g[g > 0].rename("coverage")


def _c_position(calls: pd.DataFrame) -> np.ndarray:
    """1-based position of the measured C: pos on +, pos + 1 (the G) on -."""
    return calls.pos.to_numpy() + (calls.strand.to_numpy() == "-")


def _reads(calls: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Bismark and MethylDackel know no 5hmC: other calls count as unmethylated."""
    return calls.methylated.to_numpy(), (calls.unmethylated + calls.other).to_numpy()


def _perl_percent(m: int, n: int) -> str:
    return f"{100 * m / n:.15g}"


def write_bismark_cov(path: Path, calls: pd.DataFrame, *, merged: bool = False) -> None:
    """``bismark_methylation_extractor --bedGraph`` (one line per covered C, 1-based, start == end), or with
    ``merged`` ``coverage2cytosine --merge_CpG`` (one 2-bp line per CpG)."""
    m, u = _reads(calls)
    if merged:
        frame = (
            pd.DataFrame({"chrom": calls.chrom, "pos": calls.pos, "m": m, "u": u})
            .groupby(["chrom", "pos"], sort=True)
            .sum()
            .reset_index()
        )
        frame["start"], frame["end"] = frame.pos, frame.pos + 1
    else:
        frame = pd.DataFrame({"chrom": calls.chrom, "start": _c_position(calls), "m": m, "u": u})
        frame["end"] = frame.start
    frame = frame[frame.m + frame.u > 0].sort_values(["chrom", "start"])
    with _open(path) as f:
        for r in frame.itertuples():
            f.write(f"{r.chrom}\t{r.start}\t{r.end}\t{_perl_percent(r.m, r.m + r.u)}\t{r.m}\t{r.u}\n")


def write_bismark_report(
    path: Path, calls: pd.DataFrame, cpgs: pd.DataFrame, *, genome: dict[str, str] | None = None
) -> None:
    """``coverage2cytosine``: every C of every CpG of ``cpgs`` on both strands (covered or not, zero counts
    when not), 1-based, with context and trinucleotide.

    With ``genome`` it is the genome-wide cytosine report (``--CX``): CHG and CHH
    cytosines too (with random counts), which the importer must leave out.
    """
    every = pd.concat([cpgs.assign(strand="+"), cpgs.assign(strand="-")], ignore_index=True)
    calls = (
        every.merge(calls, on=["chrom", "pos", "strand"], how="left")
        .fillna({"methylated": 0, "unmethylated": 0, "other": 0})
        .astype({"methylated": int, "unmethylated": int, "other": int})
    )
    m, u = _reads(calls)
    rows = pd.DataFrame(
        {
            "chrom": calls.chrom,
            "pos": _c_position(calls),
            "strand": calls.strand,
            "m": m,
            "u": u,
            "context": "CG",
            "tri": np.where(calls.strand == "+", "CGA", "CGT"),
        }
    )
    if genome is not None:
        rng = np.random.default_rng(1)
        extra = []
        for chrom, seq in genome.items():
            s = seq.upper()
            for i, base in enumerate(s):
                if base == "C" and s[i + 1 : i + 2] != "G":
                    context = "CHG" if s[i + 2 : i + 3] == "G" else "CHH"
                    extra.append((chrom, i + 1, "+", context, s[i : i + 3]))
                elif base == "G" and (i == 0 or s[i - 1] != "C"):
                    context = "CHG" if i >= 2 and s[i - 2] == "C" else "CHH"
                    extra.append((chrom, i + 1, "-", context, "CHH"))
        other = pd.DataFrame(extra, columns=["chrom", "pos", "strand", "context", "tri"])
        other["m"] = rng.integers(0, 5, len(other))
        other["u"] = rng.integers(0, 5, len(other))
        rows = pd.concat([rows, other[rows.columns]], ignore_index=True)
    rows = rows.sort_values(["chrom", "pos"])
    with _open(path) as f:
        for r in rows.itertuples():
            f.write(f"{r.chrom}\t{r.pos}\t{r.strand}\t{r.m}\t{r.u}\t{r.context}\t{r.tri}\n")


def write_bedmethyl(path: Path, calls: pd.DataFrame, *, combined: bool = False, mixed_delimiters: bool = False) -> None:
    """``modkit pileup --cpg --ref`` bedMethyl: 0-based, an ``m`` and an ``h`` row per covered C, 18 columns.

    ``combined``: ``--combine-strands`` (one row per CpG at the C on +, strand
    '.'); ``mixed_delimiters``: columns 10-18 separated by spaces (older modkit).
    """
    c = calls.copy()
    if combined:
        c = c.groupby(["chrom", "pos"], sort=True)[["methylated", "unmethylated", "other"]].sum().reset_index()
        c["start"], c["strand"] = c.pos - 1, "."
    else:
        c["start"] = _c_position(c) - 1
    c["valid"] = c.methylated + c.unmethylated + c.other
    c = c[c.valid > 0].sort_values(["chrom", "start"])
    rng = np.random.default_rng(2)
    with _open(path) as f:
        for r in c.itertuples():
            for code, mod, other in (("h", r.other, r.methylated), ("m", r.methylated, r.other)):
                head = [r.chrom, r.start, r.start + 1, code, r.valid, r.strand, r.start, r.start + 1, "255,0,0"]
                tail = [
                    r.valid,
                    f"{100 * mod / r.valid:.2f}",
                    mod,
                    r.unmethylated,
                    other,
                    int(rng.integers(0, 3)),
                    int(rng.integers(0, 3)),
                    int(rng.integers(0, 3)),
                    0,
                ]
                if mixed_delimiters:
                    f.write("\t".join(map(str, head)) + "\t" + " ".join(map(str, tail)) + "\n")
                else:
                    f.write("\t".join(map(str, head + tail)) + "\n")


def write_methylkit(path: Path, calls: pd.DataFrame) -> None:
    """methylKit's text table: header, chrBase/chr/base/strand F|R/coverage/freqC/freqT (percent, 2 decimals)."""
    calls = calls.assign(base=_c_position(calls)).sort_values(["chrom", "base"])
    m, u = _reads(calls)
    cov = m + u
    base = calls.base.to_numpy()
    with _open(path) as f:
        f.write("chrBase\tchr\tbase\tstrand\tcoverage\tfreqC\tfreqT\n")
        for chrom, b, s, mm, n in zip(calls.chrom, base, calls.strand, m, cov):
            if n == 0:
                continue  # methylKit keeps covered bases only
            freq_c = round(100 * mm / n, 2)
            f.write(f"{chrom}.{b}\t{chrom}\t{b}\t{'F' if s == '+' else 'R'}\t{n}\t{freq_c:.2f}\t{100 - freq_c:.2f}\n")


def write_methyldackel(path: Path, calls: pd.DataFrame, *, merge_context: bool = False) -> None:
    """``MethylDackel extract``: a track line, then 0-based bedGraph lines (per C, or per CpG with --mergeContext)."""
    m, u = _reads(calls)
    if merge_context:
        frame = (
            pd.DataFrame({"chrom": calls.chrom, "pos": calls.pos, "m": m, "u": u})
            .groupby(["chrom", "pos"], sort=True)
            .sum()
            .reset_index()
        )
        frame["start"], frame["end"] = frame.pos - 1, frame.pos + 1
    else:
        frame = pd.DataFrame({"chrom": calls.chrom, "start": _c_position(calls) - 1, "m": m, "u": u})
        frame["end"] = frame.start + 1
    frame = frame[frame.m + frame.u > 0].sort_values(["chrom", "start"])
    with _open(path) as f:
        f.write('track type="bedGraph" description="sample CpG methylation levels"\n')
        for r in frame.itertuples():
            f.write(f"{r.chrom}\t{r.start}\t{r.end}\t{int(100 * r.m / (r.m + r.u))}\t{r.m}\t{r.u}\n")


def write_beta_matrix(path: Path, betas: pd.DataFrame, *, sep: str = ",") -> None:
    """A probes x samples matrix as R's ``write.csv`` / ``write.table(sep="\\t")`` writes it: quoted, NA."""
    with _open(path) as f:
        f.write(sep.join(['""'] + [f'"{s}"' for s in betas.columns]) + "\n")
        for probe, row in betas.iterrows():
            values = ["NA" if np.isnan(v) else f"{v:.15g}" for v in row.to_numpy()]
            f.write(sep.join([f'"{probe}"'] + values) + "\n")


def write_illumina_manifest(path: Path, probes: pd.DataFrame) -> None:
    """Illumina's CSV manifest: [Heading], [Assay] (IlmnID, Name, ..., CHR, MAPINFO, ...), [Controls].

    ``probes`` has ``probe_id``, ``chrom`` (written without 'chr', as the 450k
    manifest does; empty for unplaced probes) and ``pos`` (0 or NaN: unplaced).
    """
    with _open(path) as f:
        f.write(
            "Illumina, Inc.,,,,,,,\n[Heading],,,,,,,,\n"
            "Descriptor File Name,HumanMethylation450_15017482_v1-2.bpm,,,,,,,\n"
            f"Assay Format,Infinium HD Methylation,,,,,,,\nLoci Count ,{len(probes)},,,,,,,\n[Assay],,,,,,,,\n"
        )
        f.write("IlmnID,Name,AddressA_ID,Infinium_Design_Type,Genome_Build,CHR,MAPINFO,Strand\n")
        for i, r in enumerate(probes.itertuples()):
            chrom = str(r.chrom).removeprefix("chr") if isinstance(r.chrom, str) else ""
            pos = "" if pd.isna(r.pos) else int(r.pos)
            f.write(f"{r.probe_id},{r.probe_id.split('_')[0]},{10000000 + i},II,37,{chrom},{pos},F\n")
        f.write("[Controls],,,,,,,,\n28684229,STAINING,Red,DNP (High),,,,,\n")


# --- reading back through the public path: warehouse -> MethylStore.create -> ensure ---


def ensured(warehouse, store_path: Path, samples: list[str]):
    """(beta, coverage, dataset) of ``samples`` after ``MethylStore.create`` and ``ds.methyl.ensure``."""
    import xarray as xr

    from xr_methyl import MethylStore

    MethylStore.create(store_path, warehouse=warehouse)
    ds = xr.open_dataset(store_path, engine="methylzarr")
    sub = ds.methyl.ensure(samples, progress=False)
    ids = [str(c) for c in sub.cpg.values]
    beta = pd.DataFrame(sub.beta.values, index=samples, columns=ids)
    coverage = pd.DataFrame(sub.coverage.values.astype(np.int64), index=samples, columns=ids)
    return beta, coverage, sub


def assert_matches(
    beta: pd.DataFrame,
    expected: dict[str, pd.Series],
    coverage: pd.DataFrame | None = None,
    expected_coverage: dict[str, pd.Series] | None = None,
) -> None:
    """Each sample's row equals its expected values on the axis: NaN (and coverage 0) where none is expected."""
    for sample, truth in expected.items():
        assert set(truth.index) <= set(beta.columns), sorted(set(truth.index) - set(beta.columns))[:5]
        want = truth.reindex(beta.columns).to_numpy(dtype=np.float32)
        np.testing.assert_array_equal(np.isnan(beta.loc[sample].to_numpy()), np.isnan(want), err_msg=sample)
        np.testing.assert_allclose(beta.loc[sample].to_numpy(), want, rtol=1e-6, err_msg=sample)
        if coverage is not None:
            want_cov = expected_coverage[sample].reindex(coverage.columns).fillna(0).to_numpy(dtype=np.int64)
            np.testing.assert_array_equal(coverage.loc[sample].to_numpy(), want_cov, err_msg=sample)
