"""Delimited text files, streamed as Arrow record batches, with errors located to file, line and column.

The fast path is pyarrow's streaming CSV reader (memory is a few blocks, whatever
the file's length; gzip, bzip2 and zstd are decompressed on the way, recognised
by their magic bytes).  pyarrow's own errors name neither the line nor the
column, so when a file fails (or a format reader refuses a row) the file is
scanned again, line by line, to find the first bad line: the slow path is paid
only on the way to an error.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa

from xr_methyl.importers.base import ImportFormatError, RowError

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"))
_INT = re.compile(rb"[+-]?[0-9]+")
#: What a damaged or truncated (compressed) file raises while it is read.
_DAMAGED = (EOFError, zlib.error, OSError)
#: Bytes pyarrow parses at a time: a record batch is about this much text.
BLOCK_SIZE = 4 << 20


@dataclass(frozen=True)
class Layout:
    """How a text file is laid out: header lines to skip, the delimiter, quoting, and modkit's spaces."""

    header_lines: int = 0
    delimiter: str = "\t"
    spaces_are_tabs: bool = False
    quoted: bool = False  #: fields may be in double quotes (R's write.csv)

    def split(self, line: bytes) -> list[str]:
        """The fields of one line, as text."""
        text = line.decode("utf-8", "replace")
        if self.quoted:
            return next(csv.reader([text], delimiter=self.delimiter))
        return text.split(self.delimiter)


@dataclass(frozen=True)
class Column:
    """A column a format reads: its key in the record batches, 0-based position, name for messages, type."""

    key: str
    index: int
    label: str
    type: pa.DataType


def compression_of(path: Path) -> str | None:
    """``"gzip"``, ``"bz2"``, ``"zstd"`` or None, from the file's first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def open_bytes(path: Path) -> IO[bytes]:
    """The decompressed bytes of a file, as a Python binary stream (for the slow paths)."""
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "zstd":
        import zstandard

        return zstandard.open(path, "rb")
    return open(path, "rb")


def arrow_stream(path: Path) -> pa.NativeFile:
    """The decompressed bytes of a file, as an Arrow stream (decompression in C++)."""
    return pa.input_stream(str(path), compression=compression_of(path))


def damaged(path: Path, err: Exception) -> ImportFormatError:
    """The error for a file that cannot be decompressed or read to its end."""
    return ImportFormatError(path, None, None, f"cannot be read (a damaged or truncated file?): {err}")


def head_lines(path: Path, n: int) -> list[str]:
    """The first ``n`` lines (fewer if the file is shorter), without line endings."""
    out = []
    try:
        with open_bytes(path) as f:
            for raw in f:
                out.append(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
                if len(out) == n:
                    break
    except FileNotFoundError:
        raise
    except _DAMAGED as err:
        raise damaged(path, err) from None
    return out


class _SpacesToTabs(io.RawIOBase):
    """A byte stream with every space turned into a tab (modkit writes some columns space-separated)."""

    def __init__(self, source: pa.NativeFile) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer)).replace(b" ", b"\t")
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._source.close()
        super().close()


def _data_lines(path: Path, layout: Layout) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, content) of every non-empty line after the header, as pyarrow sees them."""
    with open_bytes(path) as f:
        for number, raw in enumerate(f, start=1):
            if number <= layout.header_lines:
                continue
            line = raw.rstrip(b"\r\n")
            if line:
                yield number, (line.replace(b" ", b"\t") if layout.spaces_are_tabs else line)


def find_row(path: Path, layout: Layout, row: int) -> tuple[int, list[str]] | None:
    """The 1-based line number and the fields of the ``row``-th (0-based) data row; None past the end."""
    for i, (number, line) in enumerate(_data_lines(path, layout)):
        if i == row:
            return number, layout.split(line)
    return None


def located_row_error(path: Path, layout: Layout, err: RowError) -> ImportFormatError:
    """An :class:`ImportFormatError` for a row a reader refused: its line, and the value it holds."""
    found = find_row(path, layout, err.row)
    line, fields = found if found is not None else (None, [])
    problem = err.problem
    if err.show_value and err.column is not None and len(fields) >= err.column:
        problem = f"{fields[err.column - 1]!r}: {problem}"
    return ImportFormatError(path, line, err.column, problem, column_name=err.column_name)


def _field_problem(value: bytes, column: Column, null_values: Sequence[str]) -> str | None:
    text = value.decode("utf-8", "replace")
    if text in null_values:
        return None
    if pa.types.is_integer(column.type):
        return None if _INT.fullmatch(value) else f"{text!r} is not a whole number"
    if pa.types.is_floating(column.type):
        try:
            float(text)
        except ValueError:
            return f"{text!r} is not a number"
        return None
    return None if text or pa.types.is_string(column.type) else "empty value"


def locate_parse_error(
    path: Path, columns: Sequence[Column], layout: Layout, *, n_fields: int, null_values: Sequence[str]
) -> ImportFormatError | None:
    """Scan the file for the first line pyarrow cannot read; None if every line looks fine."""
    kind = "tab-separated" if layout.delimiter == "\t" else f"{layout.delimiter!r}-separated"
    for number, line in _data_lines(path, layout):
        fields = [f.encode() for f in layout.split(line)]
        if len(fields) != n_fields:
            return ImportFormatError(
                path,
                number,
                None,
                f"expected {n_fields} {kind} columns (as on the first data line), found {len(fields)}",
            )
        for column in columns:
            problem = _field_problem(fields[column.index], column, null_values)
            if problem is not None:
                return ImportFormatError(path, number, column.index + 1, problem, column_name=column.label)
    return None


def read_delimited(
    path: Path,
    columns: Sequence[Column],
    layout: Layout = Layout(),
    *,
    null_values: Sequence[str] = (),
    min_fields: int | None = None,
    exact_fields: int | None = None,
    block_size: int | None = None,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Stream ``columns`` of a delimited text file as ``(first_row, record batch)``.

    ``first_row`` is the 0-based data row of the batch's first row.  ``layout``
    gives the header lines to skip, the delimiter and the quoting;
    ``null_values`` the spellings of a missing value (none by default: every
    field must convert).  Every data line must have as many fields as the
    first one (at least ``min_fields``, exactly ``exact_fields`` if given);
    empty lines are skipped.  A value that does not convert raises
    :class:`ImportFormatError` naming the file, line and column.
    """
    import pyarrow.csv as pacsv

    header_lines, delimiter = layout.header_lines, layout.delimiter
    first = head_lines(path, header_lines + 1)
    if len(first) <= header_lines:
        return  # nothing but the header: no rows
    n_fields = len(
        layout.split(
            first[header_lines].encode().replace(b" ", b"\t")
            if layout.spaces_are_tabs
            else first[header_lines].encode()
        )
    )
    wanted = exact_fields if exact_fields is not None else min_fields
    if wanted is not None and (n_fields != wanted if exact_fields is not None else n_fields < wanted):
        rule = "exactly" if exact_fields is not None else "at least"
        raise ImportFormatError(
            path,
            header_lines + 1,
            None,
            f"found {n_fields} columns, expected {rule} {wanted} separated by {delimiter!r}",
        )
    names = [f"f{i}" for i in range(n_fields)]
    key_of = {f"f{c.index}": c.key for c in columns}

    def located(err: pa.ArrowInvalid) -> ImportFormatError:
        try:
            found = locate_parse_error(path, columns, layout, n_fields=n_fields, null_values=null_values)
        except _DAMAGED as damage:
            return damaged(path, damage)
        return found or ImportFormatError(path, None, None, f"cannot be read: {err}")

    stream = arrow_stream(path)
    source = _SpacesToTabs(stream) if layout.spaces_are_tabs else stream
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=header_lines, block_size=block_size or BLOCK_SIZE
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"' if layout.quoted else False, ignore_empty_lines=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={f"f{c.index}": c.type for c in columns},
                include_columns=[f"f{c.index}" for c in columns],
                null_values=list(null_values),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as err:
        source.close()
        raise located(err) from None
    except _DAMAGED as err:
        source.close()
        raise damaged(path, err) from None
    row = 0
    try:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as err:
                raise located(err) from None
            except _DAMAGED as err:
                raise damaged(path, err) from None
            batch = pa.RecordBatch.from_arrays(batch.columns, names=[key_of[n] for n in batch.schema.names])
            yield row, batch
            row += batch.num_rows
    finally:
        source.close()
