"""String CpG ids -> column positions with a numpy hash table (no Python object per row).

Mapping ids to columns is the whole cost of going from long to wide.  A DuckDB
hash join or a pyarrow ``index_in`` hashes every string through a general
machinery; here each id is read straight from the Arrow buffers as a few 8-byte
words (ids are short ASCII strings, NUL-padded to the axis width), hashed with
two multiplications per word, and found by vectorised linear probing in an
open-addressing table built once per store.  A hit is confirmed by comparing
all words, so the result is exact: an id maps to its column or to -1.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_MUL = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], dtype=np.uint64)


#: ``_LOW_BYTES[i]``: a mask of the low ``i`` bytes of a uint64 (0 <= i <= 8).
_LOW_BYTES = np.array([(1 << (8 * i)) - 1 for i in range(9)], dtype=np.uint64)


def _words_of_fixed(ids: np.ndarray, n_words: int) -> np.ndarray:
    """(n, n_words) uint64 of a fixed-width ``S`` array, NUL-padded."""
    width = ids.dtype.itemsize
    padded = np.zeros((len(ids), n_words * 8), dtype=np.uint8)
    padded[:, :width] = np.ascontiguousarray(ids).view(np.uint8).reshape(len(ids), width)
    return padded.view("<u8")


def _hash(words: list[np.ndarray], bits: int) -> np.ndarray:
    """Slot of each id (top ``bits`` of a multiplicative hash of its words)."""
    with np.errstate(over="ignore"):
        h = words[0] * _MUL[0]
        for k in range(1, len(words)):
            h ^= h >> np.uint64(29)
            h ^= words[k] * _MUL[k % 4]
        h *= _MUL[3]
    return (h >> np.uint64(64 - bits)).astype(np.int64)


class CpgLookup:
    """Exact id -> column look-ups against a fixed axis of ``S`` ids.

    Parameters
    ----------
    ids
        The axis: a 1-D fixed-width ``S`` array (ASCII, no NUL), unique.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.width = ids.dtype.itemsize
        self.n_words = -(-self.width // 8)
        self.words = _words_of_fixed(np.asarray(ids), self.n_words)
        self.bits = max(4, int(np.ceil(np.log2(max(len(ids), 1) * 2))))  # load factor <= 1/2
        mask = (1 << self.bits) - 1
        slots = np.full(1 << self.bits, -1, dtype=np.int32 if len(ids) < 2**31 else np.int64)
        pending = np.arange(len(ids))
        where = _hash([self.words[:, k] for k in range(self.n_words)], self.bits)
        while len(pending):
            # Each free slot goes to the first pending id that wants it; the rest probe on.
            free = slots[where] < 0
            first = np.zeros(len(pending), dtype=bool)
            _, pick = np.unique(where[free], return_index=True)
            first[np.flatnonzero(free)[pick]] = True
            slots[where[first]] = pending[first]
            pending, where = pending[~first], (where[~first] + 1) & mask
        self.slots = slots
        # Each id's words side by side: a look-up compares them all after one gather of a row.
        self.words = np.ascontiguousarray(self.words)
        self.nbytes = slots.nbytes + self.words.nbytes

    def words_of(self, strings: pa.Array) -> tuple[list[np.ndarray], np.ndarray]:
        """NUL-padded words of Arrow strings, and a mask of those that fit the axis width."""
        if isinstance(strings, pa.ChunkedArray):
            strings = strings.combine_chunks()
        if pa.types.is_dictionary(strings.type):
            strings = strings.cast(strings.type.value_type)
        if pa.types.is_string_view(strings.type) or pa.types.is_binary_view(strings.type):
            strings = strings.cast(pa.large_string())
        n = len(strings)
        offset_type = (
            np.int64 if pa.types.is_large_string(strings.type) or pa.types.is_large_binary(strings.type) else np.int32
        )
        bufs = strings.buffers()
        offsets = np.frombuffer(bufs[1], dtype=offset_type)[strings.offset : strings.offset + n + 1].astype(np.int64)
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        starts, lengths = offsets[:-1], np.diff(offsets)
        fits = lengths <= self.width
        if strings.null_count:
            fits &= ~np.asarray(strings.is_null())
        # Read 8 bytes at any offset: pad the data so the last word never runs off the end.
        padded = np.zeros(len(data) + 8 * self.n_words + 8, dtype=np.uint8)
        padded[: len(data)] = data
        unaligned = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
        words = []
        for k in range(self.n_words):
            raw = unaligned[starts + 8 * k]
            # Keep the string's own bytes of this word (little-endian: the low ones).
            mask = _LOW_BYTES[np.clip(lengths - 8 * k, 0, 8)]
            words.append(raw & mask)
        return words, fits

    def _holds(self, cand: np.ndarray, words: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Which candidate slots are occupied, and which hold the id whose ``words`` are given."""
        table = np.take(self.words, cand, axis=0)  # an empty slot's -1 reads the last row; `occupied` masks it
        occupied = cand >= 0
        same = occupied.copy()
        for k, word in enumerate(words):
            same &= table[:, k] == word
        return occupied, same

    def columns(self, strings: pa.Array) -> np.ndarray:
        """Column of each string (int64), -1 for strings not on the axis."""
        words, fits = self.words_of(strings)
        out = np.full(len(fits), -1, dtype=np.int64)
        if not fits.all():
            keep = np.flatnonzero(fits)
            words = [w[keep] for w in words]
        else:
            keep = None
        where = _hash(words, self.bits)
        mask = (1 << self.bits) - 1
        # First probe, for every id at once (most ids sit in their own slot).
        cand = self.slots[where]
        occupied, same = self._holds(cand, words)
        found = np.where(same, cand, -1).astype(np.int64)
        # Then the next slots, for the ids whose slot holds another id, until an empty slot ends each search.
        rows = np.flatnonzero(occupied & ~same)
        where = (where[rows] + 1) & mask
        while len(rows):
            cand = self.slots[where]
            occupied, same = self._holds(cand, [word[rows] for word in words])
            found[rows[same]] = cand[same]
            go_on = occupied & ~same
            rows, where = rows[go_on], (where[go_on] + 1) & mask
        if keep is None:
            return found
        out[keep] = found
        return out
