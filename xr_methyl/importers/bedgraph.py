"""The shape Bismark's coverage files and MethylDackel's bedGraph share.

Six tab-separated columns ``chrom, start, end, percent methylated, count
methylated, count unmethylated``; a line is either one cytosine, whose strand
the line does not say (placed on its CpG through the reference axis), or one
CpG with both strands merged.  The two tools differ only in their coordinates:
Bismark's are 1-based and closed (a cytosine has ``end == start``), MethylDackel's
0-based and half-open (``end == start + 1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa

from xr_methyl.importers.base import BOTH, UNKNOWN, refuse_where
from xr_methyl.importers.calls import calls_batch
from xr_methyl.importers.text import Column, Layout, head_lines, read_delimited

#: The first three columns of every BED-like format.
BED_COLUMNS = (
    Column("chrom", 0, "chromosome", pa.string()),
    Column("start", 1, "start", pa.int64()),
    Column("end", 2, "end", pa.int64()),
)


class CountsBedGraph:
    """A six-column counts bedGraph; subclasses set ``origin`` (1: 1-based closed, 0: 0-based half-open)."""

    origin: ClassVar[int]
    multi_sample: ClassVar[bool] = False
    position_column: ClassVar[tuple[int, str]] = (2, "start")
    columns = (
        *BED_COLUMNS,
        Column("methylated", 4, "count methylated", pa.int64()),
        Column("unmethylated", 5, "count unmethylated", pa.int64()),
    )

    def layout(self, path: Path) -> Layout:
        first = head_lines(path, 1)
        return Layout(header_lines=1 if first and first[0].startswith("track") else 0)

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        to_one_based = 1 - self.origin
        one_c, one_cpg = 1 - self.origin, 2 - self.origin  # end - start of a cytosine, of a CpG
        for first, batch in read_delimited(path, self.columns, self.layout(path), exact_fields=6):
            start = batch.column("start").to_numpy()
            width = batch.column("end").to_numpy() - start
            m, u = batch.column("methylated").to_numpy(), batch.column("unmethylated").to_numpy()
            refuse_where(
                first,
                start < self.origin,
                2,
                "start",
                f"positions are {self.origin}-based: start must be >= {self.origin}",
            )
            refuse_where(
                first,
                (width != one_c) & (width != one_cpg),
                3,
                "end",
                f"end must be start + {one_c} (one cytosine) or start + {one_cpg} (a CpG, both strands)",
            )
            refuse_where(first, m < 0, 5, "count methylated", "counts must be >= 0")
            refuse_where(first, u < 0, 6, "count unmethylated", "counts must be >= 0")
            strand = np.where(width == one_cpg, BOTH, UNKNOWN).astype(np.int8)
            yield calls_batch(first, batch.column("chrom"), start + to_one_based, strand, m, u)
