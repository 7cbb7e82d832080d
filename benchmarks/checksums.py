"""What a checksum on every inner chunk costs to decode: a crc32c of the encoded bytes, or zstd's frame checksum.

Decodes the inner chunks of WGBS-like data (:func:`benchmarks.layout.generate`)
as xr_methyl's readers do, single-threaded, with and without each checksum:

* beta's chunks (one row x 65,536 CpGs, float32, zstd level 3), decoded by
  numcodecs straight into place (the row reader) and by zstandard (the
  CpG-major copy's reader);
* coverage's chunks (uint16, Blosc zstd level 1 with a byte shuffle: zstd's
  frame checksum does not apply);
* the CpG-major copy's chunks (8 samples x 64 CpGs), raw and zstd.

Times are this thread's CPU time (the decoders run in it), so that other
processes on a shared machine weigh little; the variants take turns, round
after round, and the median of the rounds counts.  Usage::

    python -m benchmarks.checksums [--cpgs 524288] [--rounds 41]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np


def crc_framed(frames: list[bytes]) -> list[bytes]:
    """Each frame followed by the crc32c of its bytes, as zarr's crc32c codec stores it."""
    import google_crc32c

    return [f + google_crc32c.value(f).to_bytes(4, "little") for f in frames]


def variants(n_cpgs: int) -> list[tuple[str, int, Callable[[], object]]]:
    """``(name, chunks, decode them all)`` of every variant measured, in the order shown."""
    import numcodecs
    import zstandard

    from benchmarks.layout import generate
    from xr_methyl.zarrio.integrity import InnerCodecs

    checked = InnerCodecs(None, checksum=True).payload  # as xr_methyl's readers check a chunk's crc32c

    beta, coverage = generate(8, n_cpgs, seed=2)
    width = 65536
    rows = [np.ascontiguousarray(beta[i, j : j + width]) for i in range(len(beta)) for j in range(0, n_cpgs, width)]
    counts = [
        np.ascontiguousarray(coverage[i, j : j + width]) for i in range(len(beta)) for j in range(0, n_cpgs, width)
    ]
    small = np.ascontiguousarray(beta.reshape(8, -1, 64).transpose(1, 0, 2))  # the copy's 8 x 64 chunks
    zstd, zstd_sum = numcodecs.Zstd(level=3), numcodecs.Zstd(level=3, checksum=True)
    blosc = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)
    plain = [zstd.encode(r) for r in rows]
    summed = [zstd_sum.encode(r) for r in rows]
    crc = crc_framed(plain)
    cov = [blosc.encode(c) for c in counts]
    cov_crc = crc_framed(cov)
    raw_small = [c.tobytes() for c in small]
    z_small = [zstandard.ZstdCompressor(level=3).compress(c) for c in raw_small]
    z_small_sum = [zstandard.ZstdCompressor(level=3, write_checksum=True).compress(c) for c in raw_small]
    out, out_cov = np.empty(width, np.float32), np.empty(width, np.uint16)
    decoder = numcodecs.Zstd()
    unzstd = zstandard.ZstdDecompressor().decompress

    def each(frames, fn):
        return len(frames), lambda: [fn(f) for f in frames]

    return [
        ("beta row chunk, numcodecs zstd", *each(plain, lambda f: decoder.decode(f, out=out))),
        ("  + zstd frame checksum", *each(summed, lambda f: decoder.decode(f, out=out))),
        ("  + crc32c", *each(crc, lambda f: decoder.decode(checked(f), out=out))),
        ("beta row chunk, zstandard", *each(plain, unzstd)),
        ("  + zstd frame checksum", *each(summed, unzstd)),
        ("  + crc32c", *each(crc, lambda f: unzstd(checked(f)))),
        ("coverage row chunk, blosc", *each(cov, lambda f: blosc.decode(f, out=out_cov))),
        ("  + crc32c", *each(cov_crc, lambda f: blosc.decode(checked(f), out=out_cov))),
        ("copy chunk 8 x 64, raw", *each(raw_small, bytes)),
        ("  + crc32c", *each(crc_framed(raw_small), checked)),
        ("copy chunk 8 x 64, zstandard", *each(z_small, unzstd)),
        ("  + zstd frame checksum", *each(z_small_sum, unzstd)),
        ("  + crc32c", *each(crc_framed(z_small), lambda f: unzstd(checked(f)))),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpgs", type=int, default=8 * 65536, help="CpGs per sample (8 samples)")
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args(argv)
    cases = variants(args.cpgs)
    times: list[list[float]] = [[] for _ in cases]
    for k in range(args.rounds):
        for i in range(len(cases)) if k % 2 else reversed(range(len(cases))):
            _, n, run = cases[i]
            t0 = time.thread_time()
            run()
            times[i].append((time.thread_time() - t0) / n)
    for (name, _, _), runs in zip(cases, times):
        print(f"{name:34s} {np.median(runs) * 1e6:9.2f} us of CPU per chunk (median of {args.rounds})")


if __name__ == "__main__":
    main()
