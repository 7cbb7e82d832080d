"""The CpG id convention, shared by the importers, the axis builder and any table written elsewhere.

A CpG's id is ``"<chrom>:<pos>"``:

* ``chrom`` is the reference sequence's name exactly as the reference writes it
  (the first word of the FASTA header: ``chr1`` in UCSC/GENCODE builds, ``1`` in
  Ensembl ones); ids of two references that name chromosomes differently never meet.
* ``pos`` is the **1-based** position of the CpG's **C on the + (forward) strand**,
  in decimal without leading zeros.  The C on the - strand of the same CpG sits
  at ``pos + 1`` (it pairs with the G on +) and gets the same id: one id per CpG.

So the CpG at bases 10,469-10,470 of chr1 (``CG`` on +) is ``chr1:10469``.  From
other conventions: a 0-based BED start of the C on + is ``start + 1``; a
cytosine reported on the - strand at 1-based ``p`` belongs to ``p - 1``; a
0-based start of that - strand C belongs to ``start``.  In SQL (Athena/Trino)::

    chrom || ':' || CAST(pos AS varchar)                  -- 1-based C on +
    chrom || ':' || CAST(start + 1 AS varchar)            -- 0-based BED start of the C on +

and the locus back from an id: ``regexp_extract(cpg_id, '^(.*):([0-9]+)$', 1)`` and
``CAST(regexp_extract(cpg_id, '^(.*):([0-9]+)$', 2) AS bigint)``.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: An id split into its chromosome (greedy, so names holding ':' work) and position.
ID_PATTERN = re.compile(r"^(.*):([1-9][0-9]*)$")


def cpg_ids(chrom: pa.Array, pos: np.ndarray | pa.Array) -> pa.Array:
    """The ids of CpGs at 1-based ``pos`` (the C on +) on ``chrom``, vectorised."""
    positions = pa.array(pos, pa.int64()) if not isinstance(pos, pa.Array) else pos
    return pc.binary_join_element_wise(chrom.cast(pa.string()), positions.cast(pa.string()), ":")


def cpg_id(chrom: str, pos: int) -> str:
    """The id of the CpG whose C on the + strand is at 1-based ``pos`` of ``chrom``."""
    return f"{chrom}:{int(pos)}"


def parse_cpg_id(value: str) -> tuple[str, int]:
    """``(chrom, pos)`` of an id; ``ValueError`` naming it if it does not follow the convention."""
    match = ID_PATTERN.match(value)
    if match is None:
        raise ValueError(f"CpG id {value!r} does not follow the convention '<chrom>:<1-based position>'")
    return match.group(1), int(match.group(2))
