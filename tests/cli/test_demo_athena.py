"""``xr-methyl demo --athena``: the production path on one machine, and nothing left running after it.

Each run happens in a fresh process (moto keeps its state in module globals)
that calls ``main()`` and then looks at itself: which threads still run the
servers' code, whether the ports it printed still accept connections, whether
the environment is what it was.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import xarray as xr

from xr_methyl.cli import main

SMALL = ["--samples", "12", "--cpgs", "3000", "--batch-size", "4", "--subset", "5", "--seed", "4"]

# Runs main(argv) for each (argv, failure to inject), and reports after each on what is left: JSON on stdout.
PROBE = r"""
import contextlib, io, json, os, re, socket, sys, threading, traceback

from xr_methyl import AthenaWarehouse, WarehouseError
from xr_methyl.cli import main

real_export = AthenaWarehouse.export


def failing_export(self, table, batches):  # mid-ensure: the lookup has run, the UNLOADs not yet
    raise KeyboardInterrupt() if inject == "ctrl-c" else WarehouseError("injected: the warehouse broke")


def serving_threads():
    frames = sys._current_frames()
    names = []
    for thread in threading.enumerate():
        stack = traceback.extract_stack(frames[thread.ident]) if thread.ident in frames else []
        if any(part in f.filename for f in stack for part in ("socketserver", "werkzeug", "moto", "athena_standin")):
            names.append(thread.name)
    return names


reports = []
for argv, inject in json.loads(sys.argv[1]):
    AthenaWarehouse.export = real_export if inject == "none" else failing_export
    env = dict(os.environ)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    endpoints = re.findall(r"at (http://127\.0\.0\.1:\d+)", out.getvalue())
    listening = []
    for endpoint in endpoints:
        with socket.socket() as s:
            s.settimeout(2)
            if s.connect_ex(("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))) == 0:
                listening.append(endpoint)
    reports.append({"rc": rc, "out": out.getvalue(), "endpoints": endpoints, "listening": listening,
                    "serving": serving_threads(), "env_restored": dict(os.environ) == env})
print(json.dumps(reports))
"""


def probe(*runs: tuple[list[str], str]) -> tuple[list[dict], str]:
    """Run ``main(argv)`` for each ``(argv, inject)`` in one fresh process; its reports and stderr."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(runs)], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def assert_nothing_left(report: dict) -> None:
    assert len(report["endpoints"]) == 2, report["out"]  # moto's and the stand-in's
    assert report["serving"] == [], "threads still running server code"
    assert report["listening"] == [], "ports still accepting connections"
    assert report["env_restored"]


def values_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith("values:"))


def test_demo_athena_runs_the_production_path_and_leaves_nothing_running(tmp_path, capsys):
    # The store on moto's S3 (the default), then the same run keeping the store on disk.
    [on_s3, on_disk], err = probe(
        (["demo", "--athena", str(tmp_path), *SMALL], "none"),
        (["demo", "--athena", "--store", str(tmp_path / "kept.zarr"), *SMALL], "none"),
    )
    out = on_s3["out"]
    for report in (on_s3, on_disk):
        assert report["rc"] == 0, report["out"] + err
        assert_nothing_left(report)
        assert re.search(r"3 warehouse queries\n", report["out"])
        assert "0 warehouse queries; identical values: True" in report["out"]
    assert "xr_methyl ensure" in err  # the progress bar of the first ensure
    assert "Glue database methylation, data in s3://" in out
    assert re.search(r"2\. Creating the store s3://store-[0-9a-f]+/cohort\.methyl\.zarr;", out)
    assert "Athena queries: 1 to create the store, 3 for the first ensure, 0 for the second" in out
    # the provenance: each query's id, bytes scanned and dollars, and info's totals
    ids = re.findall(r"query ([0-9a-f-]{36})  \S+ \S+ scanned  \$0\.0000477", out)
    assert len(set(ids)) == 3
    assert re.search(r"paid {7}3 warehouse queries, \S+ \S+ scanned, about \$0\.0001 \(Athena list price\)", out)
    assert re.search(r"on disk {4}\d+\.\d KiB \(beta", out)  # measured on S3
    assert "warehouse  athena://methylation?" in out and "testing" not in out  # no credentials printed
    assert "Stopped the Athena stand-in and moto's server" in out
    assert "went with moto's S3" in out and list(tmp_path.iterdir()) == [tmp_path / "kept.zarr"]

    # The same story on the embedded warehouse gives the same values, on S3 and on disk.
    assert main(["demo", str(tmp_path / "embedded"), *SMALL]) == 0
    embedded = capsys.readouterr().out
    assert values_line(out) == values_line(on_disk["out"]) == values_line(embedded)
    athena_ds = xr.open_dataset(tmp_path / "kept.zarr", engine="methylzarr")
    local_ds = xr.open_dataset(tmp_path / "embedded" / "cohort.methyl.zarr", engine="methylzarr")
    assert athena_ds.sizes["sample"] == 5
    local_ds = local_ds.sel(sample=athena_ds.sample.values)
    for name in ("beta", "coverage", "age", "batch_id"):
        np.testing.assert_array_equal(athena_ds[name].values, local_ds[name].values)

    # Once the demo's servers are gone, ensuring a new sample fails in one line: the query
    # cannot start; PyAthena's own traceback stays out of the output.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xr_methyl.cli",
            "ensure",
            str(tmp_path / "kept.zarr"),
            "sample-not-cached",
            "--no-progress",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("xr-methyl ensure: error:")

    # An earlier demo's store is refused before anything starts.
    assert main(["demo", "--athena", "--store", str(tmp_path / "kept.zarr"), *SMALL]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_demo_athena_stops_the_servers_on_ctrl_c_and_errors(tmp_path):
    tiny = ["--samples", "4", "--cpgs", "1000", "--batch-size", "2", "--subset", "2"]
    reports, err = probe(
        (["demo", "--athena", "--store", str(tmp_path / "a"), *tiny], "ctrl-c"),
        (["demo", "--athena", "--store", str(tmp_path / "b"), *tiny], "error"),
    )
    for report in reports:
        assert_nothing_left(report)
        assert "Stopped the Athena stand-in" not in report["out"]
    assert reports[0]["rc"] == 130 and "xr-methyl demo: interrupted; the store keeps its last commit" in err
    assert reports[1]["rc"] == 1 and "xr-methyl demo: error: injected: the warehouse broke" in err
    for name in ("a", "b"):
        assert xr.open_dataset(tmp_path / name, engine="methylzarr").sizes["sample"] == 0


def test_demo_athena_names_the_extra_to_install_when_moto_is_missing(tmp_path):
    code = (
        "import sys; sys.modules['moto.server'] = None; from xr_methyl.cli import main; "
        f"sys.exit(main(['demo', '--athena', {str(tmp_path)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert "needs moto[server]" in done.stderr and "pip install 'xr_methyl[demo]'" in done.stderr
    assert list(tmp_path.iterdir()) == []
