"""What every importer shares: the error, the protocol, and the calls a format reader yields.

A format module turns one file into a stream of :data:`CALLS` record batches:
one row per measured cytosine (or CpG), in file order, with the position the
file gives converted to 1-based and a strand code saying where the CpG's C is.
Everything after that (strand resolution against the reference axis, the
strand merge, beta and coverage, the CpG ids, the Iceberg writes) is shared, so
each format module only knows its own columns and coordinate convention.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from xr_methyl.errors import DataError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from xr_methyl.importers.text import Layout

#: Strand codes of a call.  ``PLUS``: ``pos`` is the C of a CpG on the + strand.
#: ``MINUS``: ``pos`` is the C on the - strand, i.e. the G of the CpG on +
#: (the CpG's id position is ``pos - 1``).  ``BOTH``: the record already covers
#: the CpG on both strands and ``pos`` is its C on +.  ``UNKNOWN``: a cytosine
#: of unknown strand (formats without a strand column); resolved against the
#: reference CpG axis, where ``pos`` on the axis means +, ``pos - 1`` means -.
PLUS, MINUS, BOTH, UNKNOWN = 1, -1, 0, 2

#: Calls with read counts (sequencing formats).  ``row`` is the 0-based data
#: row of the file (for error messages); positions are 1-based.
CALLS = pa.schema(
    [
        ("row", pa.int64()),
        ("chrom", pa.string()),
        ("pos", pa.int64()),
        ("strand", pa.int8()),
        ("methylated", pa.int64()),
        ("unmethylated", pa.int64()),
    ]
)


class ImportFormatError(DataError):
    """A line of an input file that the importer refuses, with where it is and why.

    Attributes ``path``, ``line`` (1-based) and ``column`` (1-based, or None
    when the whole line is wrong) locate it; ``batch`` is set by the importer,
    whose message then says that nothing of the batch was committed.
    """

    def __init__(
        self, path: str | Path, line: int | None, column: int | None, problem: str, *, column_name: str | None = None
    ) -> None:
        self.path = str(path)
        self.line = line
        self.column = column
        self.column_name = column_name
        self.problem = problem
        self.batch: str | None = None
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = self.path
        if self.line is not None:
            where += f", line {self.line}"
        if self.column is not None:
            where += f", column {self.column}" + (f" ({self.column_name})" if self.column_name else "")
        tail = f"; nothing of batch {self.batch!r} was committed" if self.batch is not None else ""
        return f"{where}: {self.problem}{tail}"

    def __str__(self) -> str:
        return self.message


class RowError(Exception):
    """Raised by a format reader about one data row; the importer turns it into an :class:`ImportFormatError`.

    ``row`` is the 0-based data row of the file (the reader does not count
    lines: the importer finds the line of the row only when it reports it).
    """

    def __init__(
        self, row: int, column: int | None, problem: str, *, column_name: str | None = None, show_value: bool = True
    ) -> None:
        super().__init__(problem)
        self.row = row
        self.column = column  # 1-based
        self.column_name = column_name
        self.problem = problem
        self.show_value = show_value


def refuse_where(first_row: int, bad: np.ndarray, column: int, label: str, rule: str) -> None:
    """Raise a :class:`RowError` for the first row of a batch where ``bad`` holds (``column`` is 1-based)."""
    if bad.any():
        raise RowError(first_row + int(np.argmax(bad)), column, rule, column_name=label)


@runtime_checkable
class Format(Protocol):
    """One input format: how to read a file, and what its coordinates mean.

    A one-sample-per-file format (``multi_sample`` False) implements
    :meth:`read`, streaming :data:`CALLS`; the importer turns calls into rows.
    A many-samples format (the array matrix) implements ``samples(path)`` (its
    sample ids) and ``sites(path, counts, reference)`` (long rows ``sample_id,
    cpg_id, beta``) instead.

    Attributes
    ----------
    name
        The name on the command line (``xr-methyl import NAME ...``).
    convention
        The coordinate convention in one line (shown in the README and ``--help``).
    suffixes
        File name endings removed (after ``.gz``) to derive a sample id from a file name.
    multi_sample
        True when one file holds many samples.
    position_column
        (1-based column, name) of the position, for messages about the order of records.
    """

    name: ClassVar[str]
    convention: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    multi_sample: ClassVar[bool]
    position_column: ClassVar[tuple[int, str]]

    def layout(self, path: Path) -> Layout:
        """How ``path`` is laid out (header lines, delimiter): used to read it and to locate a refused row."""

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        """Stream the calls of one file, in file order; raise :class:`RowError` or :class:`ImportFormatError`."""
