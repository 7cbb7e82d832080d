"""methylKit's per-sample text table, as ``methRead`` reads it and MethylDackel ``--methylKit`` writes it.

Tab-separated with a header line ``chrBase chr base strand coverage freqC
freqT``; ``base`` is 1-based; ``strand`` is ``F`` (or ``+``) for the C on the
forward strand and ``R`` (or ``-``) for the C on the reverse strand, which
sits at the CpG's G, so its CpG is at ``base - 1``.  ``freqC`` and ``freqT``
are percentages: methylated = round(coverage x freqC / 100), unmethylated =
coverage - methylated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa

from xr_methyl.importers.base import refuse_where
from xr_methyl.importers.calls import calls_batch, strand_array
from xr_methyl.importers.text import Column, Layout, head_lines, read_delimited


class MethylKit:
    """``methylkit``: methylKit text tables (``*.txt[.gz]``, ``*_methylKit.txt``)."""

    name: ClassVar[str] = "methylkit"
    convention: ClassVar[str] = (
        "1-based; strand F at base is the CpG at base, R (the C on -, at the G) is the "
        "CpG at base - 1; counts from coverage x freqC / 100"
    )
    suffixes: ClassVar[tuple[str, ...]] = ("_CpG.methylKit", ".methylKit", ".txt")
    multi_sample: ClassVar[bool] = False
    position_column: ClassVar[tuple[int, str]] = (3, "base")
    columns = (
        Column("chrom", 1, "chr", pa.string()),
        Column("base", 2, "base", pa.int64()),
        Column("strand", 3, "strand", pa.string()),
        Column("coverage", 4, "coverage", pa.int64()),
        Column("freq_c", 5, "freqC", pa.float64()),
        Column("freq_t", 6, "freqT", pa.float64()),
    )

    def layout(self, path: Path) -> Layout:
        first = head_lines(path, 1)
        return Layout(header_lines=1 if first and first[0].startswith("chrBase") else 0)

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        for first, batch in read_delimited(path, self.columns, self.layout(path), exact_fields=7):
            base = batch.column("base").to_numpy()
            coverage = batch.column("coverage").to_numpy()
            freq_c, freq_t = batch.column("freq_c").to_numpy(), batch.column("freq_t").to_numpy()
            strand, unknown = strand_array(batch.column("strand"), ("F", "+"), ("R", "-"))
            refuse_where(first, base < 1, 3, "base", "positions are 1-based: base must be >= 1")
            refuse_where(first, unknown, 4, "strand", "strand must be F or R (or + or -)")
            refuse_where(first, coverage < 0, 5, "coverage", "coverage must be >= 0")
            refuse_where(first, ~((freq_c >= 0) & (freq_c <= 100)), 6, "freqC", "freqC is a percentage in [0, 100]")
            refuse_where(
                first,
                np.abs(freq_c + freq_t - 100) > 0.1,
                7,
                "freqT",
                "freqC + freqT must make 100 (percentages of the reads)",
            )
            methylated = np.rint(coverage * freq_c / 100).astype(np.int64)
            yield calls_batch(first, batch.column("chrom"), base, strand, methylated, coverage - methylated)
