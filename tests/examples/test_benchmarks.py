"""The benchmark suite runs end to end at a tiny size (no assertion on speed: CI keeps it working)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_benchmark_runs_every_comparison(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--size", "tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert not [name for name, case in result["cases"].items() if "error" in case]
    assert len(result["table"]) == 11 and all(row["ratio"] != "n/a" for row in result["table"])
    assert (tmp_path / "results.md").read_text().startswith("Size `tiny`")


def test_the_checksum_cost_benchmark_runs_every_variant(capsys):
    from benchmarks.checksums import main

    main(["--cpgs", "65536", "--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 13 and all("us of CPU per chunk" in line for line in lines)
