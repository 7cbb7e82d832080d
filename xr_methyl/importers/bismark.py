"""Bismark's coverage files and CpG / cytosine reports.

Coverage (``bismark_methylation_extractor --bedGraph``, ``*.bismark.cov[.gz]``): no
header, six tab-separated columns ``chrom, start, end, % methylated, count
methylated, count unmethylated``, 1-based.  A line with ``start == end`` is one
cytosine and does not say its strand: it is placed on its CpG through the
reference axis (the C on + at ``start``, or on - at ``start`` = the CpG's
``pos + 1``).  ``coverage2cytosine --merge_CpG`` writes 2-bp lines
(``end == start + 1``): one CpG, both strands, at ``start``.

CpG report (``coverage2cytosine``, ``*CpG_report.txt[.gz]``) and the genome-wide
cytosine report (``*CX_report.txt[.gz]``): no header, seven columns ``chrom, pos,
strand, count methylated, count unmethylated, context, trinucleotide``, 1-based,
every cytosine of the genome (covered or not) with its strand; only ``CG``
context is kept, a - strand C at ``pos`` belongs to the CpG at ``pos - 1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.importers.base import refuse_where
from xr_methyl.importers.bedgraph import CountsBedGraph
from xr_methyl.importers.calls import calls_batch, strand_array
from xr_methyl.importers.text import Column, Layout, read_delimited


class BismarkCoverage(CountsBedGraph):
    """``bismark-cov``: Bismark coverage files (``*.bismark.cov[.gz]``)."""

    name: ClassVar[str] = "bismark-cov"
    convention: ClassVar[str] = (
        "1-based; start == end is one C of unknown strand (placed through the reference "
        "axis), end == start + 1 is a merged CpG at start"
    )
    suffixes: ClassVar[tuple[str, ...]] = (
        ".CpG_report.merged_CpG_evidence.cov",
        ".merged_CpG_evidence.cov",
        ".bismark.cov",
        ".cov",
    )
    origin: ClassVar[int] = 1


class BismarkReport:
    """``bismark-report``: Bismark CpG reports and genome-wide cytosine reports."""

    name: ClassVar[str] = "bismark-report"
    convention: ClassVar[str] = (
        "1-based, one line per C and strand; CG context kept; a - strand C at pos belongs to the CpG at pos - 1"
    )
    suffixes: ClassVar[tuple[str, ...]] = (".CpG_report.txt", ".CX_report.txt", ".cytosine_report.txt", ".txt")
    multi_sample: ClassVar[bool] = False
    columns = (
        Column("chrom", 0, "chromosome", pa.string()),
        Column("pos", 1, "position", pa.int64()),
        Column("strand", 2, "strand", pa.string()),
        Column("methylated", 3, "count methylated", pa.int64()),
        Column("unmethylated", 4, "count unmethylated", pa.int64()),
        Column("context", 5, "context", pa.string()),
    )
    position_column: ClassVar[tuple[int, str]] = (2, "position")

    def layout(self, path: Path) -> Layout:
        return Layout()

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        for first, batch in read_delimited(path, self.columns, exact_fields=7):
            pos = batch.column("pos").to_numpy()
            m, u = batch.column("methylated").to_numpy(), batch.column("unmethylated").to_numpy()
            strand, unknown = strand_array(batch.column("strand"), "+", "-")
            refuse_where(first, pos < 1, 2, "position", "positions are 1-based: pos must be >= 1")
            refuse_where(first, unknown, 3, "strand", "strand must be '+' or '-'")
            refuse_where(first, m < 0, 4, "count methylated", "counts must be >= 0")
            refuse_where(first, u < 0, 5, "count unmethylated", "counts must be >= 0")
            keep = pc.equal(batch.column("context"), "CG").to_numpy(zero_copy_only=False)
            yield calls_batch(first, batch.column("chrom"), pos, strand, m, u, keep)
