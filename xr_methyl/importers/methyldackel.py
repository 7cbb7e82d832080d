"""MethylDackel's bedGraph (``MethylDackel extract``, ``*_CpG.bedGraph``).

An optional ``track type="bedGraph" ...`` line, then six tab-separated columns
``chrom, start, end, percent methylated, count methylated, count
unmethylated``, 0-based half-open.  With ``--mergeContext`` each line is a CpG
(2 bp, both strands) whose C is at 1-based ``start + 1``.  Without it each line
is one cytosine (1 bp) and does not say its strand: it is placed on its CpG
through the reference axis (the C on + at 1-based ``start + 1``, or the C on
- at the G, whose CpG is at 1-based ``start``).
"""

from __future__ import annotations

from typing import ClassVar

from xr_methyl.importers.bedgraph import CountsBedGraph


class MethylDackel(CountsBedGraph):
    """``methyldackel``: MethylDackel bedGraph files (``*_CpG.bedGraph[.gz]``)."""

    name: ClassVar[str] = "methyldackel"
    convention: ClassVar[str] = (
        "0-based half-open; 2-bp line (--mergeContext) is the CpG at start + 1; 1-bp line "
        "is one C of unknown strand (placed through the reference axis)"
    )
    suffixes: ClassVar[tuple[str, ...]] = ("_CpG.bedGraph", ".bedGraph")
    origin: ClassVar[int] = 0
