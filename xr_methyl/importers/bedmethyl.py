"""bedMethyl as modkit (Oxford Nanopore) writes it: ``modkit pileup --cpg --ref GENOME``.

At least 18 columns: ``chrom, start, end, modification code, score, strand,
thickStart, thickEnd, color, Nvalid_cov, percent modified, Nmod, Ncanonical,
Nother_mod, Ndelete, Nfail, Ndiff, Nnocall``; positions 0-based half-open
(BED).  Older modkit versions separate columns 10-18 with spaces instead of
tabs; both are read.  Only rows of modification code ``m`` (5mC) are kept.
A ``+`` row is the C of a CpG at 1-based ``start + 1``; a ``-`` row is the C on
the - strand, at the CpG's G, so its CpG is at 1-based ``start``; a ``.`` row
(``--combine-strands``) covers both strands of the CpG at ``start + 1``.

methylated = Nmod; unmethylated = Ncanonical + Nother_mod, so beta equals
modkit's own fraction modified (a 5hmC call counts against 5mC), and coverage
is Nvalid_cov.  modkit run without ``--cpg`` reports cytosines outside CpGs
too; they cannot be told apart here, and the import report counts the sites
that are not on the reference axis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.importers.base import refuse_where
from xr_methyl.importers.bedgraph import BED_COLUMNS
from xr_methyl.importers.calls import calls_batch, strand_array
from xr_methyl.importers.text import Column, Layout, head_lines, read_delimited

_HEADER_PREFIXES = ("track", "browser", "#")


class BedMethyl:
    """``bedmethyl``: modkit pileup output (``*.bed[.gz]``, ``*.bedmethyl[.gz]``)."""

    name: ClassVar[str] = "bedmethyl"
    convention: ClassVar[str] = (
        "0-based half-open; code m only; + row at start is the CpG at start + 1, "
        "- row (the G) is the CpG at start, . row (combined strands) at start + 1"
    )
    suffixes: ClassVar[tuple[str, ...]] = (".bedmethyl", ".bedMethyl", ".bed")
    multi_sample: ClassVar[bool] = False
    position_column: ClassVar[tuple[int, str]] = (2, "start")
    columns = (
        *BED_COLUMNS,
        Column("code", 3, "modification code", pa.string()),
        Column("strand", 5, "strand", pa.string()),
        Column("valid", 9, "Nvalid_cov", pa.int64()),
        Column("mod", 11, "Nmod", pa.int64()),
        Column("canonical", 12, "Ncanonical", pa.int64()),
        Column("other", 13, "Nother_mod", pa.int64()),
    )

    def layout(self, path: Path) -> Layout:
        header = 0
        for line in head_lines(path, 50):
            if not line.startswith(_HEADER_PREFIXES):
                break
            header += 1
        return Layout(header_lines=header, spaces_are_tabs=True)

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        for first, batch in read_delimited(path, self.columns, self.layout(path), min_fields=18):
            start = batch.column("start").to_numpy()
            valid, mod = batch.column("valid").to_numpy(), batch.column("mod").to_numpy()
            canonical, other = batch.column("canonical").to_numpy(), batch.column("other").to_numpy()
            strand, unknown = strand_array(batch.column("strand"), "+", "-", both=(".",))
            refuse_where(first, start < 0, 2, "start", "positions are 0-based: start must be >= 0")
            refuse_where(
                first,
                batch.column("end").to_numpy() != start + 1,
                3,
                "end",
                "end must be start + 1 (one cytosine per row)",
            )
            refuse_where(first, unknown, 6, "strand", "strand must be '+', '-' or '.'")
            for index, label, values in ((12, "Nmod", mod), (13, "Ncanonical", canonical), (14, "Nother_mod", other)):
                refuse_where(first, values < 0, index, label, "counts must be >= 0")
            refuse_where(
                first,
                valid != mod + canonical + other,
                10,
                "Nvalid_cov",
                "Nvalid_cov must equal Nmod + Ncanonical + Nother_mod (is this modkit's column layout?)",
            )
            keep = pc.equal(batch.column("code"), "m").to_numpy(zero_copy_only=False)
            yield calls_batch(first, batch.column("chrom"), start + 1, strand, mod, canonical + other, keep)
